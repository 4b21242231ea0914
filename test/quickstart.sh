#!/usr/bin/env bash
#
# test/quickstart.sh -- end-to-end demo of sequin_cdc:   bash test/quickstart.sh
#
# Builds and installs the extension, starts a throwaway cluster (configured
# by test/lib/*.conf like the regression server, with cron.database_name='demo'),
# creates database "demo", captures changes of public.orders into
# sequin_cdc.changes, prints them plus capture stats and health, schedules
# change retention (sequin_cdc.set_retention_policy if present, otherwise a
# plain pg_cron job; skipped when pg_cron is not installed), drops the slot
# and stops the cluster.
#
# Optional environment (or VAR=value arguments):
#   PG_CONFIG=... / SEQUIN_PG_BINDIR=...   the server (default: Debian's 15)
#   SKIP_DEPS=1 / SKIP_BUILD=1     skip package checks / make clean all install
#   KEEP_CLUSTER=1                 keep the cluster's data dir and server.log
#   WAIT_SECONDS=N                 how long to wait for the 4 changes (default 10)
#   RETENTION_TABLE=...            regclass passed to set_retention_policy
#                                  (default sequin_cdc.changes)

set -euo pipefail

for arg in "$@"; do
    case "$arg" in
        SKIP_*=* | KEEP_*=* | SEQUIN_*=* | PG_CONFIG=* | WAIT_SECONDS=* | RETENTION_TABLE=*) export "${arg?}" ;;
        *) echo "usage: bash test/quickstart.sh [PG_CONFIG=...] [SKIP_BUILD=1] ..." >&2; exit 2 ;;
    esac
done

# shellcheck source=test/lib/cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cluster.sh"
cd "$SEQUIN_REPO_TOP"

DEMO_DB=demo
WAIT_SECONDS="${WAIT_SECONDS:-10}"
RETENTION_TABLE="${RETENTION_TABLE:-sequin_cdc.changes}"
RETENTION_INTERVAL='30 days'
RETENTION_SCHEDULE='*/10 * * * *'

# psql against the demo database: no psqlrc, stop at the first error.
demo_psql() { psql -X -v ON_ERROR_STOP=1 -d "$DEMO_DB" "$@"; }

# Print a heading, then run one query with the given psql options.
show() {
    local title="$1" sql="$2"
    shift 2
    printf '\n### %s\n' "$title"
    demo_psql "$@" -c "$sql"
}

trap stop_cluster EXIT

# ---------------------------------------------------------------------------
# Build, install, start a cluster whose pg_cron lives in the demo database
# ---------------------------------------------------------------------------
ensure_deps
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    build_install
fi
pick_run_user
start_cluster "$DEMO_DB"

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $DEMO_DB"

# ---------------------------------------------------------------------------
# Set up capture and make some changes
# ---------------------------------------------------------------------------
log "setting up capture of public.orders"
demo_psql -q <<'SQL'
CREATE EXTENSION sequin_cdc;
CREATE TABLE public.orders (
    id         bigint PRIMARY KEY,
    status     text NOT NULL,
    amount     numeric(12,2),
    note       text,
    updated_at timestamptz DEFAULT now()
);
ALTER TABLE public.orders REPLICA IDENTITY FULL;
SELECT sequin_cdc.create_publication('demo_pub', ARRAY['public.orders']::regclass[]);
SELECT sequin_cdc.create_slot('demo_slot', 'demo_pub');
SELECT sequin_cdc.add_change_retention('public.orders');
INSERT INTO orders VALUES (1, 'new', 10.50, 'first'), (2, 'new', 99.00, 'second');
UPDATE orders SET status = 'paid', updated_at = now() WHERE id = 1;
DELETE FROM orders WHERE id = 2;
SQL

# ---------------------------------------------------------------------------
# Wait for the capture worker to write the 4 changes (2 inserts, 1 update,
# 1 delete), polling every 0.5 s.
# ---------------------------------------------------------------------------
log "waiting up to ${WAIT_SECONDS}s for 4 rows in sequin_cdc.changes"
count=0
for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
    count="$(demo_psql -At -c 'SELECT count(*) FROM sequin_cdc.changes' 2>/dev/null || echo 0)"
    [[ "$count" -ge 4 ]] && break
    sleep 0.5
done

show "sequin_cdc.changes" \
    "SELECT seq, action, record_pk, record, changes, committed_at FROM sequin_cdc.changes ORDER BY seq" -x
show "sequin_cdc.pg_stat_capture" "SELECT * FROM sequin_cdc.pg_stat_capture" -x
show "sequin_cdc.health()" "SELECT * FROM sequin_cdc.health()" -x

if [[ "$count" -lt 4 ]]; then
    echo "ERROR: expected 4 rows in sequin_cdc.changes after ${WAIT_SECONDS}s, found $count" >&2
    exit 1
fi

# ---------------------------------------------------------------------------
# Retention: the extension's own helper if it exists, else plain pg_cron.
# ---------------------------------------------------------------------------
has_proc() {
    [[ "$(demo_psql -At -c "SELECT to_regprocedure('$1') IS NOT NULL")" == t ]]
}

if ! have_pg_cron; then
    log "pg_cron is not installed for this server: no retention job"
    RETENTION_TABLE=""
else
    demo_psql -q -c "CREATE EXTENSION pg_cron"
fi

if [[ -z "$RETENTION_TABLE" ]]; then
    :
elif has_proc 'sequin_cdc.set_retention_policy(regclass,interval)'; then
    log "retention via sequin_cdc.set_retention_policy($RETENTION_TABLE, '$RETENTION_INTERVAL')"
    demo_psql -c "SELECT sequin_cdc.set_retention_policy('$RETENTION_TABLE'::regclass, interval '$RETENTION_INTERVAL')"
elif has_proc 'sequin_cdc.set_retention_policy(regclass,interval,text)'; then
    log "retention via sequin_cdc.set_retention_policy($RETENTION_TABLE, '$RETENTION_INTERVAL', '$RETENTION_SCHEDULE')"
    demo_psql -c "SELECT sequin_cdc.set_retention_policy('$RETENTION_TABLE'::regclass, interval '$RETENTION_INTERVAL', '$RETENTION_SCHEDULE')"
else
    log "retention via cron.schedule (sequin_cdc.set_retention_policy not found)"
    demo_psql <<'SQL'
SELECT cron.schedule('sequin_changes_retention', '*/10 * * * *',
       $$DELETE FROM sequin_cdc.changes WHERE committed_at < now() - interval '30 days'$$);
SQL
fi

[[ -z "$RETENTION_TABLE" ]] || show "cron.job" "SELECT jobid, schedule, command FROM cron.job"

# ---------------------------------------------------------------------------
# Clean up the slot; the EXIT trap stops the cluster and removes its files.
# ---------------------------------------------------------------------------
show "drop slot" "SELECT sequin_cdc.drop_slot('demo_slot')"
log "quickstart finished"
