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

-- Written by the capture worker in the transaction that skips the change
-- (the one that advances the slot's origin); retried by the worker too,
-- when retry_parked_changes() marks a row.  A role sees (and may retry or
-- drop) the parked changes whose change table it owns and whose source
-- table it may read: row level security, as for sinks.
CREATE TABLE sequin_cdc.parked_changes (
    id bigserial PRIMARY KEY,
    slot_name name NOT NULL,
    rule_id bigint,                     -- the retention rule it was kept for
    source_table_oid bigint NOT NULL,
    source_table_schema text NOT NULL,  -- names when decoded: the table may be gone
    source_table_name text NOT NULL,
    change_table regclass NOT NULL,
    record_pk text NOT NULL,
    action text NOT NULL,
    commit_lsn pg_lsn NOT NULL,
    xid xid,
    committed_at timestamptz NOT NULL,
    stage text NOT NULL CHECK (stage IN ('filter', 'render', 'write')),
    sqlstate text NOT NULL,
    error text NOT NULL,
    record jsonb,                       -- null when the row could not be rendered
    changes jsonb,
    record_columns jsonb,               -- then: each column's text, cut to 1 kB
    transaction_annotations jsonb,
    parked_at timestamptz NOT NULL DEFAULT now(),
    retry_requested bool NOT NULL DEFAULT false,
    retries int NOT NULL DEFAULT 0,
    last_retry_at timestamptz
);
CREATE INDEX parked_changes_slot_name_idx ON sequin_cdc.parked_changes (slot_name);
COMMENT ON TABLE sequin_cdc.parked_changes IS
    'Changes the capture worker could not filter, render or write, with the error and the row as far as it could be rendered; retry them with sequin_cdc.retry_parked_changes(), drop them with sequin_cdc.drop_parked_changes().';
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.parked_changes', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.parked_changes_id_seq', '');

-- May the current role manage a parked change: own its change table and
-- read its source table?  False when either is gone (superusers only then).
CREATE FUNCTION sequin_cdc._may_manage_parked(change_table regclass, source_table_oid bigint)
RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sequin_cdc._owns(change_table), false)
       AND coalesce(has_table_privilege(source_table_oid::oid, 'SELECT'), false)
$$;
COMMENT ON FUNCTION sequin_cdc._may_manage_parked(regclass, bigint) IS
    'Internal: whether the current role owns the change table and may read the source table of a parked change.';

REVOKE ALL ON sequin_cdc.parked_changes FROM PUBLIC;
REVOKE ALL ON SEQUENCE sequin_cdc.parked_changes_id_seq FROM PUBLIC;
GRANT SELECT, DELETE, UPDATE (retry_requested) ON sequin_cdc.parked_changes TO PUBLIC;
ALTER TABLE sequin_cdc.parked_changes ENABLE ROW LEVEL SECURITY;
CREATE POLICY parked_changes_of_own_tables ON sequin_cdc.parked_changes
    USING (sequin_cdc._may_manage_parked(change_table, source_table_oid))
    WITH CHECK (sequin_cdc._may_manage_parked(change_table, source_table_oid));

-- When the transaction commits, the slot's capture worker retries the rows
-- marked for retry (src/parked.c).
CREATE FUNCTION sequin_cdc._retry_parked_wake(slot name) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_retry_parked_wake';
COMMENT ON FUNCTION sequin_cdc._retry_parked_wake(name) IS
    'Internal: at commit, wakes the slot''s capture worker to retry its parked changes marked for retry.';

CREATE FUNCTION sequin_cdc.retry_parked_changes(slot name DEFAULT NULL, ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    missing bigint;
    s name;
BEGIN
    IF slot IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sequin_cdc.slots sl WHERE sl.slot_name = slot) THEN
        RAISE EXCEPTION 'slot "%" does not exist', slot
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.pg_stat_capture lists the slots of sequin_cdc.';
    END IF;
    IF ids IS NOT NULL THEN
        SELECT min(i) INTO missing FROM unnest(ids) i
         WHERE i IS NULL
            OR NOT EXISTS (SELECT 1 FROM sequin_cdc.parked_changes p
                            WHERE p.id = i AND (retry_parked_changes.slot IS NULL
                                                OR p.slot_name = retry_parked_changes.slot));
        IF missing IS NOT NULL OR EXISTS (SELECT 1 FROM unnest(ids) i WHERE i IS NULL) THEN
            RAISE EXCEPTION 'parked change % does not exist', coalesce(missing::text, 'NULL')
                USING ERRCODE = 'undefined_object',
                      DETAIL = 'Or it belongs to another slot, or to a change table the role does not own.',
                      HINT = 'SELECT id, slot_name, stage, error FROM sequin_cdc.parked_changes lists those the role may retry.';
        END IF;
        SELECT min(p.id) INTO missing FROM sequin_cdc.parked_changes p
         WHERE p.id = ANY (ids) AND p.stage = 'render';
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'parked change % cannot be retried', missing
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'Its row could not be rendered as a change row; only its columns'' text was kept.',
                      HINT = format('Drop it with SELECT sequin_cdc.drop_parked_changes(ARRAY[%s]);', missing);
        END IF;
    END IF;
    -- row level security leaves the rows of other roles out
    UPDATE sequin_cdc.parked_changes p SET retry_requested = true
     WHERE (retry_parked_changes.slot IS NULL OR p.slot_name = retry_parked_changes.slot)
       AND (ids IS NULL OR p.id = ANY (ids))
       AND p.stage <> 'render';
    GET DIAGNOSTICS n = ROW_COUNT;
    FOR s IN SELECT DISTINCT p.slot_name FROM sequin_cdc.parked_changes p WHERE p.retry_requested LOOP
        PERFORM sequin_cdc._retry_parked_wake(s);
    END LOOP;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.retry_parked_changes(name, bigint[]) IS
    'Marks parked changes (of a slot, or by id; all the role may manage when both are null) for a retry, which the slot''s capture worker performs after the commit: it checks the rule''s current filter and writes the change row, with a new seq, or keeps the change parked with its new error. Returns the number marked.';

CREATE FUNCTION sequin_cdc.drop_parked_changes(ids bigint[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
    wanted bigint;
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 OR array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'ids must be a non-empty array without nulls'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the ids of the parked changes to drop, e.g. SELECT sequin_cdc.drop_parked_changes(ARRAY(SELECT id FROM sequin_cdc.parked_changes WHERE slot_name = ''s''));';
    END IF;
    SELECT count(DISTINCT i) INTO wanted FROM unnest(ids) i;
    -- row level security leaves the rows of other roles out
    DELETE FROM sequin_cdc.parked_changes p WHERE p.id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> wanted THEN
        RAISE EXCEPTION '% of the % parked changes to drop do not exist', wanted - n, wanted
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Or they belong to a change table the role does not own; nothing was dropped.',
                  HINT = 'SELECT id, slot_name, stage, error FROM sequin_cdc.parked_changes lists those the role may drop.';
    END IF;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.drop_parked_changes(bigint[]) IS
    'Drops parked changes by id: their changes are given up for good. Returns the number dropped; nothing is dropped if one of them does not exist or is not the role''s.';

-- pg_stat_capture counts them (a new last column)
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
       (SELECT count(*) FROM sequin_cdc.parked_changes p
         WHERE p.slot_name = s.slot_name) AS parked
  FROM pg_replication_slots s
  LEFT JOIN pg_database d ON d.oid = s.datoid
  LEFT JOIN sequin_cdc._capture_stats() st ON st.slot_name = s.slot_name::text
 WHERE s.plugin = 'sequin_cdc';
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot: its capture worker, counters, positions, lag, last error and parked changes (unresolved).';

-- Parked changes (17_parked_changes.sql): a warning per slot while any
-- are unresolved (those the caller may see), naming the retry function.
CREATE FUNCTION sequin_cdc._health_parked()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'parked changes ' || p.slot_name, 'warning',
           format('%s change(s) could not be filtered, rendered or written and are parked since %s (e.g. %s of %I.%I: %s); see sequin_cdc.parked_changes, fix the cause, then run SELECT sequin_cdc.retry_parked_changes(%L); or give them up with sequin_cdc.drop_parked_changes(ids)',
                  count(*), min(p.parked_at),
                  (array_agg(p.stage ORDER BY p.id))[1],
                  (array_agg(p.source_table_schema ORDER BY p.id))[1],
                  (array_agg(p.source_table_name ORDER BY p.id))[1],
                  (array_agg(p.error ORDER BY p.id))[1],
                  p.slot_name)
      FROM sequin_cdc.parked_changes p
     GROUP BY p.slot_name
     ORDER BY p.slot_name
$$;
COMMENT ON FUNCTION sequin_cdc._health_parked() IS
    'Internal: the rows of health() about parked changes, one per slot that has some.';

-- health() warns about them (one more line)
CREATE OR REPLACE FUNCTION sequin_cdc.health()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM sequin_cdc._health_wal_level();
    RETURN QUERY SELECT * FROM sequin_cdc._health_output_plugin();
    RETURN QUERY SELECT * FROM sequin_cdc._health_slots();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_rules();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_policies();
    RETURN QUERY SELECT * FROM sequin_cdc._health_sinks();
    RETURN QUERY SELECT * FROM sequin_cdc._health_parked();
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

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
       (SELECT count(*) FROM sequin_cdc.parked_changes p
         WHERE p.slot_name = s.slot_name) AS parked,
       f.last_error_sqlstate,
       coalesce(f.failed_attempts, 0) AS failed_attempts,
       f.next_attempt_at
  FROM pg_replication_slots s
  LEFT JOIN pg_database d ON d.oid = s.datoid
  LEFT JOIN sequin_cdc._capture_stats() st ON st.slot_name = s.slot_name::text
  LEFT JOIN sequin_cdc._capture_failures() f ON f.slot_name = s.slot_name::text
 WHERE s.plugin = 'sequin_cdc';
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot: its capture worker, counters, positions, lag, last error (state error while failed attempts are not followed by a success), parked changes (unresolved) and the next attempt while the launcher backs off.';

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
    RETURN QUERY SELECT * FROM sequin_cdc._health_parked();
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

-- (end of worker state)

------------------------------------------------------------------------------
-- DDL on objects capture depends on; DROP EXTENSION
------------------------------------------------------------------------------

-- The DDL guard of the library (src/ddl_guard.c) calls this function at the
-- end of each statement that dropped or changed what capture depends on.

CREATE FUNCTION sequin_cdc._ddl_guard_check(
    publications text[], table_pubs oid[], table_rels oid[],
    schema_pubs oid[], schema_nsps oid[], altered_pubs oid[],
    tables oid[], table_names text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    k record;
    dropped oid[];
    calls text;
BEGIN
    -- a publication a slot decodes (by name) is gone
    SELECT s.slot_name, s.publication INTO r
      FROM sequin_cdc.slots s
     WHERE s.publication::text = ANY (publications)
       AND NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.publication)
     ORDER BY s.slot_name LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'publication "%" is captured by sequin_cdc slot "%"', r.publication, r.slot_name
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'The slot decodes the publication by its name; without it no change would be captured.',
                  HINT = format('Drop the slot first with SELECT sequin_cdc.drop_slot(%L);', r.slot_name);
    END IF;

    SELECT array_agg(t.relid) INTO dropped
      FROM unnest(tables) t(relid)
     WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.relid);

    -- a dropped change table that rules of surviving tables write into, or
    -- with a retention policy (and its pg_cron job)
    FOR r IN SELECT t.relid, t.name
               FROM unnest(tables, table_names) t(relid, name)
              WHERE t.relid = ANY (dropped)
                AND EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct WHERE ct.change_table = t.relid)
    LOOP
        SELECT string_agg(format('SELECT sequin_cdc.drop_change_retention(%s);', cr.id), ' ' ORDER BY cr.id)
          INTO calls
          FROM sequin_cdc.change_retention cr
         WHERE cr.change_table = r.relid AND cr.source_table <> ALL (dropped);
        IF calls IS NOT NULL THEN
            RAISE EXCEPTION 'cannot drop change table % because retention rules write into it', r.name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = 'The changes those rules keep would be lost from now on.',
                      HINT = format('Remove the rules first: %s', calls);
        END IF;
        IF EXISTS (SELECT 1 FROM sequin_cdc.retention_policies p WHERE p.change_table = r.relid) THEN
            RAISE EXCEPTION 'cannot drop change table % because it has a retention policy', r.name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = 'Its scheduled job would fail from now on.',
                      HINT = format('Drop the policy first with SELECT sequin_cdc.drop_retention_policy(%L);', r.name);
        END IF;
        -- what only reads it goes with it, as the rules of a dropped source
        -- table do: a role that may read a change table cannot hold its drop
        FOR k IN SELECT s.name FROM sequin_cdc.sinks s WHERE s.change_table = r.relid ORDER BY s.name
        LOOP
            PERFORM sequin_cdc.drop_sink(k.name);
            RAISE NOTICE 'sink "%" of dropped change table % removed', k.name, r.name;
        END LOOP;
        DELETE FROM sequin_cdc.change_tables ct WHERE ct.change_table = r.relid;
    END LOOP;

    -- the rules of a dropped source table go with it: none is left for a
    -- table that reuses the OID
    FOR r IN DELETE FROM sequin_cdc.change_retention cr
              WHERE cr.source_table = ANY (dropped)
          RETURNING cr.id, cr.source_table::oid AS relid, cr.change_table
    LOOP
        RAISE NOTICE 'retention rule % of dropped table % removed',
                     r.id, (SELECT t.name FROM unnest(tables, table_names) t(relid, name)
                             WHERE t.relid = r.relid LIMIT 1)
            USING DETAIL = format('Its changes were kept in %s; the rows already there stay.', r.change_table);
    END LOOP;

    -- a retained table no longer in the publication of its rule's slot
    -- (only when entries left a publication: _publication_covers() opens
    -- the publication's tables, and a plain DROP TABLE of one of them must
    -- not wait for the others, which concurrent drops hold)
    IF cardinality(table_pubs) > 0 OR cardinality(schema_pubs) > 0 THEN
        SELECT cr.id, cr.source_table, s.slot_name, s.publication INTO r
          FROM sequin_cdc.change_retention cr
          JOIN sequin_cdc.slots s ON s.slot_name = cr.slot_name
          JOIN pg_publication p ON p.pubname = s.publication
         WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = cr.source_table)
           AND (EXISTS (SELECT 1 FROM unnest(table_pubs, table_rels) x(pub, rel)
                         WHERE x.pub = p.oid AND x.rel IN (SELECT sequin_cdc._related(cr.source_table)))
                OR EXISTS (SELECT 1 FROM unnest(schema_pubs, schema_nsps) x(pub, nsp)
                             JOIN pg_class c ON c.relnamespace = x.nsp
                            WHERE x.pub = p.oid AND c.oid IN (SELECT sequin_cdc._related(cr.source_table))))
           AND NOT sequin_cdc._publication_covers(s.publication, cr.source_table)
         ORDER BY cr.id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'table % would no longer be in publication "%" of sequin_cdc slot "%"',
                            r.source_table, r.publication, r.slot_name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = format('Retention rule %s keeps its changes; they would no longer be captured.', r.id),
                      HINT = format('Remove the rule first with SELECT sequin_cdc.drop_change_retention(%s);', r.id);
        END IF;
    END IF;

    -- a publish option that no longer includes an action a rule keeps
    SELECT cr.id, cr.source_table, s.slot_name, p.pubname, a.action INTO r
      FROM pg_publication p
      JOIN sequin_cdc.slots s ON s.publication = p.pubname
      JOIN sequin_cdc.change_retention cr ON cr.slot_name = s.slot_name
      CROSS JOIN LATERAL unnest(cr.actions) a(action)
     WHERE p.oid = ANY (altered_pubs)
       AND NOT CASE a.action WHEN 'insert' THEN p.pubinsert
                             WHEN 'update' THEN p.pubupdate
                             ELSE p.pubdelete END
     ORDER BY cr.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'publication "%" would no longer publish % changes', r.pubname, r.action
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('Retention rule %s of sequin_cdc slot "%s" keeps the %s changes of %s.',
                                  r.id, r.slot_name, r.action, r.source_table),
                  HINT = format('Keep %s in the publish option, or remove the rule first with SELECT sequin_cdc.drop_change_retention(%s);',
                                r.action, r.id);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._ddl_guard_check(text[], oid[], oid[], oid[], oid[], oid[], oid[], text[]) IS
    'Internal: called by the DDL guard at the end of a statement that dropped or changed what capture depends on; refuses it or completes it (removes the rules of dropped tables).';
REVOKE ALL ON FUNCTION sequin_cdc._ddl_guard_check(text[], oid[], oid[], oid[], oid[], oid[], oid[], text[]) FROM PUBLIC;

-- health() names a rule whose source table is gone (and how to drop it)
-- instead of suggesting ALTER PUBLICATION ... ADD TABLE <OID>.
CREATE OR REPLACE FUNCTION sequin_cdc._health_retention_rules()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT cr.id, cr.source_table, cr.change_table, s.publication,
               EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = cr.source_table) AS present,
               sequin_cdc._publication_covers(s.publication, cr.source_table) AS covered,
               (SELECT string_agg(t.relid::regclass::text, ', ')
                  FROM sequin_cdc._tree(cr.source_table) t(relid) JOIN pg_class c ON c.oid = t.relid
                 WHERE c.relkind = 'r' AND c.relreplident <> 'f') AS not_full
          FROM sequin_cdc.change_retention cr
          LEFT JOIN sequin_cdc.slots s ON s.slot_name = cr.slot_name
         ORDER BY cr.id
    LOOP
        IF NOT r.present THEN
            -- (left by a version before the DDL guard removed such rules)
            check_name := format('source table of rule %s', r.id);
            status := 'error';
            detail := format('the table with OID %s no longer exists; a new table that reuses the OID would be captured: SELECT sequin_cdc.drop_change_retention(%s);',
                             r.source_table::oid, r.id);
            RETURN NEXT;
            CONTINUE;
        END IF;
        check_name := format('publication covers %s', r.source_table);
        IF r.covered THEN
            status := 'ok'; detail := format('in publication %s', r.publication);
        ELSE
            status := 'error';
            detail := format('%s is not in publication %s: its changes are not captured; ALTER PUBLICATION %I ADD TABLE %s',
                             r.source_table, coalesce(r.publication::text, '(slot missing)'),
                             coalesce(r.publication::text, '?'), r.source_table);
        END IF;
        RETURN NEXT;

        check_name := format('replica identity %s', r.source_table);
        IF r.not_full IS NULL THEN
            status := 'ok'; detail := 'REPLICA IDENTITY FULL';
        ELSE
            status := 'warning';
            detail := format('%s not REPLICA IDENTITY FULL: updates have changes = null, deletes carry only the replica identity columns, unchanged TOASTed values are missing; ALTER TABLE ... REPLICA IDENTITY FULL',
                             r.not_full);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- (end of DDL guards)

------------------------------------------------------------------------------
-- pg_dump / pg_restore
------------------------------------------------------------------------------

-- A restored database keeps its identity and the registration of
-- sequin_cdc.changes: the dumped rows replace the ones CREATE EXTENSION made.
CREATE FUNCTION sequin_cdc._replace_install_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'database_identity' THEN
        DELETE FROM sequin_cdc.database_identity d WHERE d.singleton = NEW.singleton;
    ELSIF TG_TABLE_NAME = 'change_tables'
          AND NEW.change_table = to_regclass('sequin_cdc.changes') THEN
        DELETE FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._replace_install_row() IS
    'Internal: lets a restored row of database_identity, or the restored registration of sequin_cdc.changes, replace the one CREATE EXTENSION inserted.';

CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.database_identity
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();
CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.change_tables
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();

-- create_slot(..., replaces => ...): a slot takes over configuration whose
-- slot is not in this database.
DROP FUNCTION sequin_cdc.create_slot(name, name, bool);
CREATE FUNCTION sequin_cdc.create_slot(slot name, publication name, failover bool DEFAULT false,
                                       replaces name DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE c AS 'MODULE_PATHNAME', 'sequin_cdc_create_slot';
COMMENT ON FUNCTION sequin_cdc.create_slot(name, name, bool, name) IS
    'Creates a logical replication slot decoded by sequin_cdc for the publication and starts its capture worker; returns the LSN capture starts at. failover => true (PostgreSQL 17+) makes it a failover slot, which standbys with sync_replication_slots = on keep in sync. replaces => names configuration whose slot is not in this database (a restored database): the new slot takes over its retention rules and backfills.';

COMMENT ON FUNCTION sequin_cdc.drop_slot(name) IS
    'Stops the capture worker of a sequin_cdc slot and drops the slot. Its retention rules stay and apply again if a slot of the same name is created. Configuration whose slot is not in this database (a restored database) is removed alone.';

-- Slots of this database only: a restored database does not show the
-- worker of the database it was dumped from.
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

-- A policy's job must be a job of this database.
CREATE OR REPLACE FUNCTION sequin_cdc._retention_jobs(
    OUT jobid bigint, OUT active bool, OUT last_status text, OUT last_start timestamptz,
    OUT last_end timestamptz, OUT last_message text)
RETURNS SETOF record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RETURN;
    END IF;
    IF to_regclass('cron.job_run_details') IS NULL THEN
        RETURN QUERY SELECT j.jobid, j.active, NULL::text, NULL::timestamptz, NULL::timestamptz, NULL::text
                       FROM cron.job j
                      WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p)
                        AND j.database = current_database();
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT j.jobid, j.active, r.status, r.start_time, r.end_time, r.return_message
          FROM cron.job j
          LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time, d.return_message
                               FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid
                              ORDER BY d.runid DESC LIMIT 1) r ON true
         WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p)
           AND j.database = current_database()$q$;
END
$fn$;

-- health(): "no slot here" for configuration whose slot is not in this
-- database; a policy whose job is not a job of this database.
CREATE OR REPLACE FUNCTION sequin_cdc._health_slots()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    max_lag bigint := pg_size_bytes(current_setting('sequin_cdc.max_lag'));
    standby_slots text := current_setting('synchronized_standby_slots', true);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sequin_cdc.slots) THEN
        check_name := 'slots'; status := 'warning';
        detail := 'no slot yet: create one with sequin_cdc.create_publication() and sequin_cdc.create_slot()';
        RETURN NEXT;
    END IF;

    FOR r IN
        SELECT s.slot_name, s.publication, rs.slot_name IS NOT NULL AS present,
               rs.wal_status, c.pid, c.lag_bytes, c.last_error, c.errors,
               (to_jsonb(rs) ->> 'failover')::bool AS failover,
               to_jsonb(rs) ->> 'invalidation_reason' AS invalidation_reason,
               EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.publication) AS pub_exists,
               (SELECT o.database FROM pg_replication_slots o
                 WHERE o.slot_name = s.slot_name AND o.database IS DISTINCT FROM current_database()) AS elsewhere
          FROM sequin_cdc.slots s
          LEFT JOIN pg_replication_slots rs
                 ON rs.slot_name = s.slot_name AND rs.database = current_database()
          LEFT JOIN sequin_cdc.pg_stat_capture c ON c.slot_name = s.slot_name::text
         ORDER BY s.slot_name
    LOOP
        check_name := format('slot %s', r.slot_name);
        IF NOT r.present AND r.elsewhere IS NOT NULL THEN
            -- e.g. this database was restored from a dump of that one
            status := 'error';
            detail := format('no slot here: create one; slot %s belongs to database %s (this database was restored or copied from it) and slot names are cluster-wide, so nothing is captured here until a slot of another name takes over this configuration: SELECT sequin_cdc.create_slot(''<new name>'', %L, replaces => %L); (or remove the configuration with sequin_cdc.drop_slot(%L))',
                             r.slot_name, r.elsewhere, r.publication, r.slot_name, r.slot_name);
        ELSIF NOT r.present THEN
            status := 'error';
            detail := format('no slot here: create one with SELECT sequin_cdc.create_slot(%L, %L); nothing is captured until then (or remove the configuration with sequin_cdc.drop_slot(%L))',
                             r.slot_name, r.publication, r.slot_name);
        ELSIF r.invalidation_reason = 'idle_timeout' THEN
            status := 'error';
            detail := format('the slot was invalidated (invalidation_reason = idle_timeout): it stayed unused longer than idle_replication_slot_timeout = %s and changes were lost; raise idle_replication_slot_timeout (0 turns it off) in postgresql.conf and reload, then drop and create the slot, then backfill',
                             current_setting('idle_replication_slot_timeout', true));
        ELSIF r.wal_status = 'lost' OR r.invalidation_reason IS NOT NULL THEN
            status := 'error';
            detail := format('the slot was invalidated (%s): changes were lost; drop and create the slot, then backfill',
                             coalesce('invalidation_reason = ' || r.invalidation_reason, 'wal_status = lost'));
        ELSE
            status := 'ok'; detail := format('wal_status = %s', r.wal_status);
        END IF;
        RETURN NEXT;

        IF r.present AND r.wal_status IS DISTINCT FROM 'lost' AND r.invalidation_reason IS NULL THEN
            check_name := format('worker %s', r.slot_name);
            IF r.pid IS NOT NULL THEN
                status := 'ok'; detail := format('capture worker running, pid %s', r.pid);
            ELSE
                status := 'error';
                detail := 'no capture worker is running'
                          || coalesce(format('; last error: %s', r.last_error), '')
                          || '; check the server log and max_worker_processes';
            END IF;
            RETURN NEXT;

            check_name := format('lag %s', r.slot_name);
            IF r.lag_bytes > max_lag THEN
                status := 'warning';
                detail := format('slot is %s behind (sequin_cdc.max_lag = %s)',
                                 pg_size_pretty(r.lag_bytes), current_setting('sequin_cdc.max_lag'));
            ELSE
                status := 'ok'; detail := format('%s behind', pg_size_pretty(coalesce(r.lag_bytes, 0)));
            END IF;
            RETURN NEXT;

            IF r.failover THEN
                check_name := format('failover %s', r.slot_name);
                IF coalesce(standby_slots, '') = '' THEN
                    status := 'warning';
                    detail := 'failover slot, but synchronized_standby_slots is empty: the capture may get ahead of the standby, whose copy of the slot is then behind or not yet synchronized at a failover; set synchronized_standby_slots to the standby''s physical slot here, and sync_replication_slots = on (with hot_standby_feedback = on, primary_slot_name and a dbname in primary_conninfo) on the standby, which then keeps its copy of the slot in sync';
                ELSE
                    status := 'ok';
                    detail := format('failover slot; synchronized_standby_slots = %s (the standby keeps its copy in sync when it sets sync_replication_slots = on)',
                                     standby_slots);
                END IF;
                RETURN NEXT;
            END IF;
        END IF;

        check_name := format('publication %s', r.publication);
        IF r.pub_exists THEN
            status := 'ok'; detail := format('used by slot %s', r.slot_name);
        ELSE
            status := 'error';
            detail := format('publication of slot %s is missing: nothing is captured; create it with sequin_cdc.create_publication()', r.slot_name);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION sequin_cdc._health_retention_policies()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM sequin_cdc.pg_stat_retention ORDER BY change_table::text LOOP
        check_name := format('retention %s', r.change_table);
        IF r.job_state = 'missing' THEN
            -- (or a job of the database this one was restored from)
            status := 'error';
            detail := format('pg_cron job %s is gone from this database (unscheduled, or this database was restored from a dump of another): old changes are not removed; run SELECT sequin_cdc.set_retention_policy(%L, %L, %L); again',
                             r.jobid, r.change_table::text, r.keep::text, r.schedule);
        ELSIF r.job_state = 'inactive' THEN
            status := 'warning';
            detail := format('pg_cron job %s is inactive; activate it with cron.alter_job(%s, active => true)', r.jobid, r.jobid);
        ELSIF r.last_status = 'failed' THEN
            status := 'warning';
            detail := format('last run failed: %s', r.last_message);
        ELSIF r.job_state = 'none' THEN
            status := 'warning';
            detail := 'no pg_cron job in this database: schedule it where pg_cron runs (see set_retention_policy''s hint)';
        ELSE
            status := 'ok';
            detail := format('keep %s, %s, job %s', r.keep, r.schedule, r.jobid);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- backfill() refuses while its slot is not in this database (a restored
-- copy before create_slot): the backfill would complete, unwritten.
CREATE OR REPLACE FUNCTION sequin_cdc.backfill(
    source regclass,
    change_table regclass DEFAULT NULL,
    "where" text DEFAULT NULL,
    chunk_size int DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_slot name;
    n int;
    bf_id bigint;
    est bigint;
BEGIN
    IF source IS NULL THEN
        RAISE EXCEPTION 'source must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the table to backfill, e.g. sequin_cdc.backfill(''public.orders'').';
    END IF;
    IF chunk_size IS NULL OR chunk_size < 1 OR chunk_size > 1000000 THEN
        RAISE EXCEPTION 'chunk_size must be between 1 and 1000000, not %', coalesce(chunk_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The default of 10000 rows suits most tables.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = source AND i.indisprimary) THEN
        RAISE EXCEPTION 'table "%" has no primary key', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A backfill reads the table in primary key order.',
                  HINT = format('Add one with ALTER TABLE %s ADD PRIMARY KEY (...).', source);
    END IF;
    SELECT count(DISTINCT r.slot_name), min(r.slot_name) INTO n, v_slot
      FROM sequin_cdc.change_retention r
     WHERE r.source_table = source
       AND (backfill.change_table IS NULL OR r.change_table = backfill.change_table);
    IF n = 0 THEN
        RAISE EXCEPTION 'no retention rule keeps the changes of "%"%', source,
                        CASE WHEN change_table IS NOT NULL THEN format(' in "%s"', change_table) ELSE '' END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A backfill writes read rows into the change tables of the table''s retention rules.',
                  HINT = format('Add one first with sequin_cdc.add_change_retention(%L).', source::text);
    END IF;
    -- only the slot's capture worker writes the chunks, and a slot decodes
    -- its own database: without it the backfill would complete, unwritten
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                    WHERE s.slot_name = v_slot AND s.plugin = 'sequin_cdc'
                      AND s.database = current_database()) THEN
        RAISE EXCEPTION 'slot "%" of the retention rules of "%" is not a sequin_cdc slot of this database', v_slot, source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A backfill is written by the capture worker of the rules'' slot; without it the backfill would write nothing.',
                  HINT = format('Create the slot first (sequin_cdc.health() gives the call; in a restored copy: SELECT sequin_cdc.create_slot(''<new name>'', ''<publication>'', replaces => %L);), then backfill.', v_slot);
    END IF;
    PERFORM sequin_cdc._require_select(source, format('permission denied for table %s', source),
        'A backfill reads the table as the role that calls backfill().');
    IF NOT has_table_privilege('sequin_cdc.backfills', 'SELECT, INSERT') THEN
        RAISE EXCEPTION 'permission denied for the backfills of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A superuser can allow it: SELECT sequin_cdc.grant_usage(%L);', current_user);
    END IF;
    -- parsed as one boolean expression, never pasted into SQL text
    IF "where" IS NOT NULL THEN
        BEGIN
            PERFORM sequin_cdc._validate_backfill_where(source, "where");
        EXCEPTION
            WHEN invalid_parameter_value THEN
                RAISE;
            WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
                 OR ambiguous_column OR indeterminate_datatype OR invalid_text_representation
                 OR feature_not_supported THEN
                RAISE EXCEPTION 'invalid backfill condition "%": %', "where", SQLERRM
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Give a boolean SQL condition over the table''s columns, such as updated_at > now() - interval ''3 days''.';
        END;
    END IF;
    -- the planner's estimate; with a condition there is none worth giving
    -- (counting would run the condition in a query of our own)
    IF "where" IS NULL THEN
        SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END INTO est
          FROM pg_class c WHERE c.oid = source;
        IF est IS NULL THEN
            EXECUTE format('SELECT count(*) FROM %s', source) INTO est;
        END IF;
    END IF;

    INSERT INTO sequin_cdc.backfills (source_table, change_table, slot_name, where_clause,
                                      chunk_size, run_as, estimated_total)
        VALUES (source, change_table, v_slot, "where", chunk_size, current_user::regrole, est)
        RETURNING id INTO bf_id;
    PERFORM sequin_cdc._start_backfill(bf_id);
    RETURN bf_id;
END
$fn$;

-- (end of dump and restore)

------------------------------------------------------------------------------
-- Kafka sink
------------------------------------------------------------------------------

-- A sink's type, and the columns of a Kafka sink: bootstrap brokers, topic
-- (a name or a template with {schema} and {table}), message key mode and
-- librdkafka properties, which may hold secrets (sasl.password,
-- ssl.key.pem): like headers, they are in no view, log line or error.
ALTER TABLE sequin_cdc.sinks
    ADD COLUMN type text NOT NULL DEFAULT 'webhook' CHECK (type IN ('webhook', 'kafka')),
    ADD COLUMN kafka_brokers text,
    ADD COLUMN kafka_topic text,
    ADD COLUMN kafka_key text CHECK (kafka_key IN ('record_pk', 'table', 'none')),
    ADD COLUMN kafka_properties jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kafka_properties) = 'object');
ALTER TABLE sequin_cdc.sinks ALTER COLUMN url DROP NOT NULL;
ALTER TABLE sequin_cdc.sinks DROP CONSTRAINT sinks_url_check;
ALTER TABLE sequin_cdc.sinks ADD CONSTRAINT sinks_type_columns_check CHECK (coalesce(
    CASE type
        WHEN 'webhook' THEN url ~* '^https?://' AND kafka_brokers IS NULL AND kafka_topic IS NULL
        ELSE url IS NULL AND kafka_brokers IS NOT NULL AND kafka_topic IS NOT NULL AND kafka_key IS NOT NULL
    END, false));
COMMENT ON TABLE sequin_cdc.sinks IS
    'Sinks (webhook or kafka): endpoint, headers or Kafka properties (secret), batch size, timeout, state, cursor (last delivered seq) and delivery statistics. Not readable by PUBLIC; row level security limits other roles to their own sinks.';

CREATE FUNCTION sequin_cdc._kafka_check_config(brokers text, topic text, key text,
                                               property_names text[], property_values text[])
RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_kafka_check_config';
COMMENT ON FUNCTION sequin_cdc._kafka_check_config(text, text, text, text[], text[]) IS
    'Internal: raises an error unless librdkafka accepts the Kafka sink configuration for the current user; property values appear in no error.';

CREATE FUNCTION sequin_cdc.create_kafka_sink(
    name text,
    brokers text,
    topic text,
    change_table regclass DEFAULT 'sequin_cdc.changes',
    key text DEFAULT 'record_pk',
    properties jsonb DEFAULT '{}',
    batch_size int DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_properties jsonb := coalesce(properties, '{}');
    p record;
    start_seq bigint;
    sink_id bigint;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, INSERT');
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'sink name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the sink, e.g. sequin_cdc.create_kafka_sink(''orders_kafka'', ''kafka1:9092'', ''{schema}.{table}'').';
    END IF;
    IF brokers IS NULL OR topic IS NULL OR key IS NULL THEN
        RAISE EXCEPTION 'brokers, topic and key must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'E.g. sequin_cdc.create_kafka_sink(''orders_kafka'', ''kafka1:9092'', ''{schema}.{table}'').';
    END IF;
    IF change_table IS NULL
       OR NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct
                       WHERE ct.change_table = create_kafka_sink.change_table) THEN
        RAISE EXCEPTION '"%" is not a change table', coalesce(change_table::text, 'NULL')
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Use sequin_cdc.changes (the default) or a table made by sequin_cdc.create_change_table().';
    END IF;
    PERFORM sequin_cdc._require_select(change_table, format('permission denied for change table %s', change_table),
        'A sink sends what its owner may read, and reads it as its owner.');
    IF jsonb_typeof(v_properties) <> 'object' THEN
        RAISE EXCEPTION 'properties must be a JSON object, not %', jsonb_typeof(v_properties)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass librdkafka properties as an object, e.g. ''{"compression.type": "zstd"}''.';
    END IF;
    FOR p IN SELECT e.key, e.value FROM jsonb_each(v_properties) e ORDER BY e.key LOOP
        IF jsonb_typeof(p.value) NOT IN ('string', 'number', 'boolean') THEN
            RAISE EXCEPTION 'value of Kafka property "%" must be a string, not %', p.key, jsonb_typeof(p.value)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Quote every property value, e.g. ''{"linger.ms": "5"}''.';
        END IF;
    END LOOP;
    -- librdkafka's own checks, as the owner-to-be (values in no error)
    PERFORM sequin_cdc._kafka_check_config(brokers, topic, key,
        ARRAY(SELECT e.key FROM jsonb_each_text(v_properties) e ORDER BY e.key),
        ARRAY(SELECT e.value FROM jsonb_each_text(v_properties) e ORDER BY e.key));
    -- everything the table checks, before the row (with its secrets) is
    -- built: a failing row is shown in the constraint's error
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the most changes produced before the cursor moves; the default is 1000.';
    END IF;
    IF EXISTS (SELECT 1 FROM sequin_cdc.sinks k WHERE k.name = create_kafka_sink.name) THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop the sink first with sequin_cdc.drop_sink().';
    END IF;

    -- New sinks send what is committed from now on; replay_sink() sends
    -- what the change table already holds.
    EXECUTE format('SELECT coalesce(max(seq), 0) FROM %s', change_table) INTO start_seq;
    BEGIN
        INSERT INTO sequin_cdc.sinks AS k (name, type, change_table, batch_size, cursor_seq,
                                           kafka_brokers, kafka_topic, kafka_key, kafka_properties)
        VALUES (create_kafka_sink.name, 'kafka', create_kafka_sink.change_table,
                create_kafka_sink.batch_size, start_seq, create_kafka_sink.brokers,
                create_kafka_sink.topic, create_kafka_sink.key, v_properties)
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
COMMENT ON FUNCTION sequin_cdc.create_kafka_sink(text, text, text, regclass, text, jsonb, int) IS
    'Creates a Kafka sink: a background worker produces each change committed to change_table from now on as one message (value: the change''s JSON element; key: record_pk, table or none; headers idempotency_key, action, table, seq) to topic ({schema} and {table} replaced) on the brokers, with an idempotent producer configured by the librdkafka properties, at least once and in seq order per key, up to batch_size changes per step. Returns the sink id.';

CREATE FUNCTION sequin_cdc._sink_in_flight(OUT sink_id bigint, OUT in_flight int)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_in_flight';

-- pg_stat_sinks: a Kafka sink's endpoint is its broker list; its type;
-- how many changes the batch being delivered holds
CREATE OR REPLACE VIEW sequin_cdc.pg_stat_sinks AS
SELECT s.id,
       s.name,
       s.state,
       w.pid AS worker_pid,
       CASE s.type WHEN 'kafka' THEN 'kafka://' || s.kafka_brokers
                   ELSE sequin_cdc._sink_endpoint(s.url) END AS endpoint,
       s.change_table::text AS change_table,
       s.cursor_seq,
       sequin_cdc._sink_backlog(s.id) AS backlog,
       s.delivered,
       s.requests,
       s.failed_attempts,
       s.consecutive_failures,
       s.last_http_status,
       s.last_error,
       s.last_failure_at,
       s.last_success_at,
       s.batch_size,
       s.timeout_ms,
       s.owner::text AS owner,
       s.created_at,
       s.type,
       coalesce(f.in_flight, 0) AS in_flight
  FROM sequin_cdc.sinks s
  LEFT JOIN sequin_cdc._sink_workers() w ON w.sink_id = s.id
  LEFT JOIN sequin_cdc._sink_in_flight() f ON f.sink_id = s.id;
COMMENT ON VIEW sequin_cdc.pg_stat_sinks IS
    'One row per sink: state (active, paused), worker pid, endpoint (a webhook''s URL without credentials or query, kafka://brokers), cursor seq, backlog, delivered changes, requests, failed attempts, consecutive failures, last HTTP status, last error, the times of the last failure and success, the type (webhook, kafka) and the changes in flight (in the batch being delivered). Never shows headers or Kafka properties.';

-- (end of Kafka sink)
