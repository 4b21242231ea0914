------------------------------------------------------------------------------
-- Monitoring: pg_stat_capture, wait_for_capture
------------------------------------------------------------------------------

CREATE VIEW sequin_cdc.pg_stat_capture AS
SELECT s.slot_name::text AS slot_name,
       d.datname::text AS database,
       st.pid,
       coalesce(st.state, 'stopped') AS state,
       coalesce(st.changes_captured, 0) AS changes_captured,
       coalesce(st.transactions_captured, 0) AS transactions_captured,
       st.last_decoded_lsn,
       s.confirmed_flush_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       st.last_commit_time,
       coalesce(st.errors, 0) AS errors,
       st.last_error,
       st.last_error_time,
       s.active,
       s.wal_status,
       (SELECT count(*) FROM sequin_cdc.parked_changes p
         WHERE p.slot_name = s.slot_name) AS parked,
       f.last_error_sqlstate,
       coalesce(f.failed_attempts, 0) AS failed_attempts,
       f.next_attempt_at
  FROM pg_replication_slots s
  LEFT JOIN pg_database d ON d.oid = s.datoid
  LEFT JOIN sequin_cdc._capture_stats() st ON st.slot_name = s.slot_name::text
  LEFT JOIN sequin_cdc._capture_failures() f ON f.slot_name = s.slot_name::text
 WHERE s.plugin = 'sequin_cdc' AND s.database = current_database();
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot of this database: its capture worker, counters, positions, lag, last error (state error while failed attempts are not followed by a success), parked changes (unresolved) and the next attempt while the launcher backs off.';

CREATE FUNCTION sequin_cdc.wait_for_capture(slot name DEFAULT NULL, timeout interval DEFAULT '30 seconds')
RETURNS bool
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    target pg_lsn := pg_current_wal_flush_lsn();
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                    WHERE s.plugin = 'sequin_cdc' AND s.database = current_database()
                      AND (wait_for_capture.slot IS NULL OR s.slot_name = wait_for_capture.slot)) THEN
        RAISE EXCEPTION 'no sequin_cdc slot%in this database', coalesce(' ' || quote_literal(slot) || ' ', ' ')
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create one with sequin_cdc.create_slot().';
    END IF;
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                        WHERE s.plugin = 'sequin_cdc' AND s.database = current_database()
                          AND (wait_for_capture.slot IS NULL OR s.slot_name = wait_for_capture.slot)
                          AND s.confirmed_flush_lsn < target) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.wait_for_capture(name, interval) IS
    'Waits until the slot (all slots of this database when null) has captured everything committed before the call; false on timeout.';

