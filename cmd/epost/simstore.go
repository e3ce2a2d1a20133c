package main

import (
	"flag"
	"os"
	"time"

	"epost/internal/sim"
)

func init() {
	register("sim store", "simulate PAST on a Pastry ring: inserts, failures, replica repair", runSimStore)
}

func runSimStore(args []string) error {
	fs := flag.NewFlagSet("sim store", flag.ContinueOnError)
	var c sim.StoreConfig
	fs.IntVar(&c.Nodes, "nodes", 1000, "number of nodes; each joins through the protocol")
	fs.IntVar(&c.Objects, "objects", 20000, "content-hash objects inserted (1-4 KB each)")
	fs.Float64Var(&c.Fail, "fail", 0, "fraction of the nodes that fail after the inserts")
	fs.StringVar(&c.FailMode, "fail-mode", "sequential", "sequential (one after another, repair in between) | random (all at once) | correlated (a region of the latency space)")
	fs.DurationVar(&c.Churn, "churn", 0, "median session length for a churn phase (e.g. 30m); 0: none")
	fs.DurationVar(&c.Duration, "duration", time.Hour, "length of the churn phase (virtual time)")
	fs.IntVar(&c.Replicas, "replicas", 3, "replicas per object (k)")
	fs.IntVar(&c.LeafSet, "leafset", 24, "leaf-set size L")
	fs.DurationVar(&c.FailSpacing, "fail-spacing", 10*time.Second, "sequential mode: virtual time between two failures")
	fs.DurationVar(&c.RepairTime, "repair", 2*time.Minute, "virtual time allowed for repair after the failures")
	fs.Float64Var(&c.InsertRate, "insert-rate", 500, "inserts per virtual second")
	fs.IntVar(&c.Mutable, "mutable", 0, "signed (mutable) objects inserted besides the content objects, rewritten during churn")
	fs.Float64Var(&c.UpdateRate, "update-rate", 2, "rewrites of mutable objects per virtual second during churn")
	fs.IntVar(&c.Lookups, "lookups", 0, "lookups, one at a time, after the inserts and after the churn (half of mutable objects)")
	fs.Float64Var(&c.LookupRate, "lookup-rate", 2, "lookups per virtual second during churn")
	fs.Float64Var(&c.Restart, "restart", 0, "share of the nodes crashed by churn that restart with their store instead of being replaced")
	fs.DurationVar(&c.Downtime, "downtime", 2*time.Minute, "median downtime of a node that restarts (--restart)")
	sf := addSimFlags(fs)
	return sf.run(fs, args, func(seed uint64) error {
		c.Seed = seed
		return nil
	}, func(p func(string)) error {
		_, err := sim.RunStore(c, os.Stdout, p)
		return err
	})
}
