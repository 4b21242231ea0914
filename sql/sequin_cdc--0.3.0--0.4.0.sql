/* sequin_cdc--0.3.0--0.4.0.sql: no change stalls a slot or is lost
 * silently (issue 12), a Kafka sink (issue 14).
 *
 * Each section below belongs to one piece of that work; the fresh 0.4.0
 * install script (joined from sql/src) must equal 0.3.0 updated by this
 * script (test/t/011_upgrade.pl compares them). */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Parked changes: what cannot be filtered, rendered or written
------------------------------------------------------------------------------

-- (end of parked changes)

------------------------------------------------------------------------------
-- Worker state and backoff; sink batches capped by bytes
------------------------------------------------------------------------------

-- (end of worker state)

------------------------------------------------------------------------------
-- DDL on objects capture depends on; DROP EXTENSION
------------------------------------------------------------------------------

-- (end of DDL guards)

------------------------------------------------------------------------------
-- pg_dump / pg_restore
------------------------------------------------------------------------------

-- A restored database keeps its identity and the registration of
-- sequin_cdc.changes: the dumped rows replace the ones CREATE EXTENSION made.
CREATE FUNCTION sequin_cdc._replace_install_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'database_identity' THEN
        DELETE FROM sequin_cdc.database_identity d WHERE d.singleton = NEW.singleton;
    ELSIF TG_TABLE_NAME = 'change_tables'
          AND NEW.change_table = to_regclass('sequin_cdc.changes') THEN
        DELETE FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._replace_install_row() IS
    'Internal: lets a restored row of database_identity, or the restored registration of sequin_cdc.changes, replace the one CREATE EXTENSION inserted.';

CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.database_identity
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();
CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.change_tables
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();

-- create_slot(..., replaces => ...): a slot takes over configuration whose
-- slot is not in this database.
DROP FUNCTION sequin_cdc.create_slot(name, name, bool);
CREATE FUNCTION sequin_cdc.create_slot(slot name, publication name, failover bool DEFAULT false,
                                       replaces name DEFAULT NULL)
RETURNS pg_lsn
LANGUAGE c AS 'MODULE_PATHNAME', 'sequin_cdc_create_slot';
COMMENT ON FUNCTION sequin_cdc.create_slot(name, name, bool, name) IS
    'Creates a logical replication slot decoded by sequin_cdc for the publication and starts its capture worker; returns the LSN capture starts at. failover => true (PostgreSQL 17+) makes it a failover slot, which standbys with sync_replication_slots = on keep in sync. replaces => names configuration whose slot is not in this database (a restored database): the new slot takes over its retention rules and backfills.';

COMMENT ON FUNCTION sequin_cdc.drop_slot(name) IS
    'Stops the capture worker of a sequin_cdc slot and drops the slot. Its retention rules stay and apply again if a slot of the same name is created. Configuration whose slot is not in this database (a restored database) is removed alone.';

-- Slots of this database only: a restored database does not show the
-- worker of the database it was dumped from.
CREATE OR REPLACE VIEW sequin_cdc.pg_stat_capture AS
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
 WHERE s.plugin = 'sequin_cdc' AND s.database = current_database();
COMMENT ON VIEW sequin_cdc.pg_stat_capture IS
    'One row per sequin_cdc slot of this database: its capture worker, counters, positions, lag and last error.';

-- A policy's job must be a job of this database.
CREATE OR REPLACE FUNCTION sequin_cdc._retention_jobs(
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
                      WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p)
                        AND j.database = current_database();
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT j.jobid, j.active, r.status, r.start_time, r.end_time, r.return_message
          FROM cron.job j
          LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time, d.return_message
                               FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid
                              ORDER BY d.runid DESC LIMIT 1) r ON true
         WHERE j.jobid IN (SELECT p.jobid FROM sequin_cdc.retention_policies p)
           AND j.database = current_database()$q$;
END
$fn$;

-- health(): "no slot here" for configuration whose slot is not in this
-- database; a policy whose job is not a job of this database.
CREATE OR REPLACE FUNCTION sequin_cdc._health_slots()
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
               EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.publication) AS pub_exists,
               (SELECT o.database FROM pg_replication_slots o
                 WHERE o.slot_name = s.slot_name AND o.database IS DISTINCT FROM current_database()) AS elsewhere
          FROM sequin_cdc.slots s
          LEFT JOIN pg_replication_slots rs
                 ON rs.slot_name = s.slot_name AND rs.database = current_database()
          LEFT JOIN sequin_cdc.pg_stat_capture c ON c.slot_name = s.slot_name::text
         ORDER BY s.slot_name
    LOOP
        check_name := format('slot %s', r.slot_name);
        IF NOT r.present AND r.elsewhere IS NOT NULL THEN
            -- e.g. this database was restored from a dump of that one
            status := 'error';
            detail := format('no slot here: create one; slot %s belongs to database %s (this database was restored or copied from it) and slot names are cluster-wide, so nothing is captured here until a slot of another name takes over this configuration: SELECT sequin_cdc.create_slot(''<new name>'', %L, replaces => %L); (or remove the configuration with sequin_cdc.drop_slot(%L))',
                             r.slot_name, r.elsewhere, r.publication, r.slot_name, r.slot_name);
        ELSIF NOT r.present THEN
            status := 'error';
            detail := format('no slot here: create one with SELECT sequin_cdc.create_slot(%L, %L); nothing is captured until then (or remove the configuration with sequin_cdc.drop_slot(%L))',
                             r.slot_name, r.publication, r.slot_name);
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

CREATE OR REPLACE FUNCTION sequin_cdc._health_retention_policies()
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
            -- (or a job of the database this one was restored from)
            status := 'error';
            detail := format('pg_cron job %s is gone from this database (unscheduled, or this database was restored from a dump of another): old changes are not removed; run SELECT sequin_cdc.set_retention_policy(%L, %L, %L); again',
                             r.jobid, r.change_table::text, r.keep::text, r.schedule);
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

-- backfill() refuses while its slot is not in this database (a restored
-- copy before create_slot): the backfill would complete, unwritten.
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

-- (end of dump and restore)

------------------------------------------------------------------------------
-- Kafka sink
------------------------------------------------------------------------------

-- (end of Kafka sink)
