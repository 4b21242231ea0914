#!/usr/bin/env bash
#
# test/run.sh -- THE test command for sequin_cdc:   bash test/run.sh
#
# 1. installs the build and test dependencies if missing (apt-get; the
#    PostgreSQL packages too when the server is Debian's),
# 2. builds and installs the extension into the server (make clean all install),
# 3. copies the repository into a scratch directory owned by the OS user that
#    runs the tests (servers refuse to run as root), and there, as that user:
#      make installcheck TAP_TESTS=   pg_regress over test/sql on a temporary
#                                     server of its own (see the Makefile)
#      make installcheck REGRESS=     prove over test/t/*.pl (each test starts
#                                     its own nodes with PostgreSQL::Test::Cluster)
#    (two make calls, so both suites always report),
# 4. fails the run on any assertion failure: every server log of the run
#    (pg_regress's server, every TAP node) is searched for "TRAP:", even when
#    the tests passed (pg_regress's server logs through its logging collector
#    into regress_log/, outside its temporary instance, which pg_regress
#    removes on success),
# 5. on failure prints regression.diffs, the regression server's log and the
#    TAP logs. Exits 0 only if every suite that ran passed, without a TRAP.
#
# Tests that need pg_cron or pg_partman are skipped, and say so, when the
# server has no such extension installed.
#
# The server: one test run is one server:
#   PG_CONFIG=/path/to/pg_config   that server (e.g. a build in a cache dir)
#   SEQUIN_PG_BINDIR=DIR           the same, by its bin directory
#   (default: Debian's PostgreSQL 15, /usr/lib/postgresql/15/bin)
# A version matrix (what CI runs, see test/lib/matrix.sh):
#   PG_VERSIONS="15 15-cassert 18-cassert"
#                      this command once per server: 15 is Debian's, SPEC
#                      (15-cassert, 18-cassert, ...) a server that
#                      test/lib/build_server.sh builds from source into its
#                      cache on first use; every server is tested, then a
#                      summary with times; non-zero if any failed
#   MATRIX_TAP=core    on the servers built from source, pg_regress and the
#                      core TAP tests only (default all: every test everywhere)
#   MATRIX_OVERLAP=0   no server build in the background during the first suite
# Other knobs:
#   SKIP_DEPS=1        do not check/install packages
#   SKIP_BUILD=1       do not build/install the extension
#   SKIP_REGRESS=1     skip the pg_regress suite
#   SKIP_TAP=1         skip the TAP suite
#   REGRESS="a b"      run only these pg_regress tests (names from test/sql)
#   PROVE_TESTS="test/t/001_x.pl ..."   run only these TAP scripts
#   PROVE_FLAGS=...    extra flags for prove (e.g. --verbose)
#   KEEP_BUILD=1       keep the scratch directory even on success (it is kept
#                      on failure: pg_regress's server is in tmp_check_regress/)
#   TMPDIR=DIR         where the scratch directory is made (default /tmp);
#                      pg_regress and the TAP tests put their sockets there
#                      too, so the user that runs the tests must be able to
#                      write there (mode 1777, as /tmp)
# Each may be given in the environment or as an argument:
#   bash test/run.sh PG_CONFIG=/cache/pg18/bin/pg_config SKIP_TAP=1

set -euo pipefail

for arg in "$@"; do
    case "$arg" in
        REGRESS=* | PROVE_TESTS=* | PROVE_FLAGS=* | SKIP_*=* | KEEP_*=* | SEQUIN_*=* | PG_CONFIG=* \
            | PG_VERSIONS=* | MATRIX_*=*)
            export "${arg?}" ;;
        *)
            echo "usage: bash test/run.sh [PG_CONFIG=... | PG_VERSIONS='15 15-cassert 18-cassert'] [REGRESS='t1 t2'] [PROVE_TESTS='test/t/x.pl'] [SKIP_TAP=1] ..." >&2
            exit 2 ;;
    esac
done

# shellcheck source=test/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"
cd "$SEQUIN_REPO_TOP"

if [[ -n "${PG_VERSIONS:-}" ]]; then
    # shellcheck source=test/lib/matrix.sh
    source "$SEQUIN_REPO_TOP/test/lib/matrix.sh"
    run_matrix
    exit
fi

BUILD_DIR=""
OVERALL_RC=0

# EXIT trap: remove the scratch copy unless it is needed for a post-mortem.
# shellcheck disable=SC2317  # invoked indirectly via trap
cleanup() {
    local rc=$?
    if [[ -n "$BUILD_DIR" && -d "$BUILD_DIR" ]]; then
        if [[ "$rc" -ne 0 || "${KEEP_BUILD:-0}" == 1 ]]; then
            echo "build dir kept for inspection: $BUILD_DIR" >&2
        else
            rm -rf -- "$BUILD_DIR"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT

ensure_deps
[[ "${SKIP_BUILD:-0}" == 1 ]] || build_install
pick_run_user
have_pg_cron || log "pg_cron is not installed for this server: its tests are skipped"
have_pg_partman || log "pg_partman is not installed for this server: its tests are skipped"

# Copy tracked + untracked (non-ignored) files of a git checkout, else
# everything but .git, to $1, owned by the run user.
copy_repo() {
    local dest="$1"
    if git -C "$SEQUIN_REPO_TOP" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$SEQUIN_REPO_TOP" ls-files -z -co --exclude-standard \
            | while IFS= read -r -d '' f; do
                [[ -e "$SEQUIN_REPO_TOP/$f" || -L "$SEQUIN_REPO_TOP/$f" ]] && printf '%s\0' "$f"
            done \
            | tar -C "$SEQUIN_REPO_TOP" --null -T - -cf - | tar -C "$dest" -xf -
    else
        tar -C "$SEQUIN_REPO_TOP" --exclude=./.git -cf - . | tar -C "$dest" -xf -
    fi
    chown -R "$RUN_USER" "$dest"
}

BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sequin_cdc_build.XXXXXX")"
log "copying the repository to $BUILD_DIR"
copy_repo "$BUILD_DIR"

# make in the scratch copy, as the run user.
run_make() {
    (cd "$BUILD_DIR" && as_run_user make --no-print-directory PG_CONFIG="$PG_CONFIG" "$@")
}

# Print the tail of each file given (that exists) between markers.
show_tails() {
    local lines="$1" f
    shift
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        printf '\n----- last %s lines of %s -----\n' "$lines" "${f#"$BUILD_DIR"/}" >&2
        tail -n "$lines" "$f" >&2
    done
}

# check_traps LABEL FILE...: fail the run when a server log holds an
# assertion failure ("TRAP:", written to stderr by an assert-enabled server
# before it aborts), even when the tests passed: the postmaster restarts after
# the crash and a test may not notice.
check_traps() {
    local label="$1" hits
    shift
    hits="$(grep -H -n 'TRAP:' "$@" 2>/dev/null || true)"
    [[ -z "$hits" ]] && return 0
    printf '\n----- %s: ASSERTION FAILURE (TRAP) in the server log -----\n%s\n' "$label" "${hits//"$BUILD_DIR"\//}" >&2
    echo "----- end of TRAP lines -----" >&2
    log "$label: FAILED: an assertion failed in a server (TRAP), see above"
    OVERALL_RC=1
}

if [[ "${SKIP_REGRESS:-0}" == 1 ]]; then
    log "SKIP_REGRESS=1: skipping pg_regress"
else
    # The regression server logs through its collector into regress_log/,
    # which outlives the temporary instance (removed when the tests pass).
    printf "logging_collector = on\nlog_directory = '%s/regress_log'\nlog_filename = 'postmaster.log'\n" \
        "$BUILD_DIR" >"$BUILD_DIR/regress_log.conf"
    regress_args=(installcheck TAP_TESTS= "REGRESS_EXTRA_CONF=$BUILD_DIR/regress_log.conf")
    [[ -n "${REGRESS:-}" ]] && regress_args+=("REGRESS=$REGRESS")
    log "pg_regress: make ${regress_args[*]}"
    if ! run_make "${regress_args[@]}"; then
        show_tails 100000 "$BUILD_DIR/regression.diffs"
        show_tails "$SEQUIN_LOG_TAIL" "$BUILD_DIR/tmp_check_regress/log/postmaster.log" "$BUILD_DIR"/regress_log/*
        echo "----- end of pg_regress output -----" >&2
        OVERALL_RC=1
    fi
    check_traps pg_regress "$BUILD_DIR"/regress_log/* "$BUILD_DIR"/tmp_check_regress/log/*
fi

if [[ "${SKIP_TAP:-0}" == 1 ]]; then
    log "SKIP_TAP=1: skipping TAP tests"
else
    tap_args=(installcheck REGRESS=)
    [[ -n "${PROVE_TESTS:-}" ]] && tap_args+=("PROVE_TESTS=$PROVE_TESTS")
    [[ -n "${PROVE_FLAGS:-}" ]] && tap_args+=("PROVE_FLAGS=$PROVE_FLAGS")
    log "TAP: make ${tap_args[*]}"
    if ! run_make "${tap_args[@]}"; then
        show_tails 80 "$BUILD_DIR"/tmp_check/log/*
        echo "----- end of TAP logs -----" >&2
        OVERALL_RC=1
    fi
    check_traps TAP "$BUILD_DIR"/tmp_check/log/*
fi

if [[ "$OVERALL_RC" -eq 0 ]]; then log "all tests passed"; else log "TESTS FAILED"; fi
exit "$OVERALL_RC"
