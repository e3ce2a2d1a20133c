package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"epost/internal/daemon"
	"epost/internal/past"
)

// "epost object": PAST objects through a running node's control socket, for operators and
// tests. The node does the work; these commands only move bytes and print results.

func init() {
	register("object put", "store a file as a content-hash object in the ring; prints its key", runObjectPut)
	register("object get", "fetch an object from the ring by key and check it", runObjectGet)
	register("object bulk-put", "insert N random objects (tests, benchmarks); one line per acknowledged key", runObjectBulkPut)
	register("object bulk-get", "look up the keys read from a file or stdin (tests, benchmarks)", runObjectBulkGet)
	register("object held", "list the objects this node's own store holds (no network)", runObjectHeld)
}

// parseWithArgs parses flags that may come before or after positional arguments, which the
// flag package alone does not allow ("object get KEY --dir D" as well as "--dir D KEY").
func parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// helpOK turns -h into a clean exit (the usage was printed).
func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func runObjectPut(args []string) error { return objectPut(args, os.Stdin, os.Stdout) }

func objectPut(args []string, stdin io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("object put", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	file := fs.String("file", "", "file to store (\"-\" or none: standard input)")
	lease := fs.Duration("lease", 30*24*time.Hour, "how long the ring keeps the object unless refreshed")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the node's answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost object put --dir NODEDIR [--file F | -]\n\n"+
			"Stores the bytes as a content-hash object (key = SHA-256 of the bytes) on the ring's k\n"+
			"replicas and prints the key. Exits 0 only when a majority of the replicas acknowledged\n"+
			"after writing it to disk.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseWithArgs(fs, args)
	if err != nil {
		return helpOK(err)
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	switch {
	case len(pos) == 1 && pos[0] == "-" && *file == "":
		*file = "-"
	case len(pos) > 0:
		return fmt.Errorf("unexpected arguments %q (use --file F, or - for standard input)", pos)
	}
	var r io.Reader = stdin
	if *file != "" && *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, past.MaxObjectSize+1))
	if err != nil {
		return fmt.Errorf("read object: %w", err)
	}
	if len(data) > past.MaxObjectSize {
		return fmt.Errorf("the object is larger than PAST's limit of %d bytes: split it into pieces", past.MaxObjectSize)
	}
	resp, err := daemon.Call(*dir, &daemon.ControlRequest{Op: "object_put", Data: data, LeaseSeconds: int64(lease.Seconds())}, *timeout, nil)
	if err != nil {
		return err
	}
	if resp.Object == nil {
		return errors.New("the node's answer has no key")
	}
	fmt.Fprintln(out, resp.Object.Key)
	return nil
}

func runObjectGet(args []string) error { return objectGet(args, os.Stdout) }

func objectGet(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("object get", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	outFile := fs.String("out", "", "write the bytes to this file (default: standard output)")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the node's answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost object get --dir NODEDIR [--out F] KEY\n\n"+
			"Fetches the object from the ring; a content-hash object must hash to its key.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseWithArgs(fs, args)
	if err != nil {
		return helpOK(err)
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("give exactly one KEY (as epost object put printed it)")
	}
	resp, err := daemon.Call(*dir, &daemon.ControlRequest{Op: "object_get", Key: pos[0]}, *timeout, nil)
	if err != nil {
		return err
	}
	o := resp.Object
	if o == nil {
		return errors.New("the node's answer has no object")
	}
	// Check again on this side of the socket: what reaches the user is what was stored.
	sum := sha256.Sum256(o.Data)
	if got := hex.EncodeToString(sum[:]); got != o.SHA256 || (past.Type(o.Type) == past.TypeContent && got != o.Key) {
		return fmt.Errorf("object %s arrived damaged (SHA-256 %s): retry; if it persists, report it", o.Key, got)
	}
	if *outFile == "" {
		_, err = stdout.Write(o.Data)
		return err
	}
	return os.WriteFile(*outFile, o.Data, 0o600)
}

func runObjectBulkPut(args []string) error { return objectBulkPut(args, os.Stdout, os.Stderr) }

func objectBulkPut(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("object bulk-put", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	count := fs.Int("count", 100, "number of objects")
	size := fs.String("size", "1KiB", "bytes per object (suffixes KiB, MiB)")
	conc := fs.Int("concurrency", 16, "inserts in flight")
	seed := fs.Uint64("seed", 0, "seed of the objects' contents (0: random, printed)")
	lease := fs.Duration("lease", 30*24*time.Hour, "lease of each object")
	timeout := fs.Duration("timeout", 2*time.Minute, "longest wait for the next result")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost object bulk-put --dir NODEDIR --count N --size S\n\n"+
			"Inserts N random content-hash objects through the node and prints, as each insert is\n"+
			"acknowledged, a line \"KEY SHA256 ACKS MS\". Failed inserts and a summary go to stderr;\n"+
			"the exit status is 1 if any insert failed.\n\n")
		fs.PrintDefaults()
	}
	if err := ringParse(fs, args); err != nil {
		return helpOK(err)
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	sz, err := parseSize(*size)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	req := &daemon.ControlRequest{Op: "object_bulk_put", Count: *count, Size: sz, Concurrency: *conc, Seed: *seed,
		LeaseSeconds: int64(lease.Seconds())}
	resp, err := daemon.Call(*dir, req, *timeout, func(item json.RawMessage) error {
		var r daemon.ObjectResult
		if err := json.Unmarshal(item, &r); err != nil {
			return fmt.Errorf("bad result line from the node: %w", err)
		}
		if r.Error != "" {
			fmt.Fprintf(stderr, "failed %s: %s\n", r.Key, r.Error)
			return nil
		}
		// Flushed per line: a test reading the output must see every acknowledged key even if
		// this process or the node dies right after.
		fmt.Fprintf(bw, "%s %s %d %.3f\n", r.Key, r.SHA256, r.Acked, r.Millis)
		return bw.Flush()
	})
	if err != nil {
		return err
	}
	return printSummary(stderr, "bulk-put", resp.Summary)
}

func runObjectBulkGet(args []string) error {
	return objectBulkGet(args, os.Stdin, os.Stdout, os.Stderr)
}

func objectBulkGet(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("object bulk-get", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	keysFile := fs.String("keys", "-", "file with one key per line, first field (\"-\": standard input)")
	conc := fs.Int("concurrency", 16, "lookups in flight")
	timeout := fs.Duration("timeout", 2*time.Minute, "longest wait for the next result")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost object bulk-get --dir NODEDIR [--keys FILE]\n\n"+
			"Looks up every key (the first field of each line, as bulk-put prints them) and prints\n"+
			"\"KEY SHA256 SIZE MS\" per object found. Failures and a summary go to stderr; the exit\n"+
			"status is 1 if any lookup failed.\n\n")
		fs.PrintDefaults()
	}
	if err := ringParse(fs, args); err != nil {
		return helpOK(err)
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	r := stdin
	if *keysFile != "-" {
		f, err := os.Open(*keysFile)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var keys []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			keys = append(keys, f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	var damaged int
	resp, err := daemon.Call(*dir, &daemon.ControlRequest{Op: "object_bulk_get", Keys: keys, Concurrency: *conc}, *timeout,
		func(item json.RawMessage) error {
			var r daemon.ObjectResult
			if err := json.Unmarshal(item, &r); err != nil {
				return fmt.Errorf("bad result line from the node: %w", err)
			}
			if r.Error != "" {
				fmt.Fprintf(stderr, "failed %s: %s\n", r.Key, r.Error)
				return nil
			}
			if past.Type(r.Type) == past.TypeContent && r.SHA256 != r.Key {
				damaged++
				fmt.Fprintf(stderr, "failed %s: content hashes to %s\n", r.Key, r.SHA256)
				return nil
			}
			fmt.Fprintf(bw, "%s %s %d %.3f\n", r.Key, r.SHA256, r.Size, r.Millis)
			return nil
		})
	if err != nil {
		return err
	}
	if damaged > 0 {
		return fmt.Errorf("%d objects arrived with the wrong content", damaged)
	}
	return printSummary(stderr, "bulk-get", resp.Summary)
}

// printSummary prints a bulk operation's key=value summary line and fails if any operation did.
func printSummary(w io.Writer, name string, s *daemon.BulkSummary) error {
	if s == nil {
		return errors.New("the node's answer has no summary")
	}
	seed := ""
	if s.Seed != 0 {
		seed = fmt.Sprintf(" seed=%d", s.Seed)
	}
	fmt.Fprintf(w, "%s count=%d ok=%d failed=%d bytes=%d seconds=%.3f per_second=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f concurrency=%d%s\n",
		name, s.Count, s.OK, s.Failed, s.Bytes, s.Seconds, s.PerSecond, s.P50Millis, s.P99Millis, s.MaxMillis, s.Concurrency, seed)
	if s.Failed > 0 {
		return fmt.Errorf("%d of %d operations failed (see the lines above)", s.Failed, s.Count)
	}
	return nil
}

func runObjectHeld(args []string) error { return objectHeld(args, os.Stdout, os.Stderr) }

func objectHeld(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("object held", flag.ContinueOnError)
	dir := fs.String("dir", "", "node directory of the running node")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the node's answer")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: epost object held --dir NODEDIR\n\n"+
			"Lists the live objects in the node's own store, one \"KEY SIZE\" line each, in key order.\n\n")
		fs.PrintDefaults()
	}
	if err := ringParse(fs, args); err != nil {
		return helpOK(err)
	}
	if err := ringRequire([2]string{"dir", *dir}); err != nil {
		return err
	}
	bw := bufio.NewWriter(stdout)
	defer bw.Flush()
	resp, err := daemon.Call(*dir, &daemon.ControlRequest{Op: "object_held"}, *timeout, func(item json.RawMessage) error {
		var h daemon.HeldObject
		if err := json.Unmarshal(item, &h); err != nil {
			return fmt.Errorf("bad listing line from the node: %w", err)
		}
		fmt.Fprintf(bw, "%s %d\n", h.Key, h.Size)
		return nil
	})
	if err != nil {
		return err
	}
	if s := resp.Summary; s != nil {
		fmt.Fprintf(stderr, "held objects=%d bytes=%d\n", s.Count, s.Bytes)
	}
	return nil
}

// parseSize reads a byte count: "1024", "1KiB", "64KiB", "1MiB" (also K, KB, M, MB as powers
// of two: object sizes are always binary here).
func parseSize(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1
	for _, u := range []struct {
		suffix string
		m      int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"K", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	v, err := strconv.Atoi(strings.TrimSpace(t))
	if err != nil || v < 1 {
		return 0, fmt.Errorf("size %q: want a positive byte count such as 1024, 1KiB or 64KiB", s)
	}
	return v * mult, nil
}
