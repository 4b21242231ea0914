------------------------------------------------------------------------------
-- Retention policies: old change rows removed on a schedule
--
-- A policy keeps the changes of the last `keep` in a change table. A pg_cron
-- job (in this database) runs CALL sequin_cdc.run_retention(<table>) on the
-- policy's schedule. For a plain change table run_retention deletes the rows
-- with committed_at < now() - keep in batches, committing between batches.
-- For a partitioned change table set_retention_policy hands the table to
-- pg_partman (daily partitions on committed_at, retention = keep, old
-- partitions dropped) and run_retention runs pg_partman's maintenance for it,
-- then deletes expired rows that landed in the default partition.
------------------------------------------------------------------------------

CREATE TABLE sequin_cdc.retention_policies (
    change_table regclass PRIMARY KEY,
    keep interval NOT NULL CHECK (keep > interval '0'),
    schedule text,
    jobid bigint,
    job_owner name,
    method text NOT NULL CHECK (method IN ('delete', 'pg_partman')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((schedule IS NULL) = (jobid IS NULL))
);
COMMENT ON TABLE sequin_cdc.retention_policies IS
    'Retention policies set by sequin_cdc.set_retention_policy: window, pg_cron schedule and job (null: no job in this database), method. created_at is when the policy was last set.';
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.retention_policies', '');

-- Why pg_cron refuses a schedule (its own message), or null when it accepts
-- it. pg_cron's parser is the authority (each version accepts other forms:
-- 'N seconds', '$'), and it has no function that only parses: a job is
-- scheduled in a subtransaction that is always rolled back, so nothing stays
-- but a used job id. Null too when pg_cron cannot be asked here (not in this
-- database, or the role may not schedule): whoever schedules the job then
-- gets pg_cron's error. Any other refusal (cron.enable_superuser_jobs =
-- off, say) comes after the schedule was parsed: null as well.
CREATE FUNCTION sequin_cdc._cron_schedule_problem(schedule text) RETURNS text
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

-- An interval as text in the default style ('30 days'), whatever the
-- session's IntervalStyle: for hints and for pg_partman's part_config.
CREATE FUNCTION sequin_cdc._interval_text(i interval) RETURNS text
LANGUAGE sql STABLE STRICT
SET IntervalStyle = postgres
AS $$ SELECT i::text $$;
COMMENT ON FUNCTION sequin_cdc._interval_text(interval) IS
    'Internal: an interval as text in IntervalStyle postgres.';

-- Raises the error that says why a pg_cron job cannot be created in this
-- database, and how to get one: the postgresql.conf lines, CREATE EXTENSION,
-- or the exact cron.schedule_in_database() call for the database pg_cron
-- lives in. Returns normally when pg_cron can schedule here.
CREATE FUNCTION sequin_cdc._require_pg_cron(change_table regclass, keep interval,
                                            job_name text, schedule text, command text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cron_db text;
    known bool := true;
    preload text;
    ext_here bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
    quoted_cmd text;
    call_there text;
    record_here text;
BEGIN
    BEGIN
        -- superuser-only setting; null when pg_cron is not loaded
        cron_db := current_setting('cron.database_name', true);
    EXCEPTION WHEN insufficient_privilege THEN
        known := false;
    END;
    BEGIN
        preload := current_setting('shared_preload_libraries');
        IF NOT EXISTS (SELECT 1 FROM unnest(string_to_array(preload, ',')) l
                        WHERE regexp_replace(btrim(l, E' \t"'), '^.*/', '') IN ('pg_cron', 'pg_cron.so')) THEN
            cron_db := NULL;
            known := true;
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        preload := NULL;
    END;

    IF ext_here AND (NOT known OR cron_db = current_database()) THEN
        RETURN;                                 -- schedule here
    END IF;

    quoted_cmd := CASE WHEN strpos(command, '$$') = 0 THEN '$$' || command || '$$'
                       ELSE quote_literal(command) END;
    call_there := format('SELECT cron.schedule_in_database(%L, %L, %s, %L);',
                         job_name, schedule, quoted_cmd, current_database());
    record_here := format('SELECT sequin_cdc.set_retention_policy(%L, %L, schedule => NULL);',
                          change_table::text, sequin_cdc._interval_text(keep));

    IF known AND cron_db IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not loaded'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Retention policies are run by pg_cron jobs; pg_cron must be in shared_preload_libraries.',
                  HINT = format('Add to postgresql.conf: shared_preload_libraries = ''%s'' and cron.database_name = ''%s'', restart the server, then run CREATE EXTENSION pg_cron; in database %s. Or pass schedule => NULL and run CALL sequin_cdc.run_retention(%L) from a scheduler of your own.',
                                CASE WHEN coalesce(btrim(preload), '') = '' THEN 'pg_cron'
                                     WHEN preload IS NULL THEN '...,pg_cron'
                                     ELSE preload || ',pg_cron' END,
                                current_database(), quote_ident(current_database()),
                                change_table::text);
    ELSIF NOT known THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_cron jobs live in the database named by cron.database_name, which only a superuser can read.',
                  HINT = format('If that is this database, run CREATE EXTENSION pg_cron; here. If it is another one, first run here: %s then, in that database: %s',
                                record_here,
                                format('SELECT cron.schedule_in_database(%L, %L, %s, %L);',
                                       job_name, schedule, quoted_cmd, current_database()));
    ELSIF cron_db = current_database() THEN
        RAISE EXCEPTION 'extension "pg_cron" is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('pg_cron is loaded and cron.database_name is %L, this database.', cron_db),
                  HINT = 'Run CREATE EXTENSION pg_cron; in this database, then call sequin_cdc.set_retention_policy() again.';
    ELSE
        RAISE EXCEPTION 'pg_cron runs in database "%", not in "%"', cron_db, current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_cron jobs are created in the database named by cron.database_name and can run their command in another database.',
                  HINT = format('Record the policy here without a job: %s then, in database %s, run: %s',
                                record_here, quote_ident(cron_db), call_there);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_pg_cron(regclass, interval, text, text, text) IS
    'Internal: raises an error saying how to make pg_cron available when it cannot schedule jobs in this database.';

-- The pg_partman schema and major version, or nulls when not installed here.
CREATE FUNCTION sequin_cdc._partman(OUT schema_name name, OUT major int)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname, split_part(e.extversion, '.', 1)::int
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_partman'
$$;
COMMENT ON FUNCTION sequin_cdc._partman() IS
    'Internal: schema and major version of pg_partman in this database (nulls when absent).';

-- The name pg_partman knows a table by: schema.table, unquoted.
CREATE FUNCTION sequin_cdc._partman_name(tbl regclass) RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname || '.' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = tbl
$$;
COMMENT ON FUNCTION sequin_cdc._partman_name(regclass) IS
    'Internal: schema.table as pg_partman''s part_config.parent_table spells it.';

-- The DEFAULT partition of a partitioned table, or null.
CREATE FUNCTION sequin_cdc._default_partition(tbl regclass) RETURNS regclass
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = tbl AND c.relispartition
       AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
$$;
COMMENT ON FUNCTION sequin_cdc._default_partition(regclass) IS
    'Internal: the default partition of a partitioned table, or null.';

-- Hands a partitioned change table to pg_partman (once) and sets its
-- retention. pg_partman makes daily partitions on committed_at from the start
-- of the window to premake days ahead and a default partition of its own
-- (named like ours, <table>_default), so ours is detached first and its rows
-- are moved into the new partitions (rows older than the window go to the
-- new default partition, where run_retention deletes them).
--   pg_partman 4.x: create_parent(..., p_type => 'native', p_interval => '1 day')
--                   always makes a default partition.
--   pg_partman 5.x: create_parent(..., p_interval => '1 day') (p_type defaults
--                   to 'range'; 'native' is gone), p_default_table => true.
-- Returns the number of rows moved.
-- No SET search_path here nor in set_retention_policy: create_parent saves
-- the search_path it finds and restores it with set_config() inside an
-- exception block, which would turn a function-level setting of ours into the
-- session's. Names are schema-qualified instead.
CREATE FUNCTION sequin_cdc._partman_configure(tbl regclass, keep interval) RETURNS bigint
LANGUAGE plpgsql
AS $fn$
DECLARE
    pm record := sequin_cdc._partman();
    parent text := sequin_cdc._partman_name(tbl);
    old_default regclass;
    old_schema name;
    old_name name;
    cols text;
    start_at timestamptz := date_trunc('day', now() - keep);
    configured bool;
    moved bigint := 0;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.part_config WHERE parent_table = $1)', pm.schema_name)
        INTO STRICT configured USING parent;
    IF NOT configured THEN
        old_default := sequin_cdc._default_partition(tbl);
        IF old_default IS NOT NULL THEN
            SELECT n.nspname, left(c.relname, 50) || '_premigration'
              INTO old_schema, old_name
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = old_default;
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', tbl, old_default);
            EXECUTE format('ALTER TABLE %s RENAME TO %I', old_default, old_name);
        END IF;
        IF pm.major >= 5 THEN
            EXECUTE format('SELECT %I.create_parent(p_parent_table => $1, p_control => ''committed_at'', '
                           'p_interval => ''1 day'', p_start_partition => $2, p_default_table => true, '
                           'p_automatic_maintenance => ''on'')', pm.schema_name)
                USING parent, start_at::text;
        ELSE
            EXECUTE format('SELECT %I.create_parent(p_parent_table => $1, p_control => ''committed_at'', '
                           'p_type => ''native'', p_interval => ''1 day'', p_start_partition => $2, '
                           'p_automatic_maintenance => ''on'')', pm.schema_name)
                USING parent, start_at::text;
        END IF;
        IF old_default IS NOT NULL THEN
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
              FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
            EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %I.%I', tbl, cols, cols, old_schema, old_name);
            GET DIAGNOSTICS moved = ROW_COUNT;
            EXECUTE format('DROP TABLE %I.%I', old_schema, old_name);
        END IF;
    END IF;
    EXECUTE format('UPDATE %I.part_config SET retention = $1, retention_keep_table = false, '
                   'infinite_time_partitions = true WHERE parent_table = $2', pm.schema_name)
        USING sequin_cdc._interval_text(keep), parent;
    RETURN moved;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._partman_configure(regclass, interval) IS
    'Internal: puts a partitioned change table under pg_partman (daily partitions on committed_at) with retention = keep.';

-- Errors unless the current role may manage retention of the change table:
-- it must have the privileges of the table's owner, and rights on the
-- configuration tables (which belong to the role that created the extension).
CREATE FUNCTION sequin_cdc._check_retention_privileges(tbl regclass, policy_privileges text)
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

------------------------------------------------------------------------------
-- set_retention_policy / drop_retention_policy / run_retention
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.set_retention_policy(
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

CREATE FUNCTION sequin_cdc.drop_retention_policy(change_table regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tbl regclass := drop_retention_policy.change_table;
    pol record;
    pm record;
    cron_here bool := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'change_table must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the change table whose policy to drop; sequin_cdc.pg_stat_retention lists them.';
    END IF;
    PERFORM sequin_cdc._check_retention_privileges(tbl, 'SELECT, UPDATE, DELETE');
    SELECT p.* INTO pol FROM sequin_cdc.retention_policies p WHERE p.change_table = tbl FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'change table "%" has no retention policy', tbl
            USING ERRCODE = 'undefined_object',
                  HINT = 'sequin_cdc.pg_stat_retention lists the retention policies.';
    END IF;

    IF pol.jobid IS NOT NULL AND cron_here THEN
        IF EXISTS (SELECT 1 FROM cron.job j WHERE j.jobid = pol.jobid) THEN
            PERFORM cron.unschedule(pol.jobid);
        ELSIF pol.job_owner IS DISTINCT FROM current_user
              AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
            RAISE EXCEPTION 'the retention job of "%" belongs to role %', tbl, pol.job_owner
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'pg_cron lets only the owner of a job or a superuser remove it.',
                      HINT = format('Run it as %I or as a superuser.', pol.job_owner);
        END IF;
    ELSIF pol.jobid IS NULL THEN
        RAISE NOTICE 'the retention policy of "%" had no pg_cron job in this database', tbl
            USING HINT = format('If you scheduled one elsewhere, remove it there, e.g. SELECT cron.unschedule(%L); in the pg_cron database.',
                                format('sequin_cdc_retention:%s:%s', current_database(),
                                       (SELECT format('%I.%I', n.nspname, c.relname)
                                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                         WHERE c.oid = tbl)));
    END IF;

    IF pol.method = 'pg_partman' THEN
        pm := sequin_cdc._partman();
        IF pm.schema_name IS NOT NULL THEN
            -- Stop dropping partitions; the table stays partitioned by pg_partman.
            EXECUTE format('UPDATE %I.part_config SET retention = NULL WHERE parent_table = $1', pm.schema_name)
                USING sequin_cdc._partman_name(tbl);
            RAISE NOTICE 'pg_partman keeps partitioning "%" but drops no partition any more', tbl
                USING HINT = format('New partitions are made only while pg_partman''s maintenance runs (pg_partman_bgw, or a job running SELECT %I.run_maintenance(%L)).',
                                    pm.schema_name, sequin_cdc._partman_name(tbl));
        END IF;
    END IF;

    DELETE FROM sequin_cdc.retention_policies p WHERE p.change_table = tbl;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.drop_retention_policy(regclass) IS
    'Removes the retention policy of a change table and its pg_cron job; rows are kept from now on. A pg_partman table stays partitioned, without retention.';

-- Called by the pg_cron job. No SET clause: a procedure with one cannot
-- COMMIT, so every name below is schema-qualified.
CREATE PROCEDURE sequin_cdc.run_retention(
    change_table regclass,
    batch_size int DEFAULT 10000,
    INOUT deleted bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    tbl regclass := run_retention.change_table;
    v_keep interval;
    v_method text;
    cutoff timestamptz;
    target regclass;
    pm record;
    parent text;
    last_id bigint := 0;
    n bigint;
    max_id bigint;
    stmt text;
BEGIN
    IF tbl IS NULL OR batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'change_table must not be null and batch_size must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Call it as CALL sequin_cdc.run_retention(''public.order_changes'');';
    END IF;
    SELECT p.keep, p.method INTO v_keep, v_method
      FROM sequin_cdc.retention_policies p WHERE p.change_table OPERATOR(pg_catalog.=) tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'change table "%" has no retention policy', tbl
            USING ERRCODE = 'undefined_object',
                  HINT = 'Set one with sequin_cdc.set_retention_policy().';
    END IF;
    cutoff := pg_catalog.now() OPERATOR(pg_catalog.-) v_keep;   -- once, for every batch
    deleted := 0;

    IF v_method = 'pg_partman' THEN
        pm := sequin_cdc._partman();
        parent := sequin_cdc._partman_name(tbl);
        IF pm.schema_name IS NULL THEN
            RAISE EXCEPTION 'pg_partman is not installed in this database'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'The retention policy of this partitioned change table needs it: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; then call sequin_cdc.set_retention_policy() again.';
        END IF;
        -- creates the coming partitions, drops those older than the window
        EXECUTE pg_catalog.format('SELECT %I.run_maintenance(p_parent_table => $1, p_analyze => false)',
                                  pm.schema_name)
            USING parent;
        COMMIT;
        -- rows older than every partition (late captures, rows from before
        -- pg_partman took over) wait in the default partition
        target := sequin_cdc._default_partition(tbl);
        IF target IS NULL THEN
            RETURN;
        END IF;
    ELSE
        target := tbl;
    END IF;

    stmt := pg_catalog.format(
        'WITH batch AS (SELECT id FROM %1$s WHERE id OPERATOR(pg_catalog.>) $1'
        '                  AND committed_at OPERATOR(pg_catalog.<) $2 ORDER BY id LIMIT $3), '
        '     gone AS (DELETE FROM %1$s t USING batch b WHERE t.id OPERATOR(pg_catalog.=) b.id'
        '                  AND t.committed_at OPERATOR(pg_catalog.<) $2 RETURNING t.id) '
        'SELECT pg_catalog.count(*), pg_catalog.max(id) FROM gone', target);
    LOOP
        EXECUTE stmt INTO n, max_id USING last_id, cutoff, batch_size;
        deleted := deleted OPERATOR(pg_catalog.+) n;
        COMMIT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
        last_id := max_id;
    END LOOP;
END
$fn$;
COMMENT ON PROCEDURE sequin_cdc.run_retention(regclass, int, bigint) IS
    'Applies the retention policy of a change table once: deletes rows with committed_at < now() - keep in batches of batch_size, committing after each (pg_partman tables: runs its maintenance, then cleans the default partition). Call it as a statement of its own; deleted returns the number of rows deleted.';

------------------------------------------------------------------------------
-- Monitoring: pg_stat_retention
------------------------------------------------------------------------------

-- pg_cron state of the policies' jobs: its tables may not exist (pg_cron
-- created later, or elsewhere), hence dynamic SQL; SECURITY DEFINER because
-- pg_cron's row level security shows each role only its own jobs.  Jobs of
-- this database only: a policy restored from a dump of another database
-- names a job of that one (cron.job is dumped with pg_cron's database).
CREATE FUNCTION sequin_cdc._retention_jobs(
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
COMMENT ON FUNCTION sequin_cdc._retention_jobs() IS
    'Internal: pg_cron state and last run of the retention policies'' jobs.';
REVOKE ALL ON FUNCTION sequin_cdc._retention_jobs() FROM PUBLIC;

CREATE VIEW sequin_cdc.pg_stat_retention AS
SELECT p.change_table,
       p.method,
       p.keep,
       p.schedule,
       p.jobid,
       CASE WHEN p.jobid IS NULL THEN 'none'
            WHEN j.jobid IS NULL THEN 'missing'
            WHEN j.active THEN 'scheduled'
            ELSE 'inactive' END AS job_state,
       j.last_status,
       j.last_start,
       j.last_end,
       j.last_message,
       p.created_at
  FROM sequin_cdc.retention_policies p
  LEFT JOIN sequin_cdc._retention_jobs() j ON j.jobid = p.jobid;
COMMENT ON VIEW sequin_cdc.pg_stat_retention IS
    'One row per retention policy: window, schedule, pg_cron job and its state (scheduled, inactive, missing, none), and the job''s last run from cron.job_run_details.';

