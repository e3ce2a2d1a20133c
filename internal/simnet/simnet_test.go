package simnet

import (
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

type got struct {
	at    time.Duration
	from  ids.ID
	frame string
}

func pair(t *testing.T, cfg Config) (*Network, *Endpoint, *Endpoint, *[]got) {
	n := New(cfg)
	a := n.AddNodeAt(ids.HashString("a"), "a", 0, 0)
	b := n.AddNodeAt(ids.HashString("b"), "b", 1, 1)
	var rx []got
	b.SetHandler(func(f transport.From, frame []byte) {
		rx = append(rx, got{n.Elapsed(), f.ID, string(frame)})
	})
	return n, a, b, &rx
}

func TestLatencyFromPositions(t *testing.T) {
	cfg := DefaultConfig(1)
	cfg.Jitter = 0
	n, a, b, rx := pair(t, cfg)
	if got := n.Latency(a, b); got != cfg.MaxLatency {
		t.Fatalf("opposite corners: latency %v, want %v", got, cfg.MaxLatency)
	}
	if err := a.Send(b.ID(), "b", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	n.RunFor(time.Second)
	if len(*rx) != 1 || (*rx)[0].at != cfg.MaxLatency || (*rx)[0].from != a.ID() || (*rx)[0].frame != "hi" {
		t.Fatalf("delivery: %+v", *rx)
	}
}

func TestCrashPartitionAndWrongID(t *testing.T) {
	n, a, b, rx := pair(t, DefaultConfig(2))
	b.Crash()
	a.Send(b.ID(), "b", []byte("lost"))
	n.RunFor(time.Second)
	b.Recover()
	a.SetPartition(1)
	a.Send(b.ID(), "b", []byte("partitioned"))
	n.RunFor(time.Second)
	a.SetPartition(0)
	a.Send(ids.HashString("someone else"), "b", []byte("wrong id"))
	n.RunFor(time.Second)
	if len(*rx) != 0 {
		t.Fatalf("frames reached a crashed, partitioned or misaddressed node: %+v", *rx)
	}
	a.Send(b.ID(), "b", []byte("ok"))
	n.RunFor(time.Second)
	if len(*rx) != 1 {
		t.Fatalf("frame after recovery not delivered: %+v", *rx)
	}
	if st := n.Stats(); st.Dropped != 3 || st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTimersDieWithTheirNode(t *testing.T) {
	n := New(DefaultConfig(3))
	e := n.AddNode(ids.HashString("x"), "x")
	fired := 0
	e.Clock().AfterFunc(time.Second, func() { fired++ })
	tm := e.Clock().AfterFunc(time.Second, func() { fired += 10 })
	tm.Stop()
	n.RunFor(2 * time.Second)
	e.Clock().AfterFunc(time.Second, func() { fired += 100 })
	e.Crash()
	e.Recover()
	n.RunFor(2 * time.Second)
	if fired != 1 {
		t.Fatalf("fired=%d, want 1: a stopped timer or one from before a crash ran", fired)
	}
}

func TestSameSeedSameSchedule(t *testing.T) {
	run := func() []got {
		cfg := DefaultConfig(7)
		cfg.Loss = 0.2
		n, a, _, rx := pair(t, cfg)
		for i := 0; i < 200; i++ {
			a.Send(ids.Zero, "b", []byte{byte(i)})
		}
		n.RunFor(time.Second)
		return *rx
	}
	x, y := run(), run()
	if len(x) != len(y) || len(x) == 200 || len(x) == 0 {
		t.Fatalf("loss not applied or not deterministic: %d vs %d", len(x), len(y))
	}
	for i := range x {
		if x[i] != y[i] {
			t.Fatalf("runs differ at %d", i)
		}
	}
}
