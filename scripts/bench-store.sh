#!/bin/sh
# SQLite against PostgreSQL on one node, same machine, same run: starts a
# PostgreSQL server of its own (initdb into a temporary directory, TCP on
# 127.0.0.1, the server's durable defaults: fsync and synchronous_commit
# on, as in production), then runs scripts/bench-load.sh queue ROUNDS
# times for each store, interleaved (the order alternates by round), with
# reused connections and with a connection per message. Each PostgreSQL
# run gets a new database; each run a new data directory. A table of
# messages/s and CPU per message (in RSA-2048 signatures: hisp's, and
# PostgreSQL's with its backends) ends the output.
#
#   scripts/bench-store.sh [ROUNDS] [MESSAGES] [CONCURRENCY]
#
# Defaults: 3 rounds of 1000 messages of 10240 bytes, 16 clients. As root
# the server runs as the user postgres (PostgreSQL refuses root).
# HISP_BENCH_PG_OPTS adds server options (e.g. "-c synchronous_commit=off");
# HISP_BENCH_PORT is passed on (default: a base picked from the pid).
set -eu

rounds=${1:-3}
messages=${2:-1000}
conc=${3:-16}
root=$(cd "$(dirname "$0")/.." && pwd)

bindir=$(pg_config --bindir 2>/dev/null || true)
if [ ! -x "$bindir/postgres" ]; then
	bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ ! -x "$bindir/postgres" ]; then
	echo "$0: no PostgreSQL server binaries (Debian package postgresql)" >&2
	exit 1
fi

tmp=$(mktemp -d)
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
	chown postgres "$tmp"
	as_pg() { runuser -u postgres -- "$@"; }
fi
pgpid=""
cleanup() {
	if [ -n "$pgpid" ]; then
		kill -INT "$pgpid" 2>/dev/null || true
		while kill -0 "$pgpid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$bindir/initdb" -D "$tmp/data" -U hisp --auth=trust --encoding=UTF8 --locale=C >"$tmp/initdb.log" 2>&1 ||
	{ cat "$tmp/initdb.log" >&2; exit 1; }
# shellcheck disable=SC2086 # HISP_BENCH_PG_OPTS is a list of options
as_pg "$bindir/postgres" -D "$tmp/data" -k "$tmp" -h 127.0.0.1 -p "$port" -c max_connections=100 \
	${HISP_BENCH_PG_OPTS:-} >"$tmp/postgres.log" 2>&1 &
i=0
until pg_isready -q -h 127.0.0.1 -p "$port"; do
	i=$((i + 1))
	if [ $i -gt 300 ]; then
		echo "$0: PostgreSQL did not start:" >&2
		cat "$tmp/postgres.log" >&2
		exit 1
	fi
	sleep 0.1
done
pgpid=$(head -n 1 "$tmp/data/postmaster.pid")
echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (pid $pgpid): fsync $(psql -qAt -h 127.0.0.1 -p "$port" -U hisp -d postgres -c 'SHOW fsync'), synchronous_commit $(psql -qAt -h 127.0.0.1 -p "$port" -U hisp -d postgres -c 'SHOW synchronous_commit')"

# Ports for bench-load.sh: its default base may be another run's.
HISP_BENCH_PORT=${HISP_BENCH_PORT:-$((20000 + ($$ % 2000) * 15))}
export HISP_BENCH_PORT
results=$tmp/results
: >"$results"
run() { # store reuse round
	url="" dbpid=""
	if [ "$1" = postgres ]; then
		db=hisp_bench_$3_$2
		createdb -h 127.0.0.1 -p "$port" -U hisp "$db"
		url="postgres://hisp@127.0.0.1:$port/$db?sslmode=disable"
		dbpid=$pgpid
	fi
	out=$tmp/run.out
	HISP_BENCH_STORE_URL=$url HISP_BENCH_DB_PID=$dbpid HISP_BENCH_ARGS="--reuse=$2" \
		"$root/scripts/bench-load.sh" queue "$messages" 10240 "$conc" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
	rate=$(awk '/^throughput:/ {print $2}' "$out")
	srv=$(sed -n 's/^server CPU: .*= \([0-9.]*\) RSA-2048 signatures.*/\1/p' "$out")
	dbc=$(sed -n 's/^database CPU: .*= \([0-9.]*\) RSA-2048 signatures.*/\1/p' "$out")
	failed=$(awk '/^messages:/ {print $4}' "$out")
	# PostgreSQL sessions of the run's database: the admin commands of the
	# setup, the node's pool and LISTEN, and any the pool closed and opened
	# again.
	sessions=-
	if [ "$1" = postgres ]; then
		sessions=$(psql -qAt -h 127.0.0.1 -p "$port" -U hisp -d postgres -c "SELECT sessions FROM pg_stat_database WHERE datname = '$db'")
	fi
	conns=reused
	[ "$2" = false ] && conns=per-message
	printf '%-5s %-9s %-11s %8s %10s %10s %7s %9s\n' "$3" "$1" "$conns" "$rate" "$srv" "${dbc:--}" "$failed" "$sessions" | tee -a "$results"
}

echo "round store     connections  msgs/s  hisp-sigs    db-sigs  failed  sessions"
r=1
while [ $r -le "$rounds" ]; do
	order="sqlite postgres"
	[ $((r % 2)) = 0 ] && order="postgres sqlite"
	for reuse in true false; do
		for store in $order; do
			run "$store" "$reuse" "$r"
		done
	done
	r=$((r + 1))
done
echo
echo "ranges over $rounds rounds ($messages messages of 10240 bytes, $conc clients; CPU per message in RSA-2048 signatures):"
for store in sqlite postgres; do
	for conns in reused per-message; do
		awk -v s="$store" -v c="$conns" '$2 == s && $3 == c {
			n++; r[n] = $4; h[n] = $5; d[n] = $6 }
		END {
			if (!n) exit
			rmin = rmax = r[1]; hmin = hmax = h[1]; dmin = dmax = d[1]
			for (i = 2; i <= n; i++) {
				if (r[i] < rmin) rmin = r[i]; if (r[i] > rmax) rmax = r[i]
				if (h[i] < hmin) hmin = h[i]; if (h[i] > hmax) hmax = h[i]
				if (d[i] < dmin) dmin = d[i]; if (d[i] > dmax) dmax = d[i]
			}
			db = (d[1] == "-") ? "" : sprintf(", PostgreSQL %s-%s", dmin, dmax)
			printf "%-8s %-11s %s-%s msgs/s, hisp %s-%s%s\n", s, c, rmin, rmax, hmin, hmax, db
		}' "$results"
	done
done
