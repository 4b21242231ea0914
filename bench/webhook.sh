#!/usr/bin/env bash
#
# bench/webhook.sh -- how fast a webhook sink delivers, and how late.
#
# Not a test: a measurement. It
#   1. starts a throwaway cluster (bench/lib.sh) with fsync on, and the
#      tests' HTTP receiver (test/t/HttpReceiver.pm) on 127.0.0.1, which
#      answers 200 to every POST and logs, per request, its arrival time and
#      number of changes (and, for the latency run, each seq);
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
#   4. the same for a Kafka sink (when librdkafka-dev and kcat are there):
#      into test/tools/kafka_mock_broker (librdkafka's mock cluster, one
#      broker, 3 partitions per topic, on 127.0.0.1): batch_size 1000
#      throughput over the same rows (rewind's commit -> the cursor at the
#      last seq, which moves only once every message of a batch was
#      acknowledged by the broker), and latency at LAT_RATE changes/s:
#      source commit -> the message's timestamp (set by the producer when
#      the sink hands it to librdkafka, i.e. before the broker's ack),
#      read back with kcat;
#   5. prints the figures.
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

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start bench

# ---------------------------------------------------------------------------
# The receiver: test/t/HttpReceiver.pm (the TAP tests' receiver), one
# connection at a time (a sink keeps one alive), HTTP/1.1 keep-alive, 200 to
# everything, one log line per request (with its seqs in the latency run).
# ---------------------------------------------------------------------------
RECEIVER="$SEQUIN_REPO_TOP/test/t/HttpReceiver.pm"
RECV_PID=""

start_receiver() {
    local log="$1" mode="${2:-}"
    rm -f "$WORK_DIR/port"
    perl "$RECEIVER" serve "$WORK_DIR/port" "$log" $mode &
    RECV_PID=$!
    BENCH_PIDS+=("$RECV_PID")
    for ((i = 0; i < 100; i++)); do [[ -s "$WORK_DIR/port" ]] && break; sleep 0.05; done
    RECV_PORT=$(cat "$WORK_DIR/port")
}

stop_receiver() {
    bench_stop "$RECV_PID"
    RECV_PID=""
}

# "requests changes last_arrival" of a receiver log
summary() { perl "$RECEIVER" summary "$1"; }
received() { local r c t; read -r r c t < <(summary "$1"); echo "$c"; }

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
    t0=$(date +%s.%N)
    psql_bench -c "SELECT sequin_cdc.replay_sink_from_seq('tp_$bs', $((max_n - n + 1)))" >/dev/null
    for ((i = 0; i < 3000; i++)); do
        (( $(received "$WORK_DIR/tp_$bs.log") >= n )) && break
        sleep 0.1
    done
    read -r reqs[$bs] got t1 < <(summary "$WORK_DIR/tp_$bs.log")
    psql_bench -c "SELECT sequin_cdc.drop_sink('tp_$bs')" >/dev/null
    stop_receiver
    (( got >= n )) || { echo "batch size $bs: only $got of $n changes arrived" >&2; exit 1; }
    secs[$bs]=$(fmt "$(elapsed "$t0" "$t1")" 2)
    rate[$bs]=$(fmt "$(calc "$n / ($t1 - $t0)")")
    log "batch size $bs: $n changes in ${secs[$bs]} s = ${rate[$bs]} changes/s (${reqs[$bs]} requests)"
done

# ---------------------------------------------------------------------------
# Kafka: the mock broker, and throughput at batch_size 1000
# ---------------------------------------------------------------------------
KAFKA=0
if [[ -f /usr/include/librdkafka/rdkafka_mock.h ]] && command -v kcat >/dev/null 2>&1; then
    KAFKA=1
    cc -Wall -Wextra -Werror -O2 -o "$WORK_DIR/kafka_mock_broker" \
        "$SEQUIN_REPO_TOP/test/tools/kafka_mock_broker.c" -lrdkafka
    "$WORK_DIR/kafka_mock_broker" -p 3 -t bench -t public.orders >"$WORK_DIR/brokers" 2>/dev/null &
    BENCH_PIDS+=("$!")
    for ((i = 0; i < 100; i++)); do [[ -s "$WORK_DIR/brokers" ]] && break; sleep 0.05; done
    BROKERS=$(cat "$WORK_DIR/brokers")
    n=$N_1000
    psql_bench -c "SELECT sequin_cdc.create_kafka_sink('ktp', '$BROKERS', 'bench', 'public.bench_changes', batch_size => 1000)" >/dev/null
    sleep 1
    t0=$(date +%s.%N)
    psql_bench -c "SELECT sequin_cdc.replay_sink_from_seq('ktp', $((max_n - n + 1)))" >/dev/null
    for ((i = 0; i < 6000; i++)); do
        [[ $(psql_bench -c "SELECT cursor_seq >= $max_n OR state = 'paused' FROM sequin_cdc.pg_stat_sinks WHERE name = 'ktp'") == t ]] && break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    IFS='|' read -r k_cursor k_failed k_error < <(psql_bench -c "SELECT cursor_seq, failed_attempts, last_error FROM sequin_cdc.pg_stat_sinks WHERE name = 'ktp'")
    psql_bench -c "SELECT sequin_cdc.drop_sink('ktp')" >/dev/null
    (( k_cursor >= max_n )) || { echo "kafka: the cursor stopped at $k_cursor of $max_n: $k_error" >&2; exit 1; }
    k_secs=$(fmt "$(elapsed "$t0" "$t1")" 2)
    k_rate=$(fmt "$(calc "$n / ($t1 - $t0)")")
    log "kafka batch size 1000: $n changes in $k_secs s = $k_rate changes/s ($k_failed failed attempts)"
fi

# ---------------------------------------------------------------------------
# Latency under LAT_RATE changes/s
# ---------------------------------------------------------------------------
psql_bench <<'SQL' >/dev/null
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int, status text, amount numeric(10,2),
                     note text, created_at timestamptz DEFAULT now());
ALTER TABLE orders REPLICA IDENTITY FULL;
SQL
bench_capture orders public.order_changes
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
    >"$WORK_DIR/pgbench.log" 2>&1
psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '60s')" >/dev/null
total=$(psql_bench -c "SELECT count(*) FROM order_changes")
for ((i = 0; i < 600; i++)); do
    (( $(received "$WORK_DIR/lat.log") >= total )) && break
    sleep 0.1
done
stop_receiver
IFS='|' read -r lat_failed lat_error < <(psql_bench -c "SELECT failed_attempts, last_error FROM sequin_cdc.pg_stat_sinks WHERE name = 'lat'")
perl "$RECEIVER" seqs "$WORK_DIR/lat.log" >"$WORK_DIR/lat.tsv"
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
tps=$(perl -ne 'if (/^tps = ([\d.]+)/) { printf "%.0f", $1; last }' "$WORK_DIR/pgbench.log")

# Kafka latency: the same load again, into a Kafka sink (batch_size 1000)
if [[ $KAFKA == 1 ]]; then
    psql_bench -c "SELECT sequin_cdc.drop_sink('lat')" >/dev/null
    k_first=$(psql_bench -c "SELECT coalesce(max(seq), 0) + 1 FROM order_changes")
    psql_bench -c "SELECT sequin_cdc.create_kafka_sink('klat', '$BROKERS', '{schema}.{table}', 'public.order_changes')" >/dev/null
    sleep 1
    log "kafka latency: $LAT_RATE changes/s for $LAT_SECONDS s"
    as_run_user "$PG_BINDIR/pgbench" -n -c 4 -j 2 -R "$LAT_RATE" -T "$LAT_SECONDS" -f "$WORK_DIR/load.sql" bench \
        >"$WORK_DIR/pgbench_kafka.log" 2>&1
    psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '60s')" >/dev/null
    k_last=$(psql_bench -c "SELECT max(seq) FROM order_changes")
    for ((i = 0; i < 600; i++)); do
        [[ $(psql_bench -c "SELECT cursor_seq >= $k_last FROM sequin_cdc.pg_stat_sinks WHERE name = 'klat'") == t ]] && break
        sleep 0.1
    done
    # seq and message timestamp (ms) of every message, read_committed
    kcat -C -b "$BROKERS" -t public.orders -X isolation.level=read_committed -e -q \
        -f '%T %h\n' 2>/dev/null |
        perl -ne 'print "$2\t$1\n" if /^(\d+) .*\bseq=(\d+)/' >"$WORK_DIR/klat.tsv"
    chmod a+r "$WORK_DIR/klat.tsv"
    IFS='|' read -r k_n k_dup k_p50 k_p99 k_max < <(psql_bench <<SQL
CREATE TEMP TABLE k_arrivals (seq bigint, ms bigint);
\copy k_arrivals FROM '$WORK_DIR/klat.tsv'
WITH first AS (SELECT seq, min(ms) AS ms FROM k_arrivals WHERE seq >= $k_first GROUP BY seq),
     l AS (SELECT extract(epoch FROM to_timestamp(f.ms / 1e3) - c.committed_at) * 1000 AS e2e
             FROM first f JOIN order_changes c USING (seq))
SELECT count(*), (SELECT count(*) FROM k_arrivals WHERE seq >= $k_first) - count(*),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY e2e)::numeric, 1),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY e2e)::numeric, 1),
       round(max(e2e)::numeric, 1)
  FROM l;
SQL
)
    k_total=$(psql_bench -c "SELECT count(*) FROM order_changes WHERE seq >= $k_first")
    k_tps=$(perl -ne 'if (/^tps = ([\d.]+)/) { printf "%.0f", $1; last }' "$WORK_DIR/pgbench_kafka.log")
fi

cat <<EOF

sequin_cdc webhook sink benchmark ($(machine_summary), $(curl-config --version 2>/dev/null || echo libcurl))
  receiver            test/t/HttpReceiver.pm, 127.0.0.1, HTTP/1.1 keep-alive, answers 200 at once
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
if [[ $KAFKA == 1 ]]; then
    cat <<EOF

  kafka sink (librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo '?') into test/tools/kafka_mock_broker on 127.0.0.1: 1 broker, 3 partitions; idempotent producer, acks=all)
    batch_size 1000   $k_rate changes/s   ($N_1000 changes in $k_secs s, $k_failed failed attempts; the webhook above: ${rate[1000]} changes/s)
    latency at $k_tps changes/s (pgbench as above, $LAT_SECONDS s; sink batch_size 1000)
    changes           $k_n of $k_total delivered, $k_dup sent twice
    source commit -> message timestamp   p50 $k_p50 ms   p99 $k_p99 ms   max $k_max ms
    (the message timestamp is the producer's, taken when the sink hands the
     message to librdkafka; the broker's acknowledgement comes after)
EOF
else
    echo "  kafka sink: skipped (librdkafka-dev or kcat not installed)"
fi
