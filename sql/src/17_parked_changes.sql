------------------------------------------------------------------------------
-- Parked changes (src/parked.c): what the capture worker could not filter,
-- render or write, set aside so that capture goes on
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
