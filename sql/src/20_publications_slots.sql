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
    options text := format('publish_via_partition_root = %s',
                           CASE WHEN publish_via_partition_root THEN 'true' ELSE 'false' END);
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
    -- PostgreSQL 18 refuses UPDATE and DELETE on a REPLICA IDENTITY FULL
    -- table with a stored generated column while a publication of it does
    -- not publish such columns; the decoder reads them from the WAL either way.
    IF current_setting('server_version_num')::int >= 180000 THEN
        options := options || ', publish_generated_columns = stored';
    END IF;
    EXECUTE format('CREATE PUBLICATION %I %s WITH (%s)',
                   publication,
                   CASE WHEN cardinality(targets) = 0 THEN 'FOR ALL TABLES'
                        ELSE 'FOR ' || array_to_string(targets, ', ') END,
                   options);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.create_publication(name, regclass[], name[], bool) IS
    'Creates a publication of the given tables and schemas (all tables when both are null). Create it before the slot.';

-- Not STRICT: replaces is null unless given (the C function refuses the
-- other nulls).
CREATE FUNCTION sequin_cdc.create_slot(slot name, publication name, failover bool DEFAULT false,
                                       replaces name DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE c AS 'MODULE_PATHNAME', 'sequin_cdc_create_slot';
COMMENT ON FUNCTION sequin_cdc.create_slot(name, name, bool, name) IS
    'Creates a logical replication slot decoded by sequin_cdc for the publication and starts its capture worker; returns the LSN capture starts at. failover => true (PostgreSQL 17+) makes it a failover slot, which standbys with sync_replication_slots = on keep in sync. replaces => names configuration whose slot is not in this database (a restored database): the new slot takes over its retention rules and backfills.';

CREATE FUNCTION sequin_cdc.drop_slot(slot name) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_drop_slot';
COMMENT ON FUNCTION sequin_cdc.drop_slot(name) IS
    'Stops the capture worker of a sequin_cdc slot and drops the slot. Its retention rules stay and apply again if a slot of the same name is created. Configuration whose slot is not in this database (a restored database) is removed alone.';

