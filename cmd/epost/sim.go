package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"epost/internal/sim"
)

func init() {
	register("sim route", "simulate a Pastry ring: joins, lookups, failures, churn", runSimRoute)
}

// progress prints human notes to stderr; stdout carries only the deterministic summary lines.
func progress(quiet bool) func(string) {
	start := time.Now()
	return func(s string) {
		if !quiet {
			fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), s)
		}
	}
}

func peakNote(start time.Time) string {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("done in %.1fs wall, heap in use %d MiB, obtained from OS %d MiB",
		time.Since(start).Seconds(), ms.HeapInuse>>20, ms.Sys>>20)
}

func runSimRoute(args []string) error {
	fs := flag.NewFlagSet("sim route", flag.ContinueOnError)
	var c sim.RouteConfig
	fs.IntVar(&c.Nodes, "nodes", 1000, "number of nodes; each joins through the protocol, one after another")
	fs.IntVar(&c.Lookups, "lookups", 10000, "random lookups per phase")
	fs.Float64Var(&c.Fail, "fail", 0, "fraction of nodes that fail at once after the lookups phase")
	fs.StringVar(&c.FailMode, "fail-mode", "random", "random | correlated (a contiguous region of the latency space goes dark)")
	fs.DurationVar(&c.Churn, "churn", 0, "median session length for a churn phase (e.g. 30m); 0: none")
	fs.DurationVar(&c.Duration, "duration", time.Hour, "length of the churn phase (virtual time)")
	fs.IntVar(&c.LeafSet, "leafset", 24, "leaf-set size L")
	fs.DurationVar(&c.JoinSpacing, "join-spacing", 10*time.Millisecond, "virtual time between two joins")
	fs.Float64Var(&c.LookupRate, "lookup-rate", 1000, "lookups issued per virtual second")
	fs.DurationVar(&c.RepairTime, "repair", 2*time.Minute, "virtual time allowed for repair after a failure")
	sf := addSimFlags(fs)
	return sf.run(fs, args, func(seed uint64) error {
		c.Seed = seed
		return nil
	}, func(p func(string)) error {
		_, err := sim.RunRoute(c, os.Stdout, p)
		return err
	})
}

// simFlags are the flags every `epost sim` experiment shares.
type simFlags struct {
	seed       *uint64
	quiet      *bool
	cpuprofile *string
	memprofile *string
}

func addSimFlags(fs *flag.FlagSet) simFlags {
	return simFlags{
		seed:       fs.Uint64("seed", 1, "random seed; the same seed gives the same output"),
		quiet:      fs.Bool("quiet", false, "no progress notes on stderr"),
		cpuprofile: fs.String("cpuprofile", "", "write a CPU profile to this file"),
		memprofile: fs.String("memprofile", "", "write a heap profile (memory in use at the end) to this file"),
	}
}

// run parses args, lets prepare check the flags and take the seed, then runs the experiment
// with an optional CPU profile, progress notes on stderr and a closing time/memory note.
func (sf simFlags) run(fs *flag.FlagSet, args []string, prepare func(seed uint64) error, experiment func(progress func(string)) error) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := prepare(*sf.seed); err != nil {
		return err
	}
	if *sf.cpuprofile != "" {
		f, err := os.Create(*sf.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	p := progress(*sf.quiet)
	if err := experiment(p); err != nil {
		return err
	}
	p(peakNote(start))
	if *sf.memprofile != "" {
		f, err := os.Create(*sf.memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
	}
	return nil
}
