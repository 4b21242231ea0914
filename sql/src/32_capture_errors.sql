------------------------------------------------------------------------------
-- Failing capture workers: restart_capture, health()'s row about them
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.restart_capture(slot name) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_restart_capture';
COMMENT ON FUNCTION sequin_cdc.restart_capture(name) IS
    'After fixing why the capture worker of a slot fails (pg_stat_capture.state = ''error''), starts its next attempt at commit instead of when the backoff ends.';

-- A slot whose capture worker failed and has not recovered since: capture is
-- stopped (nothing is confirmed past the failing change) until the cause is
-- fixed. One row per such slot of this database.
CREATE FUNCTION sequin_cdc._health_capture_errors()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('capture %s', c.slot_name), 'error',
           format('capture is stopped: %s attempts failed in a row, the last at %s: %s (SQLSTATE %s)%s; fix the cause (the server log has the context), then SELECT sequin_cdc.restart_capture(%L)',
                  c.failed_attempts, c.last_error_time, c.last_error, c.last_error_sqlstate,
                  coalesce(format('; next attempt at %s', c.next_attempt_at), ''), c.slot_name)
      FROM sequin_cdc.slots s
      JOIN sequin_cdc.pg_stat_capture c ON c.slot_name = s.slot_name::text
     WHERE c.state = 'error'
     ORDER BY c.slot_name
$$;
COMMENT ON FUNCTION sequin_cdc._health_capture_errors() IS
    'Internal: the rows of health() about capture workers that keep failing.';
