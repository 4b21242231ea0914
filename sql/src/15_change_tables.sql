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

