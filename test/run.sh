#!/usr/bin/env bash
#
# test/run.sh -- THE test command for sequin_cdc:   bash test/run.sh
#
# 1. installs PostgreSQL 15 + build/test dependencies if missing (apt-get),
# 2. builds and installs the extension (make clean all; make install),
# 3. copies the repository into a scratch build dir owned by the test user
#    (pg_regress writes results/, TAP writes tmp_check/),
# 4. starts a throwaway cluster configured for sequin_cdc (see
#    test/lib/cluster.sh) and runs, in the copy, as that user:
#      make installcheck TAP_TESTS=   -> pg_regress over test/sql (REGRESS)
#      make installcheck REGRESS=     -> prove over test/t/*.pl (TAP; these
#                                        start their own nodes)
#    The two suites run as separate make calls so both always report.
# 5. on failure prints regression.diffs and the TAP logs; exits non-zero.
#
# Exit status: 0 only if every suite that ran passed.
#
# Optional environment:
#   SKIP_DEPS=1        do not check/install packages
#   SKIP_BUILD=1       do not run make clean all / make install
#   SKIP_REGRESS=1     skip the pg_regress suite
#   SKIP_TAP=1         skip the TAP suite
#   REGRESS="a b"      run only these pg_regress tests (names from test/sql)
#   PROVE_TESTS="test/t/001_x.pl ..."   run only these TAP scripts
#   PROVE_FLAGS=...    extra flags for prove (e.g. --verbose)
#   KEEP_CLUSTER=1     keep the regression cluster's data dir and log
#   KEEP_BUILD=1       keep the scratch build dir even on success
#   SEQUIN_PRELOAD=... shared_preload_libraries (default 'sequin_cdc,pg_cron')
#   SEQUIN_PORT=N      port for the regression cluster
#   (REGRESS/PROVE_TESTS may also be given as arguments: bash test/run.sh REGRESS="a b")

set -euo pipefail

# Accept VAR=value arguments as a convenience (same as setting them in the env).
for arg in "$@"; do
    case "$arg" in
        REGRESS=* | PROVE_TESTS=* | PROVE_FLAGS=* | SKIP_*=* | KEEP_*=* | SEQUIN_*=*)
            export "${arg?}" ;;
        *)
            echo "usage: bash test/run.sh [REGRESS='t1 t2'] [PROVE_TESTS='test/t/x.pl'] [SKIP_TAP=1] ..." >&2
            exit 2 ;;
    esac
done

# shellcheck source=test/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"
cd "$SEQUIN_REPO_TOP"

BUILD_DIR=""
OVERALL_RC=0

# EXIT trap: stop the cluster (printing its log on failure) and remove the
# scratch copy unless it is needed for post-mortem.
# shellcheck disable=SC2317  # invoked indirectly via trap
cleanup() {
    local rc=$?
    stop_cluster "$rc"
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

# ---------------------------------------------------------------------------
# Dependencies, build, install
# ---------------------------------------------------------------------------
ensure_deps
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    build_install
fi
pick_run_user

# ---------------------------------------------------------------------------
# Scratch copy of the repository, owned by the run user
# ---------------------------------------------------------------------------
# Tracked + untracked (non-ignored) files when this is a git checkout, else
# everything but .git. Tracked files deleted from the work tree are skipped.
copy_repo() {
    local dest="$1"
    if git -C "$SEQUIN_REPO_TOP" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$SEQUIN_REPO_TOP" ls-files -z -co --exclude-standard \
            | while IFS= read -r -d '' f; do
                if [[ -e "$SEQUIN_REPO_TOP/$f" || -L "$SEQUIN_REPO_TOP/$f" ]]; then
                    printf '%s\0' "$f"
                fi
            done \
            | tar -C "$SEQUIN_REPO_TOP" --null -T - -cf - \
            | tar -C "$dest" -xf -
    else
        tar -C "$SEQUIN_REPO_TOP" --exclude=./.git -cf - . | tar -C "$dest" -xf -
    fi
    chown -R "$RUN_USER" "$dest"
}

BUILD_DIR="$(mktemp -d /tmp/sequin_cdc_build.XXXXXX)"
log "copying the repository to $BUILD_DIR"
copy_repo "$BUILD_DIR"

# ---------------------------------------------------------------------------
# Cluster + test suites
# ---------------------------------------------------------------------------
start_cluster contrib_regression

# make in the scratch copy, as the run user.
run_make() {
    (cd "$BUILD_DIR" && as_run_user make --no-print-directory PG_CONFIG="$PG_CONFIG" "$@")
}

# Show what is useful when a suite failed.
report_regress_failure() {
    if [[ -f "$BUILD_DIR/regression.diffs" ]]; then
        echo "" >&2
        echo "----- regression.diffs -----" >&2
        cat "$BUILD_DIR/regression.diffs" >&2
        echo "----- end of regression.diffs -----" >&2
    fi
}

report_tap_failure() {
    local f
    [[ -d "$BUILD_DIR/tmp_check/log" ]] || return 0
    for f in "$BUILD_DIR"/tmp_check/log/*; do
        [[ -f "$f" ]] || continue
        echo "" >&2
        echo "----- last 80 lines of ${f#"$BUILD_DIR"/} -----" >&2
        tail -n 80 "$f" >&2
    done
    echo "----- end of TAP logs -----" >&2
}

# pg_regress suite (REGRESS from the Makefile, or the subset given in $REGRESS).
if [[ "${SKIP_REGRESS:-0}" == 1 ]]; then
    log "SKIP_REGRESS=1: skipping pg_regress"
elif [[ -z "${REGRESS:-}" ]] && ! compgen -G "$BUILD_DIR/test/sql/*.sql" >/dev/null; then
    log "no test/sql/*.sql: nothing for pg_regress"
else
    regress_args=(installcheck TAP_TESTS=)
    [[ -n "${REGRESS:-}" ]] && regress_args+=("REGRESS=$REGRESS")
    log "pg_regress: make ${regress_args[*]}"
    if ! run_make "${regress_args[@]}"; then
        report_regress_failure
        OVERALL_RC=1
    fi
fi

# TAP suite (PROVE_TESTS from the Makefile, or the subset in $PROVE_TESTS).
if [[ "${SKIP_TAP:-0}" == 1 ]]; then
    log "SKIP_TAP=1: skipping TAP tests"
elif [[ -z "${PROVE_TESTS:-}" ]] && ! compgen -G "$BUILD_DIR/test/t/*.pl" >/dev/null; then
    log "no test/t/*.pl: nothing for prove"
else
    tap_args=(installcheck REGRESS=)
    [[ -n "${PROVE_TESTS:-}" ]] && tap_args+=("PROVE_TESTS=$PROVE_TESTS")
    [[ -n "${PROVE_FLAGS:-}" ]] && tap_args+=("PROVE_FLAGS=$PROVE_FLAGS")
    log "TAP: make ${tap_args[*]}"
    if ! run_make "${tap_args[@]}"; then
        report_tap_failure
        OVERALL_RC=1
    fi
fi

if [[ "$OVERALL_RC" -eq 0 ]]; then
    log "all tests passed"
else
    log "TESTS FAILED"
fi
exit "$OVERALL_RC"
