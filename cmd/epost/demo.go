package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"epost/internal/sim"
)

func init() {
	register("demo", "run the main job (for now: a 1,000-node simulated ring)", runDemo)
}

// runDemo is the README's "run the main job" command. Until the mail layer exists it runs the
// overlay simulator on a ring large enough to show routing, failure and repair at a glance.
func runDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	nodes := fs.Int("nodes", 1000, "nodes in the simulated ring")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "epost demo: the mail layer is not built yet, so the demo runs the Pastry simulator:\n"+
		"  %d nodes join one after another, 5,000 lookups, 30%% of the nodes fail, repair, lookups again.\n\n", *nodes)
	start := time.Now()
	c := sim.RouteConfig{Nodes: *nodes, Lookups: 5000, Fail: 0.3, Seed: *seed}
	if _, err := sim.RunRoute(c, os.Stdout, progress(false)); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, peakNote(start))
	return nil
}
