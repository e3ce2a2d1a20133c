package sim

import (
	"fmt"
	"slices"
	"time"

	"epost/internal/ids"
)

// What the federation's summary lines report.

func (f *fedRun) runWindow() window { return f.runStart }

// bytesPerGateway is what the gateways sent on the global ring since w, per gateway alive and
// second.
func (f *fedRun) bytesPerGateway(w window) float64 {
	now := f.net.Elapsed()
	var gwSeconds float64
	for _, gw := range f.gws {
		from, to := max(w.at, gw.joinedAt), now
		if !gw.alive {
			to = min(to, gw.diedAt)
		}
		if to > from {
			gwSeconds += (to - from).Seconds()
		}
	}
	if gwSeconds == 0 {
		return 0
	}
	return float64(f.globalBytes-w.bytes) / gwSeconds
}

type msgTally struct {
	messages, delivered, lost, dups, notAccepted int
	lat, record                                  []float64
}

func (t *msgTally) add(m *fedMsg) {
	t.messages++
	if m.filed > 0 {
		t.delivered++
		t.dups += m.filed - 1
		if !m.offline && m.committed {
			t.lat = append(t.lat, float64(m.filedAt-m.sentAt)/float64(time.Millisecond))
		}
	} else if m.accepted {
		t.lost++
	}
	if !m.accepted {
		t.notAccepted++
	}
	if m.inter && m.committed {
		t.record = append(t.record, float64(m.sentAt-m.startAt)/float64(time.Millisecond))
	}
}

// measure summarises the messages sel picks: delivered (filed at least once), lost
// (accepted, never filed), duplicates (extra filings), all and split within / between rings;
// latency from the commit to filing for recipients online at send time. Between rings the
// commit follows the recipient's record lookup through the gateways (SMTP's RCPT, before
// DATA): record_p50_ms and record_p99_ms give that time apart.
func (f *fedRun) measure(phase string, sel func(*fedMsg) bool, since window) FedResult {
	var all, intra, inter msgTally
	for _, m := range f.msgs {
		if !sel(m) {
			continue
		}
		all.add(m)
		if m.inter {
			inter.add(m)
		} else {
			intra.add(m)
		}
	}
	res := FedResult{Phase: phase}
	res.add("messages", float64(all.messages))
	res.add("delivered", float64(all.delivered))
	res.add("lost", float64(all.lost))
	res.add("duplicates", float64(all.dups))
	res.add("not_accepted", float64(all.notAccepted))
	for _, s := range []struct {
		name string
		t    *msgTally
	}{{"intra", &intra}, {"inter", &inter}} {
		res.add("messages_"+s.name, float64(s.t.messages))
		res.add("delivered_"+s.name, float64(s.t.delivered))
		res.add("lost_"+s.name, float64(s.t.lost))
		res.add("duplicates_"+s.name, float64(s.t.dups))
	}
	res.add("latency_p50_ms", pct(all.lat, 0.5))
	res.add("latency_p99_ms", pct(all.lat, 0.99))
	res.add("latency_p50_ms_intra", pct(intra.lat, 0.5))
	res.add("latency_p99_ms_intra", pct(intra.lat, 0.99))
	res.add("latency_p50_ms_inter", pct(inter.lat, 0.5))
	res.add("latency_p99_ms_inter", pct(inter.lat, 0.99))
	res.add("record_p50_ms", pct(inter.record, 0.5))
	res.add("record_p99_ms", pct(inter.record, 0.99))
	res.add("global_bytes_per_gateway_per_s", float64(int64(f.bytesPerGateway(since))))
	return res
}

// finalExtras: locality (every object in a store of ring A keyed in ring A, and nothing but
// Scribe, relay and directory traffic on the global ring), plaintext leaks, what the live
// gateways still hold, and the global ring's traffic at rest.
func (f *fedRun) finalExtras(res *FedResult) {
	foreign, leaks, objects := 0, 0, 0
	for _, rr := range f.rings {
		for _, mn := range rr.run.nodes {
			mn.st.Keys(func(k ids.Key) {
				if k.Ring != rr.run.ringID {
					foreign++
				}
			})
		}
		l, o := rr.run.scanStores()
		leaks += l
		objects += o
	}
	var unknown uint64
	for _, gw := range f.gws {
		unknown += gw.unknown
	}
	res.add("not_accepted_record_offline", float64(f.stats.recordOffline))
	res.add("locality_violations", float64(foreign)+float64(unknown))
	res.add("plaintext_leaks", float64(leaks))
	res.add("objects", float64(objects))
	res.add("queue_left", float64(f.queueLeft()))
	res.add("handoffs_retried", float64(f.stats.handoffsRetried))
	res.add("custody_lost", float64(f.stats.custodyLost))
	res.add("global_rest_bytes_per_gateway_per_s", float64(int64(f.restBytes)))
}

// tailNote describes the slowest messages between rings (for progress).
func (f *fedRun) tailNote(n int) string {
	var inter []*fedMsg
	for _, m := range f.msgs {
		if m.inter && m.filed > 0 && !m.offline && m.committed {
			inter = append(inter, m)
		}
	}
	slices.SortFunc(inter, func(a, b *fedMsg) int { return int((b.filedAt - b.sentAt) - (a.filedAt - a.sentAt)) })
	s := "slowest between rings (ms after commit: accepted/filed, node hand-off retries):"
	for _, m := range inter[:min(n, len(inter))] {
		s += fmt.Sprintf(" %d@%.0fs:%.0f/%.0f/%d", m.n, (m.sentAt - f.sendWindow.at).Seconds(), ms(m.acceptedAt-m.sentAt), ms(m.filedAt-m.sentAt), m.handoffRetries)
	}
	return s
}
