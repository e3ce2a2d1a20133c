package daemon

import (
	"sync"
	"time"
)

// logLimiter lets one log line per key through each period and counts the others, so that a
// peer or client cannot flood the node's log. Safe for concurrent use.
type logLimiter struct {
	period time.Duration
	mu     sync.Mutex
	keys   map[string]*logSlot
}

type logSlot struct {
	last    time.Time
	skipped uint64
}

func newLogLimiter(period time.Duration) *logLimiter {
	return &logLimiter{period: period, keys: map[string]*logSlot{}}
}

// allow reports whether a line for key may be logged at now, and how many were held back
// since the last one that was.
func (l *logLimiter) allow(key string, now time.Time) (skipped uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.keys[key]
	if s == nil {
		if len(l.keys) >= 4096 { // many keys: forget the quiet ones
			for k, v := range l.keys {
				if now.Sub(v.last) > l.period {
					delete(l.keys, k)
				}
			}
		}
		s = &logSlot{}
		l.keys[key] = s
	} else if now.Sub(s.last) < l.period {
		s.skipped++
		return 0, false
	}
	skipped, s.skipped, s.last = s.skipped, 0, now
	return skipped, true
}
