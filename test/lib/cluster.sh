# shellcheck shell=bash
#
# test/lib/cluster.sh -- shared helpers for test/run.sh and test/quickstart.sh.
#
# This file is meant to be *sourced*, not executed. It defines functions only;
# sourcing it has no side effects apart from setting a few defaults below.
#
# Functions:
#   ensure_deps             install PostgreSQL 15 + build/test deps if missing
#   build_install           make clean all && make install from the repo top
#   pick_run_user           choose the OS user that runs servers and tests
#   as_run_user CMD...      run CMD as that user, keeping the PG* environment
#   write_sequin_conf DATADIR CRON_DB [LINE...]
#                           append the sequin_cdc settings to postgresql.conf
#   start_cluster [CRON_DB] [LINE...]
#                           initdb + start a throwaway cluster, export PG* vars
#   stop_cluster [RC]       stop that cluster, show its log on failure, clean up
#                           (use as: trap stop_cluster EXIT)
#
# Environment knobs (all optional):
#   SKIP_DEPS=1             ensure_deps only sets PATH/PG_CONFIG, installs nothing
#   SEQUIN_PG_BINDIR=DIR    the PostgreSQL bin directory to build and test against
#                           (default /usr/lib/postgresql/15/bin; e.g. a private copy)
#   SEQUIN_PRELOAD=...      shared_preload_libraries (default 'sequin_cdc,pg_cron')
#   SEQUIN_PORT=N           use this port instead of probing 54400..54499
#   SEQUIN_LISTEN=...       listen_addresses (default '' = Unix socket only)
#   KEEP_CLUSTER=1          keep the cluster's temp dir (data + server.log)
#   SEQUIN_LOG_TAIL=N       lines of server.log shown on failure (default 100)

# ---------------------------------------------------------------------------
# Constants and defaults
# ---------------------------------------------------------------------------

PG_MAJOR=15
PG_BINDIR="${SEQUIN_PG_BINDIR:-/usr/lib/postgresql/${PG_MAJOR}/bin}"

: "${SEQUIN_PRELOAD:=sequin_cdc,pg_cron}"
: "${SEQUIN_LISTEN:=}"
: "${SEQUIN_LOG_TAIL:=100}"

# Repository top: this file lives in <top>/test/lib/.
SEQUIN_REPO_TOP="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Set by pick_run_user / start_cluster.
RUN_USER="${RUN_USER:-}"
SEQUIN_CLUSTER_DIR=""

# "sudo" when we are not root (and sudo exists), empty otherwise.
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
else
    SUDO=(sudo)
fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Dependencies and build
# ---------------------------------------------------------------------------

# Print the names of the missing prerequisites (one per line); print nothing
# when everything is present.
_missing_deps() {
    [[ -x "$PG_BINDIR/pg_config" ]] || echo "pg_config"
    [[ -x "$PG_BINDIR/postgres" ]] || echo "postgres server"
    [[ -f "/usr/include/postgresql/${PG_MAJOR}/server/postgres.h" ]] || echo "server headers"
    [[ -f "/usr/share/postgresql/${PG_MAJOR}/extension/pg_cron.control" ]] || echo "pg_cron"
    [[ -f "/usr/share/postgresql/${PG_MAJOR}/extension/pg_partman.control" ]] || echo "pg_partman"
    [[ -f "/usr/lib/postgresql/${PG_MAJOR}/lib/wal2json.so" ]] || echo "wal2json"
    if [[ ! -f /usr/include/x86_64-linux-gnu/curl/curl.h ]] && ! command -v curl-config >/dev/null 2>&1; then
        echo "libcurl headers"
    fi
    perl -MIPC::Run -e 1 >/dev/null 2>&1 || echo "perl IPC::Run"
    command -v make >/dev/null 2>&1 || echo "make"
    command -v gcc >/dev/null 2>&1 || echo "gcc"
}

# Install PostgreSQL 15 and everything the build and the tests need, but only
# when something is missing. Always exports PATH and PG_CONFIG.
ensure_deps() {
    if [[ "${SKIP_DEPS:-0}" != 1 ]]; then
        local missing
        missing="$(_missing_deps)"
        if [[ -n "$missing" ]]; then
            log "missing: $(echo "$missing" | paste -sd, -); installing packages"
            "${SUDO[@]}" apt-get update
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
                "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" \
                "postgresql-${PG_MAJOR}-cron" "postgresql-${PG_MAJOR}-partman" \
                "postgresql-${PG_MAJOR}-wal2json" \
                libcurl4-openssl-dev libipc-run-perl make gcc
            missing="$(_missing_deps)"
            [[ -z "$missing" ]] || die "still missing after apt-get install: $(echo "$missing" | paste -sd, -)"
        fi
    fi
    export PATH="$PG_BINDIR:$PATH"
    export PG_CONFIG="$PG_BINDIR/pg_config"
    [[ -x "$PG_CONFIG" ]] || die "$PG_CONFIG not found (SKIP_DEPS=1 set but PostgreSQL ${PG_MAJOR} is not installed?)"
}

# Build the extension from a clean tree and install it into PostgreSQL 15.
build_install() {
    log "building and installing sequin_cdc from $SEQUIN_REPO_TOP"
    make -C "$SEQUIN_REPO_TOP" PG_CONFIG="$PG_CONFIG" clean all
    "${SUDO[@]}" make -C "$SEQUIN_REPO_TOP" PG_CONFIG="$PG_CONFIG" install
}

# ---------------------------------------------------------------------------
# Which OS user runs the server and the tests
# ---------------------------------------------------------------------------

# initdb, postgres and pg_regress refuse to run as root, so when we are root
# everything server-side runs as the OS user "postgres" (created by the
# postgresql package; created here if it is somehow absent).
pick_run_user() {
    if [[ $(id -u) -eq 0 ]]; then
        RUN_USER=postgres
        if ! id -u "$RUN_USER" >/dev/null 2>&1; then
            log "creating OS user $RUN_USER"
            useradd --system --user-group --home-dir /var/lib/postgresql \
                --shell /bin/bash "$RUN_USER"
        fi
    else
        RUN_USER="$(id -un)"
    fi
    export RUN_USER
}

# Environment variables handed through to commands run via as_run_user.
SEQUIN_PASS_ENV=(
    PATH PG_CONFIG PGHOST PGPORT PGUSER PGDATA PGDATABASE
    LANG LC_ALL TZ
    PROVE_FLAGS PROVE_TESTS PG_TEST_EXTRA PG_TEST_NOCLEAN PG_TEST_TIMEOUT_DEFAULT
)

# as_run_user CMD [ARGS...]: run CMD as $RUN_USER in the current directory.
# As root this goes through runuser (no login shell): runuser keeps the rest of
# the environment but resets HOME/SHELL/USER/LOGNAME, so the variables in
# SEQUIN_PASS_ENV are additionally set explicitly via env(1).
as_run_user() {
    [[ -n "$RUN_USER" ]] || pick_run_user
    if [[ $(id -u) -eq 0 && "$RUN_USER" != root ]]; then
        local -a envargs=()
        local var
        for var in "${SEQUIN_PASS_ENV[@]}"; do
            if [[ -n "${!var+x}" ]]; then
                envargs+=("$var=${!var}")
            fi
        done
        runuser -u "$RUN_USER" -- env "${envargs[@]}" "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------------------
# Cluster configuration
# ---------------------------------------------------------------------------

# Does this server know the output_plugin_libraries GUC? Servers before 15.19
# do not, and refuse to start if postgresql.conf names it.
_has_output_plugin_libraries() {
    local desc
    desc="$("$PG_BINDIR/postgres" --describe-config 2>/dev/null)" || return 1
    grep -q '^output_plugin_libraries[[:space:]]' <<<"$desc"
}

# write_sequin_conf DATADIR CRON_DB [EXTRA_LINE...]
# Append the settings sequin_cdc needs to DATADIR/postgresql.conf. CRON_DB is
# the database pg_cron lives in (cron.database_name); the extra lines are
# appended verbatim afterwards (later settings win).
write_sequin_conf() {
    local datadir="$1" cron_db="$2"
    shift 2
    local conf="$datadir/postgresql.conf"
    [[ -f "$conf" ]] || die "write_sequin_conf: $conf does not exist"
    {
        echo ""
        echo "# ---- added by test/lib/cluster.sh (sequin_cdc test cluster) ----"
        echo "shared_preload_libraries = '$SEQUIN_PRELOAD'"
        echo "wal_level = logical"
        echo "max_replication_slots = 20"
        echo "max_wal_senders = 20"
        echo "max_worker_processes = 40"
        echo "cron.database_name = '$cron_db'"
        echo "max_prepared_transactions = 10"
        echo "fsync = off"
        echo "log_min_messages = info"
        echo "logging_collector = off"
        if _has_output_plugin_libraries; then
            echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json, sequin_cdc'"
        fi
        local line
        for line in "$@"; do
            echo "$line"
        done
    } >>"$conf"
}

# Is TCP port $1 in use (or answering PostgreSQL) on this machine?
_port_in_use() {
    local port="$1" rc=0
    if command -v ss >/dev/null 2>&1; then
        [[ -z "$(ss -Hltn "( sport = :$port )" 2>/dev/null)" ]] || return 0
    fi
    # Sockets of a default-configured local server.
    [[ ! -e "/tmp/.s.PGSQL.$port" && ! -e "/var/run/postgresql/.s.PGSQL.$port" ]] || return 0
    # pg_isready: 0 = accepting, 1 = rejecting (both mean "someone is there").
    "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1 || rc=$?
    [[ $rc -eq 0 || $rc -eq 1 ]]
}

# Print a free port from 54400..54499 (or $SEQUIN_PORT if set).
_pick_port() {
    if [[ -n "${SEQUIN_PORT:-}" ]]; then
        echo "$SEQUIN_PORT"
        return
    fi
    local port
    for ((port = 54400; port < 54500; port++)); do
        if ! _port_in_use "$port"; then
            echo "$port"
            return
        fi
    done
    die "no free port in 54400..54499"
}

# ---------------------------------------------------------------------------
# Cluster lifecycle
# ---------------------------------------------------------------------------

# start_cluster [CRON_DB] [EXTRA_CONF_LINE...]
# Create and start a throwaway cluster owned by $RUN_USER in a new temp dir:
#   $SEQUIN_CLUSTER_DIR/data        data directory
#   $SEQUIN_CLUSTER_DIR/server.log  server log
#   $SEQUIN_CLUSTER_DIR             Unix socket directory (PGHOST)
# CRON_DB defaults to contrib_regression (the pg_regress database).
# Exports PGHOST, PGPORT, PGUSER=postgres, PGDATA, SEQUIN_CLUSTER_DIR.
# Callers should `trap stop_cluster EXIT` before calling this.
start_cluster() {
    local cron_db="${1:-contrib_regression}"
    [[ $# -gt 0 ]] && shift
    [[ -n "$RUN_USER" ]] || pick_run_user
    [[ -z "$SEQUIN_CLUSTER_DIR" ]] || die "start_cluster: a cluster is already running in $SEQUIN_CLUSTER_DIR"

    SEQUIN_CLUSTER_DIR="$(mktemp -d /tmp/sequin_cdc.XXXXXX)"
    export SEQUIN_CLUSTER_DIR
    chown "$RUN_USER" "$SEQUIN_CLUSTER_DIR"

    local datadir="$SEQUIN_CLUSTER_DIR/data" port
    port="$(_pick_port)"
    log "initdb in $datadir (run user: $RUN_USER)"
    as_run_user "$PG_BINDIR/initdb" -D "$datadir" -A trust -U postgres \
        -E UTF8 --locale=C --no-sync --no-instructions >"$SEQUIN_CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$SEQUIN_CLUSTER_DIR/initdb.log" >&2; die "initdb failed"; }

    write_sequin_conf "$datadir" "$cron_db" \
        "port = $port" \
        "listen_addresses = '$SEQUIN_LISTEN'" \
        "unix_socket_directories = '$SEQUIN_CLUSTER_DIR'" \
        "$@"

    export PGHOST="$SEQUIN_CLUSTER_DIR" PGPORT="$port" PGUSER=postgres PGDATA="$datadir"

    log "starting cluster on port $port (socket dir $SEQUIN_CLUSTER_DIR, preload '$SEQUIN_PRELOAD')"
    if ! as_run_user "$PG_BINDIR/pg_ctl" -D "$datadir" -l "$SEQUIN_CLUSTER_DIR/server.log" -w start >/dev/null; then
        die "pg_ctl start failed (see server.log below)"
    fi
}

# stop_cluster [RC]
# Stop the cluster started by start_cluster (only that one: pg_ctl -D on our
# own data directory), print the tail of server.log if the caller failed, and
# remove the temp dir unless KEEP_CLUSTER=1. Safe to call more than once.
# RC defaults to $? -- i.e. the script's exit status when used as an EXIT trap.
stop_cluster() {
    local rc="${1:-$?}"
    local dir="$SEQUIN_CLUSTER_DIR"
    [[ -n "$dir" && -d "$dir" ]] || return 0

    if [[ -f "$dir/data/postmaster.pid" ]] \
        && as_run_user "$PG_BINDIR/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
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
        printf 'KEEP_CLUSTER=1: cluster kept in %s (restart: pg_ctl -D %s/data -l %s/server.log start, as %s)\n' \
            "$dir" "$dir" "$dir" "$RUN_USER" >&2
    else
        rm -rf -- "$dir"
    fi
    SEQUIN_CLUSTER_DIR=""
    return 0
}
