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

CREATE FUNCTION sequin_cdc._guard_change_retention() RETURNS trigger
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

