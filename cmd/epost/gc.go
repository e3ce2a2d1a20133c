package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"
)

// The garbage collector of a long-running ring process ("node run", "demo").
//
// Go's default (GOGC=100) starts a collection each time the heap doubles its live size. A
// node's live heap is mostly long-lived (routing state, caches, the mail store's folder
// views) while a mail command allocates briefly, so the collector ran every 1.5-2 s under
// 1,000 IMAP operations/s on the demo ring, each time marking for 25-60 ms with a quarter
// of the process's CPU and with assists charged to the goroutines that allocate. On two
// cores that is where a share of every command's tail went (BENCHMARKS.md, "The collector").
// A ring process therefore collects at 400 % growth, and, so that a large live heap cannot
// grow fivefold unchecked, keeps a soft memory limit (a quarter of the machine's memory,
// at least 512 MiB) past which the collector works harder. Either stays the operator's
// choice: GOGC or GOMEMLIMIT in the environment leaves it untouched.

const (
	ringGCPercent = 400
	minSoftLimit  = 512 << 20
)

// gcSettings returns the collector settings for a ring process, given the environment and
// the machine's memory in bytes (0: unknown): the GC percent and the soft memory limit to
// set, each -1 when the environment chose it (or, for the limit, the memory is unknown).
func gcSettings(getenv func(string) string, totalRAM uint64) (percent int, limit int64) {
	percent, limit = -1, -1
	if getenv("GOGC") == "" {
		percent = ringGCPercent
	}
	if getenv("GOMEMLIMIT") == "" && totalRAM > 0 {
		limit = max(int64(totalRAM/4), minSoftLimit)
	}
	return percent, limit
}

// tuneGC applies gcSettings to this process and says what it did, for the start-up log.
func tuneGC() string {
	var total uint64
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		total = uint64(si.Totalram) * uint64(si.Unit)
	}
	percent, limit := gcSettings(os.Getenv, total)
	gogc, memlimit := "GOGC from the environment", "GOMEMLIMIT from the environment"
	if percent >= 0 {
		debug.SetGCPercent(percent)
		gogc = "GOGC=" + strconv.Itoa(percent)
	}
	if limit >= 0 {
		debug.SetMemoryLimit(limit)
		memlimit = fmt.Sprintf("soft memory limit %d MiB", limit>>20)
	} else if os.Getenv("GOMEMLIMIT") == "" {
		memlimit = "no soft memory limit (the machine's memory is unknown)"
	}
	return gogc + ", " + memlimit
}
