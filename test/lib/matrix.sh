# shellcheck shell=bash
#
# test/lib/matrix.sh -- the version matrix of test/run.sh:
#
#   bash test/run.sh PG_VERSIONS="15 15-cassert 18-cassert"     (what CI runs)
#
# Sourced by test/run.sh (after cluster.sh) when PG_VERSIONS is given; defines
# run_matrix, which runs test/run.sh once per server, each in a process of its
# own, and sums up. An entry of PG_VERSIONS is one of:
#   MAJOR            Debian's server, /usr/lib/postgresql/MAJOR/bin (installed
#                    with apt when missing); 15 on Debian 12.  When
#                    SEQUIN_PG_BINDIR names a server of that major, that one.
#   SPEC             MAJOR-cassert, or a MAJOR Debian has no binaries for: a
#                    server built from source by test/lib/build_server.sh into
#                    its cache (default /var/cache/sequin_cdc/pg-SPEC), built
#                    now when the cache has no complete build, reused otherwise
#   /path/to/pg_config, or a bin directory holding one
#
# Every server is tested even when an earlier one failed (or could not be
# built); the exit status is non-zero if any failed. A summary with the times
# of each build and suite is printed at the end.
#
# Knobs (besides every knob of test/run.sh, which apply to each server):
#   MATRIX_TAP=all|core  the TAP tests on servers built from source: all (the
#                        default) every test, core only CORE_TAP_TESTS below
#                        (for a machine where the full matrix is too slow).
#                        pg_regress always runs in full; Debian's servers and
#                        pg_config paths always run every TAP test. An explicit
#                        PROVE_TESTS=... wins over both.
#   MATRIX_OVERLAP=0     build the servers one after the other in the
#                        foreground. By default (1) the missing builds run in
#                        the background (nice -n 19, one at a time, in the
#                        order of PG_VERSIONS) while the first server's suite
#                        runs; each server's suite waits for its own build.
#   SEQUIN_PG_CACHE=DIR  build_server.sh's cache (default /var/cache/sequin_cdc)
#
# Time on CI's 2 cores (measured): the suite takes ~5 min on each server,
# assertion-enabled ones included (4m28s on 15.18 with assertions, of which
# 006_backfill ~2.5 min); a server build 7-8 min. The full matrix of CI
# (15, 15-cassert, 18-cassert) takes ~25 min with the builds overlapped, ~35
# without: well under CI's 45-minute target, so every test runs everywhere.
# The core TAP tests (MATRIX_TAP=core) exercise decoding, the worker's life,
# errors, backfills and write visibility, where a version difference or an
# assertion would show; they save only ~1 min a server.

CORE_TAP_TESTS="test/t/001_exactly_once.pl test/t/002_worker_lifecycle.pl test/t/004_progress_and_errors.pl test/t/006_backfill.pl test/t/008_write_visibility.pl"

MATRIX_BUILDER_PID=""

# Seconds as "XmYYs".
_mtime() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# _matrix_kind ENTRY: debian, path or spec.
_matrix_kind() {
    local e="$1"
    if [[ "$e" == */* ]]; then
        echo path
    elif [[ "$e" =~ ^[0-9]+$ ]] && { [[ "$e" == 15 ]] || [[ -x "/usr/lib/postgresql/$e/bin/pg_config" ]]; }; then
        echo debian
    elif [[ "$e" =~ ^[0-9]+(-cassert)?$ ]]; then
        echo spec
    else
        die "PG_VERSIONS: '$e' is neither MAJOR, MAJOR-cassert nor a path to pg_config"
    fi
}

# _matrix_pg_config ENTRY: the pg_config of a debian or path entry.
_matrix_pg_config() {
    local e="$1"
    case "$(_matrix_kind "$e")" in
        path)
            if [[ -d "$e" ]]; then echo "$e/pg_config"; else echo "$e"; fi ;;
        debian)
            if [[ -n "${SEQUIN_PG_BINDIR:-}" && -x "$SEQUIN_PG_BINDIR/pg_config" ]] \
                && "$SEQUIN_PG_BINDIR/pg_config" --version | grep -q "^PostgreSQL $e\."; then
                echo "$SEQUIN_PG_BINDIR/pg_config"
            else
                echo "/usr/lib/postgresql/$e/bin/pg_config"
            fi ;;
    esac
}

_matrix_stamp() { echo "${SEQUIN_PG_CACHE:-/var/cache/sequin_cdc}/pg-$1/.sequin-build-complete"; }

# Stop the background builder (if any) when the matrix is interrupted.
# shellcheck disable=SC2317  # invoked indirectly via trap
_matrix_stop_builder() {
    if [[ -n "$MATRIX_BUILDER_PID" ]] && kill -0 "$MATRIX_BUILDER_PID" 2>/dev/null; then
        log "stopping the background server builds (process group $MATRIX_BUILDER_PID)"
        kill -- "-$MATRIX_BUILDER_PID" 2>/dev/null || true
    fi
}

run_matrix() {
    local -a entries=()
    read -r -a entries <<<"$PG_VERSIONS"
    ((${#entries[@]})) || die "PG_VERSIONS is empty"
    local tap_mode="${MATRIX_TAP:-all}"
    [[ "$tap_mode" == core || "$tap_mode" == all ]] || die "MATRIX_TAP must be core or all, got '$tap_mode'"
    local mdir t_start=$SECONDS t_start_epoch e
    t_start_epoch="$(date +%s)"
    mdir="$(mktemp -d "${TMPDIR:-/tmp}/sequin_cdc_matrix.XXXXXX")"
    for e in "${entries[@]}"; do _matrix_kind "$e" >/dev/null; done

    # The servers to build, in order.
    local -a to_build=()
    for e in "${entries[@]}"; do
        [[ "$(_matrix_kind "$e")" == spec && ! -f "$(_matrix_stamp "$e")" ]] && to_build+=("$e")
    done
    log "matrix: ${entries[*]} (TAP on servers built from source: $tap_mode; to build: ${to_build[*]:-none})"

    # Overlap: the first server's packages are installed first (so that apt
    # runs once at a time), then the builds start in the background.
    if [[ "${MATRIX_OVERLAP:-1}" == 1 && ${#to_build[@]} -gt 0 && "$(_matrix_kind "${entries[0]}")" != spec ]]; then
        local first_pgc
        first_pgc="$(_matrix_pg_config "${entries[0]}")"
        # shellcheck disable=SC2016  # expanded by the inner shell
        env -u SEQUIN_PG_BINDIR PG_CONFIG="$first_pgc" \
            bash -c 'source "$1/test/lib/cluster.sh" && ensure_deps' ensure-deps "$SEQUIN_REPO_TOP"
        log "matrix: building ${to_build[*]} in the background (log: $mdir/build.log) while ${entries[0]} is tested"
        # shellcheck disable=SC2016  # expanded by the inner shell
        setsid bash -c '
            script="$1"; shift
            for spec in "$@"; do
                echo "==> [matrix] build $spec: start $(date -u +%H:%M:%S)"
                bash "$script" "$spec" || echo "==> [matrix] build $spec FAILED"
                echo "==> [matrix] build $spec: end $(date -u +%H:%M:%S)"
            done' matrix-builder "$SEQUIN_REPO_TOP/test/lib/build_server.sh" "${to_build[@]}" \
            >"$mdir/build.log" 2>&1 &
        MATRIX_BUILDER_PID=$!
        trap '_matrix_stop_builder' EXIT
    fi

    local -a rows=() failed=()
    local kind pgc build_desc suite_desc tests_desc result t0 rc bindir version
    for e in "${entries[@]}"; do
        kind="$(_matrix_kind "$e")"
        build_desc="-"
        tests_desc="all"
        printf '\n==> ================ matrix: %s ================\n' "$e" >&2
        if [[ "$kind" == spec ]]; then
            # Waits for the background build of this SPEC (build_server.sh
            # holds a lock per SPEC), builds it when missing, else reuses it.
            t0=$SECONDS
            if bindir="$(bash "$SEQUIN_REPO_TOP/test/lib/build_server.sh" "$e" | tail -n1)" && [[ -x "$bindir/pg_config" ]]; then
                pgc="$bindir/pg_config"
                local secs built_at
                secs="$(sed -n 's/^total_seconds=//p' "$(_matrix_stamp "$e")")"
                built_at="$(date -d "$(sed -n 's/^built_at=//p' "$(_matrix_stamp "$e")")" +%s 2>/dev/null || echo 0)"
                if ((built_at < t_start_epoch)); then
                    build_desc="cached"
                else
                    build_desc="built $(_mtime "${secs:-0}") (waited $(_mtime $((SECONDS - t0))))"
                fi
            else
                [[ -f "$mdir/build.log" ]] && tail -n 30 "$mdir/build.log" >&2
                rows+=("$(printf '%-12s %-44s %-34s %-9s %-20s %s' "$e" "-" "FAILED" "-" "-" "BUILD FAILED")")
                failed+=("$e")
                continue
            fi
            [[ "$tap_mode" == core ]] && tests_desc="regress + core TAP"
        else
            pgc="$(_matrix_pg_config "$e")"
        fi

        local -a child=(env -u PG_VERSIONS -u SEQUIN_PG_BINDIR bash "$SEQUIN_REPO_TOP/test/run.sh" "PG_CONFIG=$pgc")
        if [[ -n "${PROVE_TESTS:-}" ]]; then
            tests_desc="PROVE_TESTS"
        elif [[ "$tests_desc" != all ]]; then
            child+=("PROVE_TESTS=$CORE_TAP_TESTS")
            log "$e: pg_regress and the core TAP tests only (MATRIX_TAP=core): $CORE_TAP_TESTS"
        fi
        [[ "${SKIP_TAP:-0}" == 1 ]] && tests_desc="regress only"
        [[ "${SKIP_REGRESS:-0}" == 1 ]] && tests_desc="TAP only"

        t0=$SECONDS
        if "${child[@]}"; then rc=0; result="passed"; else rc=$?; result="FAILED (exit $rc)"; failed+=("$e"); fi
        suite_desc="$(_mtime $((SECONDS - t0)))"
        version="$("$pgc" --version 2>/dev/null || echo '?')"
        if [[ "$kind" == spec ]] && grep -q -- '--enable-cassert' "$(_matrix_stamp "$e")"; then
            version+=" cassert"
        fi
        rows+=("$(printf '%-12s %-44s %-34s %-9s %-20s %s' "$e" "$version" "$build_desc" "$suite_desc" "$tests_desc" "$result")")
    done

    if [[ -n "$MATRIX_BUILDER_PID" ]]; then
        wait "$MATRIX_BUILDER_PID" 2>/dev/null || true
        MATRIX_BUILDER_PID=""
        grep -h '^==> \[matrix\]' "$mdir/build.log" >&2 || true
    fi

    printf '\n==> ================ matrix summary (%s in all) ================\n' "$(_mtime $((SECONDS - t_start)))" >&2
    printf '%-12s %-44s %-34s %-9s %-20s %s\n' "entry" "server" "build" "suite" "tests" "result" >&2
    printf '%s\n' "${rows[@]}" >&2
    if [[ "$tap_mode" == core ]] && printf '%s\n' "${rows[@]}" | grep -q 'core TAP'; then
        printf 'NOTE: servers built from source ran pg_regress and the core TAP tests only (%s); MATRIX_TAP=all runs every test.\n' \
            "$(for t in $CORE_TAP_TESTS; do basename "$t" .pl; done | paste -sd' ')" >&2
    fi
    if ((${#failed[@]})); then
        log "matrix: FAILED on ${failed[*]} (background build log, if any: $mdir/build.log)"
        return 1
    fi
    rm -rf -- "$mdir"
    log "matrix: passed on ${entries[*]}"
    return 0
}
