#!/usr/bin/env bash
# CPU per submitted message of an "epost demo" ring (5 nodes in one process), A/B between
# builds: each binary in turn starts a fresh demo, takes a 20-message warm-up, then N messages
# of SIZE over C connections from scripts/smtpload, and the demo process's user and system
# time over those N (from /proc/PID/stat), its system calls and bytes read and written
# (/proc/PID/io) and minor faults are printed per message. CPU time per message is far less
# sensitive than msgs/s to other jobs on a shared machine; alternating the builds spreads
# what remains over both. Not run by "go test".
#
#   scripts/bench-cpu.sh [-n ROUNDS] [-s SIZE] [-c CONNS] [-m MSGS] EPOST_BINARY...
#   go build -o /tmp/epost.old ./cmd/epost   # (on the old commit)
#   go build -o /tmp/epost.new ./cmd/epost
#   scripts/bench-cpu.sh -n 2 -s 50k -c 4 -m 500 /tmp/epost.old /tmp/epost.new
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=2 size=50k conns=4 msgs=500
while getopts "n:s:c:m:" o; do
	case $o in
	n) rounds=$OPTARG ;;
	s) size=$OPTARG ;;
	c) conns=$OPTARG ;;
	m) msgs=$OPTARG ;;
	*) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "bench-cpu: name at least one epost binary" >&2; exit 2; }

work=$(mktemp -d /var/tmp/bench-cpu.XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
go build -o "$work/smtpload" ./scripts/smtpload

stat() { awk '{print $14, $15, $10}' "/proc/$1/stat"; }
io() { awk '/^syscr/{r=$2} /^syscw/{w=$2} /^rchar/{rc=$2} /^wchar/{wc=$2} END{print r+w, rc, wc}' "/proc/$1/io"; }

for round in $(seq "$rounds"); do
	for bin in "$@"; do
		d=$work/demo
		rm -rf "$d"
		"$bin" demo --dir "$d" --seed 1 >"$work/demo.out" 2>&1 &
		pid=$!
		for _ in $(seq 1800); do
			[ -f "$d/demo.json" ] && break
			kill -0 "$pid" 2>/dev/null || { echo "bench-cpu: $bin demo exited:" >&2; tail "$work/demo.out" >&2; exit 1; }
			sleep 0.1
		done
		"$work/smtpload" -demo "$d/demo.json" -starttls=true -n 20 -c 1 -size 2k >/dev/null
		sleep 2
		read -r u0 s0 f0 < <(stat "$pid")
		read -r c0 r0 w0 < <(io "$pid")
		line=$("$work/smtpload" -demo "$d/demo.json" -starttls=true -n "$msgs" -c "$conns" -size "$size")
		read -r u1 s1 f1 < <(stat "$pid")
		read -r c1 r1 w1 < <(io "$pid")
		hz=$(getconf CLK_TCK)
		echo "$line" | awk -v b="$(basename "$bin")" -v r="$round" -v n="$msgs" -v hz="$hz" \
			-v u=$((u1 - u0)) -v s=$((s1 - s0)) -v f=$((f1 - f0)) -v c=$((c1 - c0)) -v rc=$((r1 - r0)) -v wc=$((w1 - w0)) \
			-v load="$(cut -d' ' -f1 /proc/loadavg)" '{
			for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			printf "%-16s round %d: cpu %.2f ms/msg (user %.2f, sys %.2f)  %s msgs/s  p50/p99 %s/%s ms  syscalls %d  read %d KB  written %d KB  minflt %d per msg  load %s\n",
				b, r, 1000 * (u + s) / hz / n, 1000 * u / hz / n, 1000 * s / hz / n, v["msgs_per_s"], v["p50_ms"], v["p99_ms"],
				c / n, rc / n / 1000, wc / n / 1000, f / n, load }'
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		pid=""
	done
done
