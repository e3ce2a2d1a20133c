#!/usr/bin/env bash
# bench-past.sh: PAST benchmarks on an 8-node ring of real epost processes on loopback (TLS).
#
#   scripts/bench-past.sh [throughput|repair|all]
#
# throughput: insert and lookup throughput and latency (p50/p99) for 1 KiB and 64 KiB objects,
#             with 16 operations in flight and with 1 (latency without queueing).
# repair:     insert objects until one node holds REPAIR_HELD (10,000) of them, SIGKILL that
#             node, and time until every acknowledged object is held by k live nodes again
#             (polling "epost object held" on every live node once a second).
#
# Environment: BASE_PORT (default 17400; uses BASE_PORT..BASE_PORT+7), WORK (default a new
# temporary directory, kept for inspection), N1K, N64K (object counts), REPAIR_HELD.
# Results go to stdout as key=value lines; docs/bench-past.md records a run.
set -euo pipefail

mode=${1:-all}
BASE_PORT=${BASE_PORT:-17400}
N1K=${N1K:-5000}
N64K=${N64K:-1000}
REPAIR_HELD=${REPAIR_HELD:-10000}
K=3
WORK=${WORK:-$(mktemp -d /tmp/epost-bench-past.XXXXXX)}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"
bin=$WORK/epost

# The test suite's timers (test/past): failure detection in a few seconds, maintenance soon
# after a leaf-set change. Throughput does not depend on them.
timers=(--tick 50ms --probe-interval 500ms --probe-timeout 150ms --join-timeout 1s
	--bootstrap-backoff 250ms --bootstrap-max-backoff 2s --dial-timeout 2s --keepalive 1s
	--past-tick 100ms --past-request-timeout 1s --past-maintenance-interval 3s
	--past-maintenance-delay 500ms --past-drop-grace 1h)

pids=()
cleanup() {
	for p in "${pids[@]}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

log() { echo "# $*" >&2; }

setup() {
	log "building epost into $WORK"
	(cd "$root" && go build -o "$bin" ./cmd/epost)
	"$bin" ring init --dir "$WORK/ring" --name bench --domain bench.example --leafset 24 >/dev/null
	for i in $(seq 1 8); do
		local args=(node init --ring "$WORK/ring" --dir "$WORK/node$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))")
		[ "$i" -gt 1 ] && args+=(--bootstrap "127.0.0.1:$BASE_PORT")
		"$bin" "${args[@]}" >/dev/null
	done
	for i in $(seq 1 8); do
		start_node "$i"
	done
	wait_ready 8
}

start_node() {
	"$bin" node run --dir "$WORK/node$1" "${timers[@]}" 2>>"$WORK/node$1.log" &
	pids[$1]=$!
}

# wait_ready N: until N nodes report ready with a full leaf set of N-1.
wait_ready() {
	local want=$1 deadline=$((SECONDS + 60))
	while [ $SECONDS -lt $deadline ]; do
		local ok=0
		for i in "${!pids[@]}"; do
			[ -n "${pids[$i]}" ] || continue
			if "$bin" status --dir "$WORK/node$i" --json --timeout 2s 2>/dev/null |
				python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["ready"] and len(s["leaf_set"])=='"$((want - 1))"' else 1)' 2>/dev/null; then
				ok=$((ok + 1))
			fi
		done
		[ "$ok" -eq "$want" ] && return 0
		sleep 0.5
	done
	echo "ring did not converge; see $WORK/node*.log" >&2
	exit 1
}

# summary LABEL FILE: the key=value summary line of a bulk command's stderr.
summary() { echo "$1 $(grep -E '^bulk-(put|get) ' "$2" | tail -1 | cut -d' ' -f2-)"; }

throughput() {
	for spec in "1KiB $N1K" "64KiB $N64K"; do
		set -- $spec
		local size=$1 n=$2
		for conc in 16 1; do
			local cnt=$n
			[ "$conc" -eq 1 ] && cnt=$((n / 10))
			local tag="size=$size concurrency=$conc"
			"$bin" object bulk-put --dir "$WORK/node1" --count "$cnt" --size "$size" --concurrency "$conc" \
				>"$WORK/put-$size-$conc.keys" 2>"$WORK/put-$size-$conc.err" || true
			summary "insert $tag" "$WORK/put-$size-$conc.err"
			# Look the keys up through another node, so that lookups cross the ring.
			"$bin" object bulk-get --dir "$WORK/node5" --keys "$WORK/put-$size-$conc.keys" --concurrency "$conc" \
				>/dev/null 2>"$WORK/get-$size-$conc.err" || true
			summary "lookup $tag" "$WORK/get-$size-$conc.err"
		done
	done
}

# under_replicated KEYS NODE...: how many keys of the file KEYS (first field) are held by fewer
# than K of the given nodes.
under_replicated() {
	local keys=$1
	shift
	local lists=() jobs=()
	for i in "$@"; do
		"$bin" object held --dir "$WORK/node$i" --timeout 30s >"$WORK/held.$i" 2>/dev/null &
		jobs+=($!)
		lists+=("$WORK/held.$i")
	done
	for j in "${jobs[@]}"; do
		wait "$j" || true
	done
	awk -v k=$K 'FNR==NR { want[$1]=1; next } ($1 in want) { c[$1]++ }
		END { n=0; for (x in want) if (c[x] < k) n++; print n }' "$keys" "${lists[@]}"
}

repair() {
	# The victim is node 8 (not the node we insert through); insert until it holds REPAIR_HELD.
	local victim=8 batch=0 held=0
	: >"$WORK/repair.keys"
	local t0=$SECONDS
	while [ "$held" -lt "$REPAIR_HELD" ]; do
		batch=$((batch + 1))
		"$bin" object bulk-put --dir "$WORK/node1" --count 4000 --size 1KiB --concurrency 32 \
			>>"$WORK/repair.keys" 2>"$WORK/repair-put-$batch.err" || true
		held=$("$bin" object held --dir "$WORK/node$victim" 2>/dev/null | wc -l)
		log "batch $batch: $(wc -l <"$WORK/repair.keys") objects acknowledged, node$victim holds $held"
	done
	local total
	total=$(wc -l <"$WORK/repair.keys")
	echo "repair setup objects=$total victim_holds=$held insert_seconds=$((SECONDS - t0))"
	# Let the third replicas of the last inserts land before the clock starts.
	local live=(1 2 3 4 5 6 7)
	local before
	before=$(under_replicated "$WORK/repair.keys" "${live[@]}" $victim)
	log "under-replicated before the kill: $before"
	kill -9 "${pids[$victim]}"
	pids[$victim]=""
	local start
	start=$(date +%s.%N)
	local detected=""
	while :; do
		local now under
		now=$(date +%s.%N)
		if [ -z "$detected" ] && "$bin" status --dir "$WORK/node1" --json 2>/dev/null |
			python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if len(s["leaf_set"])==6 else 1)' 2>/dev/null; then
			detected=$(echo "$now - $start" | bc)
		fi
		under=$(under_replicated "$WORK/repair.keys" "${live[@]}")
		log "t=$(echo "$now - $start" | bc)s under-replicated=$under"
		if [ "$under" -eq 0 ]; then
			local took
			took=$(echo "$(date +%s.%N) - $start" | bc)
			echo "repair objects=$total lost_node_held=$held detected_by_node1_s=${detected:-?} all_at_k_s=$took"
			break
		fi
		if [ "$(echo "$now - $start > 600" | bc)" -eq 1 ]; then
			echo "repair did not complete in 600s: $under objects under-replicated" >&2
			exit 1
		fi
		sleep 1
	done
	# Maintenance traffic of the repair, from the survivors' status.
	for i in "${live[@]}"; do
		"$bin" status --dir "$WORK/node$i" --json | python3 -c 'import json,sys; p=json.load(sys.stdin)["past"]; print("node'"$i"' repaired=%d maintenance_bytes=%d sync_rounds=%d objects=%d" % (p["repaired"], p["maintenance_bytes"], p["sync_rounds"], p["objects"]))'
	done
}

setup
case $mode in
throughput) throughput ;;
repair) repair ;;
all)
	throughput
	repair
	;;
*)
	echo "usage: $0 [throughput|repair|all]" >&2
	exit 2
	;;
esac
log "work directory (logs, keys): $WORK"
