package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"epost/internal/daemon"
)

// "epost status --dir DEMODIR" on a demo's folder says what it is and which nodes to ask, and
// on a node of a demo that is not running says to start the demo, never "epost node run".
func TestStatusOnDemoFolder(t *testing.T) {
	root := t.TempDir()
	if _, err := demoSetup(root, 3); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := status([]string{"--dir", root}, &out)
	if err == nil {
		t.Fatalf("status on the demo folder succeeded: %s", out.String())
	}
	msg := err.Error()
	for _, want := range []string{
		"folder of an epost demo",
		"not running",
		"epost demo --dir " + root,
		"epost status --dir " + filepath.Join(root, "node0"),
		"epost status --dir " + filepath.Join(root, "node2"),
		"alice@demo.example",
		"bob@demo.example",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("advice lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "epost node run") {
		t.Errorf("advice names epost node run, which is wrong for a demo:\n%s", msg)
	}
	if i, j := strings.Index(msg, "node1 "), strings.Index(msg, "alice@"); i < 0 || j < i || strings.Contains(msg[i:j], "\n") {
		t.Errorf("alice is not listed on node1's line:\n%s", msg)
	}

	err = status([]string{"--dir", filepath.Join(root, "node2")}, &out)
	if err == nil || !strings.Contains(err.Error(), "epost demo --dir "+root) || strings.Contains(err.Error(), "epost node run") {
		t.Errorf("status on a demo node while the demo is stopped: %v", err)
	}
}

// The text status of a gateway shows its queue per kind and per destination, and every node's
// delivery line says how old its outbox is and why it waits.
func TestPrintStatusQueues(t *testing.T) {
	now := time.Now()
	st := &daemon.Status{Gateway: &daemon.GatewayStatus{Queue: daemon.QueueStatus{
		Internet: daemon.QueueKindStatus{Entries: 2, Bytes: 3 << 10, OldestS: 300},
		Destinations: []daemon.QueueDestStatus{
			{Kind: "internet", Dest: "example.com", Queued: 2, Recipients: 3, LastError: "mx.example.com said 451 4.7.1 try later",
				LastAttempt: now.Add(-time.Minute), NextAttempt: now.Add(4 * time.Minute)},
			{Kind: "federation", Dest: "1a2b3c4d5e6f", Domains: []string{"globex.example"}, Queued: 1, Recipients: 1},
		},
	}}}
	st.Mail.Outbox, st.Mail.OutboxOldestS, st.Mail.OutboxWaiting = 1, 42, "no gateway of the ring took the next message"
	var out bytes.Buffer
	printStatus(&out, st)
	text := out.String()
	for _, want := range []string{
		"queue     federation empty; internet 2 / 3.0 KiB, oldest 5m0s",
		"to example.com: 2 queued (3 recipients), next attempt in 4m",
		"last error: mx.example.com said 451 4.7.1 try later (1m0s ago)",
		"to ring 1a2b3c4d (globex.example): 1 queued (1 recipients)",
		"1 in outbox (oldest 42s; no gateway of the ring took the next message)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
}
