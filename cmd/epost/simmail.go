package main

import (
	"flag"
	"os"
	"time"

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
	fs.DurationVar(&c.Churn, "churn", 0, "median session length (e.g. 30m) of the nodes that host no user, exponential sessions during and after the sends; 0: no churn")
	fs.Float64Var(&c.ChurnRestart, "churn-restart", 0.5, "share of ended sessions that are process restarts (same id and store, after a downtime); the others are replaced by a fresh node")
	fs.DurationVar(&c.ChurnDowntime, "churn-downtime", 2*time.Minute, "median downtime (exponential) of a churned node that restarts")
	fs.Float64Var(&c.MaxDown, "max-down", 0.05, "churn never has more than this fraction of the nodes down at once")
	fs.IntVar(&c.Restarts, "restarts", 0, "process restarts of users' nodes (store, journals and head records kept; POST and its users built anew), half during the sends and half after; they alternate a crash at a random moment and a crash right after a burst of folder operations; plus a final restart of every user's node before the audit")
	fs.IntVar(&c.FolderOps, "folder-ops", -1, "folder operations by recipients through the mail store (CREATE, COPY, STORE +FLAGS), half during the sends and half after; -1: messages/10 with --churn or --restarts, else none")
	fs.BoolVar(&c.Audit, "audit", false, "restart every user's node at the end and check INBOX (exactly once), folders, copies and flags in the final line; implied by --churn, --restarts and --folder-ops")
	fs.BoolVar(&c.NoHeadRecords, "no-head-records", false, "run POST without head records (the writer's record of its last head): shows what they protect")
	sf := addSimFlags(fs)
	return sf.run(fs, args, func(seed uint64) error {
		c.Seed = seed
		return nil
	}, func(p func(string)) error {
		_, err := sim.RunMail(c, os.Stdout, p)
		return err
	})
}
