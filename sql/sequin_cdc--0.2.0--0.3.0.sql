/* sequin_cdc--0.2.0--0.3.0.sql: one job a function (issue 10)
 *
 * health() is the union of one function a check; the schedule of a retention
 * policy is checked by pg_cron's own parser; the guard triggers and the API
 * share one owner check and one read check; grant_usage and revoke_usage share one list of
 * rights; create_publication publishes stored generated columns on PostgreSQL
 * 18 and later (issue 13). */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.3.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Filters may no longer use a whole-row reference or a system column: the
-- decoder now resolves a filter's columns without a range table entry, so
-- such a rule's filter would no longer apply and the rule would keep every
-- change.  The update stops while such rules exist, and names them.
------------------------------------------------------------------------------
DO $do$
DECLARE
    r record;
    detail text;
    bad text[];
BEGIN
    FOR r IN SELECT id, source_table, filter FROM sequin_cdc.change_retention
              WHERE filter IS NOT NULL ORDER BY id LOOP
        BEGIN
            PERFORM sequin_cdc._validate_filter(r.source_table, r.filter);
        EXCEPTION
            WHEN invalid_parameter_value THEN
                GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
                IF detail LIKE 'It refers to the whole row or to a system column%' THEN
                    bad := bad || format('%s (%s: %s)', r.id, r.source_table, r.filter);
                END IF;
            WHEN OTHERS THEN
                NULL;           -- a dropped source, say: not this update's concern
        END;
    END LOOP;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'retention rules whose filter uses a whole-row reference or a system column: %',
                        array_to_string(bad, ', ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'sequin_cdc 0.3.0 evaluates filters over the table''s own columns only.',
                  HINT = 'Drop each with sequin_cdc.drop_change_retention(id), add it again with a filter over the columns (tenant = ''a'' rather than (orders).tenant = ''a''), then update again.';
    END IF;
END
$do$;

------------------------------------------------------------------------------
-- One owner check and one read check for the guards and the API
------------------------------------------------------------------------------

-- The one owner check: raises insufficient_privilege with the caller's
-- message, detail (may be null) and hint unless the current role has the
-- privileges of the relation's owner.  A relation that no longer exists
-- passes when gone_ok, so that configuration rows naming a dropped table
-- can still be changed or removed.  Used by the guard triggers and the API.
CREATE FUNCTION sequin_cdc._require_owner(rel regclass, gone_ok bool,
                                          message text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owns bool := sequin_cdc._owns(rel);
BEGIN
    IF owns OR (gone_ok AND owns IS NULL) THEN
        RETURN;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'insufficient_privilege', HINT = hint;
    ELSE
        RAISE EXCEPTION '%', message USING ERRCODE = 'insufficient_privilege', DETAIL = detail, HINT = hint;
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_owner(regclass, bool, text, text, text) IS
    'Internal: raises the given insufficient_privilege error unless the current role has the privileges of the relation''s owner (a relation that is gone passes when gone_ok).';

-- The one read check of the API: raises insufficient_privilege with the
-- caller's message and detail, and a hint with the GRANT the table's owner
-- can run, unless the current role may SELECT from the table.
CREATE FUNCTION sequin_cdc._require_select(rel regclass, message text, detail text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT has_table_privilege(rel, 'SELECT') THEN
        RAISE EXCEPTION '%', message
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = detail,
                  HINT = format('The table''s owner can allow it: GRANT SELECT ON %s TO %I;', rel, current_user);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_select(regclass, text, text) IS
    'Internal: raises the given insufficient_privilege error, with the GRANT that would allow it, unless the current role may read the table.';

CREATE OR REPLACE FUNCTION sequin_cdc._guard_change_tables() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM sequin_cdc._require_owner(OLD.change_table, true,
            format('must be owner of change table %s', OLD.change_table), NULL,
            'Only the owner of the change table (or a member of its role) may change or remove its registration.');
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    PERFORM sequin_cdc._require_owner(NEW.change_table, false,
        format('must be owner of table %s', NEW.change_table),
        'Capture writes into a change table as its owner; only the owner may register it.',
        'Create change tables with sequin_cdc.create_change_table().');
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION sequin_cdc._guard_change_retention() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM sequin_cdc._require_owner(OLD.change_table, true,
            format('retention rule %s writes into %s, which the role does not own', OLD.id, OLD.change_table), NULL,
            'Run it as the owner of the change table.');
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF has_table_privilege(NEW.source_table, 'SELECT') IS NOT TRUE THEN
        RAISE EXCEPTION 'permission denied for table %', NEW.source_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A retention rule copies every change of the table; it needs the right to read the table.',
                  HINT = 'Use sequin_cdc.add_change_retention() for a table the role may read.';
    END IF;
    -- (not a change table: refused like one of another role)
    PERFORM sequin_cdc._require_owner(
        (SELECT ct.change_table FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table), false,
        format('must be owner of change table %s', NEW.change_table),
        'Changes are written into the change table as its owner.',
        'Use a change table of your own, made by sequin_cdc.create_change_table().');
    IF NEW.filter IS NOT NULL THEN
        PERFORM sequin_cdc._validate_filter(NEW.source_table, NEW.filter);
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION sequin_cdc._guard_retention_policies() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM sequin_cdc._require_owner(OLD.change_table, true,
            format('must be owner of table %s', OLD.change_table), NULL,
            'Only the owner of the change table may change or drop its retention policy, with sequin_cdc.drop_retention_policy().');
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    PERFORM sequin_cdc._require_owner(NEW.change_table, false,
        format('must be owner of table %s', NEW.change_table), NULL,
        'Use sequin_cdc.set_retention_policy() as the owner of the change table.');
    IF NEW.jobid IS NOT NULL THEN
        -- a job of the current role (pg_cron shows each role only its own)
        NEW.job_owner := current_user;
        IF to_regclass('cron.job') IS NULL OR NOT has_schema_privilege('cron', 'USAGE')
           OR NOT has_table_privilege('cron.job', 'SELECT') THEN
            RAISE EXCEPTION 'pg_cron job % is not a job of role %', NEW.jobid, current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Use sequin_cdc.set_retention_policy(), which schedules the job as the current role.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM cron.job j
                        WHERE j.jobid = NEW.jobid AND j.username = current_user) THEN
            RAISE EXCEPTION 'pg_cron job % is not a job of role %', NEW.jobid, current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Use sequin_cdc.set_retention_policy(), which schedules the job as the current role.';
        END IF;
    ELSE
        NEW.job_owner := NULL;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE OR REPLACE FUNCTION sequin_cdc.add_change_retention(
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

-- Errors unless the current role may manage retention of the change table:
-- it must have the privileges of the table's owner, and rights on the
-- configuration tables (which belong to the role that created the extension).
CREATE OR REPLACE FUNCTION sequin_cdc._check_retention_privileges(tbl regclass, policy_privileges text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM sequin_cdc._require_owner(tbl, false,
        format('must be owner of table %s', tbl),
        'A retention policy deletes rows of the table on a schedule, as the role that sets it.',
        format('Run it as %I (the owner), a member of that role, or a superuser.',
               (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = tbl)));
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

CREATE OR REPLACE FUNCTION sequin_cdc.create_webhook_sink(
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

------------------------------------------------------------------------------
-- Schedules: pg_cron's parser is the authority
------------------------------------------------------------------------------

-- Why pg_cron refuses a schedule (its own message), or null when it accepts
-- it. pg_cron's parser is the authority (each version accepts other forms:
-- 'N seconds', '$'), and it has no function that only parses: a job is
-- scheduled in a subtransaction that is always rolled back, so nothing stays
-- but a used job id. Null too when pg_cron cannot be asked here (not in this
-- database, or the role may not schedule): whoever schedules the job then
-- gets pg_cron's error. Any other refusal (cron.enable_superuser_jobs =
-- off, say) comes after the schedule was parsed: null as well.
CREATE OR REPLACE FUNCTION sequin_cdc._cron_schedule_problem(schedule text) RETURNS text
LANGUAGE plpgsql STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')
       OR NOT has_schema_privilege('cron', 'USAGE')
       OR NOT has_function_privilege('cron.schedule(text,text)', 'EXECUTE') THEN
        RETURN NULL;
    END IF;
    BEGIN
        PERFORM cron.schedule(schedule, 'SELECT 1');
        RAISE EXCEPTION 'schedule accepted' USING ERRCODE = 'SQ001';   -- undo the job
    EXCEPTION
        WHEN invalid_parameter_value THEN
            RETURN SQLERRM;
        WHEN SQLSTATE 'SQ001' THEN
            RETURN NULL;
        WHEN OTHERS THEN
            -- pg_cron accepted the schedule and refused something else
            -- (cron.enable_superuser_jobs = off, say): not our question
            RETURN NULL;
    END;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._cron_schedule_problem(text) IS
    'Internal: pg_cron''s message when it refuses a schedule, or null when it accepts it (or cannot be asked in this database).';

CREATE OR REPLACE FUNCTION sequin_cdc.set_retention_policy(
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
                  DETAIL = format('pg_cron says: %s.', problem),
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

    -- (pg_cron has checked the schedule: _cron_schedule_problem above)
    IF schedule IS NOT NULL THEN
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

------------------------------------------------------------------------------
-- health(): one function a check
------------------------------------------------------------------------------

-- Logical decoding needs wal_level = logical.
CREATE FUNCTION sequin_cdc._health_wal_level()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'wal_level',
           CASE WHEN w = 'logical' THEN 'ok' ELSE 'error' END,
           CASE WHEN w = 'logical' THEN 'wal_level = logical'
                ELSE format('wal_level = %s; set wal_level = logical in postgresql.conf and restart', w) END
      FROM current_setting('wal_level') w
$$;
COMMENT ON FUNCTION sequin_cdc._health_wal_level() IS
    'Internal: the wal_level row of health().';

-- The server must let sequin_cdc be an output plugin (output_plugin_libraries).
CREATE FUNCTION sequin_cdc._health_output_plugin()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'output_plugin_libraries',
           CASE WHEN allowed THEN 'ok' ELSE 'error' END,
           CASE WHEN allowed THEN coalesce('output_plugin_libraries = ' || libs,
                                           'this server does not restrict output plugins')
                ELSE format('output_plugin_libraries = ''%s'' does not list sequin_cdc; set output_plugin_libraries = ''%s, sequin_cdc'' in postgresql.conf and reload',
                            libs, libs) END
      FROM sequin_cdc._plugin_allowed() allowed, sequin_cdc._output_plugin_libraries() libs
$$;
COMMENT ON FUNCTION sequin_cdc._health_output_plugin() IS
    'Internal: the output_plugin_libraries row of health().';

-- Each slot: present and not invalidated (on 18 also by
-- idle_replication_slot_timeout), its capture worker running, its lag under
-- sequin_cdc.max_lag, its publication present; a failover slot (17+): the
-- primary waits for the standbys' slots (synchronized_standby_slots).
-- Columns of newer servers are read through to_jsonb(), null where the
-- server has none: failover, invalidation_reason (17+).
CREATE FUNCTION sequin_cdc._health_slots()
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
COMMENT ON FUNCTION sequin_cdc._health_slots() IS
    'Internal: the rows of health() about each slot: slot, worker, lag, failover (17+), publication.';

-- Each retention rule: its table is in the slot's publication and, with its
-- partitions, REPLICA IDENTITY FULL.
CREATE FUNCTION sequin_cdc._health_retention_rules()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT cr.id, cr.source_table, cr.change_table, s.publication,
               sequin_cdc._publication_covers(s.publication, cr.source_table) AS covered,
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
COMMENT ON FUNCTION sequin_cdc._health_retention_rules() IS
    'Internal: the rows of health() about each retention rule: publication coverage and replica identity.';

-- Each retention policy: its pg_cron job is present, active and not failing.
CREATE FUNCTION sequin_cdc._health_retention_policies()
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
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._health_retention_policies() IS
    'Internal: the rows of health() about each retention policy''s pg_cron job.';

-- Each sink: paused, or its delivery worker running and not failing.
CREATE FUNCTION sequin_cdc._health_sinks()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
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
COMMENT ON FUNCTION sequin_cdc._health_sinks() IS
    'Internal: the rows of health() about each sink.';

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
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

------------------------------------------------------------------------------
-- grant_usage and revoke_usage: one list of rights
------------------------------------------------------------------------------

-- What grant_usage gives and revoke_usage takes back, in one list so that
-- the two cannot drift apart: USAGE on the schema, rights on the
-- configuration tables (guarded by triggers) and their sequences, the
-- monitoring views, and the internal helpers the API calls. Revoking takes
-- ALL rights on the same objects. Superusers only.
CREATE FUNCTION sequin_cdc._set_usage(role regrole, give bool) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    verb text := CASE WHEN give THEN 'grant' ELSE 'revoke' END;
    rights text[];
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass the role, e.g. SELECT sequin_cdc.%s_usage(''sequin'');', verb);
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to % the use of sequin_cdc', verb
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    -- {privileges granted, objects}
    FOREACH rights SLICE 1 IN ARRAY ARRAY[
        ['USAGE', 'SCHEMA sequin_cdc'],
        ['SELECT, INSERT, UPDATE, DELETE',
         'sequin_cdc.slots, sequin_cdc.change_tables, sequin_cdc.change_retention, '
         'sequin_cdc.backfills, sequin_cdc.retention_policies, sequin_cdc.sinks'],
        ['USAGE', 'SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                  'sequin_cdc.sinks_id_seq'],
        ['SELECT', 'sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, '
                   'sequin_cdc.pg_stat_backfills, sequin_cdc.pg_stat_retention'],
        ['EXECUTE', 'FUNCTION sequin_cdc._validate_filter(regclass, text), '
                    'sequin_cdc._validate_backfill_where(regclass, text), '
                    'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                    'sequin_cdc._retention_jobs()']]
    LOOP
        IF give THEN
            EXECUTE format('GRANT %s ON %s TO %s', rights[1], rights[2], role);
        ELSE
            EXECUTE format('REVOKE ALL ON %s FROM %s', rights[2], role);
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._set_usage(regrole, bool) IS
    'Internal: grants (give) or revokes the rights sequin_cdc.grant_usage() gives a role. Superusers only.';

CREATE OR REPLACE FUNCTION sequin_cdc.grant_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM sequin_cdc._set_usage(role, true);
    IF to_regnamespace('cron') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA cron TO %s', role);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.grant_usage(regrole) IS
    'Lets a role use the whole API: USAGE on the schema, rights on the configuration tables (guarded by triggers), the monitoring views, the internal helpers the API calls, and USAGE on schema cron when pg_cron is here. Superusers only.';

CREATE OR REPLACE FUNCTION sequin_cdc.revoke_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM sequin_cdc._set_usage(role, false);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.revoke_usage(regrole) IS
    'Takes back what sequin_cdc.grant_usage() granted (not USAGE on schema cron). Superusers only.';

------------------------------------------------------------------------------
-- create_slot(..., failover => false): failover slots on PostgreSQL 17+
------------------------------------------------------------------------------

DROP FUNCTION sequin_cdc.create_slot(name, name);
CREATE FUNCTION sequin_cdc.create_slot(slot name, publication name, failover bool DEFAULT false)
RETURNS pg_lsn
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_create_slot';
COMMENT ON FUNCTION sequin_cdc.create_slot(name, name, bool) IS
    'Creates a logical replication slot decoded by sequin_cdc for the publication and starts its capture worker; returns the LSN capture starts at. failover => true (PostgreSQL 17+) makes it a failover slot, which standbys with sync_replication_slots = on keep in sync.';

------------------------------------------------------------------------------
-- create_publication: publish_generated_columns = stored on PostgreSQL 18+
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION sequin_cdc.create_publication(
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
