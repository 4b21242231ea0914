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
                        coalesce(format(' in "%s"', change_table), '')
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
