------------------------------------------------------------------------------
-- Backfills
------------------------------------------------------------------------------

CREATE TABLE sequin_cdc.backfills (
    id bigserial PRIMARY KEY,
    source_table regclass NOT NULL,
    change_table regclass,          -- null: every rule of the source
    slot_name name NOT NULL,
    where_clause text,
    chunk_size int NOT NULL,
    run_as regrole NOT NULL,
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'completed', 'cancelled', 'failed')),
    last_key text[],                -- primary key of the last row read
    chunks bigint NOT NULL DEFAULT 0,
    rows_processed bigint NOT NULL DEFAULT 0,
    estimated_total bigint,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_error text
);
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.backfills', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.backfills_id_seq', '');
COMMENT ON TABLE sequin_cdc.backfills IS
    'Backfills and their progress; the keyset cursor last_key lets a backfill resume after a restart.';

CREATE FUNCTION sequin_cdc._start_backfill(id bigint) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_start_backfill';
REVOKE ALL ON FUNCTION sequin_cdc._start_backfill(bigint) FROM PUBLIC;

CREATE FUNCTION sequin_cdc.backfill(
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
COMMENT ON FUNCTION sequin_cdc.backfill(regclass, regclass, text, int) IS
    'Writes the existing rows of a table (those matching "where", if given) into its change tables as read rows, consistently ordered with live changes; runs in the background and returns the backfill id.';

CREATE FUNCTION sequin_cdc.cancel_backfill(id bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    st text;
BEGIN
    SELECT b.state INTO st FROM sequin_cdc.backfills b WHERE b.id = cancel_backfill.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'backfill % does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.pg_stat_backfills lists the backfills.';
    ELSIF st <> 'running' THEN
        RAISE EXCEPTION 'backfill % is %, not running', id, st
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only a running backfill can be cancelled.';
    END IF;
    UPDATE sequin_cdc.backfills b SET state = 'cancelled', finished_at = now()
     WHERE b.id = cancel_backfill.id;
    -- closes a chunk window the capture worker may hold open
    PERFORM pg_logical_emit_message(true, 'sequin_cdc:backfill.end', id::text);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.cancel_backfill(bigint) IS
    'Stops a running backfill after its current chunk; rows already written stay.';

CREATE VIEW sequin_cdc.pg_stat_backfills AS
SELECT b.id,
       b.source_table::text AS table_name,
       b.change_table::text AS change_table,
       b.state,
       b.rows_processed,
       b.estimated_total,
       b.chunks,
       b.where_clause,
       b.started_at,
       b.finished_at,
       b.last_error
  FROM sequin_cdc.backfills b;
COMMENT ON VIEW sequin_cdc.pg_stat_backfills IS
    'One row per backfill: state (running, completed, cancelled, failed), rows processed, estimated total, times and last error.';

