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
    -- rights before anything else: rows of a table the role cannot read,
    -- written into a table it does not own, would leak or be forged
    PERFORM sequin_cdc._require_select(source, format('permission denied for table %s', source),
        'A retention rule copies every change of the table into a change table; it needs the right to read the table.');
    PERFORM sequin_cdc._require_owner(change_table, false,
        format('must be owner of change table %s', change_table),
        'Changes are written into the change table as its owner.',
        'Create a change table of your own with sequin_cdc.create_change_table(), or run it as the owner of this one.');
    IF NOT has_table_privilege('sequin_cdc.change_retention', 'SELECT, INSERT') THEN
        RAISE EXCEPTION 'permission denied for the retention rules of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A superuser can allow it: SELECT sequin_cdc.grant_usage(%L);', current_user);
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
    IF NOT sequin_cdc._publication_covers(v_pub, source) THEN
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

