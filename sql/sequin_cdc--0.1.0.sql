/* sequin_cdc--0.1.0.sql: capture into Sequin-style change tables */

\echo Use "CREATE EXTENSION sequin_cdc" to load this file. \quit

-- Refuse to install where the library was not preloaded: nothing would run.
CREATE FUNCTION sequin_cdc._check_preload() RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_check_preload';
SELECT sequin_cdc._check_preload();

------------------------------------------------------------------------------
-- Configuration
------------------------------------------------------------------------------

-- The source_database_id written into every change row.
CREATE TABLE sequin_cdc.database_identity (
    singleton bool PRIMARY KEY DEFAULT true CHECK (singleton),
    id uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO sequin_cdc.database_identity DEFAULT VALUES;
COMMENT ON TABLE sequin_cdc.database_identity IS
    'The uuid written as source_database_id into change rows of this database.';

CREATE TABLE sequin_cdc.slots (
    slot_name name PRIMARY KEY,
    publication name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sequin_cdc.slots IS
    'Replication slots created by sequin_cdc.create_slot and the publication each one captures.';

CREATE TABLE sequin_cdc.change_tables (
    change_table regclass PRIMARY KEY,
    partitioned bool NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sequin_cdc.change_tables IS
    'Tables created by sequin_cdc.create_change_table.';

-- Read by the capture workers with the historic snapshot of each change:
-- a user catalog table, and its column order is known to decode.c.
CREATE TABLE sequin_cdc.change_retention (
    id bigserial PRIMARY KEY,
    source_table regclass NOT NULL,
    change_table regclass NOT NULL,
    actions text[] NOT NULL,
    filter text,
    slot_name name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_table, change_table)
) WITH (user_catalog_table = true);
COMMENT ON TABLE sequin_cdc.change_retention IS
    'Retention rules: which changes of which table go to which change table, through which slot.';

SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.database_identity', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.slots', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_tables', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_retention', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_retention_id_seq', '');

------------------------------------------------------------------------------
-- Internal C helpers
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc._validate_filter(source regclass, filter text) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_validate_filter';

CREATE FUNCTION sequin_cdc._invalidate_relation(source regclass) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_invalidate_relation';

CREATE FUNCTION sequin_cdc._plugin_allowed() RETURNS bool
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_plugin_allowed';

CREATE FUNCTION sequin_cdc._capture_stats(
    OUT slot_name text, OUT database_oid oid, OUT pid int, OUT state text,
    OUT changes_captured bigint, OUT transactions_captured bigint,
    OUT last_decoded_lsn pg_lsn, OUT last_commit_time timestamptz,
    OUT errors bigint, OUT last_error text, OUT last_error_time timestamptz)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_capture_stats';

-- A table with its partitions (all levels), for coverage and identity checks.
CREATE FUNCTION sequin_cdc._tree(source regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT source UNION SELECT relid FROM pg_partition_tree(source) $$;

-- The same, plus the tables it is a partition of.
CREATE FUNCTION sequin_cdc._related(source regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sequin_cdc._tree(source) UNION SELECT relid FROM pg_partition_ancestors(source) $$;

REVOKE ALL ON FUNCTION sequin_cdc._validate_filter(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sequin_cdc._invalidate_relation(regclass) FROM PUBLIC;

------------------------------------------------------------------------------
-- Change tables
------------------------------------------------------------------------------

-- No SET search_path: an unqualified name goes to the caller's current schema.
CREATE FUNCTION sequin_cdc.create_change_table(change_table text, partitioned bool DEFAULT false)
RETURNS regclass
LANGUAGE plpgsql
AS $fn$
DECLARE
    parts text[];
    sch text;
    tbl text;
    qname text;
BEGIN
    BEGIN
        parts := parse_ident(change_table);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'invalid change table name "%"', change_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a table name, optionally schema-qualified, such as public.order_changes.';
    END;
    IF cardinality(parts) = 1 THEN
        sch := pg_catalog.current_schema();
        tbl := parts[1];
    ELSIF cardinality(parts) = 2 THEN
        sch := parts[1];
        tbl := parts[2];
    ELSE
        RAISE EXCEPTION 'invalid change table name "%"', change_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a table name, optionally schema-qualified, such as public.order_changes.';
    END IF;
    IF sch IS NULL OR NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = sch) THEN
        RAISE EXCEPTION 'schema "%" does not exist', coalesce(sch, '(none)')
            USING ERRCODE = 'invalid_schema_name',
                  HINT = 'Create the schema first, or qualify the name with an existing schema.';
    END IF;
    qname := format('%I.%I', sch, tbl);
    IF to_regclass(qname) IS NOT NULL THEN
        RAISE EXCEPTION 'relation % already exists', qname
            USING ERRCODE = 'duplicate_table',
                  HINT = 'Choose another name; an existing change table can be used as it is.';
    END IF;

    EXECUTE format($ddl$
        CREATE TABLE %s (
            id bigserial%s,
            seq bigint NOT NULL,
            source_database_id uuid NOT NULL,
            source_table_oid bigint NOT NULL,
            source_table_schema text NOT NULL,
            source_table_name text NOT NULL,
            record_pk text NOT NULL,
            record jsonb NOT NULL,
            changes jsonb,
            action text NOT NULL,
            transaction_annotations jsonb,
            committed_at timestamptz NOT NULL,
            inserted_at timestamptz NOT NULL DEFAULT now()%s
        )%s$ddl$,
        qname,
        CASE WHEN partitioned THEN ' NOT NULL' ELSE ' PRIMARY KEY' END,
        CASE WHEN partitioned THEN ', PRIMARY KEY (id, committed_at)' ELSE '' END,
        CASE WHEN partitioned THEN ' PARTITION BY RANGE (committed_at)' ELSE '' END);

    -- Sequin's indexes
    EXECUTE format('CREATE UNIQUE INDEX %I ON %s (source_database_id, committed_at, seq, record_pk)',
                   left(tbl, 50) || '_seq_pk_idx', qname);
    EXECUTE format('CREATE INDEX %I ON %s (seq)', left(tbl, 50) || '_seq_idx', qname);
    EXECUTE format('CREATE INDEX %I ON %s (source_table_oid)', left(tbl, 50) || '_oid_idx', qname);
    EXECUTE format('CREATE INDEX %I ON %s (committed_at)', left(tbl, 50) || '_committed_at_idx', qname);

    -- One writer draws id = seq; a cache saves a sequence update per row.
    EXECUTE format('ALTER SEQUENCE %s CACHE 1000', pg_get_serial_sequence(qname, 'id'));

    IF partitioned THEN
        -- catches every row until partitions are managed (e.g. by pg_partman)
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT',
                       sch, left(tbl, 55) || '_default', qname);
    END IF;

    INSERT INTO sequin_cdc.change_tables (change_table, partitioned)
        VALUES (qname::regclass, partitioned);
    RETURN qname::regclass;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.create_change_table(text, bool) IS
    'Creates a change table with Sequin''s schema and indexes; partitioned => true partitions it by committed_at.';

-- The default change table
SELECT sequin_cdc.create_change_table('sequin_cdc.changes');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.changes', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.changes_id_seq', '');
COMMENT ON TABLE sequin_cdc.changes IS 'The default change table.';

------------------------------------------------------------------------------
-- Publications and slots
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.create_publication(
    publication name,
    tables regclass[] DEFAULT NULL,
    schemas name[] DEFAULT NULL,
    publish_via_partition_root bool DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    targets text[] := '{}';
BEGIN
    IF publication IS NULL THEN
        RAISE EXCEPTION 'publication name must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a name, e.g. sequin_cdc.create_publication(''my_pub'', ARRAY[''public.orders'']::regclass[]).';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = publication) THEN
        RAISE EXCEPTION 'publication "%" already exists', publication
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use the existing publication with sequin_cdc.create_slot(), or choose another name.';
    END IF;
    IF cardinality(tables) = 0 AND schemas IS NULL OR cardinality(schemas) = 0 AND tables IS NULL THEN
        RAISE EXCEPTION 'publication "%" would cover no table', publication
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass tables, schemas, or neither (for all tables).';
    END IF;
    IF cardinality(tables) > 0 THEN
        targets := targets || ('TABLE ' || (SELECT string_agg(t::text, ', ') FROM unnest(tables) t));
    END IF;
    IF cardinality(schemas) > 0 THEN
        targets := targets || ('TABLES IN SCHEMA ' ||
                   (SELECT string_agg(quote_ident(s), ', ') FROM unnest(schemas) s));
    END IF;
    EXECUTE format('CREATE PUBLICATION %I %s WITH (publish_via_partition_root = %s)',
                   publication,
                   CASE WHEN cardinality(targets) = 0 THEN 'FOR ALL TABLES'
                        ELSE 'FOR ' || array_to_string(targets, ', ') END,
                   CASE WHEN publish_via_partition_root THEN 'true' ELSE 'false' END);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.create_publication(name, regclass[], name[], bool) IS
    'Creates a publication of the given tables and schemas (all tables when both are null). Create it before the slot.';

CREATE FUNCTION sequin_cdc.create_slot(slot name, publication name) RETURNS pg_lsn
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_create_slot';
COMMENT ON FUNCTION sequin_cdc.create_slot(name, name) IS
    'Creates a logical replication slot decoded by sequin_cdc for the publication and starts its capture worker; returns the LSN capture starts at.';

CREATE FUNCTION sequin_cdc.drop_slot(slot name) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_drop_slot';
COMMENT ON FUNCTION sequin_cdc.drop_slot(name) IS
    'Stops the capture worker of a sequin_cdc slot and drops the slot. Its retention rules stay and apply again if a slot of the same name is created.';

------------------------------------------------------------------------------
-- Retention rules
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.add_change_retention(
    source regclass,
    change_table regclass DEFAULT 'sequin_cdc.changes',
    actions text[] DEFAULT '{insert,update,delete}',
    filter text DEFAULT NULL,
    slot name DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src record;
    v_slot name := slot;
    v_pub name;
    n int;
    other name;
    other_source regclass;
    rule_id bigint;
    not_full text;
BEGIN
    IF source IS NULL OR change_table IS NULL THEN
        RAISE EXCEPTION 'source and change_table must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the table to capture and the change table to write to.';
    END IF;
    SELECT c.relkind, n.nspname, c.relname INTO src
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = source;
    IF src.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', source
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Retention rules capture ordinary and partitioned tables.';
    END IF;
    IF src.nspname = 'sequin_cdc'
       OR EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct
                   WHERE ct.change_table = source
                      OR ct.change_table IN (SELECT sequin_cdc._related(source))) THEN
        RAISE EXCEPTION 'cannot capture changes of "%"', source
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It is a change table or belongs to sequin_cdc; capturing it would feed the stream back into itself.',
                  HINT = 'Choose the table whose changes you want to keep.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = source AND i.indisprimary) THEN
        RAISE EXCEPTION 'table "%" has no primary key', source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Change rows identify their row by record_pk, the primary key.',
                  HINT = format('Add one with ALTER TABLE %s ADD PRIMARY KEY (...).', source);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct WHERE ct.change_table = add_change_retention.change_table) THEN
        RAISE EXCEPTION '"%" is not a change table', change_table
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Create one with sequin_cdc.create_change_table(), or use the default sequin_cdc.changes.';
    END IF;
    IF actions IS NULL OR cardinality(actions) = 0
       OR EXISTS (SELECT 1 FROM unnest(actions) a
                   WHERE a IS NULL OR a NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'invalid actions %', coalesce(actions::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Actions are a non-empty subset of {insert,update,delete}.';
    END IF;
    IF filter IS NOT NULL THEN
        PERFORM sequin_cdc._validate_filter(source, filter);
    END IF;

    IF v_slot IS NULL THEN
        SELECT count(*), min(s.slot_name) INTO n, v_slot FROM sequin_cdc.slots s;
        IF n = 0 THEN
            RAISE EXCEPTION 'there is no sequin_cdc slot in this database'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Create a publication with sequin_cdc.create_publication() and then a slot with sequin_cdc.create_slot().';
        ELSIF n > 1 THEN
            RAISE EXCEPTION 'there are % sequin_cdc slots in this database', n
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Say which one with slot => ''...''.';
        END IF;
    END IF;
    SELECT s.publication INTO v_pub FROM sequin_cdc.slots s WHERE s.slot_name = v_slot;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sequin_cdc slot "%" does not exist', v_slot
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.slots lists the slots; create one with sequin_cdc.create_slot().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication_tables pt
                    WHERE pt.pubname = v_pub
                      AND format('%I.%I', pt.schemaname, pt.tablename)::regclass
                          IN (SELECT sequin_cdc._related(source))) THEN
        RAISE EXCEPTION 'table "%" is not in publication "%" of slot "%"', source, v_pub, v_slot
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Add it with ALTER PUBLICATION %I ADD TABLE %s.', v_pub, source);
    END IF;
    SELECT r.slot_name INTO other FROM sequin_cdc.change_retention r
     WHERE r.change_table = add_change_retention.change_table AND r.slot_name <> v_slot
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'change table "%" is fed by slot "%"', change_table, other
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'One change table is written by one slot, so that seq follows commit order.',
                  HINT = 'Use another change table for this slot.';
    END IF;
    SELECT r.id, r.source_table INTO rule_id, other_source FROM sequin_cdc.change_retention r
     WHERE r.source_table <> source AND r.source_table IN (SELECT sequin_cdc._related(source))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '"%" and "%" are in one partition tree, and rule % already covers "%"',
                        source, other_source, rule_id, other_source
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The changes of a partition tree are kept through rules on one of its tables; rules on the partitioned table report partition rows as that table.',
                  HINT = format('Add the rule to %s instead, or drop rule %s first.', other_source, rule_id);
    END IF;
    SELECT r.id INTO rule_id FROM sequin_cdc.change_retention r
     WHERE r.source_table = source AND r.change_table = add_change_retention.change_table;
    IF FOUND THEN
        RAISE EXCEPTION 'changes of "%" are already kept in "%" (rule %)', source, change_table, rule_id
            USING ERRCODE = 'duplicate_object',
                  HINT = format('Drop it first with sequin_cdc.drop_change_retention(%s) to change it.', rule_id);
    END IF;

    SELECT string_agg(t.relid::regclass::text, ', ') INTO not_full
      FROM sequin_cdc._tree(source) t(relid) JOIN pg_class c ON c.oid = t.relid
     WHERE c.relkind = 'r' AND c.relreplident <> 'f';
    IF not_full IS NOT NULL THEN
        RAISE WARNING 'replica identity of % is not FULL', not_full
            USING DETAIL = 'Updates will have changes = null, deletes will carry only the replica identity columns in record, and unchanged TOASTed values will be missing from record.',
                  HINT = format('Run ALTER TABLE ... REPLICA IDENTITY FULL on %s.', not_full);
    END IF;

    INSERT INTO sequin_cdc.change_retention (source_table, change_table, actions, filter, slot_name)
        VALUES (source, change_table, actions, filter, v_slot)
        RETURNING id INTO rule_id;
    PERFORM sequin_cdc._invalidate_relation(source);
    RETURN rule_id;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.add_change_retention(regclass, regclass, text[], text, name) IS
    'Keeps the changes of a table (the given actions, rows matching filter) in a change table, from this transaction''s commit on; returns the rule id.';

CREATE FUNCTION sequin_cdc.drop_change_retention(id bigint) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src regclass;
BEGIN
    DELETE FROM sequin_cdc.change_retention r WHERE r.id = drop_change_retention.id
        RETURNING r.source_table INTO src;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retention rule % does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.change_retention lists the rules.';
    END IF;
    PERFORM sequin_cdc._invalidate_relation(src);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.drop_change_retention(bigint) IS
    'Stops keeping changes for a retention rule, from this transaction''s commit on. Rows already kept stay.';

------------------------------------------------------------------------------
-- Monitoring
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
       s.wal_status
  FROM pg_replication_slots s
  LEFT JOIN pg_database d ON d.oid = s.datoid
  LEFT JOIN sequin_cdc._capture_stats() st ON st.slot_name = s.slot_name::text
 WHERE s.plugin = 'sequin_cdc';
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot: its capture worker, counters, positions, lag and last error.';

CREATE FUNCTION sequin_cdc.health()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    max_lag bigint := pg_size_bytes(current_setting('sequin_cdc.max_lag'));
BEGIN
    check_name := 'wal_level';
    IF current_setting('wal_level') = 'logical' THEN
        status := 'ok'; detail := 'wal_level = logical';
    ELSE
        status := 'error';
        detail := format('wal_level = %s; set wal_level = logical in postgresql.conf and restart', current_setting('wal_level'));
    END IF;
    RETURN NEXT;

    check_name := 'output_plugin_libraries';
    IF sequin_cdc._plugin_allowed() THEN
        status := 'ok';
        detail := coalesce('output_plugin_libraries = ' || current_setting('output_plugin_libraries', true),
                           'this server does not restrict output plugins');
    ELSE
        status := 'error';
        detail := format('output_plugin_libraries = ''%s'' does not list sequin_cdc; set output_plugin_libraries = ''%s, sequin_cdc'' in postgresql.conf and reload',
                         current_setting('output_plugin_libraries'), current_setting('output_plugin_libraries'));
    END IF;
    RETURN NEXT;

    IF NOT EXISTS (SELECT 1 FROM sequin_cdc.slots) THEN
        check_name := 'slots'; status := 'warning';
        detail := 'no slot yet: create one with sequin_cdc.create_publication() and sequin_cdc.create_slot()';
        RETURN NEXT;
    END IF;

    FOR r IN
        SELECT s.slot_name, s.publication, rs.slot_name IS NOT NULL AS present,
               rs.wal_status, c.pid, c.lag_bytes, c.last_error, c.errors,
               EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.publication) AS pub_exists
          FROM sequin_cdc.slots s
          LEFT JOIN pg_replication_slots rs ON rs.slot_name = s.slot_name
          LEFT JOIN sequin_cdc.pg_stat_capture c ON c.slot_name = s.slot_name::text
         ORDER BY s.slot_name
    LOOP
        check_name := format('slot %s', r.slot_name);
        IF NOT r.present THEN
            status := 'error';
            detail := 'the replication slot is missing; drop its configuration with sequin_cdc.drop_slot() or create it again';
        ELSIF r.wal_status = 'lost' THEN
            status := 'error';
            detail := 'the slot was invalidated (wal_status = lost): changes were lost; drop and create the slot, then backfill';
        ELSE
            status := 'ok'; detail := format('wal_status = %s', r.wal_status);
        END IF;
        RETURN NEXT;

        IF r.present AND r.wal_status IS DISTINCT FROM 'lost' THEN
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

    FOR r IN
        SELECT cr.id, cr.source_table, cr.change_table, s.publication,
               EXISTS (SELECT 1 FROM pg_publication_tables pt
                        WHERE pt.pubname = s.publication
                          AND format('%I.%I', pt.schemaname, pt.tablename)::regclass
                              IN (SELECT sequin_cdc._related(cr.source_table))) AS covered,
               (SELECT string_agg(t.relid::regclass::text, ', ')
                  FROM sequin_cdc._tree(cr.source_table) t(relid) JOIN pg_class c ON c.oid = t.relid
                 WHERE c.relkind = 'r' AND c.relreplident <> 'f') AS not_full
          FROM sequin_cdc.change_retention cr
          LEFT JOIN sequin_cdc.slots s ON s.slot_name = cr.slot_name
         ORDER BY cr.id
    LOOP
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

    -- retention jobs and sinks (their views are defined further down)
    FOR r IN SELECT * FROM sequin_cdc.pg_stat_retention ORDER BY change_table::text LOOP
        check_name := format('retention %s', r.change_table);
        IF r.job_state = 'missing' THEN
            status := 'error';
            detail := format('pg_cron job %s is gone: old changes are not removed; run sequin_cdc.set_retention_policy(%L, %L) again',
                             r.jobid, r.change_table::text, r.keep::text);
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

    FOR r IN SELECT * FROM sequin_cdc.pg_stat_sinks ORDER BY name LOOP
        check_name := format('sink %s', r.name);
        IF r.state = 'paused' THEN
            status := 'ok'; detail := 'paused';
        ELSIF r.worker_pid IS NULL THEN
            status := 'error';
            detail := format('no delivery worker is running; start it with sequin_cdc.resume_sink(%L) and check the server log', r.name);
        ELSIF r.consecutive_failures > 0 THEN
            status := 'warning';
            detail := format('%s failed attempts in a row (last HTTP status %s: %s); %s changes waiting',
                             r.consecutive_failures, coalesce(r.last_http_status::text, 'none'),
                             coalesce(r.last_error, ''), r.backlog);
        ELSE
            status := 'ok';
            detail := format('%s changes waiting', r.backlog);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

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
    IF "where" IS NOT NULL THEN
        BEGIN
            EXECUTE format('SELECT 1 FROM %s WHERE (%s) LIMIT 0', source, "where");
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'invalid backfill condition "%": %', "where", SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give a boolean SQL condition over the table''s columns, such as updated_at > now() - interval ''3 days''.';
        END;
    END IF;
    SELECT CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END INTO est
      FROM pg_class c WHERE c.oid = source;
    IF est IS NULL OR "where" IS NOT NULL THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE (%s)', source, coalesce("where", 'true')) INTO est;
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

------------------------------------------------------------------------------
-- Retention policies
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Retention policies: old change rows removed on a schedule
--
-- A policy keeps the changes of the last `keep` in a change table. A pg_cron
-- job (in this database) runs CALL sequin_cdc.run_retention(<table>) on the
-- policy's schedule. For a plain change table run_retention deletes the rows
-- with committed_at < now() - keep in batches, committing between batches.
-- For a partitioned change table set_retention_policy hands the table to
-- pg_partman (daily partitions on committed_at, retention = keep, old
-- partitions dropped) and run_retention runs pg_partman's maintenance for it,
-- then deletes expired rows that landed in the default partition.
------------------------------------------------------------------------------

CREATE TABLE sequin_cdc.retention_policies (
    change_table regclass PRIMARY KEY,
    keep interval NOT NULL CHECK (keep > interval '0'),
    schedule text,
    jobid bigint,
    job_owner name,
    method text NOT NULL CHECK (method IN ('delete', 'pg_partman')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((schedule IS NULL) = (jobid IS NULL))
);
COMMENT ON TABLE sequin_cdc.retention_policies IS
    'Retention policies set by sequin_cdc.set_retention_policy: window, pg_cron schedule and job (null: no job in this database), method. created_at is when the policy was last set.';
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.retention_policies', '');

-- Why a cron schedule is not valid, or null when it is. Follows pg_cron's
-- parser (five fields: minute hour day-of-month month day-of-week, each a
-- comma list of *, N, N-M, with /step after * or a range, month and day
-- names; or @hourly, @daily, ...). Also lets through the forms newer pg_cron
-- versions add ('N seconds', '$' for the last day of the month): where
-- pg_cron runs in this database, its own parser has the last word.
CREATE FUNCTION sequin_cdc._cron_schedule_problem(schedule text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s text := lower(btrim(schedule, E' \t\r\n'));
    fields text[];
    field_names text[] := ARRAY['minute', 'hour', 'day of month', 'month', 'day of week'];
    lo int[] := ARRAY[0, 0, 1, 1, 0];
    hi int[] := ARRAY[59, 23, 31, 12, 7];
    months text[] := ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun',
                           'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
    days text[] := ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
    item text;
    part text;
    m text[];
    v int;
    i int;
BEGIN
    IF s ~ '^@(yearly|annually|monthly|weekly|daily|midnight|hourly|reboot|restart)$' THEN
        RETURN NULL;
    END IF;
    m := regexp_match(s, '^([0-9]{1,9})\s*seconds?$');
    IF m IS NOT NULL THEN
        IF m[1]::int BETWEEN 1 AND 59 THEN
            RETURN NULL;
        END IF;
        RETURN format('an interval in seconds must be between 1 and 59, not %s', m[1]);
    END IF;
    IF s = '' THEN
        RETURN 'the schedule is empty';
    END IF;
    fields := regexp_split_to_array(s, '\s+');
    IF cardinality(fields) <> 5 THEN
        RETURN format('expected 5 fields (minute hour day-of-month month day-of-week), found %s',
                      cardinality(fields));
    END IF;
    FOR i IN 1..5 LOOP
        FOREACH item IN ARRAY string_to_array(fields[i], ',') LOOP
            IF i = 3 AND item = '$' THEN
                CONTINUE;           -- last day of the month (pg_cron 1.5+)
            END IF;
            -- * | value | value-value, then an optional /step
            m := regexp_match(item, '^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$');
            IF m IS NULL THEN
                RETURN format('%s field "%s": "%s" is not *, a value or a range',
                              field_names[i], fields[i], item);
            END IF;
            IF m[4] IS NOT NULL AND m[1] IS NULL AND m[3] IS NULL THEN
                RETURN format('%s field "%s": a step needs * or a range before it, as in */%s',
                              field_names[i], fields[i], m[4]);
            END IF;
            IF m[4] IS NOT NULL AND (length(m[4]) > 9 OR m[4]::int = 0) THEN
                RETURN format('%s field "%s": the step must be a positive number',
                              field_names[i], fields[i]);
            END IF;
            FOREACH part IN ARRAY ARRAY[m[2], m[3]] LOOP
                CONTINUE WHEN part IS NULL;
                IF part ~ '^[0-9]{1,9}$' THEN
                    v := part::int;
                ELSIF i = 4 AND part = ANY (months) THEN
                    v := array_position(months, part);
                ELSIF i = 5 AND part = ANY (days) THEN
                    v := array_position(days, part) - 1;
                ELSE
                    RETURN format('%s field "%s": "%s" is not a number%s',
                                  field_names[i], fields[i], part,
                                  CASE i WHEN 4 THEN ' or a month name (jan-dec)'
                                         WHEN 5 THEN ' or a day name (sun-sat)'
                                         ELSE '' END);
                END IF;
                IF v < lo[i] OR v > hi[i] THEN
                    RETURN format('%s %s is out of range %s-%s', field_names[i], part, lo[i], hi[i]);
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._cron_schedule_problem(text) IS
    'Internal: why a pg_cron schedule is invalid, or null when it is valid.';

-- An interval as text in the default style ('30 days'), whatever the
-- session's IntervalStyle: for hints and for pg_partman's part_config.
CREATE FUNCTION sequin_cdc._interval_text(i interval) RETURNS text
LANGUAGE sql STABLE STRICT
SET IntervalStyle = postgres
AS $$ SELECT i::text $$;
COMMENT ON FUNCTION sequin_cdc._interval_text(interval) IS
    'Internal: an interval as text in IntervalStyle postgres.';

-- Raises the error that says why a pg_cron job cannot be created in this
-- database, and how to get one: the postgresql.conf lines, CREATE EXTENSION,
-- or the exact cron.schedule_in_database() call for the database pg_cron
-- lives in. Returns normally when pg_cron can schedule here.
CREATE FUNCTION sequin_cdc._require_pg_cron(change_table regclass, keep interval,
                                            job_name text, schedule text, command text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cron_db text;
    known bool := true;
    preload text;
    ext_here bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
    quoted_cmd text;
    call_there text;
    record_here text;
BEGIN
    BEGIN
        -- superuser-only setting; null when pg_cron is not loaded
        cron_db := current_setting('cron.database_name', true);
    EXCEPTION WHEN insufficient_privilege THEN
        known := false;
    END;
    BEGIN
        preload := current_setting('shared_preload_libraries');
        IF NOT EXISTS (SELECT 1 FROM unnest(string_to_array(preload, ',')) l
                        WHERE regexp_replace(btrim(l, E' \t"'), '^.*/', '') IN ('pg_cron', 'pg_cron.so')) THEN
            cron_db := NULL;
            known := true;
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        preload := NULL;
    END;

    IF ext_here AND (NOT known OR cron_db = current_database()) THEN
        RETURN;                                 -- schedule here
    END IF;

    quoted_cmd := CASE WHEN strpos(command, '$$') = 0 THEN '$$' || command || '$$'
                       ELSE quote_literal(command) END;
    call_there := format('SELECT cron.schedule_in_database(%L, %L, %s, %L);',
                         job_name, schedule, quoted_cmd, current_database());
    record_here := format('SELECT sequin_cdc.set_retention_policy(%L, %L, schedule => NULL);',
                          change_table::text, sequin_cdc._interval_text(keep));

    IF known AND cron_db IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not loaded'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Retention policies are run by pg_cron jobs; pg_cron must be in shared_preload_libraries.',
                  HINT = format('Add to postgresql.conf: shared_preload_libraries = ''%s'' and cron.database_name = ''%s'', restart the server, then run CREATE EXTENSION pg_cron; in database %s. Or pass schedule => NULL and run CALL sequin_cdc.run_retention(%L) from a scheduler of your own.',
                                CASE WHEN coalesce(btrim(preload), '') = '' THEN 'pg_cron'
                                     WHEN preload IS NULL THEN '...,pg_cron'
                                     ELSE preload || ',pg_cron' END,
                                current_database(), quote_ident(current_database()),
                                change_table::text);
    ELSIF NOT known THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_cron jobs live in the database named by cron.database_name, which only a superuser can read.',
                  HINT = format('If that is this database, run CREATE EXTENSION pg_cron; here. If it is another one, first run here: %s then, in that database: %s',
                                record_here,
                                format('SELECT cron.schedule_in_database(%L, %L, %s, %L);',
                                       job_name, schedule, quoted_cmd, current_database()));
    ELSIF cron_db = current_database() THEN
        RAISE EXCEPTION 'extension "pg_cron" is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('pg_cron is loaded and cron.database_name is %L, this database.', cron_db),
                  HINT = 'Run CREATE EXTENSION pg_cron; in this database, then call sequin_cdc.set_retention_policy() again.';
    ELSE
        RAISE EXCEPTION 'pg_cron runs in database "%", not in "%"', cron_db, current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_cron jobs are created in the database named by cron.database_name and can run their command in another database.',
                  HINT = format('Record the policy here without a job: %s then, in database %s, run: %s',
                                record_here, quote_ident(cron_db), call_there);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_pg_cron(regclass, interval, text, text, text) IS
    'Internal: raises an error saying how to make pg_cron available when it cannot schedule jobs in this database.';

-- The pg_partman schema and major version, or nulls when not installed here.
CREATE FUNCTION sequin_cdc._partman(OUT schema_name name, OUT major int)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname, split_part(e.extversion, '.', 1)::int
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_partman'
$$;
COMMENT ON FUNCTION sequin_cdc._partman() IS
    'Internal: schema and major version of pg_partman in this database (nulls when absent).';

-- The name pg_partman knows a table by: schema.table, unquoted.
CREATE FUNCTION sequin_cdc._partman_name(tbl regclass) RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname || '.' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl
$$;
COMMENT ON FUNCTION sequin_cdc._partman_name(regclass) IS
    'Internal: schema.table as pg_partman''s part_config.parent_table spells it.';

-- The DEFAULT partition of a partitioned table, or null.
CREATE FUNCTION sequin_cdc._default_partition(tbl regclass) RETURNS regclass
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = tbl AND c.relispartition
       AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
$$;
COMMENT ON FUNCTION sequin_cdc._default_partition(regclass) IS
    'Internal: the default partition of a partitioned table, or null.';

-- Hands a partitioned change table to pg_partman (once) and sets its
-- retention. pg_partman makes daily partitions on committed_at from the start
-- of the window to premake days ahead and a default partition of its own
-- (named like ours, <table>_default), so ours is detached first and its rows
-- are moved into the new partitions (rows older than the window go to the
-- new default partition, where run_retention deletes them).
--   pg_partman 4.x: create_parent(..., p_type => 'native', p_interval => '1 day')
--                   always makes a default partition.
--   pg_partman 5.x: create_parent(..., p_interval => '1 day') (p_type defaults
--                   to 'range'; 'native' is gone), p_default_table => true.
-- Returns the number of rows moved.
-- No SET search_path here nor in set_retention_policy: create_parent saves
-- the search_path it finds and restores it with set_config() inside an
-- exception block, which would turn a function-level setting of ours into the
-- session's. Names are schema-qualified instead.
CREATE FUNCTION sequin_cdc._partman_configure(tbl regclass, keep interval) RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    pm record := sequin_cdc._partman();
    parent text := sequin_cdc._partman_name(tbl);
    old_default regclass;
    old_schema name;
    old_name name;
    cols text;
    start_at timestamptz := date_trunc('day', now() - keep);
    configured bool;
    moved bigint := 0;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.part_config WHERE parent_table = $1)', pm.schema_name)
        INTO STRICT configured USING parent;
    IF NOT configured THEN
        old_default := sequin_cdc._default_partition(tbl);
        IF old_default IS NOT NULL THEN
            SELECT n.nspname, left(c.relname, 50) || '_premigration'
              INTO old_schema, old_name
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = old_default;
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', tbl, old_default);
            EXECUTE format('ALTER TABLE %s RENAME TO %I', old_default, old_name);
        END IF;
        IF pm.major >= 5 THEN
            EXECUTE format('SELECT %I.create_parent(p_parent_table => $1, p_control => ''committed_at'', '
                           'p_interval => ''1 day'', p_start_partition => $2, p_default_table => true, '
                           'p_automatic_maintenance => ''on'')', pm.schema_name)
                USING parent, start_at::text;
        ELSE
            EXECUTE format('SELECT %I.create_parent(p_parent_table => $1, p_control => ''committed_at'', '
                           'p_type => ''native'', p_interval => ''1 day'', p_start_partition => $2, '
                           'p_automatic_maintenance => ''on'')', pm.schema_name)
                USING parent, start_at::text;
        END IF;
        IF old_default IS NOT NULL THEN
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
              FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
            EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %I.%I', tbl, cols, cols, old_schema, old_name);
            GET DIAGNOSTICS moved = ROW_COUNT;
            EXECUTE format('DROP TABLE %I.%I', old_schema, old_name);
        END IF;
    END IF;
    EXECUTE format('UPDATE %I.part_config SET retention = $1, retention_keep_table = false, '
                   'infinite_time_partitions = true WHERE parent_table = $2', pm.schema_name)
        USING sequin_cdc._interval_text(keep), parent;
    RETURN moved;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._partman_configure(regclass, interval) IS
    'Internal: puts a partitioned change table under pg_partman (daily partitions on committed_at) with retention = keep.';

-- Errors unless the current role may manage retention of the change table:
-- it must have the privileges of the table's owner, and rights on the
-- configuration tables (which belong to the role that created the extension).
CREATE FUNCTION sequin_cdc._check_retention_privileges(tbl regclass, policy_privileges text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owner name;
BEGIN
    SELECT pg_get_userbyid(c.relowner) INTO owner FROM pg_class c WHERE c.oid = tbl;
    IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', tbl
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A retention policy deletes rows of the table on a schedule, as the role that sets it.',
                  HINT = format('Run it as %I (the owner), a member of that role, or a superuser.', owner);
    END IF;
    IF NOT has_table_privilege('sequin_cdc.change_tables', 'SELECT')
       OR NOT has_table_privilege('sequin_cdc.retention_policies', policy_privileges) THEN
        RAISE EXCEPTION 'permission denied for the retention configuration of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A superuser can allow it: GRANT SELECT ON sequin_cdc.change_tables TO %1$I; GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.retention_policies TO %1$I;',
                                current_user);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._check_retention_privileges(regclass, text) IS
    'Internal: errors unless the current role has the privileges of the change table''s owner and the given rights on sequin_cdc.retention_policies.';

------------------------------------------------------------------------------
-- set_retention_policy / drop_retention_policy / run_retention
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.set_retention_policy(
    change_table regclass,
    keep interval,
    schedule text DEFAULT '*/10 * * * *')
RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    tbl regclass := set_retention_policy.change_table;
    is_partitioned bool;
    v_method text;
    qname text;
    job_name text;
    command text;
    problem text;
    prev record;
    new_jobid bigint;
    new_owner name;
    moved bigint;
BEGIN
    IF tbl IS NULL OR keep IS NULL THEN
        RAISE EXCEPTION 'change_table and keep must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the change table and how long to keep its rows, e.g. sequin_cdc.set_retention_policy(''public.order_changes'', ''30 days'').';
    END IF;
    IF keep <= interval '0' THEN
        RAISE EXCEPTION 'retention window must be positive, not %', keep
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass how long to keep changes, e.g. keep => ''30 days''. To keep everything, drop the policy with sequin_cdc.drop_retention_policy().';
    END IF;
    PERFORM sequin_cdc._check_retention_privileges(tbl, 'SELECT, INSERT, UPDATE');
    SELECT ct.partitioned INTO is_partitioned
      FROM sequin_cdc.change_tables ct WHERE ct.change_table = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION '"%" is not a change table', tbl
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Retention policies apply to tables made by sequin_cdc.create_change_table(); sequin_cdc.change_tables lists them.';
    END IF;
    problem := sequin_cdc._cron_schedule_problem(schedule);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid cron schedule "%"', schedule
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = upper(left(problem, 1)) || substr(problem, 2) || '.',
                  HINT = 'A schedule has five fields: minute hour day-of-month month day-of-week, e.g. ''*/10 * * * *'' (every 10 minutes) or ''30 3 * * *'' (03:30 daily).';
    END IF;

    v_method := CASE WHEN is_partitioned THEN 'pg_partman' ELSE 'delete' END;
    IF is_partitioned AND (sequin_cdc._partman()).schema_name IS NULL THEN
        RAISE EXCEPTION 'change table "%" is partitioned and pg_partman is not installed in this database', tbl
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Old changes of a partitioned change table are removed by dropping pg_partman''s daily partitions.',
                  HINT = 'Install it with: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;';
    END IF;

    SELECT format('%I.%I', n.nspname, c.relname) INTO qname
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    job_name := format('sequin_cdc_retention:%s:%s', current_database(), qname);
    command := format('CALL sequin_cdc.run_retention(%L::regclass)', qname);

    IF schedule IS NOT NULL THEN
        PERFORM sequin_cdc._require_pg_cron(tbl, keep, job_name, schedule, command);
        -- (schema first: naming a function of a schema one cannot use fails)
        IF NOT has_schema_privilege('cron', 'USAGE') THEN
            RAISE EXCEPTION 'permission denied to schedule pg_cron jobs'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('A superuser can allow it: GRANT USAGE ON SCHEMA cron TO %I;', current_user);
        ELSIF NOT has_function_privilege('cron.schedule(text,text,text)', 'EXECUTE') THEN
            RAISE EXCEPTION 'permission denied to schedule pg_cron jobs'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('A superuser can allow it: GRANT EXECUTE ON FUNCTION cron.schedule(text, text, text) TO %I;', current_user);
        END IF;
    END IF;

    -- Lock the policy (if any) so concurrent calls for one table serialize.
    SELECT p.jobid, p.job_owner INTO prev
      FROM sequin_cdc.retention_policies p WHERE p.change_table = tbl FOR UPDATE;
    IF prev.jobid IS NOT NULL AND prev.job_owner IS DISTINCT FROM current_user
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'the retention job of "%" belongs to role %', tbl, prev.job_owner
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_cron lets only the owner of a job or a superuser change it.',
                  HINT = format('Run it as %I or as a superuser.', prev.job_owner);
    END IF;

    IF is_partitioned THEN
        moved := sequin_cdc._partman_configure(tbl, keep);
        IF moved > 0 THEN
            RAISE NOTICE 'moved % existing rows of "%" into pg_partman''s partitions', moved, tbl;
        END IF;
    END IF;

    IF schedule IS NOT NULL THEN
        BEGIN
            IF prev.jobid IS NOT NULL AND prev.job_owner IS DISTINCT FROM current_user
               AND EXISTS (SELECT 1 FROM cron.job j WHERE j.jobid = prev.jobid) THEN
                -- a superuser (checked above) changing another role's job:
                -- keep its id and the role it runs as
                PERFORM cron.alter_job(prev.jobid, schedule => schedule, command => command);
                new_jobid := prev.jobid;
                new_owner := prev.job_owner;
            ELSE
                -- same job name, same role: pg_cron updates the job in place
                new_jobid := cron.schedule(job_name, schedule, command);
                new_owner := current_user;
            END IF;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'invalid cron schedule "%"', schedule
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('pg_cron %s says: %s.',
                                      (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron'),
                                      SQLERRM),
                      HINT = 'A schedule has five fields: minute hour day-of-month month day-of-week, e.g. ''*/10 * * * *''.';
        END;
    END IF;
    IF prev.jobid IS NOT NULL AND prev.jobid IS DISTINCT FROM new_jobid
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        IF EXISTS (SELECT 1 FROM cron.job j WHERE j.jobid = prev.jobid) THEN
            PERFORM cron.unschedule(prev.jobid);
        END IF;
    END IF;

    INSERT INTO sequin_cdc.retention_policies AS p
           (change_table, keep, schedule, jobid, job_owner, method)
    VALUES (tbl, keep, schedule, new_jobid, new_owner, v_method)
    ON CONFLICT ON CONSTRAINT retention_policies_pkey DO UPDATE
       SET keep = EXCLUDED.keep, schedule = EXCLUDED.schedule, jobid = EXCLUDED.jobid,
           job_owner = EXCLUDED.job_owner, method = EXCLUDED.method, created_at = now();
    RETURN new_jobid;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.set_retention_policy(regclass, interval, text) IS
    'Keeps the changes of the last keep in a change table: schedules a pg_cron job (returns its id) that runs sequin_cdc.run_retention(); a partitioned change table is handed to pg_partman. Calling it again replaces the policy; schedule => null records it without a job.';

CREATE FUNCTION sequin_cdc.drop_retention_policy(change_table regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tbl regclass := drop_retention_policy.change_table;
    pol record;
    pm record;
    cron_here bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'change_table must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the change table whose policy to drop; sequin_cdc.pg_stat_retention lists them.';
    END IF;
    PERFORM sequin_cdc._check_retention_privileges(tbl, 'SELECT, UPDATE, DELETE');
    SELECT p.* INTO pol FROM sequin_cdc.retention_policies p WHERE p.change_table = tbl FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'change table "%" has no retention policy', tbl
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.pg_stat_retention lists the retention policies.';
    END IF;

    IF pol.jobid IS NOT NULL AND cron_here THEN
        IF EXISTS (SELECT 1 FROM cron.job j WHERE j.jobid = pol.jobid) THEN
            PERFORM cron.unschedule(pol.jobid);
        ELSIF pol.job_owner IS DISTINCT FROM current_user
              AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
            RAISE EXCEPTION 'the retention job of "%" belongs to role %', tbl, pol.job_owner
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'pg_cron lets only the owner of a job or a superuser remove it.',
                      HINT = format('Run it as %I or as a superuser.', pol.job_owner);
        END IF;
    ELSIF pol.jobid IS NULL THEN
        RAISE NOTICE 'the retention policy of "%" had no pg_cron job in this database', tbl
            USING HINT = format('If you scheduled one elsewhere, remove it there, e.g. SELECT cron.unschedule(%L); in the pg_cron database.',
                                format('sequin_cdc_retention:%s:%s', current_database(),
                                       (SELECT format('%I.%I', n.nspname, c.relname)
                                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                         WHERE c.oid = tbl)));
    END IF;

    IF pol.method = 'pg_partman' THEN
        pm := sequin_cdc._partman();
        IF pm.schema_name IS NOT NULL THEN
            -- Stop dropping partitions; the table stays partitioned by pg_partman.
            EXECUTE format('UPDATE %I.part_config SET retention = NULL WHERE parent_table = $1', pm.schema_name)
                USING sequin_cdc._partman_name(tbl);
            RAISE NOTICE 'pg_partman keeps partitioning "%" but drops no partition any more', tbl
                USING HINT = format('New partitions are made only while pg_partman''s maintenance runs (pg_partman_bgw, or a job running SELECT %I.run_maintenance(%L)).',
                                    pm.schema_name, sequin_cdc._partman_name(tbl));
        END IF;
    END IF;

    DELETE FROM sequin_cdc.retention_policies p WHERE p.change_table = tbl;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.drop_retention_policy(regclass) IS
    'Removes the retention policy of a change table and its pg_cron job; rows are kept from now on. A pg_partman table stays partitioned, without retention.';

-- Called by the pg_cron job. No SET clause: a procedure with one cannot
-- COMMIT, so every name below is schema-qualified.
CREATE PROCEDURE sequin_cdc.run_retention(
    change_table regclass,
    batch_size int DEFAULT 10000,
    INOUT deleted bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    tbl regclass := run_retention.change_table;
    v_keep interval;
    v_method text;
    cutoff timestamptz;
    target regclass;
    pm record;
    parent text;
    last_id bigint := 0;
    n bigint;
    max_id bigint;
    stmt text;
BEGIN
    IF tbl IS NULL OR batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'change_table must not be null and batch_size must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Call it as CALL sequin_cdc.run_retention(''public.order_changes'');';
    END IF;
    SELECT p.keep, p.method INTO v_keep, v_method
      FROM sequin_cdc.retention_policies p WHERE p.change_table OPERATOR(pg_catalog.=) tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'change table "%" has no retention policy', tbl
            USING ERRCODE = 'undefined_object',
                  HINT = 'Set one with sequin_cdc.set_retention_policy().';
    END IF;
    cutoff := pg_catalog.now() OPERATOR(pg_catalog.-) v_keep;   -- once, for every batch
    deleted := 0;

    IF v_method = 'pg_partman' THEN
        pm := sequin_cdc._partman();
        parent := sequin_cdc._partman_name(tbl);
        IF pm.schema_name IS NULL THEN
            RAISE EXCEPTION 'pg_partman is not installed in this database'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'The retention policy of this partitioned change table needs it: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; then call sequin_cdc.set_retention_policy() again.';
        END IF;
        -- creates the coming partitions, drops those older than the window
        EXECUTE pg_catalog.format('SELECT %I.run_maintenance(p_parent_table => $1, p_analyze => false)',
                                  pm.schema_name)
            USING parent;
        COMMIT;
        -- rows older than every partition (late captures, rows from before
        -- pg_partman took over) wait in the default partition
        target := sequin_cdc._default_partition(tbl);
        IF target IS NULL THEN
            RETURN;
        END IF;
    ELSE
        target := tbl;
    END IF;

    stmt := pg_catalog.format(
        'WITH batch AS (SELECT id FROM %1$s WHERE id OPERATOR(pg_catalog.>) $1'
        '                  AND committed_at OPERATOR(pg_catalog.<) $2 ORDER BY id LIMIT $3), '
        '     gone AS (DELETE FROM %1$s t USING batch b WHERE t.id OPERATOR(pg_catalog.=) b.id'
        '                  AND t.committed_at OPERATOR(pg_catalog.<) $2 RETURNING t.id) '
        'SELECT pg_catalog.count(*), pg_catalog.max(id) FROM gone', target);
    LOOP
        EXECUTE stmt INTO n, max_id USING last_id, cutoff, batch_size;
        deleted := deleted OPERATOR(pg_catalog.+) n;
        COMMIT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
        last_id := max_id;
    END LOOP;
END
$fn$;
COMMENT ON PROCEDURE sequin_cdc.run_retention(regclass, int, bigint) IS
    'Applies the retention policy of a change table once: deletes rows with committed_at < now() - keep in batches of batch_size, committing after each (pg_partman tables: runs its maintenance, then cleans the default partition). Call it as a statement of its own; deleted returns the number of rows deleted.';

------------------------------------------------------------------------------
-- Monitoring: pg_stat_retention
------------------------------------------------------------------------------

-- pg_cron state of the policies' jobs: its tables may not exist (pg_cron
-- created later, or elsewhere), hence dynamic SQL; SECURITY DEFINER because
-- pg_cron's row level security shows each role only its own jobs.
CREATE FUNCTION sequin_cdc._retention_jobs(
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
                      WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT j.jobid, j.active, r.status, r.start_time, r.end_time, r.return_message
          FROM cron.job j
          LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time, d.return_message
                               FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid
                              ORDER BY d.runid DESC LIMIT 1) r ON true
         WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p)$q$;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._retention_jobs() IS
    'Internal: pg_cron state and last run of the retention policies'' jobs.';
REVOKE ALL ON FUNCTION sequin_cdc._retention_jobs() FROM PUBLIC;

CREATE VIEW sequin_cdc.pg_stat_retention AS
SELECT p.change_table,
       p.method,
       p.keep,
       p.schedule,
       p.jobid,
       CASE WHEN p.jobid IS NULL THEN 'none'
            WHEN j.jobid IS NULL THEN 'missing'
            WHEN j.active THEN 'scheduled'
            ELSE 'inactive' END AS job_state,
       j.last_status,
       j.last_start,
       j.last_end,
       j.last_message,
       p.created_at
  FROM sequin_cdc.retention_policies p
  LEFT JOIN sequin_cdc._retention_jobs() j ON j.jobid = p.jobid;
COMMENT ON VIEW sequin_cdc.pg_stat_retention IS
    'One row per retention policy: window, schedule, pg_cron job and its state (scheduled, inactive, missing, none), and the job''s last run from cron.job_run_details.';

------------------------------------------------------------------------------
-- Webhook sinks
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Webhook sinks (src/sink_webhook.c)
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
    last_failure_at timestamptz
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
    'Webhook sinks: endpoint, headers (secret), batch size, timeout, state, cursor (last delivered seq) and delivery statistics. Not readable by PUBLIC; row level security limits other roles to their own sinks.';

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
    timeout_ms int DEFAULT 5000)
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
    IF NOT has_table_privilege(change_table, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for change table %', change_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A sink sends what its owner may read, and reads it as its owner.',
                  HINT = format('The table''s owner can allow it: GRANT SELECT ON %s TO %I;', change_table, current_user);
    END IF;
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
    IF EXISTS (SELECT 1 FROM sequin_cdc.sinks k WHERE k.name = create_webhook_sink.name) THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop the sink first with sequin_cdc.drop_sink().';
    END IF;

    -- New sinks send what is committed from now on; replay_sink() sends
    -- what the change table already holds.
    EXECUTE format('SELECT coalesce(max(seq), 0) FROM %s', change_table) INTO start_seq;
    BEGIN
        INSERT INTO sequin_cdc.sinks AS k (name, url, change_table, headers, batch_size, timeout_ms, cursor_seq)
        VALUES (create_webhook_sink.name, create_webhook_sink.url, create_webhook_sink.change_table,
                v_headers, create_webhook_sink.batch_size, create_webhook_sink.timeout_ms, start_seq)
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
COMMENT ON FUNCTION sequin_cdc.create_webhook_sink(text, text, regclass, jsonb, int, int) IS
    'Creates a webhook sink: a background worker POSTs the changes committed to change_table from now on, in seq order, up to batch_size per request, as {"data": [...]} with the given headers; each request may take timeout_ms. Returns the sink id.';

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

-- Changes after a sink's cursor.  SECURITY DEFINER so that pg_stat_sinks
-- works for roles that cannot read the change table; it reveals a count.
CREATE FUNCTION sequin_cdc._sink_backlog(sink_id bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s record;
    n bigint;
BEGIN
    SELECT k.change_table, k.cursor_seq INTO s FROM sequin_cdc.sinks k WHERE k.id = sink_id;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.change_table) THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE seq > $1', s.change_table) INTO n USING s.cursor_seq;
    RETURN n;
END
$fn$;

CREATE VIEW sequin_cdc.pg_stat_sinks AS
SELECT s.id,
       s.name,
       s.state,
       w.pid AS worker_pid,
       sequin_cdc._sink_endpoint(s.url) AS endpoint,
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
       s.created_at
  FROM sequin_cdc.sinks s
  LEFT JOIN sequin_cdc._sink_workers() w ON w.sink_id = s.id;
COMMENT ON VIEW sequin_cdc.pg_stat_sinks IS
    'One row per webhook sink: state (active, paused), worker pid, endpoint (without credentials or query), cursor seq, backlog, delivered changes, requests, failed attempts, consecutive failures, last HTTP status, last error and the times of the last failure and success. Never shows headers.';
