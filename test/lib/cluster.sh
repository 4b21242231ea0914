# shellcheck shell=bash
#
# test/lib/cluster.sh -- the server to test against, its dependencies, the OS
# user that runs it, and a throwaway cluster for test/quickstart.sh and the
# benchmarks. Sourced by test/run.sh, test/quickstart.sh and bench/lib.sh;
# sourcing it only sets the variables below and defines functions.
# (pg_regress makes its own server: see the Makefile's REGRESS_OPTS.)
#
# The server: PG_CONFIG=/path/to/pg_config, else SEQUIN_PG_BINDIR=DIR (its
# bin directory), else Debian's PostgreSQL 15. ensure_deps exports
# PG_CONFIG, PG_BINDIR and PG_MAJOR (15, 18, ...).
#
# Functions:
#   ensure_deps             install what the build and tests need (apt-get)
#   build_install           make clean all && make install
#   have_pg_cron / have_pg_partman / have_output_plugin_libraries
#   pick_run_user           choose the OS user that runs servers and tests
#   as_run_user CMD...      run CMD as that user, keeping the PG* environment
#   start_cluster DB [LINE...]
#                           initdb + start a throwaway cluster configured by
#                           test/lib/*.conf (pg_cron's database: DB), export PG*
#   stop_cluster [RC]       stop it, show its log on failure, remove it
#
# Knobs: SKIP_DEPS=1 (install nothing), KEEP_CLUSTER=1 (keep the cluster's
# directory), SEQUIN_LOG_TAIL=N (lines of server.log shown on failure, 100).

: "${SEQUIN_LOG_TAIL:=100}"

# Repository top: this file lives in <top>/test/lib/.
SEQUIN_REPO_TOP="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SEQUIN_CONF_DIR="$SEQUIN_REPO_TOP/test/lib"

RUN_USER="${RUN_USER:-}"
SEQUIN_CLUSTER_DIR=""

if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# The server under test
# ---------------------------------------------------------------------------
if [[ -n "${PG_CONFIG:-}" && -n "${SEQUIN_PG_BINDIR:-}" \
    && "$(readlink -f "$PG_CONFIG")" != "$(readlink -f "$SEQUIN_PG_BINDIR/pg_config")" ]]; then
    die "PG_CONFIG=$PG_CONFIG and SEQUIN_PG_BINDIR=$SEQUIN_PG_BINDIR name different servers"
fi
if [[ -z "${PG_CONFIG:-}" || "$PG_CONFIG" == pg_config ]]; then
    PG_CONFIG="${SEQUIN_PG_BINDIR:-/usr/lib/postgresql/15/bin}/pg_config"
fi
# Debian's layout (/usr/lib/postgresql/N/bin): the major version apt can
# install when the server is missing; empty for any other server.
DEBIAN_PG_MAJOR=""
[[ "$PG_CONFIG" =~ ^/usr/lib/postgresql/([0-9]+)/bin/pg_config$ ]] && DEBIAN_PG_MAJOR="${BASH_REMATCH[1]}"

# PG_BINDIR and PG_MAJOR from pg_config (once it exists).
_read_pg_config() {
    PG_BINDIR="$("$PG_CONFIG" --bindir)"
    PG_MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
    export PG_CONFIG PG_BINDIR PG_MAJOR
}

have_pg_cron() { [[ -f "$("$PG_CONFIG" --pkglibdir)/pg_cron.so" ]]; }
have_pg_partman() { [[ -f "$("$PG_CONFIG" --sharedir)/extension/pg_partman.control" ]]; }
# Servers before Debian's 15.19 refuse to start when postgresql.conf names it.
have_output_plugin_libraries() {
    local desc
    desc="$("$PG_BINDIR/postgres" --describe-config 2>/dev/null)" || return 1
    [[ "$desc" =~ (^|$'\n')output_plugin_libraries[[:space:]] ]]
}

# ---------------------------------------------------------------------------
# Dependencies and build
# ---------------------------------------------------------------------------

# The missing prerequisites, one per line (nothing when all are there).
# pg_cron, pg_partman and wal2json count only for a Debian server (apt has
# them for it); elsewhere the tests that need them are skipped.
_missing_deps() {
    if [[ -x "$PG_CONFIG" ]]; then
        [[ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ]] || echo "server headers"
        if [[ -n "$DEBIAN_PG_MAJOR" ]]; then
            have_pg_cron || echo "pg_cron"
            have_pg_partman || echo "pg_partman"
            [[ -f "$("$PG_CONFIG" --pkglibdir)/wal2json.so" ]] || echo "wal2json"
        fi
    else
        echo "pg_config"
    fi
    if [[ ! -f /usr/include/x86_64-linux-gnu/curl/curl.h ]] && ! command -v curl-config >/dev/null 2>&1; then
        echo "libcurl headers"
    fi
    [[ -f /usr/include/librdkafka/rdkafka_mock.h ]] || echo "librdkafka headers"
    command -v kcat >/dev/null 2>&1 || echo "kcat"
    perl -MIPC::Run -e 1 >/dev/null 2>&1 || echo "perl IPC::Run"
    command -v make >/dev/null 2>&1 || echo "make"
    command -v gcc >/dev/null 2>&1 || echo "gcc"
}

# Install what is missing (the PostgreSQL packages only for a Debian server
# path; a server of your own must exist already). Reads pg_config after.
ensure_deps() {
    if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
        local missing
        missing="$(_missing_deps)"
        if [[ -n "$missing" ]]; then
            log "missing: $(paste -sd, <<<"$missing"); installing packages"
            local -a pkgs=(libcurl4-openssl-dev librdkafka-dev kcat libipc-run-perl make gcc)
            if [[ -n "$DEBIAN_PG_MAJOR" ]]; then
                local p
                pkgs+=("postgresql-$DEBIAN_PG_MAJOR" "postgresql-server-dev-$DEBIAN_PG_MAJOR")
                "${SUDO[@]}" apt-get update
                for p in cron partman wal2json; do
                    apt-cache show "postgresql-$DEBIAN_PG_MAJOR-$p" >/dev/null 2>&1 \
                        && pkgs+=("postgresql-$DEBIAN_PG_MAJOR-$p")
                done
            else
                "${SUDO[@]}" apt-get update
            fi
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"
        fi
    fi
    [[ -x "$PG_CONFIG" ]] || die "$PG_CONFIG not found (give PG_CONFIG=/path/to/pg_config or SEQUIN_PG_BINDIR=DIR)"
    _read_pg_config
    export PATH="$PG_BINDIR:$PATH"
    log "server: $("$PG_CONFIG" --version) ($PG_BINDIR)"
}

# Build the extension from a clean tree and install it into the server.
build_install() {
    log "building and installing sequin_cdc from $SEQUIN_REPO_TOP"
    make -C "$SEQUIN_REPO_TOP" PG_CONFIG="$PG_CONFIG" clean all
    "${SUDO[@]}" make -C "$SEQUIN_REPO_TOP" PG_CONFIG="$PG_CONFIG" install
}

# ---------------------------------------------------------------------------
# Which OS user runs the servers and the tests
# ---------------------------------------------------------------------------

# initdb, postgres and pg_regress refuse to run as root, and the regression
# tests expect the bootstrap superuser to be called postgres (pg_regress's
# initdb names it after the OS user). So servers run as the OS user postgres
# (created if absent) when we are root or can sudo to it; otherwise as us.
pick_run_user() {
    if [[ $(id -u) -eq 0 ]]; then
        RUN_USER=postgres
        if ! id -u "$RUN_USER" >/dev/null 2>&1; then
            log "creating OS user $RUN_USER"
            useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$RUN_USER"
        fi
    elif id -u postgres >/dev/null 2>&1 && sudo -n -u postgres true 2>/dev/null; then
        RUN_USER=postgres
    else
        RUN_USER="$(id -un)"
        [[ "$RUN_USER" == postgres ]] \
            || log "WARNING: running as $RUN_USER (no sudo to postgres): tests that name role postgres will differ"
    fi
    export RUN_USER
}

# Environment handed through to commands run as another user.
SEQUIN_PASS_ENV=(
    PATH PG_CONFIG PGHOST PGPORT PGUSER PGDATA PGDATABASE LANG LC_ALL TZ
    PROVE_FLAGS PROVE_TESTS PG_TEST_EXTRA PG_TEST_NOCLEAN PG_TEST_TIMEOUT_DEFAULT
)

# as_run_user CMD [ARGS...]: run CMD as $RUN_USER in the current directory
# (runuser as root, sudo otherwise; both reset the environment, so the
# variables in SEQUIN_PASS_ENV are passed again through env(1)).
as_run_user() {
    [[ -n "$RUN_USER" ]] || pick_run_user
    if [[ "$RUN_USER" == "$(id -un)" ]]; then
        "$@"
        return
    fi
    local -a envargs=()
    local var
    for var in "${SEQUIN_PASS_ENV[@]}"; do
        [[ -n "${!var+x}" ]] && envargs+=("$var=${!var}")
    done
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$RUN_USER" -- env "${envargs[@]}" "$@"
    else
        sudo -n -u "$RUN_USER" env "${envargs[@]}" "$@"
    fi
}

# ---------------------------------------------------------------------------
# A throwaway cluster (quickstart, benchmarks)
# ---------------------------------------------------------------------------

# start_cluster CRON_DB [EXTRA_CONF_LINE...]
# initdb a cluster owned by $RUN_USER in a new temp dir, configured like the
# regression server (test/lib/sequin.conf, pg_cron.conf when pg_cron is
# installed, with cron.database_name = CRON_DB, output_plugins.conf when the
# server knows it), then the extra lines (later settings win). It listens on
# a Unix socket in its own directory only, so no port can clash.
#   $SEQUIN_CLUSTER_DIR/data, $SEQUIN_CLUSTER_DIR/server.log
# Exports PGHOST, PGPORT, PGUSER=postgres, PGDATA. Call `trap stop_cluster
# EXIT` (or stop_cluster from your own EXIT trap) first.
start_cluster() {
    local cron_db="$1"
    shift
    [[ -n "$RUN_USER" ]] || pick_run_user
    [[ -z "$SEQUIN_CLUSTER_DIR" ]] || die "start_cluster: a cluster runs already in $SEQUIN_CLUSTER_DIR"
    SEQUIN_CLUSTER_DIR="$(mktemp -d /tmp/sequin_cdc.XXXXXX)"
    chown "$RUN_USER" "$SEQUIN_CLUSTER_DIR"
    local dir="$SEQUIN_CLUSTER_DIR" line

    as_run_user "$PG_BINDIR/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    {
        cat "$SEQUIN_CONF_DIR/sequin.conf"
        if have_pg_cron; then
            cat "$SEQUIN_CONF_DIR/pg_cron.conf"
            echo "cron.database_name = '$cron_db'"
        fi
        have_output_plugin_libraries && cat "$SEQUIN_CONF_DIR/output_plugins.conf"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        for line in "$@"; do echo "$line"; done
    } >>"$dir/data/postgresql.conf"

    export PGHOST="$dir" PGPORT=5432 PGUSER=postgres PGDATA="$dir/data"
    log "starting a cluster in $dir (as $RUN_USER)"
    as_run_user "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$dir/server.log" -w start >/dev/null \
        || die "pg_ctl start failed (see server.log below)"
}

# stop_cluster [RC]: stop the cluster of start_cluster (pg_ctl -D on its own
# data directory), print the tail of server.log when RC (default $?) is not
# 0, remove it unless KEEP_CLUSTER=1. Safe to call more than once.
stop_cluster() {
    local rc="${1:-$?}" dir="$SEQUIN_CLUSTER_DIR"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 \
            || as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 \
            || printf 'WARNING: could not stop the cluster in %s\n' "$dir" >&2
    fi
    if [[ "$rc" -ne 0 && -f "$dir/server.log" ]]; then
        printf '\n----- last %s lines of %s -----\n' "$SEQUIN_LOG_TAIL" "$dir/server.log" >&2
        tail -n "$SEQUIN_LOG_TAIL" "$dir/server.log" >&2 || true
        printf -- '----- end of server.log -----\n' >&2
    fi
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
        printf 'KEEP_CLUSTER=1: cluster kept in %s (as %s: pg_ctl -D %s/data -l %s/server.log start)\n' \
            "$dir" "$RUN_USER" "$dir" "$dir" >&2
    else
        rm -rf -- "$dir"
    fi
    SEQUIN_CLUSTER_DIR=""
    return 0
}
