package mailstore

import (
	"context"
	"epost/internal/mailbox"
	"epost/internal/post"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"epost/internal/content"
	"epost/internal/transport"
)

// POST's API is callback-based: callbacks run on the network's goroutines (tcp) or inside
// the simulator's event loop (simnet). The mail servers want blocking calls, so every call
// goes through await, which waits for the callback, the context, or a deadline on the
// injected clock.
//
// Under simnet nothing runs unless someone drives the network: Config.Drive is then called
// in a loop while waiting (the test's goroutine is the network's, so no data races). On a
// real network Drive is nil and await blocks on a channel.

// Logs is what a Store needs from the user's POST session; *post.User implements it.
// Callbacks may run synchronously or on another goroutine.
type Logs interface {
	CreateLog(name string, cb func(error))
	OpenLog(name string, cb func(error))
	Append(name string, body []byte, cb func(uint64, error))
	Entries(name string, since uint64) ([][]byte, error)
}

// Contents is the ring's content store; *post.Node implements it.
type Contents interface {
	Put(data []byte, cb func(content.Ref, error))
	Get(ref content.Ref, cb func([]byte, error))
	// GetForeign reads a part of a message from another ring (post.Node.GetForeign).
	GetForeign(ref content.Ref, cb func([]byte, error))
}

// Sealer is an optional Contents ability (*post.Node has it): Seal returns a payload's
// reference before it is stored, and store stores it (cb hears the outcome). Append then
// writes the message's log entry while its pieces are being stored.
type Sealer interface {
	Seal(data []byte) (ref content.Ref, store func(cb func(error)), err error)
}

// The contents of a user's store are their post.User (Users.open).
var _ Sealer = (*post.User)(nil)

// ErrTimeout: the ring did not answer in time. The operation may still complete later (a
// queued log append is retried by POST), so a client that retries can see it done.
// It is a mailbox.ErrUnavailable, so servers answer with a temporary failure.
var ErrTimeout error = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string { return "mailstore: the ring did not answer in time; try again" }

func (timeoutError) Is(target error) bool { return target == mailbox.ErrUnavailable }

// waiter bundles what await needs.
type waiter struct {
	clock   transport.Clock
	drive   func()
	timeout time.Duration
}

// await starts op, which must call done exactly once (from any goroutine, possibly before op
// returns), and waits for it.
func (w *waiter) await(ctx context.Context, what string, op func(done func())) error {
	ch := make(chan struct{})
	var once sync.Once
	op(func() { once.Do(func() { close(ch) }) })
	return w.wait(ctx, what, ch)
}

func (w *waiter) wait(ctx context.Context, what string, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	default:
	}
	expired := make(chan struct{})
	var once sync.Once
	t := w.clock.AfterFunc(w.timeout, func() { once.Do(func() { close(expired) }) })
	defer t.Stop()
	for {
		if w.drive == nil {
			select {
			case <-ch:
				return nil
			case <-expired:
				return fmt.Errorf("%s: %w", what, ErrTimeout)
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", what, ctx.Err())
			}
		}
		select {
		case <-ch:
			return nil
		case <-expired:
			return fmt.Errorf("%s: %w", what, ErrTimeout)
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		default:
			w.drive()
		}
	}
}

// openLogs opens logs in parallel.
func (w *waiter) openLogs(ctx context.Context, logs Logs, names []string) error {
	var mu sync.Mutex
	var first error
	left := len(names)
	return errors.Join(w.await(ctx, "open folder logs", func(done func()) {
		if left == 0 {
			done()
			return
		}
		for _, name := range names {
			logs.OpenLog(name, func(err error) {
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("open log %s: %w", name, err)
				}
				left--
				last := left == 0
				mu.Unlock()
				if last {
					done()
				}
			})
		}
	}), func() error { mu.Lock(); defer mu.Unlock(); return first }())
}

// RecordedLogs is an optional Logs ability (*post.User has it): AppendRecorded is Append
// acknowledged once the entry's head is recorded on the user's own node (fsync), before
// the ring has it (post.User.AppendRecorded). Flag changes use it; mail never does.
type RecordedLogs interface {
	AppendRecorded(name string, body []byte, cb func(uint64, error))
}

var _ RecordedLogs = (*post.User)(nil)

// appendAll appends bodies to one log, queued together (POST batches them into one head
// write, in this order), and returns their indices once all are durable.
func (w *waiter) appendAll(ctx context.Context, logs Logs, name string, bodies [][]byte) ([]uint64, error) {
	idx, _, err := w.appendEach(ctx, logs.Append, name, bodies)
	return idx, err
}

// appendRecorded is appendAll through AppendRecorded where logs has it: it returns once the
// entries are durable on the user's node (the ring gets them moments later).
func (w *waiter) appendRecorded(ctx context.Context, logs Logs, name string, bodies [][]byte) error {
	app := logs.Append
	if r, ok := logs.(RecordedLogs); ok {
		app = r.AppendRecorded
	}
	_, _, err := w.appendEach(ctx, app, name, bodies)
	return err
}

// appendEach is appendAll that also says, on an error, which bodies are durable all the same
// (filed[i]; idx[i] is then body i's index).
func (w *waiter) appendEach(ctx context.Context, appendFn func(string, []byte, func(uint64, error)), name string, bodies [][]byte) (idx []uint64, filed []bool, err error) {
	idx = make([]uint64, len(bodies))
	filed = make([]bool, len(bodies))
	errs := make([]error, len(bodies))
	var mu sync.Mutex
	left := len(bodies)
	err = w.await(ctx, "append to "+name, func(done func()) {
		if left == 0 {
			done()
			return
		}
		for i, b := range bodies {
			appendFn(name, b, func(at uint64, err error) {
				mu.Lock()
				idx[i], errs[i], filed[i] = at, err, err == nil
				left--
				last := left == 0
				mu.Unlock()
				if last {
					done()
				}
			})
		}
	})
	mu.Lock()
	defer mu.Unlock()
	// Callbacks may still come after a timeout: hand out copies.
	idx, filed = slices.Clone(idx), slices.Clone(filed)
	if err == nil {
		err = errors.Join(errs...)
	}
	return idx, filed, err
}

// putAll stores pieces in the content store in parallel.
func (w *waiter) putAll(ctx context.Context, cs Contents, pieces [][]byte) ([]content.Ref, error) {
	return fanOut(w, ctx, "store message parts", pieces, cs.Put)
}

// getAll fetches ref segments in parallel.
func (w *waiter) getAll(ctx context.Context, cs Contents, segs []segment) ([][]byte, error) {
	return fanOut(w, ctx, "fetch message parts", segs, func(sg segment, cb func([]byte, error)) { sg.get(cs, cb) })
}

// fanOut starts one callback-style call per input at once and waits (under w's deadline) for
// all of them; results keep the inputs' order, and the errors are joined.
func fanOut[In, Out any](w *waiter, ctx context.Context, what string, in []In, call func(In, func(Out, error))) ([]Out, error) {
	out := make([]Out, len(in))
	errs := make([]error, len(in))
	var mu sync.Mutex
	left := len(in)
	err := w.await(ctx, what, func(done func()) {
		if left == 0 {
			done()
			return
		}
		for i, x := range in {
			call(x, func(v Out, err error) {
				mu.Lock()
				out[i], errs[i] = v, err
				left--
				last := left == 0
				mu.Unlock()
				if last {
					done()
				}
			})
		}
	})
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	return out, errors.Join(errs...)
}
