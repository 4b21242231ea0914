/* sequin_cdc--0.1.0--0.2.0.sql: least privilege (issue 11) */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.2.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Who the caller is, and what it owns
------------------------------------------------------------------------------

-- Is the current role a superuser?  (Taken from the session, never from a
-- table: every guard below starts here.)
CREATE FUNCTION sequin_cdc._is_superuser() RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) $$;
COMMENT ON FUNCTION sequin_cdc._is_superuser() IS
    'Internal: whether the current role is a superuser.';

-- Has the current role the privileges of the relation's owner?  Null when
-- the relation does not exist (any more).
CREATE FUNCTION sequin_cdc._owns(rel regclass) RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = rel $$;
COMMENT ON FUNCTION sequin_cdc._owns(regclass) IS
    'Internal: whether the current role has the privileges of the relation''s owner (null if it does not exist).';

-- Does the publication publish the table, one of its partitions or one of
-- the tables it is a partition of?  By OID, never by name: a table dropped
-- or renamed meanwhile by another session cannot make it fail, and no
-- relation the caller may not look up is ever named.  False when the
-- publication does not exist.
CREATE FUNCTION sequin_cdc._publication_covers(publication name, source regclass) RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM pg_publication p,
               LATERAL pg_get_publication_tables(p.pubname::text) pt
         WHERE p.pubname = publication
           AND pt.relid IN (SELECT sequin_cdc._related(source)))
$$;
COMMENT ON FUNCTION sequin_cdc._publication_covers(name, regclass) IS
    'Internal: whether the publication covers the table (or a table of its partition tree), compared by OID.';

-- output_plugin_libraries is readable only by superusers and members of
-- pg_read_all_settings; health() shows it to every role that may call it.
-- It names plugin libraries, nothing about other roles.
CREATE FUNCTION sequin_cdc._output_plugin_libraries() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT current_setting('output_plugin_libraries', true) $$;
COMMENT ON FUNCTION sequin_cdc._output_plugin_libraries() IS
    'Internal: the value of output_plugin_libraries (null on servers without it), for health().';

-- The backfill condition: one boolean expression over the table's columns,
-- parsed (never concatenated into SQL text).
CREATE FUNCTION sequin_cdc._validate_backfill_where(source regclass, "where" text) RETURNS text
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_validate_backfill_where';
COMMENT ON FUNCTION sequin_cdc._validate_backfill_where(regclass, text) IS
    'Internal: raises an error unless "where" is one boolean expression over the table''s columns without subqueries, set operations, aggregates, volatile or non-built-in functions; returns it deparsed over the table aliased t.';
REVOKE ALL ON FUNCTION sequin_cdc._validate_backfill_where(regclass, text) FROM PUBLIC;

------------------------------------------------------------------------------
-- Configuration rows cannot be forged
--
-- The configuration tables may be written directly by roles granted access
-- (sequin_cdc.grant_usage does), and the API functions are SECURITY INVOKER:
-- these BEFORE triggers are what keeps a row from naming another role or a
-- table its writer may not read.  Superusers (and so pg_restore) pass.
-- Roles come from the session (current_user), never from the row.
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc._guard_slots() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT (SELECT r.rolreplication FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'permission denied to change sequin_cdc slots'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Only superusers and roles with the REPLICATION attribute manage replication slots.',
                  HINT = 'Use sequin_cdc.create_slot() and sequin_cdc.drop_slot() as a role with REPLICATION.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                    WHERE s.slot_name = NEW.slot_name AND s.plugin = 'sequin_cdc'
                      AND s.database = current_database()) THEN
        RAISE EXCEPTION 'replication slot "%" is not a sequin_cdc slot of this database', NEW.slot_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Create slots with sequin_cdc.create_slot().';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION sequin_cdc._guard_change_tables() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND sequin_cdc._owns(OLD.change_table) IS FALSE THEN
        RAISE EXCEPTION 'must be owner of change table %', OLD.change_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only the owner of the change table (or a member of its role) may change or remove its registration.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF sequin_cdc._owns(NEW.change_table) IS NOT TRUE THEN
        RAISE EXCEPTION 'must be owner of table %', NEW.change_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Capture writes into a change table as its owner; only the owner may register it.',
                  HINT = 'Create change tables with sequin_cdc.create_change_table().';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION sequin_cdc._guard_change_retention() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND sequin_cdc._owns(OLD.change_table) IS FALSE THEN
        RAISE EXCEPTION 'retention rule % writes into %, which the role does not own', OLD.id, OLD.change_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run it as the owner of the change table.';
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
    IF sequin_cdc._owns(NEW.change_table) IS NOT TRUE
       OR NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table) THEN
        RAISE EXCEPTION 'must be owner of change table %', NEW.change_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Changes are written into the change table as its owner.',
                  HINT = 'Use a change table of your own, made by sequin_cdc.create_change_table().';
    END IF;
    IF NEW.filter IS NOT NULL THEN
        PERFORM sequin_cdc._validate_filter(NEW.source_table, NEW.filter);
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION sequin_cdc._guard_backfills() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND NOT pg_has_role(current_user, OLD.run_as, 'MEMBER') THEN
        RAISE EXCEPTION 'backfill % belongs to role %', OLD.id, OLD.run_as
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run it as that role or as a superuser.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        -- the backfill reads as the role that asked for it, whatever the row says
        NEW.run_as := current_user::regrole;
        IF has_table_privilege(NEW.source_table, 'SELECT') IS NOT TRUE THEN
            RAISE EXCEPTION 'permission denied for table %', NEW.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Backfill a table the role may read, with sequin_cdc.backfill().';
        END IF;
        IF NEW.where_clause IS NOT NULL THEN
            PERFORM sequin_cdc._validate_backfill_where(NEW.source_table, NEW.where_clause);
        END IF;
    ELSIF (NEW.id, NEW.source_table, NEW.change_table, NEW.slot_name, NEW.where_clause, NEW.run_as)
          IS DISTINCT FROM
          (OLD.id, OLD.source_table, OLD.change_table, OLD.slot_name, OLD.where_clause, OLD.run_as) THEN
        RAISE EXCEPTION 'cannot change what backfill % reads or as whom', OLD.id
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'id, source_table, change_table, slot_name, where_clause and run_as are fixed when the backfill is created.',
                  HINT = 'Cancel it with sequin_cdc.cancel_backfill() and start another with sequin_cdc.backfill().';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE FUNCTION sequin_cdc._guard_retention_policies() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND sequin_cdc._owns(OLD.change_table) IS FALSE THEN
        RAISE EXCEPTION 'must be owner of table %', OLD.change_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only the owner of the change table may change or drop its retention policy, with sequin_cdc.drop_retention_policy().';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    IF sequin_cdc._owns(NEW.change_table) IS NOT TRUE THEN
        RAISE EXCEPTION 'must be owner of table %', NEW.change_table
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Use sequin_cdc.set_retention_policy() as the owner of the change table.';
    END IF;
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

CREATE FUNCTION sequin_cdc._guard_sinks() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF sequin_cdc._is_superuser() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- (the worker records failures here even when the owner has lost
        -- SELECT on the change table: no check of that on update)
        IF (NEW.id, NEW.owner, NEW.change_table) IS DISTINCT FROM (OLD.id, OLD.owner, OLD.change_table) THEN
            RAISE EXCEPTION 'cannot change the owner or the change table of sink "%"', OLD.name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Drop the sink and create another with sequin_cdc.create_webhook_sink().';
        END IF;
        RETURN NEW;
    END IF;
    -- a sink reads as its owner: the role that creates it
    NEW.owner := current_user::regrole;
    IF has_table_privilege(NEW.change_table, 'SELECT') IS NOT TRUE
       OR NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table) THEN
        RAISE EXCEPTION 'permission denied for change table %', NEW.change_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A sink sends what its owner may read, and reads it as its owner.',
                  HINT = 'Use sequin_cdc.create_webhook_sink() with a change table the role may read.';
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON sequin_cdc.slots
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_slots();
CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON sequin_cdc.change_tables
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_change_tables();
CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON sequin_cdc.change_retention
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_change_retention();
CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON sequin_cdc.backfills
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_backfills();
CREATE TRIGGER guard BEFORE INSERT OR UPDATE OR DELETE ON sequin_cdc.retention_policies
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_retention_policies();
CREATE TRIGGER guard BEFORE INSERT OR UPDATE ON sequin_cdc.sinks
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._guard_sinks();

-- The identity is fixed when the extension is created.
REVOKE ALL ON sequin_cdc.database_identity FROM PUBLIC;

------------------------------------------------------------------------------
-- Sink backlog: with the caller's rights
------------------------------------------------------------------------------

-- Changes after a sink's cursor, for sinks the caller can see (row level
-- security on sinks) in a change table it may read; null otherwise.  Runs
-- with the caller's rights: it tells nobody about other roles' sinks.
CREATE OR REPLACE FUNCTION sequin_cdc._sink_backlog(sink_id bigint) RETURNS bigint
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

------------------------------------------------------------------------------
-- API functions: every right checked before anything changes
------------------------------------------------------------------------------

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
    IF NOT has_table_privilege(source, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for table %', source
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A retention rule copies every change of the table into a change table; it needs the right to read the table.',
                  HINT = format('The table''s owner can allow it: GRANT SELECT ON %s TO %I;', source, current_user);
    END IF;
    IF sequin_cdc._owns(change_table) IS NOT TRUE THEN
        RAISE EXCEPTION 'must be owner of change table %', change_table
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Changes are written into the change table as its owner.',
                  HINT = 'Create a change table of your own with sequin_cdc.create_change_table(), or run it as the owner of this one.';
    END IF;
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

CREATE OR REPLACE FUNCTION sequin_cdc.health()
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
        detail := coalesce('output_plugin_libraries = ' || sequin_cdc._output_plugin_libraries(),
                           'this server does not restrict output plugins');
    ELSE
        status := 'error';
        detail := format('output_plugin_libraries = ''%s'' does not list sequin_cdc; set output_plugin_libraries = ''%s, sequin_cdc'' in postgresql.conf and reload',
                         sequin_cdc._output_plugin_libraries(), sequin_cdc._output_plugin_libraries());
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
    IF NOT has_table_privilege(source, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for table %', source
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A backfill reads the table as the role that calls backfill().',
                  HINT = format('The table''s owner can allow it: GRANT SELECT ON %s TO %I;', source, current_user);
    END IF;
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

------------------------------------------------------------------------------
-- The dedicated role
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.grant_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the role, e.g. SELECT sequin_cdc.grant_usage(''sequin'');';
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to grant the use of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA sequin_cdc TO %s', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.slots, sequin_cdc.change_tables, '
                   'sequin_cdc.change_retention, sequin_cdc.backfills, sequin_cdc.retention_policies, '
                   'sequin_cdc.sinks TO %s', role);
    EXECUTE format('GRANT USAGE ON SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                   'sequin_cdc.sinks_id_seq TO %s', role);
    EXECUTE format('GRANT SELECT ON sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, '
                   'sequin_cdc.pg_stat_backfills, sequin_cdc.pg_stat_retention TO %s', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION sequin_cdc._validate_filter(regclass, text), '
                   'sequin_cdc._validate_backfill_where(regclass, text), '
                   'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                   'sequin_cdc._retention_jobs() TO %s', role);
    IF to_regnamespace('cron') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA cron TO %s', role);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.grant_usage(regrole) IS
    'Lets a role use the whole API: USAGE on the schema, rights on the configuration tables (guarded by triggers), the monitoring views, the internal helpers the API calls, and USAGE on schema cron when pg_cron is here. Superusers only.';
REVOKE ALL ON FUNCTION sequin_cdc.grant_usage(regrole) FROM PUBLIC;

CREATE FUNCTION sequin_cdc.revoke_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the role, e.g. SELECT sequin_cdc.revoke_usage(''sequin'');';
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to revoke the use of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    EXECUTE format('REVOKE ALL ON sequin_cdc.slots, sequin_cdc.change_tables, sequin_cdc.change_retention, '
                   'sequin_cdc.backfills, sequin_cdc.retention_policies, sequin_cdc.sinks, '
                   'sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, sequin_cdc.pg_stat_backfills, '
                   'sequin_cdc.pg_stat_retention FROM %s', role);
    EXECUTE format('REVOKE ALL ON SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                   'sequin_cdc.sinks_id_seq FROM %s', role);
    EXECUTE format('REVOKE ALL ON FUNCTION sequin_cdc._validate_filter(regclass, text), '
                   'sequin_cdc._validate_backfill_where(regclass, text), '
                   'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                   'sequin_cdc._retention_jobs() FROM %s', role);
    EXECUTE format('REVOKE ALL ON SCHEMA sequin_cdc FROM %s', role);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.revoke_usage(regrole) IS
    'Takes back what sequin_cdc.grant_usage() granted (not USAGE on schema cron). Superusers only.';
REVOKE ALL ON FUNCTION sequin_cdc.revoke_usage(regrole) FROM PUBLIC;
