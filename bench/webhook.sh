#!/usr/bin/env bash
#
# bench/webhook.sh -- how fast a webhook sink delivers, and how late.
#
# Not a test: a measurement. It
#   1. starts a throwaway cluster (test/lib/cluster.sh: start_cluster) with
#      fsync on, and a tiny HTTP receiver on 127.0.0.1 (C, compiled here)
#      that answers 200 to every POST and logs, per request, its arrival
#      time and number of changes (and, for the latency run, each seq);
#   2. throughput: fills a change table with rows like a capture worker
#      writes them (an orders row of ~200 bytes of JSON), then, for batch
#      sizes 1, 100 and 1000, creates a sink, rewinds it with
#      replay_sink_from_seq() over N_<size> rows and times them from the
#      rewind's commit to the receiver's last request;
#   3. latency: captures a table under pgbench at LAT_RATE single-row
#      transactions/s for LAT_SECONDS with a sink (batch_size 100) on its
#      change table, then joins the receiver's log with the change rows:
#      source commit -> receiver (end to end), and change row written ->
#      receiver (the sink alone), p50/p99/max;
#   4. prints the figures.
#
# Usage (as root or a sudoer, like test/run.sh):
#   bash bench/webhook.sh
#   N_1000=2000000 LAT_RATE=2000 bash bench/webhook.sh
#
# Environment:
#   N_1=20000 N_100=200000 N_1000=1000000   changes sent per batch size
#   LAT_RATE=1000     transactions/s (one change each) in the latency run
#   LAT_SECONDS=30    length of the latency run
#   SKIP_BUILD=1      default: use the installed extension; SKIP_BUILD=0 builds
#                     and installs it first (make clean all && make install)
#   SKIP_DEPS=1       do not check/install packages
#   KEEP_CLUSTER=1    keep the cluster's data directory afterwards

set -euo pipefail

: "${N_1:=20000}"
: "${N_100:=200000}"
: "${N_1000:=1000000}"
: "${LAT_RATE:=1000}"
: "${LAT_SECONDS:=30}"
: "${SKIP_BUILD:=1}"

# shellcheck source=test/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib/cluster.sh"
cd "$SEQUIN_REPO_TOP"

RECV_PID=""
LOAD_PID=""
WORK_DIR=""
# shellcheck disable=SC2317  # invoked indirectly via trap
cleanup() {
    local rc=$?
    local p
    for p in "$LOAD_PID" "$RECV_PID"; do
        if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    stop_cluster "$rc"
    [[ -n "$WORK_DIR" ]] && rm -rf -- "$WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT

ensure_deps
if [[ "$SKIP_BUILD" != 1 ]]; then
    build_install
fi
pick_run_user

start_cluster bench \
    "fsync = on" \
    "shared_buffers = '1GB'" \
    "max_wal_size = '8GB'" \
    "checkpoint_timeout = '30min'"

WORK_DIR="$(mktemp -d /tmp/sequin_cdc_bench.XXXXXX)"
chown "$RUN_USER" "$WORK_DIR"

psql_bench() {
    as_run_user "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At -d bench "$@"
}

# ---------------------------------------------------------------------------
# The receiver: one connection at a time (a sink keeps one alive), HTTP/1.1
# keep-alive, 200 to everything.  Log lines:
#   R <arrival, µs since the epoch> <changes in the request>
#   S <arrival> <seq>            (one per change, with "seqs" as 3rd argument)
# ---------------------------------------------------------------------------
cat >"$WORK_DIR/recv.c" <<'C'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static char *buf;
static size_t cap = 1 << 20;

int
main(int argc, char **argv)
{
	int			ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t	alen = sizeof(a);
	FILE	   *log = fopen(argv[2], "w");
	int			seqs = argc > 3 && strcmp(argv[3], "seqs") == 0;
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

	signal(SIGPIPE, SIG_IGN);
	buf = malloc(cap);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *) &a, sizeof(a)) != 0 || listen(ls, 16) != 0)
		return 1;
	getsockname(ls, (struct sockaddr *) &a, &alen);
	{
		FILE	   *pf = fopen(argv[1], "w");

		fprintf(pf, "%d\n", ntohs(a.sin_port));
		fclose(pf);
	}
	for (;;)
	{
		int			c = accept(ls, NULL, NULL);
		size_t		have = 0;

		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		for (;;)
		{
			char	   *hend = NULL, *cl, *p;
			size_t		hlen, blen, need;
			ssize_t		n;
			struct timeval tv;
			long long	us, count = 0;

			while ((hend = have ? memmem(buf, have, "\r\n\r\n", 4) : NULL) == NULL)
			{
				if (have == cap)
					buf = realloc(buf, cap *= 2);
				if ((n = read(c, buf + have, cap - have)) <= 0)
					goto closed;
				have += n;
			}
			hlen = hend - buf + 4;
			*hend = '\0';
			cl = strcasestr(buf, "\ncontent-length:");
			blen = cl ? strtoul(cl + 16, NULL, 10) : 0;
			need = hlen + blen;
			while (have < need)
			{
				if (need > cap)
					buf = realloc(buf, cap = need * 2);
				if ((n = read(c, buf + have, cap - have)) <= 0)
					goto closed;
				have += n;
			}
			gettimeofday(&tv, NULL);
			us = tv.tv_sec * 1000000LL + tv.tv_usec;
			/* the sink writes ,"seq":N in metadata; jsonb writes "k": v */
			for (p = buf + hlen; (p = memmem(p, buf + need - p, ",\"seq\":", 7)) != NULL; p += 7)
			{
				count++;
				if (seqs)
					fprintf(log, "S %lld %lld\n", us, atoll(p + 7));
			}
			fprintf(log, "R %lld %lld\n", us, count);
			fflush(log);
			if (write(c, ok, sizeof(ok) - 1) < 0)
				goto closed;
			memmove(buf, buf + need, have - need);
			have -= need;
		}
closed:
		close(c);
	}
}
C
gcc -O2 -Wall -Werror -o "$WORK_DIR/recv" "$WORK_DIR/recv.c"

start_receiver() {
    local log="$1" mode="${2:-}"
    rm -f "$WORK_DIR/port"
    "$WORK_DIR/recv" "$WORK_DIR/port" "$log" $mode &
    RECV_PID=$!
    for ((i = 0; i < 100; i++)); do [[ -s "$WORK_DIR/port" ]] && break; sleep 0.05; done
    RECV_PORT=$(cat "$WORK_DIR/port")
}

stop_receiver() {
    kill "$RECV_PID" 2>/dev/null || true
    wait "$RECV_PID" 2>/dev/null || true
    RECV_PID=""
}

received() {     # changes logged so far
    awk '$1 == "R" { n += $3 } END { print n + 0 }' "$1"
}

as_run_user "$PG_BINDIR/createdb" bench
psql_bench -c "CREATE EXTENSION sequin_cdc"

# ---------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------
max_n=$N_1
(( N_100 > max_n )) && max_n=$N_100
(( N_1000 > max_n )) && max_n=$N_1000
log "filling public.bench_changes with $max_n change rows"
psql_bench -c "SELECT sequin_cdc.create_change_table('public.bench_changes')" >/dev/null
psql_bench -c "
    INSERT INTO bench_changes (seq, source_database_id, source_table_oid, source_table_schema,
                               source_table_name, record_pk, record, action, committed_at)
    SELECT k, (SELECT id FROM sequin_cdc.database_identity), 16384, 'public', 'orders', k::text,
           jsonb_build_object('id', k, 'customer_id', k % 9973, 'status', 'paid',
                              'amount', (k % 100000) / 100.0, 'currency', 'EUR',
                              'note', md5(k::text), 'created_at', now()),
           'insert', now() - interval '1 hour' + k * interval '1 ms'
      FROM generate_series(1, $max_n) k"
psql_bench -c "VACUUM (ANALYZE) bench_changes" -c "CHECKPOINT"
body_bytes=$(psql_bench -c "SELECT avg(length(record::text))::int FROM bench_changes WHERE seq <= 1000")

declare -A rate secs reqs
for bs in 1 100 1000; do
    var="N_$bs"
    n=${!var}
    start_receiver "$WORK_DIR/tp_$bs.log"
    psql_bench -c "SELECT sequin_cdc.create_webhook_sink('tp_$bs', 'http://127.0.0.1:$RECV_PORT/', 'public.bench_changes', batch_size => $bs)" >/dev/null
    sleep 1     # the worker is up and idle
    t0=$(date +%s%6N)
    psql_bench -c "SELECT sequin_cdc.replay_sink_from_seq('tp_$bs', $((max_n - n + 1)))" >/dev/null
    for ((i = 0; i < 3000; i++)); do
        (( $(received "$WORK_DIR/tp_$bs.log") >= n )) && break
        sleep 0.1
    done
    got=$(received "$WORK_DIR/tp_$bs.log")
    t1=$(awk '$1 == "R" { t = $2 } END { print t }' "$WORK_DIR/tp_$bs.log")
    reqs[$bs]=$(awk '$1 == "R" { n++ } END { print n + 0 }' "$WORK_DIR/tp_$bs.log")
    psql_bench -c "SELECT sequin_cdc.drop_sink('tp_$bs')" >/dev/null
    stop_receiver
    (( got >= n )) || { echo "batch size $bs: only $got of $n changes arrived" >&2; exit 1; }
    secs[$bs]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    rate[$bs]=$(awk -v n="$n" -v s="${secs[$bs]}" 'BEGIN { printf "%.0f", n / s }')
    log "batch size $bs: $n changes in ${secs[$bs]} s = ${rate[$bs]} changes/s (${reqs[$bs]} requests)"
done

# ---------------------------------------------------------------------------
# Latency under LAT_RATE changes/s
# ---------------------------------------------------------------------------
psql_bench <<'SQL' >/dev/null
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int, status text, amount numeric(10,2),
                     note text, created_at timestamptz DEFAULT now());
ALTER TABLE orders REPLICA IDENTITY FULL;
SELECT sequin_cdc.create_change_table('public.order_changes');
SELECT sequin_cdc.create_publication('bench_pub', ARRAY['orders']::regclass[]);
SQL
psql_bench -c "SELECT sequin_cdc.create_slot('bench_slot', 'bench_pub')" >/dev/null
psql_bench -c "SELECT sequin_cdc.add_change_retention('orders', 'public.order_changes', slot => 'bench_slot')" >/dev/null
start_receiver "$WORK_DIR/lat.log" seqs
psql_bench -c "SELECT sequin_cdc.create_webhook_sink('lat', 'http://127.0.0.1:$RECV_PORT/', 'public.order_changes')" >/dev/null
sleep 1

cat >"$WORK_DIR/load.sql" <<'SQL'
INSERT INTO orders (customer_id, status, amount, note)
VALUES ((random() * 10000)::int, 'new', (random() * 1000)::numeric(10,2), md5(random()::text));
SQL
chown "$RUN_USER" "$WORK_DIR/load.sql"
log "latency: $LAT_RATE changes/s for $LAT_SECONDS s"
as_run_user "$PG_BINDIR/pgbench" -n -c 4 -j 2 -R "$LAT_RATE" -T "$LAT_SECONDS" -f "$WORK_DIR/load.sql" bench \
    >"$WORK_DIR/pgbench.log" 2>&1 &
LOAD_PID=$!
wait "$LOAD_PID"
LOAD_PID=""
psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '60s')" >/dev/null
total=$(psql_bench -c "SELECT count(*) FROM order_changes")
for ((i = 0; i < 600; i++)); do
    (( $(received "$WORK_DIR/lat.log") >= total )) && break
    sleep 0.1
done
stop_receiver
IFS='|' read -r lat_failed lat_error < <(psql_bench -c "SELECT failed_attempts, last_error FROM sequin_cdc.pg_stat_sinks WHERE name = 'lat'")
awk '$1 == "S" { print $3 "\t" $2 }' "$WORK_DIR/lat.log" >"$WORK_DIR/lat.tsv"
chmod a+r "$WORK_DIR/lat.tsv"
IFS='|' read -r n_lat dup e2e_p50 e2e_p99 e2e_max sink_p50 sink_p99 sink_max req_lat < <(psql_bench <<SQL
CREATE TEMP TABLE arrivals (seq bigint, us bigint);
\copy arrivals FROM '$WORK_DIR/lat.tsv'
WITH first AS (SELECT seq, min(us) AS us FROM arrivals GROUP BY seq),
     l AS (SELECT extract(epoch FROM to_timestamp(f.us / 1e6) - c.committed_at) * 1000 AS e2e,
                  extract(epoch FROM to_timestamp(f.us / 1e6) - c.inserted_at) * 1000 AS sink
             FROM first f JOIN order_changes c USING (seq))
SELECT count(*), (SELECT count(*) FROM arrivals) - count(*),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY e2e)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY e2e)::numeric, 1),
       round(max(e2e)::numeric, 1),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY sink)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY sink)::numeric, 1),
       round(max(sink)::numeric, 1),
       round((SELECT count(*) FROM arrivals)::numeric / nullif((SELECT requests FROM sequin_cdc.pg_stat_sinks WHERE name = 'lat'), 0), 1)
  FROM l;
SQL
)
tps=$(awk '/^tps/ { printf "%.0f", $3; exit }' "$WORK_DIR/pgbench.log")

cat <<EOF

sequin_cdc webhook sink benchmark ($(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GB RAM, PostgreSQL $(psql_bench -c "SHOW server_version"), $(curl-config --version 2>/dev/null || echo libcurl))
  receiver            C, 127.0.0.1, HTTP/1.1 keep-alive, answers 200 at once
  change rows         record of ~$body_bytes bytes of JSON each

  throughput (rewind with replay_sink_from_seq, commit -> last request)
    batch_size 1      ${rate[1]} changes/s   ($N_1 changes in ${secs[1]} s, ${reqs[1]} requests)
    batch_size 100    ${rate[100]} changes/s   ($N_100 changes in ${secs[100]} s, ${reqs[100]} requests)
    batch_size 1000   ${rate[1000]} changes/s   ($N_1000 changes in ${secs[1000]} s, ${reqs[1000]} requests)

  latency at $tps changes/s (pgbench, one insert per transaction, $LAT_SECONDS s; sink batch_size 100)
    changes           $n_lat of $total delivered, $dup sent twice, $req_lat changes per request on average, $lat_failed failed attempts${lat_error:+ (last error: $lat_error)}
    source commit -> receiver          p50 $e2e_p50 ms   p99 $e2e_p99 ms   max $e2e_max ms
    change row written -> receiver     p50 $sink_p50 ms   p99 $sink_p99 ms   max $sink_max ms
    (the first includes capture: WAL decoding, sequin_cdc.poll_interval and the
     capture worker's write; inserted_at is the start of that write transaction)
  goals               >= 50000 changes/s at batch_size 1000; p99 < 250 ms
EOF
