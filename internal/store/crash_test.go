package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"epost/internal/ids"
)

// The crash test runs a writer in a child process (this test binary, re-executed with
// -test.run=^TestCrashWriter$), SIGKILLs it at a random moment and checks that the reopened store
// holds every object the child acknowledged, byte for byte, and nothing inconsistent.
//
// The child prints "P KEY" after Put/PutBatch returned for KEY, "D- KEY" before deleting KEY and
// "D KEY" after the delete returned. An object's content is a pure function of its key
// (crashObject), so the parent can check bytes without the child telling them.

const (
	envCrashDir  = "EPOST_STORE_CRASH_DIR"
	envCrashSeed = "EPOST_STORE_CRASH_SEED"
)

// A small CheckpointBytes makes the kills land in checkpoints and replays too.
var crashOpts = Options{TrashGrace: time.Hour, Now: func() time.Time { return t0 }, Logger: quietLog, CheckpointBytes: 512 << 10}

// crashShared are large payloads that many keys share, so dedup and reference counts get
// exercised by the crashes too.
var crashShared = func() [][]byte {
	p := make([][]byte, 3)
	for i := range p {
		p[i] = randBytes(rand.New(rand.NewPCG(uint64(i), 99)), 100<<10+i)
	}
	return p
}()

func crashObject(k ids.Key) Object {
	r := rand.New(rand.NewPCG(binary.BigEndian.Uint64(k.ID[:8]), binary.BigEndian.Uint64(k.ID[8:16])))
	var payload []byte
	switch k.ID[16] % 8 {
	case 0, 1:
		payload = crashShared[int(k.ID[17])%len(crashShared)]
	case 2, 3:
		payload = randBytes(r, DefaultInlineMax+1+r.IntN(300<<10))
	default:
		payload = randBytes(r, r.IntN(4<<10))
	}
	var exp time.Time
	if k.ID[21]%2 == 0 {
		exp = t0.Add(time.Duration(k.ID[21]) * time.Hour)
	}
	return Object{Meta: Meta{Key: k, Type: k.ID[18], Seq: uint64(k.ID[19]), Aux: bytes.Clone(k.ID[20:24]), Expiry: exp}, Payload: payload}
}

// TestCrashWriter is the child's body; it does nothing unless started by TestCrashRecovery.
func TestCrashWriter(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashRecovery")
	}
	var seed uint64
	fmt.Sscan(os.Getenv(envCrashSeed), &seed)
	r := rand.New(rand.NewPCG(seed, 1))
	maxCheckpointGrowth = 1 // checkpoints every 512 KiB, however large the index grows
	s, err := Open(dir, crashOpts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	newKey := func() ids.Key {
		return ids.Key{Ring: []ids.RingID{ringA, ringB}[r.IntN(2)], ID: randID(r)}
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", what, err)
		os.Exit(3)
	}
	var acked []ids.Key
	ack := func(k ids.Key) {
		acked = append(acked, k)
		fmt.Fprintf(os.Stdout, "P %s\n", k.Full())
	}
	// The parent kills us within a second; the deadline only guards against an orphaned child.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		switch op := r.IntN(20); {
		case op < 14:
			k := newKey()
			if err := s.Put(crashObject(k)); err != nil {
				fail("put", err)
			}
			ack(k)
		case op < 17:
			batch := make([]Object, 2+r.IntN(7))
			for i := range batch {
				batch[i] = crashObject(newKey())
			}
			res, err := s.PutBatch(batch, nil)
			if err != nil {
				fail("put batch", err)
			}
			for i, o := range batch {
				if res[i] != nil {
					fail("put batch item", res[i])
				}
				ack(o.Key)
			}
		case op < 18 && len(acked) > 0:
			i := r.IntN(len(acked))
			k := acked[i]
			acked = append(acked[:i], acked[i+1:]...)
			fmt.Fprintf(os.Stdout, "D- %s\n", k.Full())
			if err := s.Delete(k); err != nil {
				fail("delete", err)
			}
			fmt.Fprintf(os.Stdout, "D %s\n", k.Full())
		case op < 19:
			if _, err := s.PurgeTrash(t0.Add(1000 * time.Hour)); err != nil {
				fail("purge", err)
			}
		case len(acked) > 0:
			// Replace an object with itself: the replace path with an unchanged payload.
			if err := s.Put(crashObject(acked[r.IntN(len(acked))])); err != nil {
				fail("re-put", err)
			}
		}
	}
	os.Exit(4)
}

func TestCrashRecovery(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("needs SIGKILL and POSIX file semantics")
	}
	seed := testSeed(t, 10)
	r := rand.New(rand.NewPCG(seed, 0))
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	const (
		live     = iota + 1 // acknowledged put
		deleting            // delete started, maybe committed
		deleted             // delete acknowledged
	)
	state := map[ids.Key]int{}
	var temps, orphans int
	for round := range rounds {
		lines := runCrashChild(t, dir, seed*1000+uint64(round), time.Duration(100+r.IntN(400))*time.Millisecond)
		puts := 0
		for _, l := range lines {
			op, ks, _ := strings.Cut(l, " ")
			if op != "P" && op != "D-" && op != "D" {
				continue // the test framework's own output
			}
			k, err := ids.ParseKey(ks)
			if err != nil {
				t.Fatalf("round %d: child printed %q", round, l)
			}
			switch op {
			case "P":
				state[k] = live
				puts++
			case "D-":
				state[k] = deleting
			case "D":
				state[k] = deleted
			}
		}

		s, err := Open(dir, Options{VerifyPayloads: true, TrashGrace: time.Hour, Logger: quietLog})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		rep := s.Repairs()
		if len(rep.Damaged) != 0 || len(rep.Fixed) != 0 {
			s.Close()
			t.Fatalf("round %d: repair found damage: %+v", round, rep)
		}
		temps += rep.TempFiles
		orphans += rep.Orphans
		checkClean(t, s)
		for k, st := range state {
			has, err := s.Has(k)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case st == live:
				checkObject(t, s, crashObject(k))
			case st == deleted && has:
				t.Fatalf("round %d: %s was deleted (acknowledged) but is live again", round, k)
			case st == deleting && has:
				checkObject(t, s, crashObject(k)) // the delete may not have committed
			}
		}
		s.Close()
		t.Logf("round %d: %d puts acknowledged before the kill; %d keys known; repair removed %d temp files, %d orphans",
			round, puts, len(state), rep.TempFiles, rep.Orphans)
	}
	t.Logf("%d rounds: %d temp files and %d orphan payload files cleaned up in total", rounds, temps, orphans)
}

// runCrashChild runs the writer until it has acknowledged its first put, lets it run for
// after, kills it with SIGKILL and returns the complete lines it printed.
func runCrashChild(t *testing.T, dir string, seed uint64, after time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, fmt.Sprintf("%s=%d", envCrashSeed, seed))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		lines   []string
		started = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		br := bufio.NewReader(out)
		once := sync.OnceFunc(func() { close(started) })
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return // a line cut short by the kill was never acknowledged
			}
			mu.Lock()
			lines = append(lines, strings.TrimSuffix(l, "\n"))
			mu.Unlock()
			once()
		}
	}()
	select {
	case <-started:
	case <-done:
	case <-time.After(15 * time.Second):
	}
	time.Sleep(after)
	cmd.Process.Kill() // SIGKILL: no deferred functions, no flushing, like a power cut for the process
	<-done
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(interface{ Signaled() bool }); !ok || !ws.Signaled() {
		t.Fatalf("child did not die by our signal (%v); stderr:\n%s", werr, stderr.String())
	}
	return lines
}

// checkClean fails unless tmp/ is empty and every payload file is one the index refers to and
// every live object is readable.
func checkClean(t *testing.T, s *Store) {
	t.Helper()
	if es, _ := os.ReadDir(s.tmpDir); len(es) != 0 {
		t.Fatalf("%d temporary files left after Open", len(es))
	}
	want := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPayload).ForEach(func(k, v []byte) error {
			var h Hash
			copy(h[:], k)
			if p, err := decodePayloadEntry(h, v); err == nil && p.loc == inFile {
				want[h.String()] = true
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	files := blobFiles(t, s)
	for _, f := range files {
		if !want[f] {
			t.Fatalf("payload file %s is not referenced by the index", f)
		}
	}
	if len(files) != len(want) {
		t.Fatalf("%d payload files, index expects %d", len(files), len(want))
	}
	var n int64
	for _, ring := range []ids.RingID{ringA, ringB} {
		for m, err := range s.Range(WholeRing(ring)) {
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(m.Key); err != nil {
				t.Fatalf("index entry %s unreadable: %v", m.Key, err)
			}
			n++
		}
	}
	if st := mustStats(t, s); st.Objects != n {
		t.Fatalf("stats count %d objects, Range found %d", st.Objects, n)
	}
}
