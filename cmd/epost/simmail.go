package main

import (
	"flag"
	"os"

	"epost/internal/sim"
)

func init() {
	register("sim mail", "simulate POST end to end: users, messages, offline recipients, delivery", runSimMail)
}

func runSimMail(args []string) error {
	fs := flag.NewFlagSet("sim mail", flag.ContinueOnError)
	var c sim.MailConfig
	fs.IntVar(&c.Nodes, "nodes", 200, "number of nodes (each runs Pastry, PAST, Scribe and POST)")
	fs.IntVar(&c.Users, "users", 50, "users, each on a random node")
	fs.IntVar(&c.Messages, "messages", 5000, "messages between random users")
	fs.Float64Var(&c.Offline, "offline", 0.3, "fraction of the user-hosting nodes offline while messages are sent; they return afterwards")
	fs.Float64Var(&c.SendRate, "send-rate", 100, "messages per virtual second")
	fs.Float64Var(&c.Attachment, "attachment", 0.1, "probability that a message carries one of four shared 64 KiB attachments")
	fs.IntVar(&c.Replicas, "replicas", 3, "replicas per object (k)")
	fs.BoolVar(&c.Stages, "stages", false, "report on stderr when each delivery stage is reached (p50/p99 after the send)")
	sf := addSimFlags(fs)
	return sf.run(fs, args, func(seed uint64) error {
		c.Seed = seed
		return nil
	}, func(p func(string)) error {
		_, err := sim.RunMail(c, os.Stdout, p)
		return err
	})
}
