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
	seed := fs.Uint64("seed", 1, "random seed; the same seed gives the same output")
	fs.DurationVar(&c.JoinSpacing, "join-spacing", 10*time.Millisecond, "virtual time between two joins")
	fs.Float64Var(&c.LookupRate, "lookup-rate", 1000, "lookups issued per virtual second")
	fs.DurationVar(&c.RepairTime, "repair", 2*time.Minute, "virtual time allowed for repair after a failure")
	quiet := fs.Bool("quiet", false, "no progress notes on stderr")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Seed = *seed
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
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
	p := progress(*quiet)
	if _, err := sim.RunRoute(c, os.Stdout, p); err != nil {
		return err
	}
	p(peakNote(start))
	return nil
}
