package daemon

import (
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"epost/internal/ids"
	"epost/internal/past"
)

// The control socket's operations (see the protocol in control.go).

// Bounds on control requests: a request may ask for a lot of work, never for unbounded memory.
const (
	maxBulkCount       = 1_000_000
	maxBulkConcurrency = 256
	defaultConcurrency = 16
	// objectOpTimeout bounds a single put or get on the node's side; PAST's own retries end
	// far sooner, so this only guards against a lost callback.
	objectOpTimeout = 5 * time.Minute
	// lineWriteTimeout bounds each line written to a client that stopped reading.
	lineWriteTimeout = time.Minute
)

// BulkSummary ends a bulk operation or a listing.
type BulkSummary struct {
	Count       int     `json:"count"`  // operations started (objects listed)
	OK          int     `json:"ok"`     // acknowledged inserts, found objects
	Failed      int     `json:"failed"` // inserts not acknowledged, lookups that failed
	Bytes       int64   `json:"bytes"`  // payload bytes of the successful ones
	Seed        uint64  `json:"seed,omitempty"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"` // successful operations per second
	P50Millis   float64 `json:"p50_ms"`     // latency of the successful operations
	P99Millis   float64 `json:"p99_ms"`
	MaxMillis   float64 `json:"max_ms"`
	Concurrency int     `json:"concurrency,omitempty"`
}

// lineWriter writes JSON lines to a control client; after the first failed write it stops.
type lineWriter struct {
	c   net.Conn
	err error
}

func (w *lineWriter) write(v any) error {
	if w.err != nil {
		return w.err
	}
	b, err := json.Marshal(v)
	if err != nil {
		w.err = err
		return err
	}
	_ = w.c.SetWriteDeadline(time.Now().Add(lineWriteTimeout))
	_, w.err = w.c.Write(append(b, '\n'))
	return w.err
}

// item streams one object line.
func (w *lineWriter) item(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.write(controlResponse{Item: b})
}

func (w *lineWriter) final(r controlResponse) { _ = w.write(r) }

func (w *lineWriter) fail(err error) { w.final(controlResponse{Error: err.Error()}) }

// dispatch runs one request and writes its answer.
func (n *Node) dispatch(w *lineWriter, req *ControlRequest) {
	switch req.Op {
	case "status":
		st := n.Status()
		w.final(controlResponse{OK: true, Status: &st})
	case "object_put":
		_ = w.c.SetDeadline(time.Now().Add(objectOpTimeout))
		r, err := n.InsertContent(req.Data, time.Duration(req.LeaseSeconds)*time.Second)
		w.final(controlResponse{OK: err == nil, Error: errText(err), Object: objectOrNil(r)})
	case "object_get":
		_ = w.c.SetDeadline(time.Now().Add(objectOpTimeout))
		key, err := ParseObjectKey(n.rn.Descriptor.RingID, req.Key)
		if err != nil {
			w.fail(err)
			return
		}
		r, err := n.LookupObject(key)
		w.final(controlResponse{OK: err == nil, Error: errText(err), Object: objectOrNil(r)})
	case "object_bulk_put":
		_ = w.c.SetDeadline(time.Time{})
		n.bulkPut(w, req)
	case "object_bulk_get":
		_ = w.c.SetDeadline(time.Time{})
		n.bulkGet(w, req)
	case "object_held":
		_ = w.c.SetDeadline(time.Time{})
		n.listHeld(w)
	default:
		w.fail(fmt.Errorf("unknown op %q (known: status, object_put, object_get, object_bulk_put, object_bulk_get, object_held)", req.Op))
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func objectOrNil(r ObjectResult) *ObjectResult {
	if r.Key == "" {
		return nil
	}
	return &r
}

func concurrency(c int) int {
	if c <= 0 {
		return defaultConcurrency
	}
	return min(c, maxBulkConcurrency)
}

// bulkPut inserts req.Count random objects of req.Size bytes, at most req.Concurrency at a
// time, and streams one line per finished insert as soon as PAST reports it.
func (n *Node) bulkPut(w *lineWriter, req *ControlRequest) {
	if req.Count < 1 || req.Count > maxBulkCount {
		w.fail(fmt.Errorf("count %d: want 1 to %d objects", req.Count, maxBulkCount))
		return
	}
	if req.Size < 1 || req.Size > past.MaxObjectSize {
		w.fail(fmt.Errorf("size %d: want 1 to %d bytes per object", req.Size, past.MaxObjectSize))
		return
	}
	pd, err := n.pastReady()
	if err != nil {
		w.fail(err)
		return
	}
	seed := req.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	lease := time.Duration(req.LeaseSeconds) * time.Second
	conc := concurrency(req.Concurrency)
	i := 0
	sum := n.runBulk(w, conc, req.Count, func(cb func(ObjectResult)) {
		payload := randomPayload(seed, i, req.Size)
		i++
		n.insertAsync(pd, payload, lease, cb)
	})
	if sum != nil {
		sum.Seed = seed
		w.final(controlResponse{OK: true, Summary: sum})
	}
}

// bulkGet looks up req.Keys, at most req.Concurrency at a time; the items carry each object's
// SHA-256 and size, not its bytes.
func (n *Node) bulkGet(w *lineWriter, req *ControlRequest) {
	ring := n.rn.Descriptor.RingID
	keys := make([]ids.Key, 0, len(req.Keys))
	for _, s := range req.Keys {
		k, err := ParseObjectKey(ring, s)
		if err != nil {
			w.fail(err)
			return
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		w.fail(errors.New("no keys given"))
		return
	}
	pd, err := n.pastReady()
	if err != nil {
		w.fail(err)
		return
	}
	i := 0
	sum := n.runBulk(w, concurrency(req.Concurrency), len(keys), func(cb func(ObjectResult)) {
		k := keys[i]
		i++
		n.lookupAsync(pd, k, false, cb)
	})
	if sum != nil {
		w.final(controlResponse{OK: true, Summary: sum})
	}
}

// runBulk starts count operations through start, keeping conc in flight, and streams each
// result. It returns nil (having written nothing final) when the client went away or the node
// is stopping. start's callback may run before start returns.
func (n *Node) runBulk(w *lineWriter, conc, count int, start func(cb func(ObjectResult))) *BulkSummary {
	// At most conc operations are outstanding and each reports once, so callbacks never block.
	results := make(chan ObjectResult, conc)
	cb := func(r ObjectResult) { results <- r }
	sum := &BulkSummary{Count: count, Concurrency: conc}
	var lat []float64
	began := time.Now()
	started, inflight := 0, 0
	for started < count || inflight > 0 {
		for inflight < conc && started < count {
			started++
			inflight++
			start(cb)
		}
		select {
		case r := <-results:
			inflight--
			if r.Error == "" {
				sum.OK++
				sum.Bytes += int64(r.Size)
				lat = append(lat, r.Millis)
			} else {
				sum.Failed++
			}
			if w.item(r) != nil {
				// The client is gone: start nothing more. Outstanding operations finish on
				// their own; their results land in the buffered channel.
				return nil
			}
		case <-n.stop:
			w.fail(ErrNodeStopping)
			return nil
		}
	}
	sum.Seconds = time.Since(began).Seconds()
	if sum.Seconds > 0 {
		sum.PerSecond = float64(sum.OK) / sum.Seconds
	}
	sum.P50Millis, sum.P99Millis, sum.MaxMillis = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 1)
	return sum
}

// percentile is the nearest-rank p-quantile of v (sorted in place); 0 for none.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	i := int(p*float64(len(v))+0.999999) - 1
	return v[max(0, min(i, len(v)-1))]
}

// listHeld streams the live objects of this node's own store.
func (n *Node) listHeld(w *lineWriter) {
	sum := &BulkSummary{}
	began := time.Now()
	var werr error
	err := n.Held(func(h HeldObject) bool {
		sum.Count++
		sum.OK++
		sum.Bytes += h.Size
		werr = w.item(h)
		return werr == nil
	})
	if werr != nil {
		return
	}
	if err != nil {
		w.fail(err)
		return
	}
	sum.Seconds = time.Since(began).Seconds()
	w.final(controlResponse{OK: true, Summary: sum})
}
