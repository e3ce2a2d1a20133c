package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// The garbage collector of a long-running ring process ("node run", "demo").
//
// Go's default (GOGC=100) starts a collection each time the heap doubles its live size. A
// node's live heap is mostly long-lived (routing state, caches, the mail store's folder
// views) while a mail command allocates briefly, so the collector ran every 1.5-2 s under
// 1,000 IMAP operations/s on the demo ring, each time marking for 25-60 ms with a quarter
// of the process's CPU and with assists charged to the goroutines that allocate. On two
// cores that is part of every command's tail (BENCHMARKS.md, "Archive coding that yields,
// and the collector"). A ring process therefore collects at 400 % growth and, so that a
// large live heap cannot grow fivefold unchecked, keeps a soft memory limit (a quarter of
// the memory it may use: the machine's, or its cgroup's limit when lower; at least 512 MiB)
// past which the collector works harder. Either stays the operator's choice: GOGC or
// GOMEMLIMIT in the environment leaves that one untouched (GOGC=off alone still gets the
// soft limit, as Go's documentation suggests for that setting).

const (
	ringGCPercent = 400
	minSoftLimit  = 512 << 20
)

// gcSettings returns the collector settings for a ring process, given the environment and
// the memory the process may use in bytes (0: unknown): the GC percent and the soft memory
// limit to set, each -1 when the environment chose it (or, for the limit, the memory is
// unknown).
func gcSettings(getenv func(string) string, memory uint64) (percent int, limit int64) {
	percent, limit = -1, -1
	if getenv("GOGC") == "" {
		percent = ringGCPercent
	}
	if getenv("GOMEMLIMIT") == "" && memory > 0 {
		limit = max(int64(min(memory/4, 1<<62)), minSoftLimit)
	}
	return percent, limit
}

// usableMemory is the machine's memory, or the memory limit of the process's cgroup (v2,
// then v1, as mounted in the process's own namespace) when that is lower; 0 when unknown.
func usableMemory() uint64 {
	var total uint64
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		total = uint64(si.Totalram) * uint64(si.Unit)
	}
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 && (total == 0 || v < total) {
			total = v // "max" (v2) fails to parse: no limit
		}
		break
	}
	return total
}

// tuneGC applies gcSettings to this process and says what it did, for the start-up log. It
// changes the whole process: only the commands' entry points call it, never code that
// tests run in-process.
func tuneGC() string {
	percent, limit := gcSettings(os.Getenv, usableMemory())
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
