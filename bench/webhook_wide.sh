#!/usr/bin/env bash
#
# bench/webhook_wide.sh -- a sink worker's memory and request size with a
# large batch_size over wide rows.
#
# Not a test: a measurement. It
#   1. starts a throwaway cluster (bench/lib.sh) and the tests' HTTP receiver
#      (test/t/HttpReceiver.pm) on 127.0.0.1;
#   2. fills a change table with N change rows whose record holds ~WIDTH
#      bytes of JSON;
#   3. creates a sink with batch_size 10000 (max_batch_bytes: its default,
#      or MAX_BATCH_BYTES), rewinds it over all the rows, and, until the
#      receiver has them all, samples the sink worker's /proc status every
#      20 ms: peak private memory (RssAnon), peak resident size (VmRSS,
#      which also counts the shared buffers it touched), and VmHWM at the end;
#   4. prints those, and the number and largest size of the requests.
#
# Usage (as root or a sudoer, like test/run.sh):
#   bash bench/webhook_wide.sh
#   N=10000 WIDTH=5500 MAX_BATCH_BYTES=1048576 bash bench/webhook_wide.sh
# Works against servers whose sequin_cdc has no max_batch_bytes (before
# 0.4.0): the sink is then created without it.

set -euo pipefail

: "${N:=10000}"
: "${WIDTH:=5500}"
: "${MAX_BATCH_BYTES:=}"

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start bench

RECEIVER="$SEQUIN_REPO_TOP/test/t/HttpReceiver.pm"
rm -f "$WORK_DIR/port"
perl "$RECEIVER" serve "$WORK_DIR/port" "$WORK_DIR/wide.log" &
BENCH_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do [[ -s "$WORK_DIR/port" ]] && break; sleep 0.05; done
RECV_PORT=$(cat "$WORK_DIR/port")
received() { local r c t; read -r r c t < <(perl "$RECEIVER" summary "$WORK_DIR/wide.log"); echo "${c:-0}"; }

log "filling public.bench_changes with $N change rows of ~$WIDTH bytes"
psql_bench -c "SELECT sequin_cdc.create_change_table('public.bench_changes')" >/dev/null
psql_bench -c "
    INSERT INTO bench_changes (seq, source_database_id, source_table_oid, source_table_schema,
                               source_table_name, record_pk, record, action, committed_at)
    SELECT k, (SELECT id FROM sequin_cdc.database_identity), 16384, 'public', 'wide', k::text,
           jsonb_build_object('id', k, 'pad', (SELECT string_agg(md5((k * 1000 + i)::text), '')
                                                  FROM generate_series(1, $WIDTH / 32) i)),
           'insert', now()
      FROM generate_series(1, $N) k"
psql_bench -c "VACUUM (ANALYZE) bench_changes" -c "CHECKPOINT"
row_bytes=$(psql_bench -c "SELECT avg(length(record::text))::int FROM bench_changes")

has_cap=$(psql_bench -c "SELECT count(*) FROM pg_attribute WHERE attrelid = 'sequin_cdc.sinks'::regclass AND attname = 'max_batch_bytes'")
cap_arg=""
[[ "$has_cap" == 1 && -n "$MAX_BATCH_BYTES" ]] && cap_arg=", max_batch_bytes => $MAX_BATCH_BYTES"
psql_bench -c "SELECT sequin_cdc.create_webhook_sink('wide', 'http://127.0.0.1:$RECV_PORT/', 'public.bench_changes', batch_size => 10000$cap_arg)" >/dev/null
cap="(none: before 0.4.0)"
[[ "$has_cap" == 1 ]] && cap=$(psql_bench -c "SELECT max_batch_bytes FROM sequin_cdc.sinks WHERE name = 'wide'")
pid=""
for ((i = 0; i < 100; i++)); do
    pid=$(psql_bench -c "SELECT worker_pid FROM sequin_cdc.pg_stat_sinks WHERE name = 'wide'")
    [[ -n "$pid" ]] && break
    sleep 0.1
done
[[ -n "$pid" ]] || { echo "the sink worker did not start" >&2; exit 1; }
sleep 1     # idle

status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
peak_anon=0
peak_rss=0
t0=$(date +%s.%N)
psql_bench -c "SELECT sequin_cdc.replay_sink_from_seq('wide', 1)" >/dev/null
for ((i = 0; i < 30000; i++)); do
    a=$(status_kb RssAnon); r=$(status_kb VmRSS)
    (( a > peak_anon )) && peak_anon=$a
    (( r > peak_rss )) && peak_rss=$r
    (( $(received) >= N )) && break
    sleep 0.02
done
t1=$(date +%s.%N)
hwm=$(status_kb VmHWM)
read -r requests changes _ < <(perl "$RECEIVER" summary "$WORK_DIR/wide.log")
max_changes=$(awk -F'\t' '$4 > m { m = $4 } END { print m + 0 }' "$WORK_DIR/wide.log")
(( changes >= N )) || { echo "only $changes of $N changes arrived" >&2; exit 1; }

cat <<EOF

sequin_cdc sink memory with wide rows ($(machine_summary))
  change rows        $N, record of ~$row_bytes bytes of JSON each (~$(( N * row_bytes / 1048576 )) MB)
  sink               batch_size 10000, max_batch_bytes $cap
  delivered          $changes changes in $(fmt "$(elapsed "$t0" "$t1")" 2) s, $requests requests, at most $max_changes changes (~$(( max_changes * (row_bytes + 330) / 1024 )) kB) per request
  sink worker        peak RssAnon $(( peak_anon / 1024 )) MB, peak VmRSS $(( peak_rss / 1024 )) MB, VmHWM $(( hwm / 1024 )) MB
                     (VmRSS and VmHWM include the shared buffers the worker touched)
EOF
