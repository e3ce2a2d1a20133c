package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"epost/internal/sim"
)

func init() {
	register("sim federation", "simulate federated rings: gateways, the global ring, mail between rings, gateway failures", runSimFederation)
}

func runSimFederation(args []string) error {
	fs := flag.NewFlagSet("sim federation", flag.ContinueOnError)
	var c sim.FedConfig
	fs.IntVar(&c.Rings, "rings", 3, "number of rings, each clustered around a site of its own (LAN inside, WAN between sites)")
	fs.IntVar(&c.NodesPerRing, "nodes-per-ring", 50, "nodes per ring (each runs Pastry, PAST, Scribe and POST), gateways included")
	fs.IntVar(&c.Gateways, "gateways", 2, "gateways per ring: also members of the global ring, hosting no users")
	fs.IntVar(&c.Users, "users", 20, "users per ring, each on a random node that is not a gateway")
	fs.IntVar(&c.Messages, "messages", 1000, "messages between random users, all rings together")
	fs.Float64Var(&c.Offline, "offline", 0.3, "fraction of the user-hosting nodes offline while messages are sent; they return afterwards")
	fs.IntVar(&c.FailGateways, "fail-gateways", 0, "gateways per ring that crash for good halfway through the sends")
	hidden := map[string]bool{}
	hide := func(name string) { hidden[name] = true }
	fs.Float64Var(&c.Inter, "inter", 0.5, "share of the messages sent to a user of another ring")
	hide("inter")
	ringSizes := fs.String("ring-sizes", "", "comma-separated node count of each ring (instead of --rings and --nodes-per-ring)")
	hide("ring-sizes")
	fs.Float64Var(&c.SendRate, "send-rate", 100, "messages per virtual second, all rings together")
	hide("send-rate")
	fs.BoolVar(&c.NoReceipts, "no-receipts", false, "gateways neither acknowledge requests on receipt nor pass rosters: a dead gateway is noticed by timeouts only, as the daemon does today")
	hide("no-receipts")
	fs.DurationVar(&c.ReceiptTimeout, "receipt-timeout", time.Second, "a gateway silent this long after a request is taken for dead")
	hide("receipt-timeout")
	fs.Float64Var(&c.SiteRadius, "site-radius", 0.01, "how far a ring's nodes lie from its site in the unit latency square (0.01: about 3.4 ms one way at most)")
	hide("site-radius")
	fs.IntVar(&c.LeafSet, "leafset", 24, "leaf-set size L of every ring (keep rings above L+1 live nodes: internal/pastry routes in circles between L/2+1 and L+1)")
	hide("leafset")
	fs.IntVar(&c.Replicas, "replicas", 3, "replicas per object (k) in every ring")
	hide("replicas")
	sf := addSimFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost sim federation [flags]\n\nPrints one key=value line per phase: setup, admit, send, fail, final.\n\n")
		var names []string
		fs.VisitAll(func(f *flag.Flag) {
			if !hidden[f.Name] {
				names = append(names, f.Name)
			}
		})
		sort.Strings(names)
		for _, n := range names {
			f := fs.Lookup(n)
			fmt.Fprintf(fs.Output(), "  --%s (default %s)\n    \t%s\n", n, f.DefValue, f.Usage)
		}
	}
	return sf.run(fs, args, func(seed uint64) error {
		c.Seed = seed
		if *ringSizes != "" {
			for _, s := range strings.Split(*ringSizes, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil {
					return fmt.Errorf("--ring-sizes %q: %v", *ringSizes, err)
				}
				c.RingSizes = append(c.RingSizes, n)
			}
		}
		return c.Validate()
	}, func(p func(string)) error {
		_, err := sim.RunFederation(c, os.Stdout, p)
		return err
	})
}
