#!/bin/sh
# Load figures of a real `hisp serve`: builds hisp, makes two fresh data
# directories, A (hospital.example: alice, carol) and B (clinic.example:
# bob), each anchoring both local CAs, starts them on loopback and runs
# `hisp bench` against A's submission port with --server-pid.
#
#   scripts/bench-load.sh MODE [MESSAGES] [SIZE] [CONCURRENCY]
#
# MODE  queue   alice → bob@clinic.example; B serves only DNS (bob's
#               certificate) and its CRL, A's route to clinic.example is a
#               closed port: deliveries fail at once and wait an hour for
#               their retry, so the figure is submission to the durable
#               queue (discovery, trust, seal, commit, Sent copy)
#       local   alice → carol@hospital.example: local delivery (open,
#               verify, file) runs in A alongside the submissions
#       remote  alice → bob@clinic.example through B's backbone port: the
#               whole Direct path, both servers on the same machine
#
# Defaults: 2000 messages of 10240 bytes, 16 clients. Ports: from
# HISP_BENCH_PORT (default 41000) up, A on +0..+4, B on +10..+14. With
# HISP_BENCH_LOGS=DIR the servers' logs are kept there. The environment
# reaches the servers (GOMEMLIMIT, GODEBUG=gctrace=1, GOGC...);
# HISP_BENCH_STORE_URL=postgres://... puts A's store in that (empty)
# PostgreSQL database instead of SQLite in its data directory, and
# HISP_BENCH_DB_PID (the postmaster's pid) has hisp bench report the
# database's CPU per message too (scripts/bench-store.sh does both).
# HISP_BENCH_ARGS adds options to hisp bench (--compare-reuse: reused connections, then --reuse=false: a connection,
# STARTTLS and AUTH per message); HISP_BENCH_WRAP is a command put before it
# (HISP_BENCH_WRAP="/usr/bin/time -v": the client's own CPU and memory).
# HISP_BENCH_BIN=FILE runs that hisp binary instead of building one (to
# compare two builds interleaved); HISP_CPUPROFILE=FILE makes the servers
# write CPU profiles (A's is FILE, B's FILE.b) for go tool pprof.
set -eu

mode=${1:-queue}
messages=${2:-2000}
size=${3:-10240}
conc=${4:-16}
base=${HISP_BENCH_PORT:-41000}
case $mode in queue | local | remote) ;; *)
	echo "usage: $0 queue|local|remote [MESSAGES] [SIZE] [CONCURRENCY]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	if [ -n "${HISP_BENCH_LOGS:-}" ]; then
		mkdir -p "$HISP_BENCH_LOGS" && cp "$tmp"/*.log "$HISP_BENCH_LOGS"/ 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

hisp=$tmp/hisp
if [ -n "${HISP_BENCH_BIN:-}" ]; then
	cp "$HISP_BENCH_BIN" "$hisp"
else
	(cd "$root" && go build -o "$hisp" ./cmd/hisp)
fi
echo "bench password 1" >"$tmp/pw"

a=$tmp/a b=$tmp/b
aport() { echo $((base + $1)); }
bport() { echo $((base + 10 + $1)); }
h() { "$hisp" "$@" >/dev/null; }
store_url=${HISP_BENCH_STORE_URL:-}
ha() { HISP_STORE_URL=$store_url "$hisp" "$@" --data "$a" >/dev/null; } # A's store

ha domain add hospital.example
h domain add clinic.example --data "$b"
for u in alice carol; do
	ha address add $u@hospital.example --password-file "$tmp/pw"
	ha cert issue $u@hospital.example --crl-url "http://127.0.0.1:$(aport 4)"
done
h address add bob@clinic.example --password-file "$tmp/pw" --data "$b"
h cert issue bob@clinic.example --crl-url "http://127.0.0.1:$(bport 4)" --data "$b"
HISP_STORE_URL=$store_url "$hisp" cert ca hospital.example --data "$a" >"$tmp/a-ca.pem"
"$hisp" cert ca clinic.example --data "$b" >"$tmp/b-ca.pem"
for ca in a b; do
	ha anchor add hospital.example "$tmp/$ca-ca.pem" --direction both
	h anchor add clinic.example "$tmp/$ca-ca.pem" --direction both --data "$b"
done

route=127.0.0.1:$(bport 0)
retry='retry_first = "1m"'
if [ "$mode" = queue ]; then
	route=127.0.0.1:$(aport 9) # nothing listens there
	retry='retry_first = "1h"'
fi
cat >"$tmp/a.toml" <<EOF
data = "$a"
hostname = "hisp.hospital.example"
[listen]
smtp = "127.0.0.1:$(aport 0)"
submission = "127.0.0.1:$(aport 1)"
imap = "127.0.0.1:$(aport 2)"
dns = "127.0.0.1:$(aport 3)"
admin = "127.0.0.1:$(aport 4)"
[dns]
resolver = "127.0.0.1:$(bport 3)"
[outbound]
$retry
retry_max = "16h"
[outbound.routes]
"clinic.example" = "$route"
[limits]
mailbox_quota = 0 # long runs fill the Sent folder
[store]
url = "$store_url"
EOF
if [ "$mode" = queue ]; then
	b_listen="smtp = \"\"
submission = \"\"
imap = \"\""
else
	b_listen="smtp = \"127.0.0.1:$(bport 0)\"
submission = \"127.0.0.1:$(bport 1)\"
imap = \"127.0.0.1:$(bport 2)\""
fi
cat >"$tmp/b.toml" <<EOF
data = "$b"
hostname = "hisp.clinic.example"
[listen]
$b_listen
dns = "127.0.0.1:$(bport 3)"
admin = "127.0.0.1:$(bport 4)"
[dns]
resolver = "127.0.0.1:$(aport 3)"
[outbound.routes]
"hospital.example" = "127.0.0.1:$(aport 0)"
[limits]
mailbox_quota = 0 # long runs fill the inbox
EOF

serve() { # name
	prof=${HISP_CPUPROFILE:-}
	[ -n "$prof" ] && [ "$1" = b ] && prof=$prof.b
	HISP_CPUPROFILE=$prof "$hisp" serve --config "$tmp/$1.toml" >"$tmp/$1.out" 2>"$tmp/$1.log" &
	pid=$!
	pids="$pids $pid"
	i=0
	until grep -q "hisp ready" "$tmp/$1.out" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
			echo "hisp serve $1 did not start:" >&2
			cat "$tmp/$1.out" "$tmp/$1.log" >&2
			exit 1
		fi
		sleep 0.1
	done
}
serve b
serve a
apid=$pid

to=bob@clinic.example
[ "$mode" = local ] && to=carol@hospital.example
echo "mode $mode: $messages messages of $size bytes, $conc clients, alice@hospital.example -> $to"
${HISP_BENCH_WRAP:-} "$hisp" bench --addr "127.0.0.1:$(aport 1)" --user alice@hospital.example --password-file "$tmp/pw" \
	--to "$to" --concurrency "$conc" --messages "$messages" --size "$size" --server-pid "$apid" \
	${HISP_BENCH_DB_PID:+--db-pid "$HISP_BENCH_DB_PID"} ${HISP_BENCH_ARGS:-}
# The server's CPU time (user + system) for the whole run, setup included.
ticks=$(getconf CLK_TCK)
awk -v t="$ticks" -v n="$messages" '{ s = ($14 + $15) / t; printf "server CPU:      %.1f s (%.2f ms per message)\n", s, 1000 * s / n }' "/proc/$apid/stat"
