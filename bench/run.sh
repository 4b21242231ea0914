#!/usr/bin/env bash
#
# bench/run.sh -- sequin_cdc against its peers, on one throwaway cluster:
#
#     bash bench/run.sh                 # full sizes (~25 min on 2 cores)
#     QUICK=1 bash bench/run.sh         # small sizes, a few minutes
#
# Starts its own PostgreSQL cluster (bench/lib.sh) with fsync on,
# loads bench/sql/setup.sql into database "bench", measures, prints the
# machine facts and one table in which every figure is the median of RUNS
# runs (the single runs are listed below it), and stops the cluster.  It
# uses the installed extension (it never builds).  Targets are printed with
# PASS/FAIL next to the figures; the script exits 0 whatever they say (a
# benchmark is not a test).
#
# Figures
#  1. drain: a backlog of BACKLOG_TXNS pgbench transactions (4 row changes
#     each: >= 1M changes at full size) made while nothing consumes it, then
#     turned into change rows by
#       sequin_cdc   the capture worker (kept from running while the backlog
#                    is made: sequin_cdc.restart_delay = 1h + terminate; the
#                    time runs from the reload that lets the launcher restart
#                    it until wait_for_capture() returns, so it includes the
#                    worker's start)
#       DIY          wal2json + SQL, pg_logical_slot_get_changes in batches of
#                    DIY_BATCH, one transaction per batch (as a pg_cron job)
#       raw decode   count(*) over pg_logical_slot_peek_binary_changes with
#                    pgoutput (decoding, no rendering, no writing)
#       raw write    INSERT ... SELECT of the same change rows, pre-built in
#                    an unlogged table, into an empty change table
#     All three slots are created before the backlog, so they decode the same
#     WAL.  Rate = real row changes (pg_stat_user_tables) / seconds (for
#     sequin_cdc also its worker's CPU, utime+stime from its start until
#     caught up, per change: less noisy on a shared machine).  orders
#     is vacuumed and a checkpoint taken (untimed) before each contestant.
#     Before any run, ~1.5 GB of WAL is written and recycled (WARM_WAL_MB):
#     on a new cluster the first run otherwise pays for creating WAL segment
#     files (seen: ~100k instead of ~170k changes/s for sequin_cdc).
#  2. online: pgbench -c ONLINE_CLIENTS for ONLINE_SECONDS, synchronous
#     commit, each configuration from the same fresh state:
#       slot-only    a sequin_cdc slot without any retention rule: the worker
#                    decodes every transaction and writes nothing
#       sequin_cdc   the same slot with the rule orders -> order_changes
#       trigger      no slot; AFTER ... FOR EACH ROW trigger writing Sequin-
#                    shaped rows (to_jsonb, changed columns) in the transaction
#     Lag (sequin_cdc): inserted_at - committed_at of every change row
#     (inserted_at = start of the worker's write transaction, so the write
#     itself is not included), and the staleness of the change table sampled
#     every 100 ms: clock_timestamp() - pg_stat_capture.last_commit_time
#     (last_commit_time is set after the write commits).  Final lag drained:
#     from pgbench's exit until wait_for_capture() returns.  Also shown: the
#     capture worker's CPU (utime+stime) and the machine's CPU busy share
#     (/proc/stat, all processes) during each run.
#  3. memory: capture worker RSS while it captures one INSERT ... SELECT
#     generate_series transaction of MEM_ROWS_SMALL and MEM_ROWS_BIG rows into
#     a narrow table (fresh worker each run).  Growth = peak RssAnon (sampled
#     every 50 ms) - RssAnon at idle after a warm-up.  VmHWM is shown too but
#     also counts the shared_buffers pages the worker touched.
#  4. idle: worker utime+stime (/proc/PID/stat) over IDLE_SECONDS without
#     writes, split into RUNS windows.
#
# Environment (all optional)
#   RUNS=3               runs per figure (>= 3 for medians)
#   QUICK=1              small sizes: BACKLOG_TXNS=25000 ONLINE_SECONDS=10
#                        IDLE_SECONDS=15 MEM_ROWS_SMALL=100000 MEM_ROWS_BIG=0
#   BACKLOG_TXNS=250000  drain backlog, in pgbench transactions (x4 changes)
#   BACKLOG_CLIENTS=2    pgbench clients making the backlog (asynchronous
#                        commit: same WAL content, made faster; not measured)
#   DIY_BATCH=20000      upto_nchanges per DIY batch (sequin_cdc.batch_changes
#                        is 20000 too)
#   ONLINE_SECONDS=60 ONLINE_CLIENTS=2
#   MEM_ROWS_SMALL=1000000 MEM_ROWS_BIG=10000000 (0 = skip that size)
#   MEM_RUNS=$RUNS       runs of each memory size
#   IDLE_SECONDS=60
#   WARM_WAL_MB=1536     WAL written and recycled before the first run (0: none)
#   PHASES="drain online memory idle"   which figures to measure
#   PERF=1               one extra drain run and one extra sequin_cdc online
#                        run (not counted) with `perf record` of the capture
#                        worker; reports in $BENCH_OUT/perf-*.txt
#   EXTRA_CONF="a = 1; b = 2"   more postgresql.conf lines (later lines win),
#                        e.g. "logical_decoding_work_mem = 32MB"
#   BENCH_OUT=bench/out  raw logs, pgbench output, profiles
#   FILTER="id > 0"      figure 1 only: give the drain's retention rule this
#                        filter (SQL on the orders row; one filter evaluation
#                        per change); default none
#   DRAIN_PEERS=0        figure 1: time sequin_cdc only (no DIY, raw decode,
#                        raw write); default 1
#   SKIP_DEPS=1 KEEP_CLUSTER=1 PG_CONFIG=...   as for bench/lib.sh

set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------
RUNS="${RUNS:-3}"
if [[ "${QUICK:-0}" == 1 ]]; then
    : "${BACKLOG_TXNS:=25000}" "${ONLINE_SECONDS:=10}" "${IDLE_SECONDS:=15}"
    : "${MEM_ROWS_SMALL:=100000}" "${MEM_ROWS_BIG:=0}"
fi
: "${BACKLOG_TXNS:=250000}" "${BACKLOG_CLIENTS:=2}" "${DIY_BATCH:=20000}"
: "${ONLINE_SECONDS:=60}" "${ONLINE_CLIENTS:=2}"
: "${MEM_ROWS_SMALL:=1000000}" "${MEM_ROWS_BIG:=10000000}" "${MEM_RUNS:=$RUNS}"
: "${IDLE_SECONDS:=60}"
: "${PHASES:=drain online memory idle}"
: "${PERF:=0}"
: "${FILTER:=}" "${DRAIN_PEERS:=1}"
: "${BENCH_OUT:=$BENCH_DIR/out}"

# Server settings for benchmarking (later lines win over bench/lib.sh's).
# pg_cron is not needed here; keep its launcher out of the measurements.
BENCH_CONF=(
    "shared_preload_libraries = 'sequin_cdc'"
    "shared_buffers = 512MB"
    "max_wal_size = 4GB"
    "checkpoint_timeout = 30min"
    "synchronous_commit = on"
    "log_min_messages = warning"
    "log_checkpoints = on"
    "log_autovacuum_min_duration = 0"
)
# EXTRA_CONF: more postgresql.conf lines, separated by ';' (e.g.
# EXTRA_CONF="logical_decoding_work_mem = 32MB; sequin_cdc.batch_changes = 50000")
if [[ -n "${EXTRA_CONF:-}" ]]; then
    IFS=';' read -r -a _extra <<<"$EXTRA_CONF"
    for _line in "${_extra[@]}"; do
        _line="${_line#"${_line%%[![:space:]]*}"}"
        [[ -z "$_line" ]] || BENCH_CONF+=("$_line")
    done
fi

DB=bench
SLOT=bench
SCRIPT="$BENCH_DIR/orders.pgbench"

mkdir -p "$BENCH_OUT"
BENCH_OUT="$(cd "$BENCH_OUT" && pwd)"

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
sql() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
now() { date +%s.%N; }
note() { printf '    %s\n' "$*" >&2; }

# Results: RES[key]="v1 v2 v3" (one value per run)
declare -A RES=()
record() { RES[$1]="${RES[$1]:-}${RES[$1]:+ }$2"; }
med() {
    # shellcheck disable=SC2086
    median ${RES[$1]:-}
}
runs_of() { echo "${RES[$1]:-}"; }
last_run() { local -a v=(${RES[$1]:-}); echo "${v[-1]:-}"; }

worker_pid() { sql -c "SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$SLOT' AND state = 'streaming'"; }

# Wait until the slot's worker streams; prints its pid.
wait_worker() {
    local pid="" i
    for ((i = 0; i < 600; i++)); do
        pid="$(worker_pid)"
        [[ -z "$pid" ]] || { echo "$pid"; return 0; }
        sleep 0.05
    done
    die "capture worker of slot $SLOT did not start"
}

# Drop every slot, rule and trigger; fresh orders; empty change tables.
reset_state() {
    sql -c "SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention" >/dev/null
    sql -c "SELECT sequin_cdc.drop_slot(slot_name) FROM pg_replication_slots WHERE plugin = 'sequin_cdc'" >/dev/null
    sql -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE plugin <> 'sequin_cdc'" >/dev/null
    sql -c "DROP TRIGGER IF EXISTS audit ON orders" \
        -c "CALL bench_reset()" \
        -c "VACUUM ANALYZE orders" \
        -c "CHECKPOINT"
}

create_sequin_slot() {
    sql -c "SELECT sequin_cdc.create_slot('$SLOT', 'bench_pub')" >/dev/null
    wait_worker >/dev/null
}

add_rule() { # source change_table [filter]
    if [[ -n "${3:-}" ]]; then
        sql -c "SELECT sequin_cdc.add_change_retention('$1', '$2', slot => '$SLOT', filter => '${3//\'/\'\'}')" >/dev/null
    else
        sql -c "SELECT sequin_cdc.add_change_retention('$1', '$2', slot => '$SLOT')" >/dev/null
    fi
}

capture_wait() { # timeout
    local ok
    ok="$(sql -c "SELECT sequin_cdc.wait_for_capture('$SLOT', '${1:-1 hour}')")"
    [[ "$ok" == t ]] || die "wait_for_capture timed out"
}

# Keep the capture worker from running: restart_delay = 1h, then terminate.
pause_worker() {
    local pid i
    pid="$(wait_worker)"
    sql -c "ALTER SYSTEM SET sequin_cdc.restart_delay = '1h'" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    sql -c "SELECT pg_terminate_backend($pid)" >/dev/null
    for ((i = 0; i < 200; i++)); do
        [[ -n "$(sql -c "SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$SLOT' AND pid IS NOT NULL")" ]] || break
        sleep 0.05
    done
    sleep 1.5   # the launcher looked at least once: no restart
    [[ -z "$(sql -c "SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$SLOT' AND pid IS NOT NULL")" ]] \
        || die "could not pause the capture worker"
}

# pgbench with the orders script; prints its tps, full output to $1.
run_pgbench() { # logfile pgbench-args...
    local logf="$1"
    shift
    pgbench -n --max-tries=10 -f "$SCRIPT" "$@" "$DB" >"$logf" 2>&1 || { cat "$logf" >&2; die "pgbench failed"; }
    perl -ne 'print $1 if /^tps = ([\d.]+) /' "$logf"
}

proc_field() { # pid field-name (from /proc/PID/status, kB)
    local k v _
    while read -r k v _; do
        [[ "$k" == "$2:" ]] && { echo "$v"; return; }
    done <"/proc/$1/status"
    echo 0
}

cpu_ticks() { # pid -> utime + stime in clock ticks
    local stat
    stat="$(<"/proc/$1/stat")"
    stat="${stat##*) }"   # fields from 3 (state) on
    # shellcheck disable=SC2086
    set -- $stat
    echo $(( ${12} + ${13} ))  # fields 14 and 15
}

machine_ticks() { # "busy total" jiffies of all CPUs (/proc/stat; busy = all but idle and iowait)
    local _cpu u n sy id io irq sirq st _rest
    read -r _cpu u n sy id io irq sirq st _rest </proc/stat
    echo "$((u + n + sy + irq + sirq + st)) $((u + n + sy + id + io + irq + sirq + st))"
}

perf_works() {
    command -v perf >/dev/null 2>&1 && perf record -q -e cpu-clock -o /dev/null true >/dev/null 2>&1
}

# ---------------------------------------------------------------------------
# Figure 1: drain
# ---------------------------------------------------------------------------
drain_run() { # run-label [perf]
    local label="$1" profile="${2:-0}"
    local c0 c1 changes t0 t1 secs rows pid perfpid="" cpu=""

    reset_state
    create_sequin_slot
    add_rule public.orders public.order_changes "$FILTER"
    sql -c "SELECT pg_create_logical_replication_slot('diy', 'wal2json')" \
        -c "SELECT pg_create_logical_replication_slot('pgo', 'pgoutput')" >/dev/null
    pause_worker

    c0="$(sql -c "SELECT bench_row_changes('orders')")"
    t0="$(now)"
    PGOPTIONS='-c synchronous_commit=off' run_pgbench "$BENCH_OUT/drain-backlog-$label.log" \
        -c "$BACKLOG_CLIENTS" -j "$BACKLOG_CLIENTS" -t $((BACKLOG_TXNS / BACKLOG_CLIENTS)) >/dev/null
    t1="$(now)"
    sleep 0.5   # pgbench's backends flush their statistics as they exit
    c1="$(sql -c "SELECT bench_row_changes('orders')")"
    changes=$((c1 - c0))
    note "drain $label: backlog of $changes row changes made in $(fmt "$(elapsed "$t0" "$t1")" 1) s, WAL $(sql -c "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) FROM pg_replication_slots WHERE slot_name = 'diy'")"
    # leave autovacuum nothing to do on orders while the contestants are timed
    sql -c "VACUUM ANALYZE orders" -c "CHECKPOINT"

    # sequin_cdc: let the launcher restart the worker, wait until caught up
    sql -c "ALTER SYSTEM RESET sequin_cdc.restart_delay" >/dev/null
    t0="$(now)"
    sql -c "SELECT pg_reload_conf()" >/dev/null
    if [[ "$profile" == 1 ]]; then
        pid="$(wait_worker)"
        perf record -q -e cpu-clock -g -p "$pid" -o "$BENCH_OUT/perf-drain.data" >/dev/null 2>&1 &
        perfpid=$!
    fi
    capture_wait '1 hour'
    t1="$(now)"
    # the worker's CPU since it started (at the reload): it is still running
    pid="$(worker_pid)"
    [[ -z "$pid" ]] || cpu="$(calc "$(cpu_ticks "$pid") / $(getconf CLK_TCK)")"
    if [[ -n "$perfpid" ]]; then
        kill -INT "$perfpid" 2>/dev/null || true
        wait "$perfpid" 2>/dev/null || true
    fi
    secs="$(elapsed "$t0" "$t1")"
    rows="$(sql -c "SELECT count(*) FROM order_changes")"
    [[ "$rows" == "$changes" ]] || note "WARNING: sequin_cdc wrote $rows change rows for $changes row changes"
    note "drain $label: sequin_cdc $(fmt "$secs" 2) s -> $(fmt "$(calc "$changes / $secs")") changes/s${cpu:+, worker CPU $(fmt "$cpu" 2) s = $(fmt "$(calc "$cpu * 1e6 / $changes")" 2) us/change}"
    if [[ "$profile" == 1 ]]; then
        return 0
    fi
    record drain_changes "$changes"
    record drain_sequin "$(calc "$changes / $secs")"
    record drain_sequin_s "$secs"
    [[ -z "$cpu" ]] || record drain_sequin_cpu_us "$(calc "$cpu * 1e6 / $changes")"
    [[ "$DRAIN_PEERS" == 1 ]] || return 0

    # DIY wal2json drain
    sql -c "CHECKPOINT"
    t0="$(now)"
    rows="$(sql -c "CALL diy_drain($DIY_BATCH)")"
    t1="$(now)"
    secs="$(elapsed "$t0" "$t1")"
    [[ "$rows" == "$changes" ]] || note "WARNING: the DIY drain wrote $rows change rows for $changes row changes"
    note "drain $label: DIY wal2json $(fmt "$secs" 2) s -> $(fmt "$(calc "$changes / $secs")") changes/s"
    record drain_diy "$(calc "$changes / $secs")"

    # raw decoding limit: pgoutput, count only
    sql -c "CHECKPOINT"
    t0="$(now)"
    sql -c "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('pgo', NULL, NULL, 'proto_version', '1', 'publication_names', 'bench_pub')" >/dev/null
    t1="$(now)"
    secs="$(elapsed "$t0" "$t1")"
    note "drain $label: raw decode $(fmt "$secs" 2) s -> $(fmt "$(calc "$changes / $secs")") changes/s"
    record drain_decode "$(calc "$changes / $secs")"

    # raw write limit: the same change rows, pre-built, into an empty change table
    sql -c "DROP TABLE IF EXISTS prebuilt" \
        -c "CREATE UNLOGGED TABLE prebuilt AS SELECT seq, source_database_id, source_table_oid, source_table_schema, source_table_name, record_pk, record, changes, action, transaction_annotations, committed_at FROM order_changes ORDER BY seq" \
        -c "VACUUM ANALYZE prebuilt" \
        -c "TRUNCATE raw_changes" \
        -c "CHECKPOINT"
    rows="$(sql -c "SELECT count(*) FROM prebuilt")"
    t0="$(now)"
    sql -c "INSERT INTO raw_changes (id, seq, source_database_id, source_table_oid, source_table_schema, source_table_name, record_pk, record, changes, action, transaction_annotations, committed_at)
            SELECT s, s, source_database_id, source_table_oid, source_table_schema, source_table_name, record_pk, record, changes, action, transaction_annotations, committed_at
              FROM (SELECT nextval('raw_changes_id_seq') AS s, p.* FROM prebuilt p) x"
    t1="$(now)"
    secs="$(elapsed "$t0" "$t1")"
    note "drain $label: raw write $(fmt "$secs" 2) s -> $(fmt "$(calc "$rows / $secs")") rows/s"
    record drain_write "$(calc "$rows / $secs")"
    sql -c "DROP TABLE prebuilt"
}

phase_drain() {
    log "figure 1: drain ($RUNS runs, backlog $BACKLOG_TXNS transactions${FILTER:+, rule filter: $FILTER})"
    local r
    for ((r = 1; r <= RUNS; r++)); do
        drain_run "$r"
    done
    if [[ "$PERF" == 1 ]]; then
        if perf_works; then
            log "figure 1: extra drain run under perf (not counted)"
            drain_run perf 1
            perf report -i "$BENCH_OUT/perf-drain.data" --stdio --no-children --sort symbol -g none \
                >"$BENCH_OUT/perf-drain-flat.txt" 2>/dev/null || true
            perf report -i "$BENCH_OUT/perf-drain.data" --stdio --no-children --sort dso \
                >"$BENCH_OUT/perf-drain-dso.txt" 2>/dev/null || true
            perf report -i "$BENCH_OUT/perf-drain.data" --stdio --children --sort symbol -g none \
                >"$BENCH_OUT/perf-drain-children.txt" 2>/dev/null || true
            note "profile: $BENCH_OUT/perf-drain-flat.txt (self), perf-drain-children.txt, perf-drain-dso.txt"
        else
            note "PERF=1: perf does not work here, no profile"
        fi
    fi
}

# ---------------------------------------------------------------------------
# Figure 2: online
# ---------------------------------------------------------------------------
online_run() { # config run [profile]
    local cfg="$1" r="$2" profile="${3:-0}" tps t0 t1 samp sampler="" stats logf mb0 mt0 mb1 mt1
    reset_state
    case "$cfg" in
        slot) create_sequin_slot ;;
        sequin) create_sequin_slot; add_rule public.orders public.order_changes ;;
        trigger) sql -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON orders FOR EACH ROW EXECUTE FUNCTION audit_changes_trg('id')" ;;
    esac
    sql -c "CHECKPOINT"
    logf="$BENCH_OUT/online-$cfg-$r.log"
    samp="$BENCH_OUT/online-$cfg-$r.staleness"
    if [[ "$cfg" == sequin && "$profile" != 1 ]]; then
        # staleness sampler: starts 1 s into the run, stops when pgbench exits
        printf '%s\n' "SELECT pg_sleep(1);" \
            "SELECT extract(epoch FROM clock_timestamp() - last_commit_time) * 1000 FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$SLOT';" \
            '\watch 0.1' >"$BENCH_OUT/.staleness.sql"
        psql -X -At -d "$DB" -f "$BENCH_OUT/.staleness.sql" >"$samp" 2>/dev/null &
        sampler=$!
    fi
    local wpid="" w0=0 w1 m0 m1 perfpid=""
    [[ "$cfg" == trigger ]] || { wpid="$(wait_worker)"; w0="$(cpu_ticks "$wpid")"; }
    if [[ "$profile" == 1 && -n "$wpid" ]]; then
        perf record -q -e cpu-clock -g -p "$wpid" -o "$BENCH_OUT/perf-online.data" >/dev/null 2>&1 &
        perfpid=$!
    fi
    m0="$(machine_ticks)"
    t0="$(now)"
    tps="$(run_pgbench "$logf" -c "$ONLINE_CLIENTS" -j "$ONLINE_CLIENTS" -T "$ONLINE_SECONDS")"
    t1="$(now)"
    m1="$(machine_ticks)"
    if [[ -n "$perfpid" ]]; then
        kill -INT "$perfpid" 2>/dev/null || true
        wait "$perfpid" 2>/dev/null || true
    fi
    if [[ -n "$wpid" ]]; then
        w1="$(cpu_ticks "$wpid")"
        [[ "$profile" == 1 ]] || record "online_${cfg}_wcpu" "$(calc "100 * ($w1 - $w0) / $(getconf CLK_TCK) / $(elapsed "$t0" "$t1")")"
    fi
    read -r mb0 mt0 <<<"$m0"
    read -r mb1 mt1 <<<"$m1"
    if [[ "$profile" == 1 ]]; then
        note "online (profiled, not counted) $cfg: $(fmt "$tps") tps"
        return 0
    fi
    record "online_${cfg}_mcpu" "$(calc "100 * ($mb1 - $mb0) / ($mt1 - $mt0)")"
    record "online_$cfg" "$tps"
    if [[ "$cfg" == sequin ]]; then
        capture_wait '10 min'
        local drained
        drained="$(elapsed "$t1" "$(now)")"
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        record online_drained_ms "$(calc "$drained * 1000")"
        stats="$(sql -F ' ' -c "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l), count(*)
                              FROM (SELECT extract(epoch FROM inserted_at - committed_at) * 1000 AS l FROM order_changes) s")"
        read -r p50 p99 pmax nrows <<<"$stats"
        record online_lag_p50 "$p50"
        record online_lag_p99 "$p99"
        record online_lag_max "$pmax"
        # staleness samples taken while pgbench ran
        local -a sv
        mapfile -t sv < <(grep -E '^[0-9.]+$' "$samp" || true)
        if [[ ${#sv[@]} -gt 0 ]]; then
            stats="$(perl -e 'my @v = sort { $a <=> $b } @ARGV; my $n = @v;
                my $at = sub { my $i = int($n * $_[0] + 0.5); $i = 1 if $i < 1; $i = $n if $i > $n; $v[$i - 1] };
                printf "%s %s %s %d", $at->(0.5), $at->(0.99), $v[-1], $n' "${sv[@]}")"
            read -r s50 s99 smax ns <<<"$stats"
            record online_stale_p50 "$s50"
            record online_stale_p99 "$s99"
            record online_stale_max "$smax"
        fi
        note "online $r sequin_cdc: $(fmt "$tps") tps, worker CPU $(fmt "$(last_run online_sequin_wcpu)" 1) %, machine CPU busy $(fmt "$(last_run online_sequin_mcpu)") %, $nrows change rows, lag p50/p99/max $(fmt "$p50" 1)/$(fmt "$p99" 1)/$(fmt "$pmax" 1) ms, staleness p50/p99/max $(fmt "${s50:-0}" 1)/$(fmt "${s99:-0}" 1)/$(fmt "${smax:-0}" 1) ms (${ns:-0} samples), drained in $(fmt "$(calc "$drained * 1000")") ms"
    else
        note "online $r $cfg: $(fmt "$tps") tps${wpid:+, worker CPU $(fmt "$(last_run online_${cfg}_wcpu)" 1) %}, machine CPU busy $(fmt "$(last_run online_${cfg}_mcpu)") %"
    fi
}

phase_online() {
    log "figure 2: online ($RUNS runs x 3 configurations, $ONLINE_CLIENTS clients, ${ONLINE_SECONDS} s each)"
    local r cfg
    for ((r = 1; r <= RUNS; r++)); do
        for cfg in slot sequin trigger; do
            online_run "$cfg" "$r"
        done
        record online_ratio_sequin "$(calc "$(last_run online_sequin) / $(last_run online_slot)")"
        record online_ratio_trigger "$(calc "$(last_run online_trigger) / $(last_run online_slot)")"
    done
    if [[ "$PERF" == 1 ]]; then
        if perf_works; then
            log "figure 2: extra sequin_cdc online run under perf (not counted)"
            online_run sequin perf 1
            perf report -i "$BENCH_OUT/perf-online.data" --stdio --no-children --sort symbol -g none \
                >"$BENCH_OUT/perf-online-flat.txt" 2>/dev/null || true
            perf report -i "$BENCH_OUT/perf-online.data" --stdio --children --sort symbol -g none \
                >"$BENCH_OUT/perf-online-children.txt" 2>/dev/null || true
            note "profile: $BENCH_OUT/perf-online-flat.txt (self), perf-online-children.txt"
        else
            note "PERF=1: perf does not work here, no profile"
        fi
    fi
}

# ---------------------------------------------------------------------------
# Figure 3: memory
# ---------------------------------------------------------------------------
rss_sampler() { # pid stopfile outfile: peak RssAnon (kB) while stopfile is absent
    local pid="$1" stop="$2" out="$3" peak=0 v
    while [[ ! -e "$stop" && -e "/proc/$pid/status" ]]; do
        v="$(proc_field "$pid" RssAnon)"
        ((v > peak)) && peak=$v
        sleep 0.05
    done
    echo "$peak" >"$out"
}

mem_run() { # rows label
    local rows="$1" label="$2" pid base_anon base_hwm peak hwm t0 t1 stop="$BENCH_OUT/.rss-stop" sp
    # a fresh worker: terminate it, the launcher restarts it (restart_delay 1s)
    pid="$(wait_worker)"
    sql -c "SELECT pg_terminate_backend($pid)" >/dev/null
    while [[ "$(worker_pid)" == "$pid" || -z "$(worker_pid)" ]]; do sleep 0.1; done
    pid="$(worker_pid)"
    # warm-up (catalog caches, first batch), then the idle baseline
    sql -c "INSERT INTO mem_t SELECT -g, g FROM generate_series(1, 1000) g"
    capture_wait '1 min'
    sleep 0.5
    base_anon="$(proc_field "$pid" RssAnon)"
    base_hwm="$(proc_field "$pid" VmHWM)"
    rm -f "$stop"
    rss_sampler "$pid" "$stop" "$BENCH_OUT/.rss-peak" &
    sp=$!
    t0="$(now)"
    sql -c "INSERT INTO mem_t SELECT g, g FROM generate_series(1, $rows) g"
    capture_wait '2 hours'
    t1="$(now)"
    touch "$stop"
    wait "$sp" || true
    peak="$(<"$BENCH_OUT/.rss-peak")"
    ((peak < base_anon)) && peak=$base_anon
    hwm="$(proc_field "$pid" VmHWM)"
    [[ "$(worker_pid)" == "$pid" ]] || note "WARNING: the capture worker restarted during the memory run"
    record "mem_${label}_growth" "$(calc "($peak - $base_anon) / 1024")"
    record "mem_${label}_hwm" "$(calc "($hwm - $base_hwm) / 1024")"
    record "mem_${label}_rate" "$(calc "$rows / $(elapsed "$t0" "$t1")")"
    note "memory $label: $(fmt "$rows") rows in $(fmt "$(elapsed "$t0" "$t1")" 1) s (insert + capture); RssAnon $((base_anon / 1024)) -> peak $((peak / 1024)) MB; VmHWM $((base_hwm / 1024)) -> $((hwm / 1024)) MB"
    # clean up: drop the rule so that the truncate is not captured, then re-add
    sql -c "SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention" >/dev/null
    sql -c "TRUNCATE mem_t, mem_changes" -c "CHECKPOINT"
    add_rule public.mem_t public.mem_changes
    capture_wait '1 min'
}

phase_memory() {
    local r size label avail need
    reset_state
    create_sequin_slot
    add_rule public.mem_t public.mem_changes
    for size in "$MEM_ROWS_SMALL" "$MEM_ROWS_BIG"; do
        [[ "$size" -gt 0 ]] || continue
        label="$size"
        # ~0.7 kB per row: source, change rows, indexes and WAL
        need=$((size * 7 / 10 / 1024 + 4096))
        avail="$(df -m --output=avail "$SEQUIN_CLUSTER_DIR" | tail -n 1)"
        if ((avail < need)); then
            note "memory: skipping $size rows: $avail MB free, about $need MB needed"
            continue
        fi
        log "figure 3: memory, one $(fmt "$size")-row transaction ($MEM_RUNS runs)"
        MEM_LABELS+=("$label")
        for ((r = 1; r <= MEM_RUNS; r++)); do
            mem_run "$size" "$label"
        done
    done
}

# ---------------------------------------------------------------------------
# Figure 4: idle
# ---------------------------------------------------------------------------
phase_idle() {
    local pid r win c0 c1 t0 t1 tck tot0 tot1 ttot0
    win="$(calc "$IDLE_SECONDS / $RUNS")"
    log "figure 4: idle worker CPU over ${IDLE_SECONDS} s ($RUNS windows of $(fmt "$win" 1) s)"
    if [[ -z "$(worker_pid)" ]]; then
        reset_state
        create_sequin_slot
        add_rule public.orders public.order_changes
    fi
    sql -c "VACUUM" -c "CHECKPOINT"
    sleep 2
    pid="$(worker_pid)"
    tck="$(getconf CLK_TCK)"
    tot0="$(cpu_ticks "$pid")"
    ttot0="$(now)"
    for ((r = 1; r <= RUNS; r++)); do
        c0="$(cpu_ticks "$pid")"
        t0="$(now)"
        sleep "$win"
        c1="$(cpu_ticks "$pid")"
        t1="$(now)"
        record idle_cpu "$(calc "100 * ($c1 - $c0) / $tck / $(elapsed "$t0" "$t1")")"
    done
    tot1="$(cpu_ticks "$pid")"
    IDLE_TOTAL="$(calc "100 * ($tot1 - $tot0) / $tck / $(elapsed "$ttot0" "$(now)")")"
    [[ "$(worker_pid)" == "$pid" ]] || note "WARNING: the capture worker restarted during the idle run"
    note "idle: windows $(runs_of idle_cpu) %; whole ${IDLE_SECONDS} s: $IDLE_TOTAL %"
}

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
# load average, and other PostgreSQL servers running on this machine (they
# share the cores with the benchmark and make its figures noisy)
machine_load() {
    local others
    others="$(pgrep -x postgres -a 2>/dev/null | grep -c -- ' -D ' || true)"
    others=$((others > 0 ? others - 1 : 0))
    echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg), other postgres servers running: $others"
}

machine_facts() {
    echo "## Machine"
    echo "cores (nproc):   $(nproc)"
    echo "CPU:             $(lscpu 2>/dev/null | perl -ne 'if (/^Model name:\s*(.*)/) { print $1; last }')"
    echo "RAM:             $(perl -ne 'printf "%.1f GiB", $1 / 1048576 if /^MemTotal:\s+(\d+)/' /proc/meminfo)"
    echo "kernel:          $(uname -sr)"
    echo "disk (cluster):  $(df -h --output=source,avail,size "$SEQUIN_CLUSTER_DIR" | tail -n 1 | perl -ane 'print "$F[0], $F[1] free of $F[2]"')"
    echo "PostgreSQL:      $(sql -c "SELECT version()")"
    echo "sequin_cdc:      $(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'") (installed $(stat -c %y "$($PG_CONFIG --pkglibdir)/sequin_cdc.so" | cut -d. -f1))"
    echo "settings:        $(sql -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
        WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'wal_level', 'max_wal_size', 'checkpoint_timeout',
                       'full_page_writes', 'wal_compression', 'logical_decoding_work_mem', 'work_mem', 'autovacuum',
                       'sequin_cdc.batch_changes', 'sequin_cdc.batch_delay', 'sequin_cdc.buffer_memory', 'sequin_cdc.poll_interval')")"
    echo "load:            $(machine_load)"
    echo "sizes:           RUNS=$RUNS BACKLOG_TXNS=$BACKLOG_TXNS (x4 changes) DIY_BATCH=$DIY_BATCH ONLINE_CLIENTS=$ONLINE_CLIENTS ONLINE_SECONDS=$ONLINE_SECONDS MEM_ROWS_SMALL=$MEM_ROWS_SMALL MEM_ROWS_BIG=$MEM_ROWS_BIG MEM_RUNS=$MEM_RUNS IDLE_SECONDS=$IDLE_SECONDS"
}

report() {
    local fmtrow='%-46s %14s %14s %14s %14s %14s %14s  %-26s %s\n'
    echo
    echo "## Results (median of $RUNS runs; single runs below)"
    echo
    # shellcheck disable=SC2059
    printf "$fmtrow" "Figure" "sequin_cdc" "DIY wal2json" "trigger" "slot-only" "raw decode" "raw write" "Target" "Result"
    # shellcheck disable=SC2059
    printf "$fmtrow" "------" "----------" "------------" "-------" "---------" "----------" "---------" "------" "------"

    if [[ -n "${RES[drain_sequin]:-}" ]]; then
        local ds dd x
        ds="$(med drain_sequin)"
        dd="$(med drain_diy)"
        x="$(if [[ -n "$dd" ]]; then calc "$ds / $dd"; fi)"
        # shellcheck disable=SC2059
        printf "$fmtrow" "1 drain, changes/s ($(fmt "$(med drain_changes)") changes)" "$(fmt "$ds")" "$(fmt "$dd")" "-" "-" \
            "$(fmt "$(med drain_decode)")" "$(fmt "$(med drain_write)")" \
            ">=120,000 and >=3x DIY" \
            "$(verdict "$ds >= 120000") ($(fmt "$ds")) / $(if [[ -n "$dd" ]]; then echo "$(verdict "$ds >= 3 * $dd") ($(fmt "$x" 2)x DIY)"; else echo "DIY not run"; fi)"
    fi
    if [[ -n "${RES[online_sequin]:-}" ]]; then
        local ts ta tt rs rt
        ts="$(med online_sequin)"; ta="$(med online_slot)"; tt="$(med online_trigger)"
        rs="$(med online_ratio_sequin)"; rt="$(med online_ratio_trigger)"
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 online, tps ($ONLINE_CLIENTS clients, ${ONLINE_SECONDS} s)" "$(fmt "$ts")" "-" "$(fmt "$tt")" "$(fmt "$ta")" "-" "-" \
            "sequin >=0.95x slot-only" "$(verdict "$rs >= 0.95")"
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 online, tps / slot-only" "$(fmt "$rs" 3)" "-" "$(fmt "$rt" 3)" "1" "-" "-" "" "(trigger $(fmt "$rt" 2)x)"
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 online, capture worker CPU, % of a core" "$(fmt "$(med online_sequin_wcpu)" 1)" "-" "-" "$(fmt "$(med online_slot_wcpu)" 1)" "-" "-" "" ""
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 online, machine CPU busy, % of all cores" "$(fmt "$(med online_sequin_mcpu)")" "-" "$(fmt "$(med online_trigger_mcpu)")" "$(fmt "$(med online_slot_mcpu)")" "-" "-" "" ""
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 lag commit->row p50 / p99 / max, ms" \
            "$(fmt "$(med online_lag_p50)") / $(fmt "$(med online_lag_p99)") / $(fmt "$(med online_lag_max)")" "-" "0 (same txn)" "-" "-" "-" \
            "p99 < 1000 ms" "$(verdict "$(med online_lag_p99) < 1000")"
        if [[ -n "${RES[online_stale_p99]:-}" ]]; then
            # shellcheck disable=SC2059
            printf "$fmtrow" "2 staleness (sampled) p50 / p99 / max, ms" \
                "$(fmt "$(med online_stale_p50)") / $(fmt "$(med online_stale_p99)") / $(fmt "$(med online_stale_max)")" "-" "-" "-" "-" "-" "" ""
        fi
        # shellcheck disable=SC2059
        printf "$fmtrow" "2 final lag drained, ms" "$(fmt "$(med online_drained_ms)")" "-" "-" "-" "-" "-" "" ""
    fi
    local label
    for label in "${MEM_LABELS[@]}"; do
        local g target="" res=""
        g="$(med "mem_${label}_growth")"
        if [[ "$label" == "$MEM_ROWS_BIG" ]]; then
            target="< 64 MB"
            res="$(verdict "$g < 64")"
        fi
        # shellcheck disable=SC2059
        printf "$fmtrow" "3 worker RssAnon growth, $(fmt "$label")-row txn, MB" "$(fmt "$g" 1)" "-" "-" "-" "-" "-" "$target" "$res"
        # shellcheck disable=SC2059
        printf "$fmtrow" "  (VmHWM growth incl. shared buffers, MB)" "$(fmt "$(med "mem_${label}_hwm")" 1)" "" "" "" "" "" "" ""
    done
    if [[ -n "${RES[idle_cpu]:-}" ]]; then
        local ic
        ic="$(med idle_cpu)"
        # shellcheck disable=SC2059
        printf "$fmtrow" "4 idle worker CPU, % (${IDLE_SECONDS} s)" "$(fmt "$ic" 3)" "-" "-" "-" "-" "-" "< 1 %" "$(verdict "$ic < 1")"
    fi

    echo
    echo "### Single runs"
    local k
    for k in drain_changes drain_sequin drain_sequin_s drain_sequin_cpu_us drain_diy drain_decode drain_write \
        online_slot online_sequin online_trigger online_ratio_sequin online_ratio_trigger \
        online_slot_wcpu online_sequin_wcpu online_slot_mcpu online_sequin_mcpu online_trigger_mcpu \
        online_lag_p50 online_lag_p99 online_lag_max online_stale_p50 online_stale_p99 online_stale_max online_drained_ms; do
        [[ -n "${RES[$k]:-}" ]] || continue
        printf '  %-22s %s\n' "$k" "$(for v in ${RES[$k]}; do printf '%s  ' "$(fmt_auto "$v")"; done)"
    done
    for label in "${MEM_LABELS[@]}"; do
        for k in "mem_${label}_growth" "mem_${label}_hwm" "mem_${label}_rate"; do
            printf '  %-22s %s\n' "$k" "$(for v in ${RES[$k]}; do printf '%s  ' "$(fmt "$v" 1)"; done)"
        done
    done
    [[ -z "${RES[idle_cpu]:-}" ]] || printf '  %-22s %s (whole %s s: %s %%)\n' idle_cpu "$(for v in ${RES[idle_cpu]}; do printf '%s  ' "$(fmt "$v" 3)"; done)" "$IDLE_SECONDS" "$(fmt "$IDLE_TOTAL" 3)"
    echo
    echo "Units: drain = row changes per second (DIY, decode: same backlog; raw write: change rows/s); lag = change-row inserted_at - committed_at"
    echo "(inserted_at is the start of the worker's write transaction); staleness = clock_timestamp() - pg_stat_capture.last_commit_time every 100 ms;"
    echo "memory = peak RssAnon (50 ms samples) - RssAnon at idle, fresh worker each run; idle = (utime+stime)/elapsed of the capture worker."
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
(( RUNS >= 1 )) || die "RUNS must be >= 1"
((BACKLOG_TXNS % BACKLOG_CLIENTS == 0)) || die "BACKLOG_TXNS must be a multiple of BACKLOG_CLIENTS"
MEM_LABELS=()
IDLE_TOTAL=""

# keep the server log (checkpoints, autovacuum runs) with the results
# shellcheck disable=SC2317  # called by bench/lib.sh's EXIT trap
bench_on_exit() {
    [[ -z "$SEQUIN_CLUSTER_DIR" || ! -f "$SEQUIN_CLUSTER_DIR/server.log" ]] \
        || cp "$SEQUIN_CLUSTER_DIR/server.log" "$BENCH_OUT/server.log" 2>/dev/null || true
}
bench_start "$DB" "${BENCH_CONF[@]}"
sql -f "$BENCH_DIR/sql/setup.sql" >/dev/null

# WAL warm-up: a new cluster has to create (zero-fill) every WAL segment it
# writes, a warm one recycles them.  Write and recycle ~WARM_WAL_MB of WAL so
# that the first run does not pay for that and the later ones do not.
if [[ "${WARM_WAL_MB:-1536}" -gt 0 ]]; then
    log "WAL warm-up (${WARM_WAL_MB:-1536} MB)"
    sql -c "CREATE TABLE wal_warmup AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, ${WARM_WAL_MB:-1536} * 4000) g" \
        -c "DROP TABLE wal_warmup" -c "CHECKPOINT" -c "CHECKPOINT"
fi

START="$(now)"
FACTS="$(machine_facts)"
echo "$FACTS"
for phase in $PHASES; do
    case "$phase" in
        drain) phase_drain ;;
        online) phase_online ;;
        memory) phase_memory ;;
        idle) phase_idle ;;
        *) die "unknown phase $phase (drain online memory idle)" ;;
    esac
done

{
    echo
    echo "# sequin_cdc benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(fmt "$(elapsed "$START" "$(now)")") s"
    echo "$FACTS"
    echo "load at end:     $(machine_load)"
    report
} | tee "$BENCH_OUT/report.txt"
echo "(raw logs in $BENCH_OUT)"
exit 0
