package transport

import (
	"testing"
	"time"
)

// manualClock fires timers only when advanced.
type manualClock struct {
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (t *manualTimer) Stop() bool { was := !t.stopped; t.stopped = true; return was }

func (c *manualClock) Now() time.Time { return c.now }

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &manualTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *manualClock) advance(d time.Duration) {
	c.now = c.now.Add(d)
	for i := 0; i < len(c.timers); i++ {
		if t := c.timers[i]; !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			t.f()
		}
	}
}

// The loop steps once per period with the lock held, flush releases it, and Stop ends it.
func TestLoop(t *testing.T) {
	c := &manualClock{now: time.Unix(0, 0)}
	var l *Loop
	steps, flushes := 0, 0
	l = NewLoop(c, time.Second, func(time.Time) {
		if l.Mu.TryLock() {
			t.Fatal("step ran without the lock")
		}
		steps++
	}, func() { flushes++; l.Mu.Unlock() })
	c.advance(5 * time.Second)
	if steps != 0 {
		t.Fatal("ticked before Start")
	}
	l.Start()
	for range 3 {
		c.advance(time.Second)
	}
	if steps != 3 || flushes != 3 {
		t.Fatalf("%d steps, %d flushes after 3 periods", steps, flushes)
	}
	l.Stop()
	l.Mu.Lock()
	stopped := l.Stopped()
	l.Mu.Unlock()
	c.advance(10 * time.Second)
	if !stopped || steps != 3 {
		t.Fatalf("stopped %v, %d steps after Stop", stopped, steps)
	}
}
