package smtpserver

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fileSubmitter makes each message durable the way a local store does:
// one file written, fsynced, renamed into place and the directory fsynced
// (it reuses DirOutbox for exactly that).
type fileSubmitter struct{ ob *DirOutbox }

func (f fileSubmitter) Submit(_ context.Context, env Envelope, raw []byte) error {
	s, err := f.ob.Stage(env, raw)
	if err != nil {
		return err
	}
	_, err = s.Commit()
	return err
}

type nopSubmitter struct{}

func (nopSubmitter) Submit(context.Context, Envelope, []byte) error { return nil }

var benchMsg = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: benchmark\r\n" +
	"Message-ID: <1@example.org>\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 28) // ~2 KB

// BenchmarkSubmit measures AUTHenticated submissions over loopback with
// go-smtp's client: MAIL, RCPT, DATA of a ~2 KB message per iteration,
// with one connection per client goroutine (GOMAXPROCS × 1 and × 8).
func BenchmarkSubmit(b *testing.B) {
	for _, durable := range []bool{true, false} {
		for _, clients := range []int{1, 8} {
			b.Run(fmt.Sprintf("fsync=%v/conns=%d", durable, clients*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				e := start(b, Config{})
				if durable {
					ob, err := OpenDirOutbox(b.TempDir(), nil)
					if err != nil {
						b.Fatal(err)
					}
					e.srv.cfg.Submitter = fileSubmitter{ob}
				} else {
					e.srv.cfg.Submitter = nopSubmitter{}
				}
				b.SetBytes(int64(len(benchMsg)))
				b.SetParallelism(clients) // clients × GOMAXPROCS goroutines
				start := time.Now()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					c := login(b, e.addr)
					defer c.Close()
					for pb.Next() {
						if err := send(c, []string{"bob@example.org"}, benchMsg); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			})
		}
	}
}
