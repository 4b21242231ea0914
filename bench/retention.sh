#!/usr/bin/env bash
#
# bench/retention.sh -- how fast a retention policy removes old changes.
#
# Not a test: a measurement. It
#   1. starts a throwaway cluster (bench/lib.sh), with
#      fsync on and pg_cron running jobs in background workers;
#   2. fills a change table with $ROWS rows whose committed_at spread evenly
#      over the last 40 days, in id order as capture writes them (a quarter
#      of them are older than 30 days);
#   3. starts capture of another table (slot, rule, change table) under a
#      light write load (pgbench, $LOAD_TPS transactions/s);
#   4. sets a retention policy keep => '30 days' and lets its pg_cron job run
#      once (METHOD=job), or runs CALL sequin_cdc.run_retention(...) from psql
#      (METHOD=call);
#   5. prints rows removed, seconds, rows removed per second, WAL written,
#      and what capture did meanwhile (changes captured, largest lag, errors).
#
# Usage (as root or a sudoer, like test/run.sh):
#   bash bench/retention.sh                  # 10M rows
#   ROWS=2000000 bash bench/retention.sh
#
# Environment:
#   ROWS=10000000    rows in the change table
#   METHOD=job       job: the pg_cron job of set_retention_policy (timed by
#                    pg_cron's start_time/end_time); call: CALL from psql
#   BATCH=10000      batch_size for METHOD=call (the job uses the default, 10000)
#   LOAD_TPS=50      write load on the captured table during the run
#   SKIP_BUILD=1     default: use the installed extension; SKIP_BUILD=0 builds
#                    and installs it first (make clean all && make install)
#   SKIP_DEPS=1      do not check/install packages
#   KEEP_CLUSTER=1   keep the cluster's data directory afterwards

set -euo pipefail

: "${ROWS:=10000000}"
: "${METHOD:=job}"
: "${BATCH:=10000}"
: "${LOAD_TPS:=50}"
: "${SKIP_BUILD:=1}"

[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -ge 1000 ]] || { echo "ROWS must be a number >= 1000" >&2; exit 2; }
[[ "$METHOD" == job || "$METHOD" == call ]] || { echo "METHOD must be job or call" >&2; exit 2; }

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start bench \
    "cron.use_background_workers = on" \
    "cron.max_running_jobs = 4"
have_pg_cron || die "pg_cron is not installed for this server"
psql_bench -c "CREATE EXTENSION pg_cron"

# ---------------------------------------------------------------------------
# The change table: $ROWS rows over the last 40 days, ascending with id
# ---------------------------------------------------------------------------
log "filling public.bench_changes with $ROWS rows spread over 40 days"
psql_bench -c "SELECT sequin_cdc.create_change_table('public.bench_changes')" >/dev/null
fill_start=$(date +%s.%N)
chunk=$(( (ROWS + 3) / 4 ))
for ((lo = 1; lo <= ROWS; lo += chunk)); do
    hi=$(( lo + chunk - 1 )); (( hi > ROWS )) && hi=$ROWS
    psql_bench -c "
        INSERT INTO bench_changes (seq, source_database_id, source_table_oid, source_table_schema,
                                   source_table_name, record_pk, record, action, committed_at)
        SELECT k, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 16384, 'public', 'orders', k::text,
               jsonb_build_object('id', k, 'status', 'paid', 'amount', k % 1000,
                                  'note', md5(k::text)),
               'insert',
               now() - interval '40 days' + (k::float8 / $ROWS) * interval '40 days'
          FROM generate_series($lo, $hi) k"
done
psql_bench -c "VACUUM (ANALYZE) bench_changes" -c "CHECKPOINT"
fill_end=$(date +%s.%N)
table_size=$(psql_bench -c "SELECT pg_size_pretty(pg_total_relation_size('bench_changes'))")
expected=$(psql_bench -c "SELECT count(*) FROM bench_changes WHERE committed_at < now() - interval '30 days'")
log "filled in $(fmt "$(elapsed "$fill_start" "$fill_end")") s; $table_size; $expected rows older than 30 days"

# ---------------------------------------------------------------------------
# Capture of another table, under a light load
# ---------------------------------------------------------------------------
psql_bench <<'SQL' >/dev/null
CREATE TABLE bench_src (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
ALTER TABLE bench_src REPLICA IDENTITY FULL;
SQL
bench_capture bench_src public.bench_cap

cat >"$WORK_DIR/load.sql" <<'SQL'
\set id random(1, 100000)
INSERT INTO bench_src (id, v) VALUES (:id, md5(random()::text))
    ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = bench_src.n + 1;
SQL
chown "$RUN_USER" "$WORK_DIR/load.sql"
bench_bg LOAD_PID "$PG_BINDIR/pgbench" -n -c 2 -R "$LOAD_TPS" -T 86400 -f "$WORK_DIR/load.sql" bench \
    >"$WORK_DIR/pgbench.log" 2>&1
sleep 3
psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot')" >/dev/null

captured_before=$(psql_bench -c "SELECT changes_captured FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bench_slot'")
rows_before=$(psql_bench -c "SELECT count(*) FROM bench_changes")
lsn_before=$(psql_bench -c "SELECT pg_current_wal_lsn()")

# ---------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------
max_lag=0
sample_lag() {
    local lag
    lag=$(psql_bench -c "SELECT coalesce(max(lag_bytes), 0) FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bench_slot'")
    (( lag > max_lag )) && max_lag=$lag
    return 0
}

if [[ "$METHOD" == job ]]; then
    # every minute: the first run starts at the next minute boundary
    jobid=$(psql_bench -c "SELECT sequin_cdc.set_retention_policy('bench_changes', '30 days', '* * * * *')")
    log "retention job $jobid scheduled; waiting for its first run (up to a minute to start)"
    status=""
    for ((i = 0; i < 7200; i++)); do
        status=$(psql_bench -c "SELECT status FROM cron.job_run_details WHERE jobid = $jobid ORDER BY runid LIMIT 1")
        [[ "$status" == succeeded || "$status" == failed ]] && break
        sample_lag
        sleep 1
    done
    psql_bench -c "SELECT sequin_cdc.drop_retention_policy('bench_changes')" >/dev/null
    IFS='|' read -r status seconds message < <(psql_bench -c "
        SELECT status, extract(epoch FROM end_time - start_time), return_message
          FROM cron.job_run_details WHERE jobid = $jobid ORDER BY runid LIMIT 1")
    [[ "$status" == succeeded ]] || { echo "the retention job did not succeed: ${status:-no run} ${message:-}" >&2; exit 1; }
else
    psql_bench -c "SELECT sequin_cdc.set_retention_policy('bench_changes', '30 days', schedule => NULL)" >/dev/null
    ( while true; do sample_lag; echo "$max_lag" >"$WORK_DIR/lag"; sleep 1; done ) &
    sampler=$!
    t0=$(date +%s.%N)
    psql_bench -c "CALL sequin_cdc.run_retention('bench_changes', $BATCH)" >/dev/null
    t1=$(date +%s.%N)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    [[ -f "$WORK_DIR/lag" ]] && max_lag=$(cat "$WORK_DIR/lag")
    seconds=$(elapsed "$t0" "$t1")
    psql_bench -c "SELECT sequin_cdc.drop_retention_policy('bench_changes')" >/dev/null 2>&1
fi

wal_bytes=$(psql_bench -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn_before')")
rows_after=$(psql_bench -c "SELECT count(*) FROM bench_changes")
# rows that aged past the window while the run went on may stay
left_old=$(psql_bench -c "SELECT count(*) FROM bench_changes
                           WHERE committed_at < now() - interval '30 days' - make_interval(secs => $seconds + 60)")
removed=$(( rows_before - rows_after ))

# capture went on: everything written so far is captured, no errors, and no
# row about the change table the deletes came from
bench_stop "$LOAD_PID"
psql_bench -c "SELECT sequin_cdc.wait_for_capture('bench_slot', '60s')" >/dev/null
IFS='|' read -r captured_after errors < <(psql_bench -c "
    SELECT changes_captured, errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bench_slot'")
feedback=$(psql_bench -c "SELECT count(*) FROM bench_cap WHERE source_table_name <> 'bench_src'")
rate=$(fmt "$(calc "$seconds > 0 ? $removed / $seconds : 0")")
cat <<EOF

sequin_cdc retention benchmark ($(machine_summary))
  change table        $ROWS rows over 40 days ($table_size)
  method              $METHOD$( [[ "$METHOD" == call ]] && echo " (batch_size $BATCH)" || echo " (pg_cron background worker, batch_size 10000)")
  rows removed        $removed (expected $expected; older than the window left: $left_old)
  time                $(fmt "$seconds" 1) s
  rows removed/s      $rate
  WAL written         $(( wal_bytes / 1024 / 1024 )) MB ($(( wal_bytes / (removed > 0 ? removed : 1) )) bytes/row)
  capture meanwhile   $(( captured_after - captured_before )) changes captured (load: $LOAD_TPS tx/s), largest lag $(( max_lag / 1024 )) kB, errors $errors, rows about other tables $feedback
  reference           Sequin: 100M writes/day on 16 CPUs = 1157 rows/s to remove on average
EOF
