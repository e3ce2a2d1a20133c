#!/bin/sh
# Mail-path measurements on "epost demo" rings (docs/bench-mail.md): SMTP 250 to IMAP IDLE
# wake-up, submissions per second (every 250 after fsynced replicas), PAST objects and
# bytes stored per delivered message, and fsyncs and bytes written per message and per layer
# (issue 12). Each run prints phase=... summary lines and layer=... lines.
#
#   scripts/bench-mail.sh              # the 5-node demo ring and an 8-node ring
#   NODES=8 MSGS=200 scripts/bench-mail.sh
#   NODES=5 MSGS=100 CONNS=16 PER_CONN=25 PRELOAD=2000 scripts/bench-mail.sh   # then a big INBOX
set -eu
cd "$(dirname "$0")/.."
run() {
	echo "# nodes=$1 latency_msgs=$2 connections=$3 per_connection=$4"
	EPOST_BENCH_MAIL=1 EPOST_BENCH_NODES=$1 EPOST_BENCH_MSGS=$2 EPOST_BENCH_CONNS=$3 EPOST_BENCH_PER_CONN=$4 \
		EPOST_BENCH_PRELOAD=${PRELOAD:-0} \
		go test -count=1 -run '^TestBenchMail$' -v -timeout 30m ./test/demo | grep '^phase=\|^layer='
}
if [ -n "${NODES:-}" ]; then
	run "$NODES" "${MSGS:-100}" "${CONNS:-4}" "${PER_CONN:-50}"
	exit 0
fi
run 5 200 4 100
run 8 200 4 100
run 8 50 16 50
