// Package churn is the adversarial real-process churn checker (issue 11): an 8-node ring of
// "epost node run" processes on loopback, alice on node2 and bob on node3, run in rounds.
// In each round alice mails bob over SMTP submission while other nodes are killed (SIGKILL)
// or stopped (SIGTERM) and restarted, never more than two down at once; then two of the
// nodes nearest bob's INBOX head go down, mail is sent, they come back and more is sent.
// Bob creates a folder, copies and flags messages over IMAP while two of the nodes nearest
// his root log's head are down, and after they are back copies into an older folder, creates
// a second one and flags and expunges messages. Bob's node is restarted (kill -9 in odd
// rounds, SIGTERM in even ones, right after the last OK or seconds later), and an audit
// checks that every message that got a 250 is in bob's INBOX exactly once and every folder,
// copy, flag and expunge that got an OK is still there.
//
// Node ids are random, so nodes 4 to 8 are picked among more enrolled ones to put bob's node
// fourth or fifth nearest his log heads: the outages above then make it a replica of his own
// heads for a while, and it keeps that copy once it is stale (the lost mail and
// folders). Every choice of the test comes from the seed (cluster.Seed, EPOST_TEST_SEED);
// node ids and the network's timing are not replayed.
//
// Flags (go test ./test/churn -args ..., or on the test binary):
//
//	-churn.rounds N          rounds to run (default 3; a soak takes more, with -timeout)
//	-churn.audit-deadline D  how long the audit polls before it reports (default 60s)
//	-churn.pick-layout=false take nodes 4-8 as enrolled instead of picking them by id
package churn

import (
	"flag"
	"testing"
	"time"

	"epost/test/cluster"
)

var (
	flagRounds        = flag.Int("churn.rounds", 3, "rounds of churn, folder changes and a restart of bob's node")
	flagAuditDeadline = flag.Duration("churn.audit-deadline", 60*time.Second, "how long an audit polls for missing mail before it reports")
	flagPickLayout    = flag.Bool("churn.pick-layout", true, "pick nodes 4-8 by id so that bob's node is 4th or 5th nearest his log heads")
)

func TestMain(m *testing.M) { cluster.Main(m) }
