#!/usr/bin/env bash
#
# test/lib/build_server.sh -- build a PostgreSQL server from source into a
# cache directory that later runs reuse, for testing sequin_cdc on versions
# (and build flags) that Debian 12 ships no binaries for.
#
# Usage:
#   bash test/lib/build_server.sh SPEC [options]
#
#   SPEC is MAJOR or MAJOR-cassert (15, 15-cassert, 18-cassert, 19-cassert...).
#     MAJOR-cassert: --enable-cassert --enable-debug --enable-tap-tests
#     MAJOR:                          --enable-debug --enable-tap-tests
#   Every build also has --without-llvm --with-libxml (and ICU where the version defaults to it).
#
# Options:
#   --source DIR            build this PostgreSQL source tree (e.g. a git export
#                           of REL_17_STABLE) instead of Debian's source package
#   --extra-source NAME=DIR build the extension NAME (pg_cron, pg_partman) from
#                           DIR instead of looking for it in Debian (repeatable)
#   --no-extras             build the server only (no pg_cron / pg_partman)
#   --force                 rebuild even when the cache holds a complete build
#   -h, --help              this text
#
# Where the server source comes from without --source: Debian's source package
# postgresql-MAJOR via `apt-get source` (15 from bookworm, 18 from sid; others
# from whatever suite has it). A deb-src entry is added when apt has none: the
# file /etc/apt/sources.list.d/sequin-cdc-src.sources, deb-src lines only, so
# nothing is ever installed or upgraded from sid. Debian's patches are NOT
# applied (they move the install into /usr/lib/postgresql/MAJOR): the build is
# upstream's source as released.
#
# pg_cron and pg_partman, each tried in this order, the first that works wins:
#   1. --extra-source NAME=DIR
#   2. Debian's source package (pg-cron / pg-partman) via `apt-get source`
#   3. Debian's binary package postgresql-MAJOR-cron / -partman (from the
#      configured suites, or downloaded from sid with a private apt
#      configuration that leaves the system's apt state alone), used only when
#      its shared libraries need no newer glibc than this system has
#   A missing extension is not an error: it is recorded as "unavailable" in
#   PREFIX/sequin-extras.txt and the test harness skips the tests needing it.
#
# Cache layout ($SEQUIN_PG_CACHE, default /var/cache/sequin_cdc):
#   pg-SPEC/                the install prefix (bin/, lib/, include/, share/)
#   pg-SPEC/.sequin-build-complete
#                           stamp written last: version, flags, source, times;
#                           its presence means "complete, reuse it"
#   pg-SPEC/sequin-extras.txt
#                           one line per extension: NAME VERSION FROM | NAME unavailable ...
#   logs/SPEC-*.log         configure / make / install logs of the last build
#   build/SPEC/             the work tree (src/, build/), removed after a
#                           successful build (kept with SEQUIN_PG_KEEP_BUILD=1);
#                           after a failure a re-run resumes the build in it
#   apt-sid/                private apt lists for downloading sid binaries
#
# Environment:
#   SEQUIN_PG_CACHE=DIR     cache root (default /var/cache/sequin_cdc)
#   SEQUIN_PG_PREFIX=DIR    install prefix (default $SEQUIN_PG_CACHE/pg-SPEC)
#   SEQUIN_BUILD_JOBS=N     make -jN (default 2); builds run under nice -n 19
#   SEQUIN_PG_SRC_SUITE=S   Debian suite for postgresql-MAJOR (default: see above)
#   SEQUIN_PG_CONTRIB="..." contrib modules to install (default: hstore test_decoding)
#   SEQUIN_PG_KEEP_BUILD=1  keep build/SPEC after success
#
# Output: progress on stderr; on success the last line on stdout is the bin
# directory, so `bindir=$(bash test/lib/build_server.sh 18-cassert)` works.
# Exits non-zero when the server cannot be built. Runs as root, or as a user
# with sudo for apt; the installed tree is world-readable so an unprivileged
# test user can run it.

set -euo pipefail
umask 022

log() { printf '==> [build_server] %s\n' "$*" >&2; }
die() { printf 'ERROR: [build_server] %s\n' "$*" >&2; exit 1; }

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; }

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
else
    SUDO=(sudo)
fi

# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

SPEC=""
SOURCE_DIR=""
FORCE=0
EXTRAS=1
declare -A EXTRA_SRC=()

while (($#)); do
    case "$1" in
        --source) SOURCE_DIR="${2:?--source needs a directory}"; shift 2 ;;
        --source=*) SOURCE_DIR="${1#*=}"; shift ;;
        --extra-source)
            [[ "${2:-}" == *=* ]] || die "--extra-source needs NAME=DIR"
            EXTRA_SRC["${2%%=*}"]="${2#*=}"; shift 2 ;;
        --extra-source=*)
            v="${1#*=}"; [[ "$v" == *=* ]] || die "--extra-source needs NAME=DIR"
            EXTRA_SRC["${v%%=*}"]="${v#*=}"; shift ;;
        --no-extras) EXTRAS=0; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [[ -z "$SPEC" ]] || die "one SPEC only (got '$SPEC' and '$1')"; SPEC="$1"; shift ;;
    esac
done

[[ -n "$SPEC" ]] || { usage; die "missing SPEC (e.g. 15-cassert)"; }
[[ "$SPEC" =~ ^([0-9]+)(-cassert)?$ ]] || die "SPEC must be MAJOR or MAJOR-cassert, got '$SPEC'"
MAJOR="${BASH_REMATCH[1]}"
CASSERT="${BASH_REMATCH[2]:+1}"
if [[ -n "$SOURCE_DIR" ]]; then
    [[ -x "$SOURCE_DIR/configure" ]] || die "--source $SOURCE_DIR: no configure script there"
    SOURCE_DIR="$(cd "$SOURCE_DIR" && pwd)"
fi
for name in "${!EXTRA_SRC[@]}"; do
    [[ "$name" == pg_cron || "$name" == pg_partman ]] || die "--extra-source: unknown extension '$name'"
    [[ -d "${EXTRA_SRC[$name]}" ]] || die "--extra-source $name: no directory ${EXTRA_SRC[$name]}"
    EXTRA_SRC[$name]="$(cd "${EXTRA_SRC[$name]}" && pwd)"
done

CACHE="${SEQUIN_PG_CACHE:-/var/cache/sequin_cdc}"
PREFIX="${SEQUIN_PG_PREFIX:-$CACHE/pg-$SPEC}"
STAMP="$PREFIX/.sequin-build-complete"
EXTRAS_FILE="$PREFIX/sequin-extras.txt"
WORK="$CACHE/build/$SPEC"
LOGS="$CACHE/logs"
JOBS="${SEQUIN_BUILD_JOBS:-2}"
CONTRIB="${SEQUIN_PG_CONTRIB:-hstore test_decoding}"
NICE=(nice -n 19)

# --with-libxml as Debian's packages: the xml type (pg_regress row_format uses it)
CONFIGURE_FLAGS=(--prefix="$PREFIX" --enable-debug --enable-tap-tests --without-llvm --with-libxml)
if [[ -n "$CASSERT" ]]; then
    CONFIGURE_FLAGS+=(--enable-cassert)
fi

# Debian suite holding the source package of a given major (server or extension).
default_suite() {
    case "$MAJOR" in
        15) echo bookworm ;;
        *) echo sid ;;
    esac
}

# ---------------------------------------------------------------------------
# Cache directory, lock, early exit when complete
# ---------------------------------------------------------------------------

if ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w "$CACHE" ]]; then
    log "creating $CACHE (sudo)"
    "${SUDO[@]}" mkdir -p "$CACHE"
    "${SUDO[@]}" chown "$(id -u):$(id -g)" "$CACHE"
fi
chmod a+rx "$CACHE" 2>/dev/null || true
mkdir -p "$LOGS"

# One build per SPEC at a time: a second run waits, then finds the stamp.
exec 9>"$CACHE/.lock-$SPEC"
if ! flock -n 9; then
    log "another build of $SPEC is running; waiting for it"
    flock 9
fi

if [[ -f "$STAMP" && $FORCE -eq 0 ]]; then
    log "$SPEC: complete build in $PREFIX, reusing it ($(grep -m1 '^version=' "$STAMP" || true))"
    [[ -f "$EXTRAS_FILE" ]] && sed 's/^/    extra: /' "$EXTRAS_FILE" >&2
    echo "$PREFIX/bin"
    exit 0
fi

# ---------------------------------------------------------------------------
# Build dependencies
# ---------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -q >&2
        APT_UPDATED=1
    fi
}

BUILD_DEPS=(gcc make bison flex perl libreadline-dev zlib1g-dev libicu-dev libxml2-dev
            pkg-config libipc-run-perl dpkg-dev xz-utils bzip2 binutils)

install_build_deps() {
    local missing=() p
    for p in "${BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt_update_once
        log "installing build dependencies: ${missing[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >"$LOGS/apt-install.log" 2>&1 \
            || { tail -n 20 "$LOGS/apt-install.log" >&2; die "apt-get install failed (log: $LOGS/apt-install.log)"; }
    else
        log "build dependencies present"
    fi
}

# Make sure `apt-get source` can see bookworm and sid source packages: add a
# deb-src-only entry unless the configured sources already list both.
SRC_LIST=/etc/apt/sources.list.d/sequin-cdc-src.sources
ensure_deb_src() {
    local want
    want="$(cat <<'EOF'
# Added by sequin_cdc test/lib/build_server.sh: SOURCE packages only (deb-src),
# for `apt-get source`; no binary package is ever installed from these entries.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
)"
    if [[ -f "$SRC_LIST" ]] && [[ "$(cat "$SRC_LIST")" == "$want" ]]; then
        return 0
    fi
    log "adding deb-src entries (bookworm, sid; source only) in $SRC_LIST"
    printf '%s\n' "$want" | "${SUDO[@]}" tee "$SRC_LIST" >/dev/null
    APT_UPDATED=0
    apt_update_once
}

# apt-get source --download-only PKG[/SUITE] into the current directory; prints
# nothing, returns non-zero when a file cannot be fetched. Re-runs apt-get
# update once when apt does not know the package yet (stale lists).
apt_source_download() {
    local what="$1" pkg="${1%%/*}"
    if ! apt-cache showsrc "$pkg" 2>/dev/null | grep -q '^Package:'; then
        APT_UPDATED=0
        apt_update_once
    fi
    apt-get source -q --download-only "$what" >&2
}

# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

# Run a build step under nice, its output in LOGS/SPEC-STEP.log; on failure
# show the log's tail and stop.
step() {
    local name="$1"; shift
    local logf="$LOGS/$SPEC-$name.log"
    log "$name: $* (log: $logf)"
    if ! "${NICE[@]}" "$@" >"$logf" 2>&1; then
        tail -n 40 "$logf" >&2
        die "$SPEC: step '$name' failed (full log: $logf)"
    fi
}

SRC_DESC=""
fetch_server_source() {
    if [[ -n "$SOURCE_DIR" ]]; then
        SRC="$SOURCE_DIR"
        SRC_DESC="source tree $SOURCE_DIR"
        return
    fi
    local suite="${SEQUIN_PG_SRC_SUITE:-$(default_suite)}"
    local pkg="postgresql-$MAJOR"
    ensure_deb_src
    mkdir -p "$WORK/dl"
    log "downloading Debian source package $pkg/$suite"
    (cd "$WORK/dl" && apt_source_download "$pkg/$suite") \
        || die "cannot download the source package $pkg/$suite (try --source DIR)"
    local dsc
    dsc="$(ls -t "$WORK"/dl/"${pkg}"_*.dsc | head -n1)"
    # Unpack again only when the source changed: a re-run after a failed
    # build then resumes the build where it stopped.
    if [[ "$(cat "$WORK/src/.sequin-dsc" 2>/dev/null)" != "$(basename "$dsc")" ]]; then
        rm -rf "$WORK/src" "$WORK/build"
        log "unpacking $(basename "$dsc") without Debian's patches"
        dpkg-source -q -x --skip-patches "$dsc" "$WORK/src" >&2
        basename "$dsc" >"$WORK/src/.sequin-dsc"
    else
        log "source $(basename "$dsc") already unpacked in $WORK/src"
    fi
    SRC="$WORK/src"
    SRC_DESC="Debian source package $(basename "$dsc" .dsc) (suite $suite, Debian patches not applied)"
}

build_server() {
    local t0=$SECONDS
    local flags="$SRC ${CONFIGURE_FLAGS[*]}"
    rm -rf "$PREFIX"
    # A build tree left by an earlier, failed run of the same source and flags
    # is reused (make picks up where it stopped); anything else starts afresh.
    if [[ -f "$WORK/build/config.status" && "$(cat "$WORK/build/.sequin-flags" 2>/dev/null)" == "$flags" ]]; then
        log "resuming the build in $WORK/build"
        RESUMED=1
        cd "$WORK/build"
    else
        rm -rf "$WORK/build"
        mkdir -p "$WORK/build"
        cd "$WORK/build"
        step configure "$SRC/configure" "${CONFIGURE_FLAGS[@]}"
        echo "$flags" >.sequin-flags
    fi
    step make make -j"$JOBS"
    step install make install
    local c
    for c in $CONTRIB; do
        step "contrib-$c" make -j"$JOBS" -C "contrib/$c" install
    done
    # TAP modules (PostgreSQL::Test::*) and pg_regress for PGXS users; the
    # top-level install does both with --enable-tap-tests, this makes sure.
    step install-tap make -C src/test/perl install
    step install-regress make -C src/test/regress install
    # pkglibdir is PREFIX/lib/postgresql (the prefix does not name postgres)
    local pgxsdir
    pgxsdir="$("$PREFIX/bin/pg_config" --pkglibdir)/pgxs"
    [[ -x "$pgxsdir/src/test/regress/pg_regress" ]] || die "pg_regress not installed in $pgxsdir"
    [[ -f "$pgxsdir/src/test/perl/PostgreSQL/Test/Cluster.pm" ]] || die "TAP modules not installed in $pgxsdir"
    SERVER_SECONDS=$((SECONDS - t0))
    log "$SPEC: server built and installed in ${SERVER_SECONDS}s: $("$PREFIX/bin/pg_config" --version)"
}

# ---------------------------------------------------------------------------
# Extensions: pg_cron, pg_partman
# ---------------------------------------------------------------------------

# PGXS-build the extension source in DIR against our pg_config and install it.
pgxs_build() {
    local name="$1" dir="$2"
    local pgc="$PREFIX/bin/pg_config"
    local logf="$LOGS/$SPEC-$name.log"
    log "$name: building $dir against $pgc (log: $logf)"
    if "${NICE[@]}" make -C "$dir" -j"$JOBS" PG_CONFIG="$pgc" USE_PGXS=1 >"$logf" 2>&1 \
        && make -C "$dir" PG_CONFIG="$pgc" USE_PGXS=1 install >>"$logf" 2>&1; then
        return 0
    fi
    tail -n 20 "$logf" >&2
    log "$name: build from $dir FAILED (log: $logf)"
    return 1
}

# Highest GLIBC_x.y symbol version the shared objects under DIR need.
glibc_needed() {
    find "$1" -name '*.so' -exec objdump -T {} + 2>/dev/null \
        | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1
}

# Copy a Debian binary package's files for MAJOR into PREFIX: the modules into
# pkglibdir, the extension scripts into sharedir/extension.
install_from_deb() {
    local name="$1" deb="$2"
    local x="$WORK/deb-$name"
    rm -rf "$x"; mkdir -p "$x"
    dpkg-deb -x "$deb" "$x"
    local need have
    need="$(glibc_needed "$x")"
    have="$(ldd --version | head -n1 | grep -o '[0-9]*\.[0-9]*$')"
    if [[ -n "$need" ]] && [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n1)" != "$have" ]]; then
        log "$name: $(basename "$deb") needs glibc $need, this system has $have: not usable"
        return 1
    fi
    local libdir sharedir
    libdir="$("$PREFIX/bin/pg_config" --pkglibdir)"
    sharedir="$("$PREFIX/bin/pg_config" --sharedir)"
    [[ -d "$x/usr/lib/postgresql/$MAJOR/lib" && -d "$x/usr/share/postgresql/$MAJOR/extension" ]] \
        || { log "$name: $(basename "$deb") has no files for PostgreSQL $MAJOR"; return 1; }
    cp -a "$x/usr/lib/postgresql/$MAJOR/lib/." "$libdir/"
    cp -a "$x/usr/share/postgresql/$MAJOR/extension/." "$sharedir/extension/"
    log "$name: installed the files of $(basename "$deb")"
}

# Download a binary package from sid with a private apt configuration (own
# lists and cache under CACHE/apt-sid): the system's apt sources, lists and
# installed packages are neither read for it nor changed.
sid_download() {
    local pkg="$1" dest="$2"
    local d="$CACHE/apt-sid"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    cat >"$d/sid.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    local opts=(-o Dir::Etc::SourceList="$d/sid.sources" -o Dir::Etc::SourceParts=/nonexistent
                -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache"
                -o APT::Sandbox::User=root)
    if [[ -z "$(find "$d/lists" -name '*_Packages*' -mtime -1 2>/dev/null)" ]]; then
        log "apt-get update (private sid binary lists in $d)"
        apt-get "${opts[@]}" update -q >&2 || return 1
    fi
    (cd "$dest" && apt-get "${opts[@]}" download -q "$pkg" >&2)
}

# Try each way of getting extension NAME (Debian source package SRCPKG, binary
# package BINPKG); record the outcome in EXTRAS_FILE. Never fails the script.
build_extra() {
    local name="$1" srcpkg="$2" binpkg="$3"
    local t0=$SECONDS d="$WORK/ext-$name" why=()
    rm -rf "$d"; mkdir -p "$d"

    if [[ -n "${EXTRA_SRC[$name]:-}" ]]; then
        local copy="$d/src"
        cp -a "${EXTRA_SRC[$name]}" "$copy"
        if pgxs_build "$name" "$copy"; then
            record_extra "$name" "$(ext_version "$name")" "source tree ${EXTRA_SRC[$name]}" $((SECONDS - t0))
            return 0
        fi
        why+=("build from ${EXTRA_SRC[$name]} failed")
    fi

    local suite; suite="$(default_suite)"
    log "$name: trying Debian source package $srcpkg/$suite"
    if (cd "$d" && apt_source_download "$srcpkg/$suite") 2>"$d/apt.err"; then
        local dsc; dsc="$(ls "$d"/*.dsc | head -n1)"
        dpkg-source -q -x "$dsc" "$d/src" >&2
        if pgxs_build "$name" "$d/src"; then
            record_extra "$name" "$(ext_version "$name")" "Debian source package $(basename "$dsc" .dsc)" $((SECONDS - t0))
            return 0
        fi
        why+=("build of source package $srcpkg/$suite failed")
    else
        grep -h '^E:' "$d/apt.err" | head -n 3 >&2 || true
        # Some files of a source package may be missing on the mirror while
        # the upstream tarball is there (apt checked its hash against the
        # Sources index): build that, without Debian's packaging.
        local orig; orig="$(find "$d" -maxdepth 1 -name '*.orig.tar.*' | head -n1)"
        if [[ -n "$orig" ]]; then
            log "$name: building the upstream tarball $(basename "$orig") of $srcpkg/$suite"
            mkdir -p "$d/orig"
            tar -xf "$orig" -C "$d/orig"
            local top; top="$(find "$d/orig" -mindepth 1 -maxdepth 1 -type d | head -n1)"
            if [[ -n "$top" ]] && pgxs_build "$name" "$top"; then
                record_extra "$name" "$(ext_version "$name")" "upstream tarball $(basename "$orig") of Debian's $srcpkg/$suite" $((SECONDS - t0))
                return 0
            fi
            why+=("build of $(basename "$orig") failed")
        else
            why+=("source package $srcpkg/$suite not downloadable")
        fi
    fi

    log "$name: trying Debian binary package $binpkg"
    local got=""
    if (cd "$d" && apt-get download -q "$binpkg" >&2) 2>/dev/null; then
        got="configured suites"
    elif sid_download "$binpkg" "$d" 2>"$d/apt-bin.err"; then
        got="sid"
    fi
    local deb; deb="$(ls "$d"/*.deb 2>/dev/null | head -n1 || true)"
    if [[ -n "$deb" ]]; then
        if install_from_deb "$name" "$deb"; then
            record_extra "$name" "$(ext_version "$name")" "Debian binary package $(basename "$deb" .deb) ($got)" $((SECONDS - t0))
            return 0
        fi
        why+=("binary package $(basename "$deb" .deb) not usable here")
    else
        why+=("no binary package $binpkg")
    fi
    local IFS=';'
    log "$name: UNAVAILABLE for $SPEC (${why[*]}); the tests that need it must be skipped"
    echo "$name unavailable: ${why[*]}" >>"$EXTRAS_FILE"
}

# default_version of extension NAME as installed in PREFIX.
ext_version() {
    local ctl; ctl="$("$PREFIX/bin/pg_config" --sharedir)/extension/$1.control"
    sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$ctl" 2>/dev/null | head -n1
}

record_extra() {
    local name="$1" version="$2" from="$3" secs="$4"
    log "$name: $version installed from $from (${secs}s)"
    echo "$name $version from $from (${secs}s)" >>"$EXTRAS_FILE"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

T_START=$SECONDS
log "building PostgreSQL $SPEC into $PREFIX (load: $(cut -d' ' -f1-3 /proc/loadavg), make -j$JOBS under nice)"
install_build_deps
mkdir -p "$WORK"
fetch_server_source
SERVER_SECONDS=0
RESUMED=0
build_server

: >"$EXTRAS_FILE"
if [[ $EXTRAS -eq 1 ]]; then
    build_extra pg_cron pg-cron "postgresql-$MAJOR-cron"
    build_extra pg_partman pg-partman "postgresql-$MAJOR-partman"
else
    echo "# extensions not built (--no-extras)" >>"$EXTRAS_FILE"
fi

chmod -R a+rX "$PREFIX"
if [[ "${SEQUIN_PG_KEEP_BUILD:-0}" != 1 ]]; then
    cd /
    rm -rf "$WORK"
fi

# The stamp, written last: its presence means the prefix is complete.
{
    echo "spec=$SPEC"
    echo "version=$("$PREFIX/bin/pg_config" --version)"
    echo "configure=$("$PREFIX/bin/pg_config" --configure)"
    echo "source=$SRC_DESC"
    echo "server_build_seconds=$SERVER_SECONDS"
    [[ $RESUMED -eq 1 ]] && echo "resumed=1 (server_build_seconds counts the resumed run only)"
    echo "total_seconds=$((SECONDS - T_START))"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "load_at_end=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$STAMP.tmp"
mv "$STAMP.tmp" "$STAMP"
chmod a+r "$STAMP"
log "$SPEC done in $((SECONDS - T_START))s: $PREFIX/bin"
sed 's/^/    extra: /' "$EXTRAS_FILE" >&2
echo "$PREFIX/bin"
