package tcp

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"epost/internal/ids"
	"epost/internal/transport"
)

// BenchmarkThroughput measures one-way throughput between two transports on loopback: frames
// per second and MB/s (payload bytes), with the sender retrying on back-pressure, and the
// process's CPU time per frame (sender and receiver).
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			ca := newTestCA(b, "ring")
			var got atomic.Int64
			done := make(chan struct{}, 1)
			var want atomic.Int64
			mk := func(name string, h transport.Handler) *Transport {
				id := ids.HashString(name)
				tr, err := New(Config{
					ListenAddr: "127.0.0.1:0", ID: id, Certificate: ca.node(b, id),
					VerifyPeer: ca.verify, Handler: h, Logger: slog.New(slog.DiscardHandler),
				})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tr.Close() })
				return tr
			}
			recv := mk("receiver", func(_ transport.From, _ []byte) {
				if got.Add(1) == want.Load() {
					done <- struct{}{}
				}
			})
			send := mk("sender", func(transport.From, []byte) {})
			to := ids.HashString("receiver")
			frame := make([]byte, size)

			// Warm up: connection established before timing.
			want.Store(1)
			for send.Send(to, recv.LocalAddr(), frame) != nil {
				time.Sleep(time.Millisecond)
			}
			<-done
			got.Store(0)
			want.Store(int64(b.N))
			b.SetBytes(int64(size))
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				for {
					err := send.Send(to, recv.LocalAddr(), frame)
					if err == nil {
						break
					}
					if !errors.Is(err, transport.ErrBackpressure) {
						b.Fatal(err)
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op") // both ends, TLS included
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
