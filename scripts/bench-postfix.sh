#!/usr/bin/env bash
# SMTP submission, ePOST side by side with Postfix (issue 12's acceptance benchmark).
#
#   scripts/bench-postfix.sh            # 500 messages per run, 2 KB and 50 KB, 1/4/16 connections
#   scripts/bench-postfix.sh --quick    # 60 messages per run, a short check that everything works
#
# Options: --msgs N (messages per run), --sizes "2k 50k", --conns "1 4 16", --dir DIR (work
# directory, default a new one under /var/tmp, removed at exit unless --keep), --keep,
# --deliver discard|maildir (what Postfix does after queueing; default discard), --no-tls
# (neither side uses STARTTLS), --seed N (the demo ring's seed, default 1).
#
# It needs root (Postfix's master starts as root, as under systemd) and Debian's postfix package
# (DEBIAN_FRONTEND=noninteractive apt-get install -y postfix), and jq to read ePOST's status. The machine's own mail setup is
# not touched: Postfix runs as a throwaway instance from DIR/postfix/etc (postfix -c), with its
# own queue and data directories under DIR, listening on a free loopback port only, with
# Postfix's default durability (cleanup fsyncs the queue file before smtpd answers 250). It
# accepts mail for bench.example (any local part) and, by default, discards it once queued
# (the discard transport: queue file written and fsynced, 250 sent, then qmgr hands it to
# discard(8), which drops it), so the figures are submission; --deliver maildir has virtual(8)
# write each message into a Maildir instead. ePOST is "epost demo --dir DIR/epost" (5 nodes in
# one process, k = 3, every 250 after the replicas' fsync), submitting as alice (STARTTLS,
# AUTH PLAIN) to bob, who is online on another node. Postfix gets STARTTLS too (a self-signed
# certificate) but no AUTH (loopback is in mynetworks; Debian's Postfix has no SASL without
# Dovecot or Cyrus). Both are driven by the same load generator, scripts/smtpload, with the
# same sizes, connection counts and message counts; each (size, connections) pair runs ePOST
# then Postfix, back to back, after a warm-up of 20 messages each. Every run prints the
# load generator's key=value line plus the server's CPU time per message (the demo process
# with all its nodes; Postfix's master and its children), counted until the server has done
# the run's work (drain_s after the run: ePOST's Glacier archive has caught up, since archive
# inserts wait for a lull in mail traffic; Postfix's queue is empty), and the whole machine's CPU busy and
# iowait shares during the run (/proc/stat: the load generator and anything else running are
# in it), then a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 msgs=500 sizes="2k 50k" conns="1 4 16" dir="" keep=0 deliver=discard tls=1 seed=1 settle=3 warm=20
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 msgs=60 settle=1 warm=10 ;;
	--msgs) msgs=$2; shift ;;
	--sizes) sizes=$2; shift ;;
	--conns) conns=$2; shift ;;
	--dir) dir=$2; shift ;;
	--keep) keep=1 ;;
	--deliver) deliver=$2; shift ;;
	--no-tls) tls=0 ;;
	--seed) seed=$2; shift ;;
	-h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench-postfix: unknown option $1 (--help lists them)" >&2; exit 2 ;;
	esac
	shift
done
case "$deliver" in discard | maildir) ;; *) echo "bench-postfix: --deliver discard or maildir" >&2; exit 2 ;; esac
if [ "$(id -u)" != 0 ]; then
	echo "bench-postfix: run as root (Postfix's master process starts as root)" >&2
	exit 1
fi
if ! command -v postfix >/dev/null || ! command -v postconf >/dev/null; then
	echo "bench-postfix: Postfix is not installed: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix" >&2
	echo "  (then 'systemctl disable --now postfix' if you do not want the machine's own instance)" >&2
	exit 1
fi

if [ -z "$dir" ]; then
	dir=$(mktemp -d /var/tmp/bench-postfix.XXXXXX)
else
	mkdir -p "$dir"
fi
dir=$(cd "$dir" && pwd)
chmod 755 "$dir" # Postfix's daemons run as the postfix user and must reach their queue
pf=$dir/postfix conf=$dir/postfix/etc
demo_pid=""
cleanup() {
	set +e
	if [ -f "$conf/main.cf" ]; then postfix -c "$conf" stop >/dev/null 2>&1; fi
	if [ -n "$demo_pid" ]; then
		if [ "$keep" = 1 ] && [ -x "$dir/bin/epost" ]; then
			# The nodes' counters (PAST retries, queue and transport drops, disk) die with
			# the demo: keep them.
			for nd in "$dir"/epost/node*; do
				[ -d "$nd" ] && "$dir/bin/epost" status --dir "$nd" --json >"$nd.status.json" 2>/dev/null
			done
		fi
		kill "$demo_pid" 2>/dev/null
		wait "$demo_pid" 2>/dev/null
	fi
	if [ "$keep" = 1 ]; then echo "# kept $dir (logs: postfix/maillog, epost/logs/, epost-demo.out; epost/node*.status.json; results.txt)"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "# building epost and smtpload into $dir/bin" >&2
go build -o "$dir/bin/epost" ./cmd/epost
go build -o "$dir/bin/smtpload" ./scripts/smtpload
load=$dir/bin/smtpload

# A loopback port nothing answers on (the race until Postfix binds it is harmless here).
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

# --- Postfix: a throwaway instance --------------------------------------------------------
port=$(free_port)
mkdir -p "$conf" "$pf/queue" "$pf/data"
chown postfix "$pf/data"
cp /usr/share/postfix/master.cf.dist "$conf/master.cf" 2>/dev/null || cp /etc/postfix/master.cf "$conf/master.cf"
cat >"$conf/main.cf" <<EOF
# Throwaway instance of scripts/bench-postfix.sh; everything else is Postfix's default.
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
maillog_file = $pf/maillog
syslog_name = postfix-bench
myhostname = postfix-bench.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
# bench.example: every local part exists.
virtual_mailbox_domains = bench.example
virtual_mailbox_maps = static:bench/
EOF
if [ "$deliver" = discard ]; then
	echo "virtual_transport = discard:queued and dropped by scripts/bench-postfix.sh" >>"$conf/main.cf"
else
	mkdir -p "$pf/mail"
	chown 65534:65534 "$pf/mail"
	cat >>"$conf/main.cf" <<EOF
virtual_transport = virtual
virtual_mailbox_base = $pf/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
EOF
fi
if [ "$tls" = 1 ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=postfix-bench.localhost \
		-keyout "$conf/tls.key" -out "$conf/tls.crt" 2>/dev/null
	cat >>"$conf/main.cf" <<EOF
smtpd_tls_cert_file = $conf/tls.crt
smtpd_tls_key_file = $conf/tls.key
smtpd_tls_security_level = may
EOF
fi
# No chroot (the instance has no chroot tree), and smtpd on our port instead of port 25.
postconf -c "$conf" -F '*/*/chroot = n'
postconf -c "$conf" -MX smtp/inet
postconf -c "$conf" -Me "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - smtpd"
postfix -c "$conf" start >/dev/null 2>&1 || { echo "bench-postfix: Postfix did not start:" >&2; tail "$pf/maillog" >&2; exit 1; }
wait_port "$port" || { echo "bench-postfix: Postfix does not listen on 127.0.0.1:$port" >&2; tail "$pf/maillog" >&2; exit 1; }

# --- ePOST: the demo ring -----------------------------------------------------------------
"$dir/bin/epost" demo --dir "$dir/epost" --seed "$seed" >"$dir/epost-demo.out" 2>&1 &
demo_pid=$!
for _ in $(seq 1800); do
	[ -f "$dir/epost/demo.json" ] && break
	kill -0 "$demo_pid" 2>/dev/null || { echo "bench-postfix: epost demo exited:" >&2; tail "$dir/epost-demo.out" >&2; exit 1; }
	sleep 0.1
done
[ -f "$dir/epost/demo.json" ] || { echo "bench-postfix: epost demo not ready after 3 minutes" >&2; exit 1; }

tlsflag=-starttls=true
[ "$tls" = 1 ] || tlsflag=-starttls=false
epost_load() { "$load" -demo "$dir/epost/demo.json" "$tlsflag" "$@"; }
postfix_load() { "$load" -addr "127.0.0.1:$port" -from load@client.example -to bob@bench.example "$tlsflag" "$@"; }

# cpu_mark prints the aggregate "cpu" line of /proc/stat; cpu_share turns two of them into
# busy and iowait percentages of the whole machine.
cpu_mark() { head -1 /proc/stat; }
cpu_share() {
	echo "$1 $2" | awk '{ for (i = 2; i <= 11; i++) { d = $(i + 11) - $i; t += d; if (i == 5) idle = d; if (i == 6) io = d }
		if (t == 0) t = 1; printf "cpu_busy_pct=%.0f iowait_pct=%.0f", 100 * (t - idle - io) / t, 100 * io / t }'
}

# server_cpu prints a server's CPU time so far in clock ticks: the demo process (all five nodes),
# or Postfix's master with its children (those that exited are in the master's cutime/cstime).
server_cpu() {
	local pids p t=0 v
	if [ "$1" = epost ]; then pids=$demo_pid; else
		p=$(tr -d ' ' <"$pf/queue/pid/master.pid")
		pids="$p $(pgrep -P "$p" | tr '\n' ' ')"
	fi
	for p in $pids; do
		v=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0)
		t=$((t + v))
	done
	echo "$t"
}
hz=$(getconf CLK_TCK)

# drain waits (at most 5 minutes) until a server has finished the work a run gave it and
# prints how long that took in seconds: ePOST's nodes have no archive insert queued or in
# flight (Glacier work waits for a lull in mail traffic, so a burst leaves it to do after the
# run), Postfix's queue is empty. The server CPU per message counts that work too.
drain() {
	local t0 i busy
	t0=$(date +%s.%N)
	for i in $(seq 1500); do
		if [ "$1" = epost ]; then
			busy=0
			for nd in "$dir"/epost/node*/; do
				v=$("$dir/bin/epost" status --dir "$nd" --json 2>/dev/null | jq '.glacier.archive.inserting // 0' 2>/dev/null || echo 0)
				busy=$((busy + v))
			done
		else
			busy=$(postqueue -c "$conf" -j 2>/dev/null | wc -l)
		fi
		[ "$busy" = 0 ] && break
		sleep 0.2
	done
	awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

results=$dir/results.txt
: >"$results"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
{
	echo "# scripts/bench-postfix.sh $([ "$quick" = 1 ] && echo --quick) msgs=$msgs"
	echo "# date=$(date -u +%Y-%m-%dT%H:%MZ) commit=$commit $(go env GOVERSION) postfix=$(postconf -d -h mail_version) cores=$(nproc) load_before=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
	echo "# dir=$dir on $(df -T "$dir" | awk 'NR == 2 { print $2 }'); postfix on 127.0.0.1:$port, deliver=$deliver, tls=$tls; epost demo seed $seed ($(grep -c '"address"' "$dir/epost/demo.json") users)"
} | tee -a "$results"

echo "# warm-up: $warm messages to each (not counted)" >&2
epost_load -n "$warm" -c 1 -size 2k >/dev/null
postfix_load -n "$warm" -c 1 -size 2k >/dev/null
sleep "$settle"

for size in $sizes; do
	for c in $conns; do
		for target in epost postfix; do
			a=$(cpu_mark) sa=$(server_cpu "$target")
			line=$("${target}_load" -label "$target" -n "$msgs" -c "$c" -size "$size" || true)
			b=$(cpu_mark)
			dr=$(drain "$target")
			sb=$(server_cpu "$target")
			[ -n "$line" ] || line="target=$target size=$size conns=$c msgs=0 errors=$msgs"
			ok=$(echo "$line" | sed -n 's/.* msgs=\([0-9]*\) .*/\1/p')
			scpu=$(awk -v t=$((sb - sa)) -v hz="$hz" -v n="${ok:-0}" 'BEGIN { printf "%.2f", n ? 1000 * t / hz / n : 0 }')
			echo "$line server_cpu_ms_per_msg=$scpu drain_s=$dr $(cpu_share "$a" "$b")" | tee -a "$results"
			sleep "$settle"
		done
	done
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
/^target=/ {
	t = kv($0, "target"); k = kv($0, "size") " " kv($0, "conns")
	if (!(k in seen)) { seen[k] = 1; order[++n] = k }
	rate[t, k] = kv($0, "msgs_per_s"); err[t, k] = kv($0, "errors")
	lat[t, k] = kv($0, "p50_ms") " / " kv($0, "p90_ms") " / " kv($0, "p99_ms")
	p99[t, k] = kv($0, "p99_ms"); cpu[t, k] = kv($0, "cpu_busy_pct") "/" kv($0, "iowait_pct")
	scpu[t, k] = kv($0, "server_cpu_ms_per_msg"); drain[t, k] = kv($0, "drain_s")
}
END {
	print "| size | conns | ePOST msgs/s | Postfix msgs/s | ePOST / Postfix | ePOST p50 / p90 / p99 ms | Postfix p50 / p90 / p99 ms | server CPU ms per msg ePOST / Postfix | s to drain after the run ePOST / Postfix | machine busy/iowait % ePOST run, Postfix run | errors ePOST / Postfix |"
	print "|---|---|---|---|---|---|---|---|---|---|---|"
	half = 1; p99ok = 1; seen4 = 0
	for (i = 1; i <= n; i++) {
		k = order[i]; split(k, sc, " ")
		ratio = rate["postfix", k] > 0 ? rate["epost", k] / rate["postfix", k] : 0
		if (ratio < 0.5) half = 0
		if (sc[2] == 4) { seen4 = 1; if (p99["epost", k] >= 100 || p99["epost", k] == "") p99ok = 0 }
		printf "| %s | %s | %s | %s | %.0f%% | %s | %s | %s / %s | %s / %s | %s, %s | %s / %s |\n", sc[1] == 2048 ? "2 KB" : sc[1] == 51200 ? "50 KB" : sc[1] " B", sc[2],
			rate["epost", k], rate["postfix", k], 100 * ratio, lat["epost", k], lat["postfix", k],
			scpu["epost", k], scpu["postfix", k], drain["epost", k], drain["postfix", k], cpu["epost", k], cpu["postfix", k], err["epost", k], err["postfix", k]
	}
	print ""
	printf "issue 12 acceptance: ePOST at least half of Postfix msgs/s in every row: %s", half ? "yes" : "no"
	if (seen4) printf "; ePOST p99 submit < 100 ms at 4 connections: %s", p99ok ? "yes" : "no"
	print ""
}' "$results" | tee "$dir/table.md"
