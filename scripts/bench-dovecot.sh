#!/usr/bin/env bash
# IMAP, ePOST side by side with Dovecot (issue 15's acceptance benchmark).
#
#   scripts/bench-dovecot.sh            # 30 s mixed load at 5 and 20 clients, bulk APPEND of 10,000
#   scripts/bench-dovecot.sh --quick    # 5 s runs, bulk of 300: a short check that everything works
#
# Options: --duration D (each mixed run, default 30s), --clients "5 20", --prefill N (messages in
# the shared INBOX before the clock starts, default 500), --per-client "20" (client counts also
# run with a folder per client, each topped up to --prefill-per-client N, default 200; "" for
# none), --bulk N (default 10000; 0: no bulk rows), --multi "K..." (the bulk also as MULTIAPPEND commands of K
# messages each, RFC 3502, as a migration tool sends them; default "100", "" for none), --dir DIR (work directory, default a new one under /var/tmp,
# removed at exit unless --keep), --keep, --seed N (the demo ring's seed, default 1),
# --cpuprofile FILE (passed to epost demo), --rate R (every mixed row offered R operations of the mix per
# second in all, open loop, instead of each client sending as fast as it is answered: both
# servers at the same load; rows named ...@R/s; "operations started late" counts operations that
# went out more than one interval after their time, i.e. the server fell behind the load).
#
# It needs root and Debian's Dovecot (apt-get install -y dovecot-imapd; the package's own service
# is neither started nor touched). Dovecot runs as a private instance from DIR/dovecot
# (dovecot -c DIR/dovecot/dovecot.conf): IMAP only, on a free loopback port, no TLS, plaintext
# LOGIN allowed, one user in a passwd-file with a static userdb (uid/gid 65534), mail in Maildir
# under DIR, base_dir and state_dir under DIR, the per-user+IP connection limit raised from 10 to
# 200, and every durability setting at its default (mail_fsync = optimized: fsync of a new
# message file before it is moved into new/ or cur/, and of the uidlist and index updates).
# ePOST is "epost demo --dir DIR/epost" (5 nodes in one process, k = 3; APPEND and COPY
# acknowledged once durable on 2 of 3 replicas, STORE and EXPUNGE once in the user's node's
# fsynced head record, the replicas a moment later), logged in as bob on his node's IMAP (plaintext LOGIN on
# loopback). Both are driven by the same load generator, scripts/imapload, with the same mix,
# client counts, prefill and message size; for each row ePOST and Dovecot run back to back (the
# order alternates from row to row), so both see the same machine. Every run also records the
# server's CPU time (the demo process with all its nodes; Dovecot's master with its children)
# and the whole machine's busy and iowait shares (/proc/stat; the load generator and anything
# else on the machine are in it). Last, a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=30s clients="5 20" perclient="20" prefill=500 prefillpc=200 bulk=10000 multi="100" dir="" keep=0 seed=1 settle=3 cpuprofile="" rate=""
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) duration=5s bulk=300 prefill=200 prefillpc=50 settle=1 ;;
	--duration) duration=$2; shift ;;
	--clients) clients=$2; shift ;;
	--per-client) perclient=$2; shift ;;
	--prefill) prefill=$2; shift ;;
	--prefill-per-client) prefillpc=$2; shift ;;
	--bulk) bulk=$2; shift ;;
	--multi) multi=$2; shift ;;
	--dir) dir=$2; shift ;;
	--keep) keep=1 ;;
	--seed) seed=$2; shift ;;
	--cpuprofile) cpuprofile=$2; shift ;;
	--rate) rate=$2; shift ;;
	-h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench-dovecot: unknown option $1 (--help lists them)" >&2; exit 2 ;;
	esac
	shift
done
if [ "$(id -u)" != 0 ]; then
	echo "bench-dovecot: run as root (Dovecot's master starts as root)" >&2
	exit 1
fi
if ! command -v dovecot >/dev/null; then
	echo "bench-dovecot: Dovecot is not installed: DEBIAN_FRONTEND=noninteractive apt-get install -y dovecot-imapd" >&2
	exit 1
fi
case "$(dovecot --version)" in
2.3.*) cleartext="disable_plaintext_auth = no" ;;
*) cleartext="auth_allow_cleartext = yes" ;;
esac
case "$(dovecot --version)" in 2.3.* | 2.2.*) ;; *)
	echo "bench-dovecot: written for Dovecot 2.3 (this is $(dovecot --version)); 2.4 renamed settings and may refuse this config" >&2 ;;
esac

if [ -z "$dir" ]; then
	dir=$(mktemp -d /var/tmp/bench-dovecot.XXXXXX)
else
	mkdir -p "$dir"
fi
dir=$(cd "$dir" && pwd)
chmod 755 "$dir" # Dovecot's imap processes run as uid 65534 and must reach their Maildir
dv=$dir/dovecot
demo_pid=""
cleanup() {
	set +e
	if [ -f "$dv/run/master.pid" ]; then
		kill "$(cat "$dv/run/master.pid")" 2>/dev/null
		for _ in $(seq 50); do [ -f "$dv/run/master.pid" ] || break; sleep 0.1; done
	fi
	if [ -n "$demo_pid" ]; then
		kill "$demo_pid" 2>/dev/null
		wait "$demo_pid" 2>/dev/null
	fi
	if [ "$keep" = 1 ]; then echo "# kept $dir (logs: dovecot/dovecot.log, epost/logs/, epost-demo.out; results.txt, table.md)"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# building epost and imapload into $dir/bin" >&2
go build -o "$dir/bin/epost" ./cmd/epost
go build -o "$dir/bin/imapload" ./scripts/imapload
load=$dir/bin/imapload

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
	done
}
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

# --- Dovecot: a private instance ------------------------------------------------------------
port=$(free_port)
dvpass=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
mkdir -p "$dv/mail"
chown 65534:65534 "$dv/mail"
echo "bob@bench.example:{PLAIN}$dvpass::::::" >"$dv/passwd"
cat >"$dv/dovecot.conf" <<EOF
# Private instance of scripts/bench-dovecot.sh; everything not set here is Dovecot's default.
instance_name = dovecot-bench
base_dir = $dv/run
state_dir = $dv/state
log_path = $dv/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
$cleartext
auth_mechanisms = plain login
mail_location = maildir:$dv/mail/%n
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dv/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$dv/mail/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
protocol imap {
  mail_max_userip_connections = 200
}
EOF
dovecot -c "$dv/dovecot.conf" || { echo "bench-dovecot: Dovecot did not start:" >&2; tail "$dv/dovecot.log" >&2; exit 1; }
wait_port "$port" || { echo "bench-dovecot: Dovecot does not listen on 127.0.0.1:$port" >&2; tail "$dv/dovecot.log" >&2; exit 1; }

# --- ePOST: the demo ring ---------------------------------------------------------------------
demo_args=(demo --dir "$dir/epost" --seed "$seed")
[ -z "$cpuprofile" ] || demo_args+=(--cpuprofile "$cpuprofile")
"$dir/bin/epost" "${demo_args[@]}" >"$dir/epost-demo.out" 2>&1 &
demo_pid=$!
for _ in $(seq 1800); do
	[ -f "$dir/epost/demo.json" ] && break
	kill -0 "$demo_pid" 2>/dev/null || { echo "bench-dovecot: epost demo exited:" >&2; tail "$dir/epost-demo.out" >&2; exit 1; }
	sleep 0.1
done
[ -f "$dir/epost/demo.json" ] || { echo "bench-dovecot: epost demo not ready after 3 minutes" >&2; exit 1; }

epost_load() { "$load" -demo "$dir/epost/demo.json" -label epost "$@"; }
dovecot_load() { "$load" -addr "127.0.0.1:$port" -user bob@bench.example -pass "$dvpass" -label dovecot "$@"; }

cpu_mark() { head -1 /proc/stat; }
cpu_share() {
	echo "$1 $2" | awk '{ for (i = 2; i <= 11; i++) { d = $(i + 11) - $i; t += d; if (i == 5) idle = d; if (i == 6) io = d }
		if (t == 0) t = 1; printf "cpu_busy_pct=%.0f iowait_pct=%.0f", 100 * (t - idle - io) / t, 100 * io / t }'
}
# server_cpu: the demo process (all five nodes), or Dovecot's master with its children (those
# that exited are in the master's cutime/cstime), in clock ticks.
server_cpu() {
	local pids p t=0 v
	if [ "$1" = epost ]; then pids=$demo_pid; else
		p=$(cat "$dv/run/master.pid")
		pids="$p $(pgrep -P "$p" | tr '\n' ' ')"
	fi
	for p in $pids; do
		v=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0)
		t=$((t + v))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

results=$dir/results.txt
: >"$results"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- cmd internal 2>/dev/null || commit="$commit+uncommitted-changes-in-cmd-or-internal"
{
	echo "# scripts/bench-dovecot.sh duration=$duration clients=\"$clients\" per_client=\"$perclient\" prefill=$prefill prefill_per_client=$prefillpc bulk=$bulk multi=\"$multi\""
	echo "# date=$(date -u +%Y-%m-%dT%H:%MZ) commit=$commit $(go env GOVERSION) dovecot=$(dovecot --version | cut -d' ' -f1) cores=$(nproc) load_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
	echo "# dir=$dir on $(df -T "$dir" | awk 'NR == 2 { print $2 }'); dovecot on 127.0.0.1:$port ($(doveconf -c "$dv/dovecot.conf" mail_fsync | tr -d ' ')); epost demo seed $seed"
} | tee -a "$results"

# measure TARGET KIND ARGS...: one imapload run, its RESULT lines tagged with the server's CPU
# time and the machine's shares.
measure() {
	local target=$1 kind=$2 a b sa sb out rc=0
	shift 2
	a=$(cpu_mark) sa=$(server_cpu "$target")
	out=$("${target}_load" "$@" 2>"$dir/imapload.last") || rc=$?
	b=$(cpu_mark) sb=$(server_cpu "$target")
	echo "$out" | grep -v '^RESULT' >&2 || true
	local extra="server_cpu_s=$(awk -v t=$((sb - sa)) -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }') $(cpu_share "$a" "$b") row=$kind exit=$rc"
	echo "$out" | grep '^RESULT' | sed "s|\$| $extra|" | tee -a "$results" >/dev/null
	if [ "$rc" != 0 ]; then echo "# $target $kind: imapload exited $rc (see $dir/imapload.err)" | tee -a "$results" >&2; fi
	cat "$dir/imapload.last" >&2
	cat "$dir/imapload.last" >>"$dir/imapload.err"
	sleep "$settle"
}

echo "# warm-up: 50 messages APPENDed to each, 5 s of the mix (not counted)" >&2
epost_load -bulk 50 >/dev/null 2>&1 || true
dovecot_load -bulk 50 >/dev/null 2>&1 || true
epost_load -c 5 -duration 5s -prefill "$prefill" >/dev/null 2>>"$dir/imapload.err" || true
dovecot_load -c 5 -duration 5s -prefill "$prefill" >/dev/null 2>>"$dir/imapload.err" || true

order="epost dovecot"
flip() { if [ "$order" = "epost dovecot" ]; then order="dovecot epost"; else order="epost dovecot"; fi; }
# With --rate, every mixed row is offered that many commands per second (open loop), so both
# servers are compared at the same load; the rows are named ...@RATE/s.
rateargs=() ratetag=""
if [ -n "$rate" ]; then rateargs=(-rate "$rate") ratetag="@$rate/s"; fi
for c in $clients; do
	for t in $order; do
		echo "# $t: shared INBOX, $c clients, $duration ${rate:+at $rate commands/s}" >&2
		measure "$t" "shared-$c$ratetag" -c "$c" -duration "$duration" -prefill "$prefill" "${rateargs[@]}"
	done
	flip
done
for c in $perclient; do
	for t in $order; do
		echo "# $t: a folder per client, $c clients, $duration ${rate:+at $rate commands/s}" >&2
		measure "$t" "perclient-$c$ratetag" -c "$c" -duration "$duration" -folders per-client -prefill "$prefillpc" "${rateargs[@]}"
	done
	flip
done
[ "$bulk" -gt 0 ] || multi="" # --bulk 0: no bulk rows (imapload would run its mixed load)
for t in $order; do
	[ "$bulk" -gt 0 ] || break
	echo "# $t: bulk APPEND of $bulk messages on one connection" >&2
	measure "$t" "bulk" -bulk "$bulk"
done
flip
for k in $multi; do
	for t in $order; do
		echo "# $t: bulk APPEND of $bulk messages on one connection, $k per MULTIAPPEND command" >&2
		measure "$t" "bulk-multi$k" -bulk "$bulk" -multi "$k"
	done
	flip
done
echo "# load_after=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" | tee -a "$results"

# --- The table ------------------------------------------------------------------------------
echo
awk '
function kv(line, key,   n, i, a, p) {
	n = split(line, a, " ")
	for (i = 1; i <= n; i++) { split(a[i], p, "="); if (p[1] == key) return p[2] }
	return ""
}
/^RESULT / && / kind=mix / {
	t = kv($0, "target"); r = kv($0, "row"); c = kv($0, "cmd")
	if (!(r in seenr)) { seenr[r] = 1; rows[++nr] = r }
	if (c == "ALL") {
		rate[t, r] = kv($0, "cmds_per_s"); errs[t, r] = kv($0, "errors"); mean[t, r] = kv($0, "mean_ms"); behind[t, r] = kv($0, "behind")
		scpu[t, r] = kv($0, "server_cpu_s"); mach[t, r] = kv($0, "cpu_busy_pct") "/" kv($0, "iowait_pct")
		next
	}
	if (!(c in seenc)) { seenc[c] = 1; cmds[++nc] = c }
	p50[t, r, c] = sprintf("%.1f", kv($0, "p50_ms")); p99[t, r, c] = sprintf("%.1f", kv($0, "p99_ms")); n[t, r, c] = kv($0, "n"); e[t, r, c] = kv($0, "errors")
}
/^RESULT / && / cmd=BULK / {
	t = kv($0, "target"); r = kv($0, "row")
	if (!(r in seenb)) { seenb[r] = 1; brows[++nb] = r }
	bulk[t, r] = sprintf("%s msgs in %s s = **%s msgs/s**, %s MB/s (errors %s)", kv($0, "msgs"), kv($0, "total_s"), kv($0, "msgs_per_s"), kv($0, "mb_per_s"), kv($0, "errors"))
}
/^RESULT / && / kind=bulk / && / cmd=(APPEND|MULTIAPPEND) / {
	t = kv($0, "target"); r = kv($0, "row"); bl[t, r] = kv($0, "p50_ms") " / " kv($0, "p99_ms")
}
function isread(c) { return c ~ /^(FETCH|SEARCH|NOOP)/ }
END {
	print "| load | ePOST commands/s | Dovecot commands/s | mean ms per command ePOST / Dovecot | operations started late ePOST / Dovecot | server CPU s ePOST / Dovecot | machine busy/iowait % ePOST run, Dovecot run | errors ePOST / Dovecot |"
	print "|---|---|---|---|---|---|---|---|"
	for (i = 1; i <= nr; i++) {
		r = rows[i]
		printf "| %s | %s | %s | %s / %s | %s / %s | %s / %s | %s, %s | %s / %s |\n", r, rate["epost", r], rate["dovecot", r],
			mean["epost", r], mean["dovecot", r], r ~ /@/ ? behind["epost", r] : "-", r ~ /@/ ? behind["dovecot", r] : "-",
			scpu["epost", r], scpu["dovecot", r], mach["epost", r], mach["dovecot", r], errs["epost", r], errs["dovecot", r]
	}
	print ""
	printf "| command (p50 / p99 ms) |"
	for (i = 1; i <= nr; i++) printf " %s ePOST | %s Dovecot | ePOST / Dovecot p50 |", rows[i], rows[i]
	print ""
	printf "|---|"
	for (i = 1; i <= nr; i++) printf "---|---|---|"
	print ""
	for (j = 1; j <= nc; j++) {
		c = cmds[j]
		printf "| %s (%s) |", c, isread(c) ? "read" : "write"
		for (i = 1; i <= nr; i++) {
			r = rows[i]
			ratio = p50["dovecot", r, c] > 0 ? sprintf("%.1f×", p50["epost", r, c] / p50["dovecot", r, c]) : "-"
			ee = e["epost", r, c] > 0 ? sprintf(" (%s err)", e["epost", r, c]) : ""
			ed = e["dovecot", r, c] > 0 ? sprintf(" (%s err)", e["dovecot", r, c]) : ""
			printf " %s / %s%s | %s / %s%s | %s |", p50["epost", r, c], p99["epost", r, c], ee, p50["dovecot", r, c], p99["dovecot", r, c], ed, ratio
		}
		print ""
	}
	print ""
	print "| bulk APPEND, one connection | ePOST | Dovecot |"
	print "|---|---|---|"
	for (i = 1; i <= nb; i++) {
		r = brows[i]
		printf "| %s total | %s | %s |\n", r, bulk["epost", r], bulk["dovecot", r]
		printf "| %s command p50 / p99 ms | %s | %s |\n", r, bl["epost", r], bl["dovecot", r]
	}
}' "$results" | tee "$dir/table.md"
