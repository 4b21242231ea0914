# shellcheck shell=bash
#
# bench/lib.sh -- what the benchmark scripts share (sourced, defines functions):
#
#   bench_start DB [CONF_LINE...]
#                     dependencies, the extension built when SKIP_BUILD=0
#                     (default: use the installed one), a throwaway cluster
#                     (test/lib/cluster.sh) with BENCH_BASE_CONF then the given
#                     lines (later lines win), database DB with sequin_cdc, and
#                     WORK_DIR (a temp dir the run user may write); everything
#                     is stopped and removed at exit
#   psql_bench ARGS   psql -At on that database, as the run user
#   bench_capture SOURCE CHANGE_TABLE   slot bench_slot capturing SOURCE
#   bench_bg VAR CMD...  start CMD in the background as the run user; its pid
#                     goes to VAR and it is killed at exit if still running
#   bench_stop PID    stop a background command now
#   machine_summary   "2 CPUs, 23.5 GiB RAM, PostgreSQL 15.20"
# Figures (Perl, not awk):
#   calc EXPR         EXPR evaluated, 6 decimals       calc "3 / 2" -> 1.500000
#   elapsed T0 T1     T1 - T0 (times from now)         now: date +%s.%N
#   median V...       the median (mean of the two middle values if even)
#   fmt V [DEC]       1234567.8 -> 1,234,568 (DEC decimals, default 0; "-" if empty)
#   fmt_auto V        2 decimals below 10, 1 below 100, none above
#   verdict EXPR      PASS when the Perl expression is true, else FAIL
#
# Knobs: SKIP_BUILD=1 (default), SKIP_DEPS=1, KEEP_CLUSTER=1, PG_CONFIG /
# SEQUIN_PG_BINDIR (the server, as for test/run.sh).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=test/lib/cluster.sh
source "$BENCH_DIR/../test/lib/cluster.sh"

: "${SKIP_BUILD:=1}"
BENCH_DB=""
WORK_DIR=""
BENCH_PIDS=()

# Settings of every benchmark cluster: durable commits, room for big runs.
BENCH_BASE_CONF=(
    "fsync = on"
    "shared_buffers = '1GB'"
    "max_wal_size = '8GB'"
    "checkpoint_timeout = '30min'"
)

# EXIT trap: the script's bench_on_exit (if it defines one), background
# commands, cluster, work dir.
# shellcheck disable=SC2317  # invoked indirectly via trap
bench_cleanup() {
    local rc=$? p
    if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
    for p in "${BENCH_PIDS[@]}"; do bench_stop "$p"; done
    stop_cluster "$rc"
    [[ -n "$WORK_DIR" ]] && rm -rf -- "$WORK_DIR"
    exit "$rc"
}

bench_start() {
    BENCH_DB="$1"
    shift
    trap bench_cleanup EXIT
    cd "$SEQUIN_REPO_TOP"
    ensure_deps
    [[ "$SKIP_BUILD" == 1 ]] || build_install
    pick_run_user
    start_cluster "$BENCH_DB" "${BENCH_BASE_CONF[@]}" "$@"
    WORK_DIR="$(mktemp -d /tmp/sequin_cdc_bench.XXXXXX)"
    chown "$RUN_USER" "$WORK_DIR"
    as_run_user "$PG_BINDIR/createdb" "$BENCH_DB"
    psql_bench -c "CREATE EXTENSION sequin_cdc"
}

psql_bench() {
    as_run_user "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -At -d "$BENCH_DB" "$@"
}

bench_bg() {
    local var="$1"
    shift
    as_run_user "$@" &
    BENCH_PIDS+=($!)
    printf -v "$var" '%s' "$!"
}

bench_stop() {
    local p="$1"
    if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
        pkill -TERM -P "$p" 2>/dev/null || true   # the command under runuser
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    fi
}

# bench_capture SOURCE CHANGE_TABLE: capture SOURCE into a new change table
# (publication bench_pub, slot bench_slot, a retention rule).
bench_capture() {
    psql_bench -c "SELECT sequin_cdc.create_change_table('$2')" \
        -c "SELECT sequin_cdc.create_publication('bench_pub', ARRAY['$1']::regclass[])" >/dev/null
    psql_bench -c "SELECT sequin_cdc.create_slot('bench_slot', 'bench_pub')" >/dev/null
    psql_bench -c "SELECT sequin_cdc.add_change_retention('$1', '$2', slot => 'bench_slot')" >/dev/null
}

machine_summary() {
    perl -e '
        open my $m, "<", "/proc/meminfo" or die; my ($kb) = join("", <$m>) =~ /^MemTotal:\s+(\d+)/m;
        printf "%d CPUs, %.1f GiB RAM, PostgreSQL %s", $ARGV[0], $kb / 1048576, $ARGV[1]' \
        "$(nproc)" "$(psql_bench -c "SHOW server_version")"
}

calc() { perl -e 'my $v = eval $ARGV[0]; die "calc: $ARGV[0]: $@" if $@; printf "%.6f", $v' "$*"; }
elapsed() { calc "$2 - $1"; }

median() {
    [[ $# -gt 0 ]] || { echo ""; return; }
    perl -e 'my @v = sort { $a <=> $b } @ARGV; my $n = @v;
        printf "%.6f", $n % 2 ? $v[($n - 1) / 2] : ($v[$n / 2 - 1] + $v[$n / 2]) / 2' "$@"
}

fmt() {
    [[ -n "${1:-}" ]] || { echo "-"; return; }
    perl -e 'my $s = sprintf("%.$ARGV[1]f", $ARGV[0]); 1 while $s =~ s/^(-?\d+)(\d{3})/$1,$2/; print $s' \
        "$1" "${2:-0}"
}

fmt_auto() {
    [[ -n "${1:-}" ]] || { echo "-"; return; }
    fmt "$1" "$(perl -e 'my $a = abs $ARGV[0]; print $a < 10 ? 2 : $a < 100 ? 1 : 0' "$1")"
}

verdict() { if perl -e 'exit !eval $ARGV[0]' "$1"; then echo PASS; else echo FAIL; fi; }
