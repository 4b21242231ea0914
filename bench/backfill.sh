#!/usr/bin/env bash
#
# bench/backfill.sh -- how fast sequin_cdc.backfill() writes a table into the
# change stream, against the DIY INSERT ... SELECT to_jsonb(t).
#
# Not a test: a measurement. It
#   1. starts a throwaway cluster (bench/lib.sh) with fsync on and
#      synchronous commit;
#   2. loads an orders-like table of $ROWS rows (id bigint primary key,
#      customer int, status text, amount numeric(12,2), note text,
#      updated_at timestamptz), a slot and a retention rule orders ->
#      bench_changes;
#   3. $RUNS times each, from an empty change table:
#        backfill, idle   sequin_cdc.backfill('orders', chunk_size => $CHUNK)
#                         without other writes; the time runs from the call
#                         until the backfill is 'completed' AND
#                         wait_for_capture() returns (every read row written)
#        backfill, load   the same while pgbench ($LOAD_CLIENTS clients,
#                         LOAD_TPS, 0 = as fast as they go) updates random
#                         rows of orders; those changes are captured too and
#                         wait_for_capture() waits for them as well
#        DIY, idle/load   INSERT INTO bench_diy (a change table of the same
#                         shape and indexes) SELECT ..., t.id::text,
#                         to_jsonb(t), 'read', now() FROM orders t: one
#                         statement, one transaction, no consistency with
#                         live changes
#   4. prints one table: per figure the single runs and the median rows/s,
#      plus the time until the backfill worker finished reading (before the
#      capture worker has written everything), WAL per row and the load's
#      updates/s.
#
# Usage (as root or a sudoer, like test/run.sh):
#   bash bench/backfill.sh                    # 1M rows, 3 runs
#   ROWS=200000 RUNS=3 bash bench/backfill.sh
#
# Environment:
#   ROWS=1000000     rows in orders
#   RUNS=3           runs per figure (the median is shown)
#   CHUNK=10000      chunk_size of the backfills (10000 is backfill()'s default)
#   LOAD_CLIENTS=2   pgbench clients of the load runs
#   LOAD_TPS=0       their total rate (0: unthrottled)
#   SKIP_BUILD=1     default: use the installed extension; SKIP_BUILD=0 builds
#                    and installs it first (make clean all && make install)
#   SKIP_DEPS=1      do not check/install packages
#   KEEP_CLUSTER=1   keep the cluster's data directory afterwards

set -euo pipefail

: "${ROWS:=1000000}"
: "${RUNS:=3}"
: "${CHUNK:=10000}"
: "${LOAD_CLIENTS:=2}"
: "${LOAD_TPS:=0}"
: "${SKIP_BUILD:=1}"

[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -ge 1000 ]] || { echo "ROWS must be a number >= 1000" >&2; exit 2; }
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || { echo "RUNS must be a number >= 1" >&2; exit 2; }
[[ "$CHUNK" =~ ^[0-9]+$ && "$CHUNK" -ge 1 ]] || { echo "CHUNK must be a number >= 1" >&2; exit 2; }
[[ "$LOAD_TPS" =~ ^[0-9]+$ ]] || { echo "LOAD_TPS must be a number" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start bench "synchronous_commit = on"
LOAD_PID=""
stop_load() { bench_stop "$LOAD_PID"; LOAD_PID=""; }

# ---------------------------------------------------------------------------
# orders, slot, rule, change tables
# ---------------------------------------------------------------------------
log "loading orders with $ROWS rows"
load_start=$(date +%s.%N)
psql_bench <<SQL >/dev/null
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer int NOT NULL,
    status text NOT NULL,
    amount numeric(12,2) NOT NULL,
    note text,
    updated_at timestamptz NOT NULL);
ALTER TABLE orders REPLICA IDENTITY FULL;
INSERT INTO orders
SELECT g, 1 + g % 20000,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5],
       (g % 99999) / 100.0,
       'order ' || g || ' for customer ' || (1 + g % 20000) || ', standard shipping',
       timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
  FROM generate_series(1, $ROWS) g;
VACUUM (ANALYZE) orders;
SELECT sequin_cdc.create_change_table('public.bench_diy');
SQL
bench_capture orders public.bench_changes
psql_bench -c "CHECKPOINT"
table_size=$(psql_bench -c "SELECT pg_size_pretty(pg_total_relation_size('orders'))")
log "loaded in $(fmt "$(elapsed "$load_start" "$(date +%s.%N)")") s ($table_size)"

cat >"$WORK_DIR/load.sql" <<SQL
\set k random(1, $ROWS)
\set a random(100, 99999)
UPDATE orders SET status = 'paid', amount = :a / 100.0, updated_at = now() WHERE id = :k;
SQL
chown "$RUN_USER" "$WORK_DIR/load.sql"

start_load() {
    local rate=()
    [[ "$LOAD_TPS" -gt 0 ]] && rate=(-R "$LOAD_TPS")
    bench_bg LOAD_PID "$PG_BINDIR/pgbench" -n -c "$LOAD_CLIENTS" -j "$LOAD_CLIENTS" "${rate[@]}" -T 86400 \
        -f "$WORK_DIR/load.sql" bench >"$WORK_DIR/pgbench.log" 2>&1
    sleep 3     # connected and running
}

# Updates of the load committed between two epochs (captured: wait first).
updates_per_s() {
    psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '1 hour')" >/dev/null
    psql_bench -c "SELECT round(count(*) / ($2 - $1)) FROM bench_changes
                    WHERE action = 'update' AND committed_at BETWEEN to_timestamp($1) AND to_timestamp($2)"
}

# Empty change tables and a quiet, checkpointed cluster before every run.
reset_tables() {
    psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '1 hour')" >/dev/null
    psql_bench -c "TRUNCATE bench_changes, bench_diy" -c "VACUUM orders" -c "CHECKPOINT" >/dev/null
}

# One backfill; prints "seconds_total seconds_reading wal_bytes read_rows t0 t2".
run_backfill() {
    local out
    out=$(psql_bench <<SQL
SELECT pg_current_wal_lsn() AS lsn0 \gset
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT sequin_cdc.backfill('orders', chunk_size => $CHUNK) AS bf \gset
DO \$\$
BEGIN
    LOOP
        EXIT WHEN (SELECT state FROM sequin_cdc.backfills
                    WHERE id = (SELECT max(id) FROM sequin_cdc.backfills)) <> 'running';
        PERFORM pg_sleep(0.01);
    END LOOP;
END
\$\$;
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT sequin_cdc.wait_for_capture('bench_slot', '1 hour') AS captured \gset
SELECT extract(epoch FROM clock_timestamp()) AS t2 \gset
SELECT b.state, :t2 - :t0, :t1 - :t0, pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0'),
       b.rows_processed, (SELECT count(*) FROM bench_changes WHERE action = 'read'), :'captured',
       :t0, :t2
  FROM sequin_cdc.backfills b WHERE b.id = :bf;
SQL
)
    local state total reading wal processed reads captured t0 t2
    IFS='|' read -r state total reading wal processed reads captured t0 t2 <<<"$out"
    [[ "$state" == completed && "$captured" == t ]] \
        || { echo "backfill did not complete: $out" >&2; exit 1; }
    [[ "$processed" == "$ROWS" ]] || { echo "backfill read $processed rows, not $ROWS" >&2; exit 1; }
    echo "$total $reading $wal $reads $t0 $t2"
}

# The DIY copy; prints "seconds wal_bytes rows t0 t1".
run_diy() {
    local out
    out=$(psql_bench <<'SQL'
SELECT pg_current_wal_lsn() AS lsn0 \gset
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
INSERT INTO bench_diy (seq, source_database_id, source_table_oid, source_table_schema,
                       source_table_name, record_pk, record, action, committed_at)
SELECT t.id, (SELECT id FROM sequin_cdc.database_identity), 'orders'::regclass::oid,
       'public', 'orders', t.id::text, to_jsonb(t), 'read', now()
  FROM orders t;
SELECT extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT :t1 - :t0, pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn0'), (SELECT count(*) FROM bench_diy), :t0, :t1;
SQL
)
    local secs wal n t0 t1
    IFS='|' read -r secs wal n t0 t1 <<<"$out"
    echo "$secs $wal $n $t0 $t1"
}

rate() { perl -e 'printf "%.0f", $ARGV[1] > 0 ? $ARGV[0] / $ARGV[1] : 0' "$1" "$2"; }

declare -A RATES SECS READ_SECS WALROW LOADUPS
for mode in idle load; do
    for ((run = 1; run <= RUNS; run++)); do
        reset_tables
        [[ "$mode" == load ]] && start_load
        res=$(run_backfill)
        stop_load
        read -r total reading wal reads t0 t2 <<<"$res"
        ups=$(updates_per_s "$t0" "$t2")
        r=$(rate "$ROWS" "$total")
        RATES["bf_$mode"]+="$r "; SECS["bf_$mode"]+="$total "; READ_SECS["bf_$mode"]+="$reading "
        WALROW["bf_$mode"]+="$(( ${wal%.*} / ROWS )) "; LOADUPS["bf_$mode"]+="$ups "
        log "backfill, $mode, run $run: $(printf '%.1f' "$total") s ($r rows/s; reader done after $(printf '%.1f' "$reading") s; $reads read rows; load $ups updates/s)"

        reset_tables
        [[ "$mode" == load ]] && start_load
        res=$(run_diy)
        stop_load
        read -r secs wal n t0 t1 <<<"$res"
        ups=$(updates_per_s "$t0" "$t1")
        r=$(rate "$n" "$secs")
        RATES["diy_$mode"]+="$r "; SECS["diy_$mode"]+="$secs "; READ_SECS["diy_$mode"]+="$secs "
        WALROW["diy_$mode"]+="$(( ${wal%.*} / n )) "; LOADUPS["diy_$mode"]+="$ups "
        log "DIY, $mode, run $run: $(printf '%.1f' "$secs") s ($r rows/s; load $ups updates/s)"
    done
done
psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '1 hour')" >/dev/null
errors=$(psql_bench -c "SELECT errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bench_slot'")

row() {
    local key="$1" label="$2" r
    # shellcheck disable=SC2086
    r=$(median ${RATES[$key]})
    # shellcheck disable=SC2086
    printf '  %-22s %-26s %9.0f %9.1f %9.1f %9.0f %9.0f\n' "$label" "${RATES[$key]}" "$r" \
        "$(median ${SECS[$key]})" "$(median ${READ_SECS[$key]})" "$(median ${WALROW[$key]})" "$(median ${LOADUPS[$key]})"
}

# shellcheck disable=SC2086
{
    bf_idle=$(median ${RATES[bf_idle]}); diy_idle=$(median ${RATES[diy_idle]})
    bf_load=$(median ${RATES[bf_load]}); diy_load=$(median ${RATES[diy_load]})
}
cat <<EOF

sequin_cdc backfill benchmark ($(machine_summary), fsync on, synchronous_commit on)
  orders: $ROWS rows ($table_size), backfill chunk_size $CHUNK, load: pgbench $LOAD_CLIENTS clients $( [[ "$LOAD_TPS" -gt 0 ]] && echo "at $LOAD_TPS tx/s" || echo "unthrottled") updating random rows
  every figure: median of $RUNS runs (single runs listed)

  figure                 rows/s of the runs         median rows/s  s total  s reader  WAL B/row  load upd/s
EOF
row bf_idle "backfill, idle"
row bf_load "backfill, under load"
row diy_idle "DIY INSERT..SELECT"
row diy_load "DIY, under load"
cat <<EOF

  backfill / DIY: $(fmt "$(calc "$bf_idle / $diy_idle")" 2) idle, $(fmt "$(calc "$bf_load / $diy_load")" 2) under load
  "s total" for a backfill: from the call until state = completed and wait_for_capture() returned;
  "s reader": until the backfill worker had read the last chunk (the capture worker writes the rest).
  capture errors: $errors
EOF
