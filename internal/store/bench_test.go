package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"epost/internal/ids"
)

var benchSizes = []struct {
	name string
	size int
}{
	{"1KiB", 1 << 10},
	{"256KiB", 256 << 10},
}

// benchObject returns the i-th benchmark object: a fresh key and a payload made distinct by
// stamping i into it, so dedup does not flatter the numbers.
func benchObject(base []byte, i uint64) Object {
	p := make([]byte, len(base))
	copy(p, base)
	binary.BigEndian.PutUint64(p, i)
	var id ids.ID
	binary.BigEndian.PutUint64(id[:], i*0x9e3779b97f4a7c15)
	binary.BigEndian.PutUint64(id[24:], i)
	return Object{Meta: Meta{Key: ids.Key{Ring: ringA, ID: id}}, Payload: p}
}

func BenchmarkPut(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s := openTest(b, "", Options{})
			base := randBytes(rand.New(rand.NewPCG(1, 1)), sz.size)
			b.SetBytes(int64(sz.size))
			var i uint64
			for b.Loop() {
				i++
				if err := s.Put(benchObject(base, i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPutParallel shows what concurrent single Puts achieve: file writes overlap, index
// commits do not.
func BenchmarkPutParallel(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s := openTest(b, "", Options{})
			base := randBytes(rand.New(rand.NewPCG(1, 1)), sz.size)
			b.SetBytes(int64(sz.size))
			var n atomic.Uint64
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Put(benchObject(base, n.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkPutBatch reports per object, committed in batches of 64.
func BenchmarkPutBatch(b *testing.B) {
	const batchSize = 64
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("%s/batch%d", sz.name, batchSize), func(b *testing.B) {
			s := openTest(b, "", Options{})
			base := randBytes(rand.New(rand.NewPCG(1, 1)), sz.size)
			b.SetBytes(int64(sz.size))
			var i uint64
			batch := make([]Object, 0, batchSize)
			flush := func() {
				if _, err := s.PutBatch(batch, nil); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
			for b.Loop() {
				i++
				if batch = append(batch, benchObject(base, i)); len(batch) == batchSize {
					flush()
				}
			}
			flush()
		})
	}
}

func BenchmarkGet(b *testing.B) {
	const objects = 256
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s := openTest(b, "", Options{})
			base := randBytes(rand.New(rand.NewPCG(1, 1)), sz.size)
			batch := make([]Object, objects)
			for i := range batch {
				batch[i] = benchObject(base, uint64(i))
			}
			if _, err := s.PutBatch(batch, nil); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(sz.size))
			i := 0
			for b.Loop() {
				if _, err := s.Get(batch[i%objects].Key); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkApply50K is a PAST replica's write of 50 KB chunks (a 50 KB mail's part), four per
// commit as group commit gathers them under load, with checkpoints every 8 MiB of journal.
// Each chunk is hashed once in the loop, as PAST's validation does. "log" is what PAST does
// now: the hash passed on (Op.Hashed) and the chunk kept in the value log; "index" keeps
// chunks in index.db (before the value log, ValueLogMin < 0); "index-unhashed" also has Apply
// hash every payload again (before Op.Hashed). Wall time is mostly fdatasync; cpu-ns/op
// (user and system time of the process, background checkpoints included) is what the ring
// pays per chunk and replica.
func BenchmarkApply50K(b *testing.B) {
	const perCommit = 4
	for _, v := range []struct {
		name        string
		hashed      bool
		valueLogMin int
	}{{"log", true, 0}, {"index", true, -1}, {"index-unhashed", false, -1}} {
		b.Run(v.name, func(b *testing.B) {
			s := openTest(b, "", Options{ValueLogMin: v.valueLogMin, CheckpointBytes: 8 << 20})
			base := randBytes(rand.New(rand.NewPCG(1, 1)), 50<<10)
			b.SetBytes(50 << 10)
			var i uint64
			ops := make([]Op, 0, perCommit)
			flush := func() {
				if _, err := s.Apply(ops); err != nil {
					b.Fatal(err)
				}
				ops = ops[:0]
			}
			cpu := cpuTime()
			for b.Loop() {
				i++
				o := benchObject(base, i)
				o.Size, o.Hash = int64(len(o.Payload)), sha256.Sum256(o.Payload) // PAST's validation
				if ops = append(ops, Op{Kind: OpPut, Obj: o, Hashed: v.hashed}); len(ops) == perCommit {
					flush()
				}
			}
			flush()
			s.ckpt.Wait() // the background checkpoints are part of the cost
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
