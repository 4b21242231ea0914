/* sequin_cdc--0.3.0--0.4.0.sql: no change stalls a slot or is lost
 * silently (issue 12), a Kafka sink (issue 14).
 *
 * Each section below belongs to one piece of that work; the fresh 0.4.0
 * install script (joined from sql/src) must equal 0.3.0 updated by this
 * script (test/t/011_upgrade.pl compares them). */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Parked changes: what cannot be filtered, rendered or written
------------------------------------------------------------------------------

-- (end of parked changes)

------------------------------------------------------------------------------
-- Worker state and backoff; sink batches capped by bytes
------------------------------------------------------------------------------

-- Sink batches capped by bytes: a column appended to sinks (before the
-- Kafka sink's), and create_webhook_sink's new last argument (a new
-- signature: dropped and created again, with its comment).
ALTER TABLE sequin_cdc.sinks
    ADD COLUMN max_batch_bytes int NOT NULL DEFAULT 8388608 CHECK (max_batch_bytes BETWEEN 1024 AND 268435456);
COMMENT ON TABLE sequin_cdc.sinks IS
    'Webhook sinks: endpoint, headers (secret), batch size and bytes, timeout, state, cursor (last delivered seq) and delivery statistics. Not readable by PUBLIC; row level security limits other roles to their own sinks.';

DROP FUNCTION sequin_cdc.create_webhook_sink(text, text, regclass, jsonb, int, int);
CREATE FUNCTION sequin_cdc.create_webhook_sink(
    name text,
    url text,
    change_table regclass DEFAULT 'sequin_cdc.changes',
    headers jsonb DEFAULT '{}',
    batch_size int DEFAULT 100,
    timeout_ms int DEFAULT 5000,
    max_batch_bytes int DEFAULT 8388608)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_headers jsonb := coalesce(headers, '{}');
    h record;
    start_seq bigint;
    sink_id bigint;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, INSERT');
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'sink name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the sink, e.g. sequin_cdc.create_webhook_sink(''orders_hook'', ''https://example.com/hook'').';
    END IF;
    IF url IS NULL THEN
        RAISE EXCEPTION 'webhook URL must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an absolute http:// or https:// URL, such as https://example.com/webhooks/orders.';
    END IF;
    PERFORM sequin_cdc._sink_check_url(url);
    IF change_table IS NULL
       OR NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct
                       WHERE ct.change_table = create_webhook_sink.change_table) THEN
        RAISE EXCEPTION '"%" is not a change table', coalesce(change_table::text, 'NULL')
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Use sequin_cdc.changes (the default) or a table made by sequin_cdc.create_change_table().';
    END IF;
    PERFORM sequin_cdc._require_select(change_table, format('permission denied for change table %s', change_table),
        'A sink sends what its owner may read, and reads it as its owner.');
    IF jsonb_typeof(v_headers) <> 'object' THEN
        RAISE EXCEPTION 'headers must be a JSON object, not %', jsonb_typeof(v_headers)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass header names and values as an object, e.g. ''{"Authorization": "Bearer s3cr3t"}''.';
    END IF;
    FOR h IN SELECT e.key, e.value FROM jsonb_each(v_headers) e ORDER BY e.key LOOP
        IF jsonb_typeof(h.value) <> 'string' THEN
            RAISE EXCEPTION 'value of header "%" must be a string, not %', h.key, jsonb_typeof(h.value)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Quote every header value, e.g. ''{"X-Retries": "3"}''.';
        END IF;
        IF h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' THEN
            RAISE EXCEPTION 'invalid header name "%"', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Header names are letters, digits and !#$%&''*+-.^_`|~, without spaces or colons.';
        END IF;
        IF lower(h.key) IN ('content-length', 'transfer-encoding', 'host', 'connection',
                            'expect', 'idempotency-key') THEN
            RAISE EXCEPTION 'header "%" is set by sequin_cdc', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave Content-Length, Transfer-Encoding, Host, Connection, Expect and Idempotency-Key out of headers.';
        END IF;
        IF (h.value #>> '{}') ~ '[\r\n]' THEN
            RAISE EXCEPTION 'value of header "%" contains a line break', h.key
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Header values are a single line.';
        END IF;
    END LOOP;
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the most changes sent in one request; the default is 100.';
    END IF;
    IF timeout_ms IS NULL OR timeout_ms < 10 OR timeout_ms > 3600000 THEN
        RAISE EXCEPTION 'timeout_ms must be between 10 and 3600000, not %', coalesce(timeout_ms::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the longest one request may take, in milliseconds; the default is 5000.';
    END IF;
    IF max_batch_bytes IS NULL OR max_batch_bytes < 1024 OR max_batch_bytes > 268435456 THEN
        RAISE EXCEPTION 'max_batch_bytes must be between 1024 and 268435456, not %', coalesce(max_batch_bytes::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the most bytes of changes sent in one request (a single larger change is sent alone); the default is 8388608 (8 MB).';
    END IF;
    IF EXISTS (SELECT 1 FROM sequin_cdc.sinks k WHERE k.name = create_webhook_sink.name) THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop the sink first with sequin_cdc.drop_sink().';
    END IF;

    -- New sinks send what is committed from now on; replay_sink() sends
    -- what the change table already holds.
    EXECUTE format('SELECT coalesce(max(seq), 0) FROM %s', change_table) INTO start_seq;
    BEGIN
        INSERT INTO sequin_cdc.sinks AS k (name, url, change_table, headers, batch_size, timeout_ms, cursor_seq,
                                           max_batch_bytes)
        VALUES (create_webhook_sink.name, create_webhook_sink.url, create_webhook_sink.change_table,
                v_headers, create_webhook_sink.batch_size, create_webhook_sink.timeout_ms, start_seq,
                create_webhook_sink.max_batch_bytes)
        RETURNING k.id INTO sink_id;
    EXCEPTION WHEN unique_violation THEN
        -- a sink of another role, which row level security hides
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name; sink names are unique in the database.';
    END;
    PERFORM sequin_cdc._start_sink(sink_id);
    RETURN sink_id;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.create_webhook_sink(text, text, regclass, jsonb, int, int, int) IS
    'Creates a webhook sink: a background worker POSTs the changes committed to change_table from now on, in seq order, up to batch_size changes and about max_batch_bytes per request (a single larger change goes alone), as {"data": [...]} with the given headers; each request may take timeout_ms. Returns the sink id.';

-- Capture workers that fail: pg_stat_capture's new columns (appended),
-- restart_capture(), and health()'s rows about them.
CREATE FUNCTION sequin_cdc._capture_failures(
    OUT slot_name text, OUT last_error_sqlstate text, OUT failed_attempts int,
    OUT next_attempt_at timestamptz)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_capture_failures';

CREATE OR REPLACE VIEW sequin_cdc.pg_stat_capture AS
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
       f.last_error_sqlstate,
       coalesce(f.failed_attempts, 0) AS failed_attempts,
       f.next_attempt_at
  FROM pg_replication_slots s
  LEFT JOIN pg_database d ON d.oid = s.datoid
  LEFT JOIN sequin_cdc._capture_stats() st ON st.slot_name = s.slot_name::text
  LEFT JOIN sequin_cdc._capture_failures() f ON f.slot_name = s.slot_name::text
 WHERE s.plugin = 'sequin_cdc';
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot: its capture worker, counters, positions, lag, last error (state error while failed attempts are not followed by a success) and the next attempt while the launcher backs off.';

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

CREATE OR REPLACE FUNCTION sequin_cdc.health()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM sequin_cdc._health_wal_level();
    RETURN QUERY SELECT * FROM sequin_cdc._health_output_plugin();
    RETURN QUERY SELECT * FROM sequin_cdc._health_slots();
    RETURN QUERY SELECT * FROM sequin_cdc._health_capture_errors();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_rules();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_policies();
    RETURN QUERY SELECT * FROM sequin_cdc._health_sinks();
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

-- (end of worker state)

------------------------------------------------------------------------------
-- DDL on objects capture depends on; DROP EXTENSION
------------------------------------------------------------------------------

-- (end of DDL guards)

------------------------------------------------------------------------------
-- pg_dump / pg_restore
------------------------------------------------------------------------------

-- (end of dump and restore)

------------------------------------------------------------------------------
-- Kafka sink
------------------------------------------------------------------------------

-- (end of Kafka sink)
