package pastry

import (
	"time"

	"epost/internal/ids"
)

// senderLimit bounds how often each sender may make this node do costly work on its behalf:
// a join or heal routed through the ring answers the joiner from every hop (table rows) and
// from the root (a leaf set), several frames for one. Senders are the ids the transport
// authenticated, each bound to a certificate of the ring CA, so a peer cannot escape its limit
// by claiming other ids. It is the generic cell rate algorithm: burst events at once, then
// one per every.
type senderLimit struct {
	every time.Duration
	burst int
	next  map[ids.ID]time.Time // per sender, when its allowance is whole again minus one event
}

// maxLimitedSenders bounds the senders remembered; past it, senders whose allowance is whole
// again are forgotten, and if that is not enough, all of them (a bound on memory, not on
// rate: forgetting only ever lets a sender through).
const maxLimitedSenders = 4096

func newSenderLimit(every time.Duration, burst int) senderLimit {
	return senderLimit{every: every, burst: max(burst, 1), next: make(map[ids.ID]time.Time)}
}

// allow reports whether id may have one more event at now, and counts it if so.
func (l *senderLimit) allow(id ids.ID, now time.Time) bool {
	tat, ok := l.next[id]
	if !ok || tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > time.Duration(l.burst-1)*l.every {
		return false
	}
	if !ok && len(l.next) >= maxLimitedSenders {
		for s, t := range l.next {
			if !t.After(now) {
				delete(l.next, s)
			}
		}
		if len(l.next) >= maxLimitedSenders {
			clear(l.next)
		}
	}
	l.next[id] = tat.Add(l.every)
	return true
}
