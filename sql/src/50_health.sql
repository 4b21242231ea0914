------------------------------------------------------------------------------
-- health(): one function a check, health() their rows in a fixed order
--
-- Every _health_* function returns rows (check_name, status, detail): status
-- is ok, warning or error, and detail says what to fix. They run with the
-- caller's rights, as health() does.
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
               EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = cr.source_table) AS present,
               sequin_cdc._publication_covers(s.publication, cr.source_table) AS covered,
               (SELECT string_agg(t.relid::regclass::text, ', ')
                  FROM sequin_cdc._tree(cr.source_table) t(relid) JOIN pg_class c ON c.oid = t.relid
                 WHERE c.relkind = 'r' AND c.relreplident <> 'f') AS not_full
          FROM sequin_cdc.change_retention cr
          LEFT JOIN sequin_cdc.slots s ON s.slot_name = cr.slot_name
         ORDER BY cr.id
    LOOP
        IF NOT r.present THEN
            -- (left by a version before the DDL guard removed such rules)
            check_name := format('source table of rule %s', r.id);
            status := 'error';
            detail := format('the table with OID %s no longer exists; a new table that reuses the OID would be captured: SELECT sequin_cdc.drop_change_retention(%s);',
                             r.source_table::oid, r.id);
            RETURN NEXT;
            CONTINUE;
        END IF;
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

-- Parked changes (17_parked_changes.sql): a warning per slot while any
-- are unresolved (those the caller may see), naming the retry function.
CREATE FUNCTION sequin_cdc._health_parked()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'parked changes ' || p.slot_name, 'warning',
           format('%s change(s) could not be filtered, rendered or written and are parked since %s (e.g. %s of %I.%I: %s); see sequin_cdc.parked_changes, fix the cause, then run SELECT sequin_cdc.retry_parked_changes(%L); or give them up with sequin_cdc.drop_parked_changes(ids)',
                  count(*), min(p.parked_at),
                  (array_agg(p.stage ORDER BY p.id))[1],
                  (array_agg(p.source_table_schema ORDER BY p.id))[1],
                  (array_agg(p.source_table_name ORDER BY p.id))[1],
                  (array_agg(p.error ORDER BY p.id))[1],
                  p.slot_name)
      FROM sequin_cdc.parked_changes p
     GROUP BY p.slot_name
     ORDER BY p.slot_name
$$;
COMMENT ON FUNCTION sequin_cdc._health_parked() IS
    'Internal: the rows of health() about parked changes, one per slot that has some.';

CREATE FUNCTION sequin_cdc.health()
RETURNS TABLE (check_name text, status text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM sequin_cdc._health_wal_level();
    RETURN QUERY SELECT * FROM sequin_cdc._health_output_plugin();
    RETURN QUERY SELECT * FROM sequin_cdc._health_slots();
    RETURN QUERY SELECT * FROM sequin_cdc._health_capture_errors();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_rules();
    RETURN QUERY SELECT * FROM sequin_cdc._health_retention_policies();
    RETURN QUERY SELECT * FROM sequin_cdc._health_sinks();
    RETURN QUERY SELECT * FROM sequin_cdc._health_parked();
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.health() IS
    'Checks what capture depends on (wal_level, output_plugin_libraries, slots, workers, lag, publications, replica identity) and says what to fix.';

