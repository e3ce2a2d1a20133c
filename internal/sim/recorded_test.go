package sim

import (
	"fmt"
	"testing"
	"time"

	"epost/internal/post"
)

// Appends acknowledged at the writer's record (post.User.AppendRecorded: IMAP flag changes
// and expunges) survive a crash of the writer's process that comes before the ring has them:
// the writer dies at the acknowledgement of its last one, restarts, opens the log from its
// record (newer than anything in the ring), and writes it back, so that afterwards a node
// given only the user's keys reads every acknowledged entry from the ring too.
//
// Two bursts: one behind an ordinary append (its acknowledgement waits for that append's
// head, then the record of the head after it, saved while that one was in flight); one
// alone (acknowledged at its own head's record). Each checks that the acknowledgement came
// before the ring's, so the early path is what is tested.
func TestConsistencyRecordedAppendsSurviveACrash(t *testing.T) {
	runCases(t, []consistencyCase{{"Work", 1201}, {post.InboxLog, 1202}, {"Work", 1203}}, recordedScenario)
}

func recordedScenario(t *testing.T, log string, seed uint64) {
	w := newConsistencyWorld(t, seed)
	const serial = 7
	key := w.logHeadKey(userKeys(serial), log)
	order := w.byCloseness(key)
	wn := order[12] // never one of the head's replicas: no copy of it on the writer's node
	u := w.addUser(wn.sn.idx, "u@sim.example", serial)
	w.startLog(u, log, key)
	lg := &ledger{name: log}
	net := w.run.ring.net
	w.appendN(u, lg, "A", 3)
	net.RunFor(10 * time.Second)

	burst := func(label string, behindMail bool) {
		crashed := false
		const n = 3
		if behindMail {
			body := fmt.Sprintf("%s %s mail", log, label)
			u.u.Append(log, []byte(body), func(_ uint64, err error) {
				if err == nil {
					lg.acked = append(lg.acked, body)
				}
			})
		}
		for i := range n {
			body := fmt.Sprintf("%s %s flag %d", log, label, i)
			last := i == n-1
			u.u.AppendRecorded(log, []byte(body), func(_ uint64, err error) {
				if err != nil {
					lg.failed++
					return
				}
				lg.acked = append(lg.acked, body)
				if !last || crashed {
					return
				}
				h, herr := u.u.Head(log)
				if herr != nil || h.Count >= uint64(len(lg.acked)) {
					w.t.Errorf("seed %d: %s: the last recorded append was acknowledged after the ring's (head %d entries, %d acknowledged, %v)", seed, label, h.Count, len(lg.acked), herr)
				}
				crashed = true
				t.Logf("seed %d: %s: acknowledged with the committed head at seq %d, %d entries; copies %s", seed, label, h.Seq, h.Count, w.headCopies(key))
				w.run.crash(wn)
			})
		}
		w.wait(time.Minute, func() bool { return crashed })
		if !crashed {
			w.fail("%s: the recorded appends were never acknowledged", label)
		}
		t.Logf("seed %d: %s: writer n%d died with %d entries acknowledged; head copies: %s", seed, label, wn.sn.idx, len(lg.acked), w.headCopies(key))
		w.restartWriter(wn, u, log, key, label+": restart")
		net.RunFor(10 * time.Second)
		w.checkLedger(u, lg, label+": after the restart")
	}
	burst("B", true)
	burst("C", false)
	w.appendN(u, lg, "D", 1)
	w.readFromRing(u, wn, lg, key)
}
