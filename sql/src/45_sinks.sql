------------------------------------------------------------------------------
-- Webhook sinks (delivered by the sink workers, src/sink_*.c)
------------------------------------------------------------------------------

-- One row per sink: its configuration, its cursor (the last seq a 2xx
-- acknowledged) and its delivery statistics, which the sink's worker
-- updates in the transaction that moves the cursor.  headers hold secrets
-- (auth tokens): PUBLIC has no access, and row level security shows a
-- non-superuser only the sinks of roles it is a member of.  To let a role
-- manage its own sinks:
--   GRANT USAGE ON SCHEMA sequin_cdc TO app;
--   GRANT SELECT ON sequin_cdc.change_tables TO app;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.sinks TO app;
--   GRANT USAGE ON SEQUENCE sequin_cdc.sinks_id_seq TO app;
CREATE TABLE sequin_cdc.sinks (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    url text NOT NULL CHECK (url ~* '^https?://'),
    change_table regclass NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    batch_size int NOT NULL DEFAULT 100 CHECK (batch_size BETWEEN 1 AND 10000),
    timeout_ms int NOT NULL DEFAULT 5000 CHECK (timeout_ms BETWEEN 10 AND 3600000),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    cursor_seq bigint NOT NULL,         -- last seq delivered (acknowledged by a 2xx)
    replay_epoch int NOT NULL DEFAULT 0, -- bumped by each replay: new Idempotency-Keys
    owner regrole NOT NULL DEFAULT current_user::regrole,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- statistics, written by the sink's worker
    delivered bigint NOT NULL DEFAULT 0,
    requests bigint NOT NULL DEFAULT 0,
    failed_attempts bigint NOT NULL DEFAULT 0,
    consecutive_failures int NOT NULL DEFAULT 0,
    last_http_status int,
    last_error text,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    -- a batch also stops growing before its elements would pass this size
    max_batch_bytes int NOT NULL DEFAULT 8388608 CHECK (max_batch_bytes BETWEEN 1024 AND 268435456)
);
REVOKE ALL ON sequin_cdc.sinks FROM PUBLIC;
REVOKE ALL ON SEQUENCE sequin_cdc.sinks_id_seq FROM PUBLIC;
ALTER TABLE sequin_cdc.sinks ENABLE ROW LEVEL SECURITY;
CREATE POLICY sinks_of_own_roles ON sequin_cdc.sinks
    USING (pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER'));
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.sinks', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.sinks_id_seq', '');
COMMENT ON TABLE sequin_cdc.sinks IS
    'Webhook sinks: endpoint, headers (secret), batch size and bytes, timeout, state, cursor (last delivered seq) and delivery statistics. Not readable by PUBLIC; row level security limits other roles to their own sinks.';

CREATE FUNCTION sequin_cdc._sink_check_url(url text) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_check_url';

CREATE FUNCTION sequin_cdc._sink_endpoint(url text) RETURNS text
LANGUAGE c IMMUTABLE STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_endpoint';
COMMENT ON FUNCTION sequin_cdc._sink_endpoint(text) IS
    'Internal: scheme://host[:port]/path of a URL, without user information, query or fragment (which may carry credentials).';

-- These act when the transaction commits, on sinks the caller can see:
-- _start_sink starts a worker, _wake_sink wakes it (or starts one if none
-- runs), _stop_sink terminates it.
CREATE FUNCTION sequin_cdc._start_sink(id bigint) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_start';
CREATE FUNCTION sequin_cdc._wake_sink(id bigint) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_wake';
CREATE FUNCTION sequin_cdc._stop_sink(id bigint) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_stop';

CREATE FUNCTION sequin_cdc._sink_workers(OUT sink_id bigint, OUT pid int)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_workers';

-- Errors unless the caller may manage sinks (see the table's comment).
CREATE FUNCTION sequin_cdc._check_sink_privileges(privs text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- (has_table_privilege with a list is true if any one is held)
    IF EXISTS (SELECT 1 FROM unnest(string_to_array(privs, ',')) p
                WHERE NOT has_table_privilege('sequin_cdc.sinks', btrim(p)))
       OR NOT has_table_privilege('sequin_cdc.change_tables', 'SELECT')
       OR privs LIKE '%INSERT%' AND NOT has_sequence_privilege('sequin_cdc.sinks_id_seq', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for the sinks of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Sinks are managed by superusers and by roles granted access to sequin_cdc.sinks; headers may hold secrets.',
                  HINT = format('A superuser can allow it: GRANT SELECT ON sequin_cdc.change_tables TO %1$I; GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.sinks TO %1$I; GRANT USAGE ON SEQUENCE sequin_cdc.sinks_id_seq TO %1$I;',
                                current_user);
    END IF;
END
$fn$;

-- The sink of that name that the caller can see, locked; errors if none.
CREATE FUNCTION sequin_cdc._sink_by_name(sink_name text) RETURNS sequin_cdc.sinks
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
BEGIN
    IF sink_name IS NULL THEN
        RAISE EXCEPTION 'sink name must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'sequin_cdc.pg_stat_sinks lists the sinks.';
    END IF;
    SELECT * INTO s FROM sequin_cdc.sinks k WHERE k.name = sink_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sink "%" does not exist', sink_name
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.pg_stat_sinks lists the sinks; create one with sequin_cdc.create_webhook_sink().';
    END IF;
    RETURN s;
END
$fn$;

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

CREATE FUNCTION sequin_cdc.drop_sink(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, UPDATE, DELETE');
    s := sequin_cdc._sink_by_name(name);
    PERFORM sequin_cdc._stop_sink(s.id);
    DELETE FROM sequin_cdc.sinks k WHERE k.id = s.id;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.drop_sink(text) IS
    'Stops the worker of a sink (when the transaction commits) and deletes the sink. Changes stay in the change table.';

CREATE FUNCTION sequin_cdc.pause_sink(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, UPDATE');
    s := sequin_cdc._sink_by_name(name);
    UPDATE sequin_cdc.sinks k SET state = 'paused' WHERE k.id = s.id;
    PERFORM sequin_cdc._stop_sink(s.id);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.pause_sink(text) IS
    'Stops delivery of a sink; its cursor stays, and resume_sink() goes on from there.';

CREATE FUNCTION sequin_cdc.resume_sink(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, UPDATE');
    s := sequin_cdc._sink_by_name(name);
    UPDATE sequin_cdc.sinks k SET state = 'active' WHERE k.id = s.id;
    PERFORM sequin_cdc._start_sink(s.id);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.resume_sink(text) IS
    'Makes a sink active again and starts its worker (also the way to restart a sink whose worker is not running).';

-- Rewind a sink's cursor to just before first_seq; returns the number of
-- already delivered rows that will be sent again.  Never moves forward.
CREATE FUNCTION sequin_cdc._rewind_sink(s sequin_cdc.sinks, first_seq bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    IF first_seq IS NULL OR first_seq > s.cursor_seq THEN
        RETURN 0;               -- nothing delivered from there on yet
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE seq >= $1 AND seq <= $2', s.change_table)
        INTO n USING first_seq, s.cursor_seq;
    UPDATE sequin_cdc.sinks k
       SET cursor_seq = first_seq - 1, replay_epoch = k.replay_epoch + 1
     WHERE k.id = s.id;
    IF s.state = 'active' THEN
        -- wake (or start) the worker when this commits
        PERFORM sequin_cdc._wake_sink(s.id);
    END IF;
    RETURN n;
END
$fn$;

CREATE FUNCTION sequin_cdc.replay_sink(name text, since timestamptz) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
    first_seq bigint;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, UPDATE');
    s := sequin_cdc._sink_by_name(name);
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the commit time to replay from, e.g. now() - interval ''3 days'', or ''-infinity'' for everything retained.';
    END IF;
    -- seq is commit order; the first change committed at or after since
    EXECUTE format('SELECT min(seq) FROM %s WHERE committed_at >= $1', s.change_table)
        INTO first_seq USING since;
    RETURN sequin_cdc._rewind_sink(s, first_seq);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.replay_sink(text, timestamptz) IS
    'Rewinds a sink to the first change committed at or after since: everything from there is sent again, in order. Returns the number of already delivered changes that will be sent again.';

CREATE FUNCTION sequin_cdc.replay_sink_from_seq(name text, seq bigint) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s sequin_cdc.sinks;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, UPDATE');
    s := sequin_cdc._sink_by_name(name);
    IF seq IS NULL OR seq < 1 THEN
        RAISE EXCEPTION 'seq must be a positive number, not %', coalesce(seq::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the seq of the first change to send again; the change table''s seq column has them.';
    END IF;
    IF seq > s.cursor_seq + 1 THEN
        RAISE EXCEPTION 'seq % has not been delivered by sink "%" yet', seq, s.name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The sink has delivered up to seq %s; a replay only goes back, it never skips changes.', s.cursor_seq),
                  HINT = 'Pass a seq at or before the sink''s cursor_seq (sequin_cdc.pg_stat_sinks).';
    END IF;
    RETURN sequin_cdc._rewind_sink(s, replay_sink_from_seq.seq);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.replay_sink_from_seq(text, bigint) IS
    'Rewinds a sink to seq: every retained change from seq on is sent again, in order. Returns the number of already delivered changes that will be sent again.';

-- Changes after a sink's cursor, for sinks the caller can see (row level
-- security on sinks) in a change table it may read; null otherwise.  Runs
-- with the caller's rights: it tells nobody about other roles' sinks.
CREATE FUNCTION sequin_cdc._sink_backlog(sink_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s record;
    n bigint;
BEGIN
    IF NOT has_table_privilege('sequin_cdc.sinks', 'SELECT') THEN
        RETURN NULL;
    END IF;
    SELECT k.change_table, k.cursor_seq INTO s FROM sequin_cdc.sinks k WHERE k.id = sink_id;
    IF NOT FOUND OR has_table_privilege(s.change_table, 'SELECT') IS NOT TRUE THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE seq > $1', s.change_table) INTO n USING s.cursor_seq;
    RETURN n;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._sink_backlog(bigint) IS
    'Internal: changes waiting after a sink''s cursor; null unless the caller can see the sink and read its change table.';

-- pg_stat_sinks: see 47_sink_kafka.sql (it shows every type of sink)

