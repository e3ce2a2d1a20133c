package transport

import (
	"sync"
	"time"
)

// Loop is the locking and ticking that an application driver (PAST's, Glacier's) wraps around
// its state machine: Mu serialises access to the machine, under simnet's one event loop and
// the real network's many goroutines alike, and every period the machine's step runs with Mu
// held, the next tick is armed, and flush runs; flush must release Mu (drivers take the
// machine's outbox under the lock and send it without, since sending may call back into them).
type Loop struct {
	Mu sync.Mutex

	clock   Clock
	period  time.Duration
	step    func(now time.Time)
	flush   func()
	timer   Timer
	stopped bool
}

// NewLoop makes a loop ticking every period (a second if period <= 0) on clock. Call Start to
// begin.
func NewLoop(clock Clock, period time.Duration, step func(now time.Time), flush func()) *Loop {
	if period <= 0 {
		period = time.Second
	}
	return &Loop{clock: clock, period: period, step: step, flush: flush}
}

// Start arms the first tick.
func (l *Loop) Start() {
	l.Mu.Lock()
	l.timer = l.clock.AfterFunc(l.period, l.onTick)
	l.Mu.Unlock()
}

// Stop ends the ticks; Stopped reports it from then on.
func (l *Loop) Stop() {
	l.Mu.Lock()
	l.stopped = true
	if l.timer != nil {
		l.timer.Stop()
	}
	l.Mu.Unlock()
}

// Stopped reports whether Stop was called. Call it with Mu held.
func (l *Loop) Stopped() bool { return l.stopped }

func (l *Loop) onTick() {
	l.Mu.Lock()
	if l.stopped {
		l.Mu.Unlock()
		return
	}
	l.step(l.clock.Now())
	l.timer = l.clock.AfterFunc(l.period, l.onTick)
	l.flush()
}
