-- retention: retention policies with the real pg_cron. set_retention_policy
-- registers a job with the right schedule and command; bad input is refused
-- with a hint and schedules nothing; run_retention deletes exactly the rows
-- outside the window, in committed batches; replacing keeps one job, dropping
-- removes it; pg_stat_retention shows the last run; privileges; pg_cron in
-- another database (the hint's calls are run as given); capture keeps working
-- while retention runs and the deletes are not captured.
SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- start without pg_cron in this database, whatever earlier tests did
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_cron;
RESET client_min_messages;

SELECT sequin_cdc.create_change_table('public.ret_changes');
SELECT sequin_cdc.create_change_table('public.ret_other');
CREATE TABLE ret_plain (id int PRIMARY KEY);

------------------------------------------------------------------------------
-- pg_cron is loaded and cron.database_name is this database, but the
-- extension is not created here
------------------------------------------------------------------------------
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days');
\set VERBOSITY terse
SELECT count(*) AS policies FROM sequin_cdc.retention_policies;

CREATE EXTENSION pg_cron;

------------------------------------------------------------------------------
-- set_retention_policy: one job, right schedule and command
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days') AS jobid \gset
SELECT jobid = :jobid AS same_id, schedule, command, database = current_database() AS this_db,
       username = current_user AS my_job, jobname, active
  FROM cron.job ORDER BY jobid;
SELECT change_table, keep, schedule, jobid = :jobid AS same_id, job_owner = current_user AS mine, method
  FROM sequin_cdc.retention_policies ORDER BY change_table::text;
SELECT change_table, method, keep, schedule, jobid = :jobid AS same_id, job_state
  FROM sequin_cdc.pg_stat_retention;

------------------------------------------------------------------------------
-- bad input: errors with hints, nothing scheduled or changed
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('ret_changes', '0');
SELECT sequin_cdc.set_retention_policy('ret_changes', '-1 day');
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 mon -40 days');
SELECT sequin_cdc.set_retention_policy('ret_changes', NULL);
SELECT sequin_cdc.set_retention_policy(NULL, '1 day');
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 day', 'bogus');
SELECT sequin_cdc.set_retention_policy('ret_plain', '1 day');
\set VERBOSITY terse
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 day', '61 * * * *');
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 day', '*/0 * * * *');
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 day', '* * * 13 *');
SELECT sequin_cdc.set_retention_policy('ret_changes', '1 day', '');
SELECT sequin_cdc.set_retention_policy('sequin_cdc.change_tables', '1 day');
SELECT sequin_cdc.set_retention_policy('ret_nosuch', '1 day');
SELECT count(*) AS jobs, min(schedule) AS schedule FROM cron.job;
SELECT change_table, keep, schedule FROM sequin_cdc.retention_policies ORDER BY change_table::text;

-- the schedule check is pg_cron's parser (forms that only some pg_cron
-- versions accept, such as '10 seconds' or '0 0 $ * *', are left out), and
-- asking it leaves no job behind
SELECT s AS schedule, sequin_cdc._cron_schedule_problem(s) AS problem
  FROM unnest(ARRAY['*/10 * * * *', '0 3 * * *', '30 3 * * sun', '*/5 1-5 1,15 jan-mar mon-fri',
                    '0-59/15 0,12 * * 0-7', '@daily',
                    '60 * * * *', '* 24 * * *', '* * 0 * *', '* * * 0 *', '* * * * 8',
                    '1/5 * * * *', '* * * *', '*/x * * * *', '1,,2 * * * *',
                    '* * * foo *', '* * * * funday', '@sometimes', '0 seconds', '60 seconds']) s;
SELECT count(*) AS jobs FROM cron.job;

------------------------------------------------------------------------------
-- replacing: same job, new schedule
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('ret_changes', '7 days', '0 * * * *') = :jobid AS same_job;
SELECT count(*) AS jobs, min(schedule) AS schedule, min(command) AS command FROM cron.job;
SELECT change_table, keep, schedule FROM sequin_cdc.retention_policies;

------------------------------------------------------------------------------
-- run_retention: rows over 40 days, keep 30 days, batches of 7
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days', '*/10 * * * *') = :jobid AS same_job;

-- 160 rows, one every 6 hours, the newest 3 hours old: 40 of them are
-- older than 30 days
INSERT INTO ret_changes (seq, source_database_id, source_table_oid, source_table_schema,
                         source_table_name, record_pk, record, action, committed_at)
SELECT k, (SELECT id FROM sequin_cdc.database_identity), 1, 'public', 'ret_source', k::text,
       jsonb_build_object('id', k), 'insert', now() - make_interval(hours => k * 6 + 3)
  FROM generate_series(0, 159) k;
INSERT INTO ret_other (seq, source_database_id, source_table_oid, source_table_schema,
                       source_table_name, record_pk, record, action, committed_at)
SELECT k, (SELECT id FROM sequin_cdc.database_identity), 1, 'public', 'ret_source', k::text,
       '{}', 'insert', now() - make_interval(days => k)
  FROM generate_series(0, 59) k;

CREATE TEMP TABLE ret_expected AS
    SELECT id FROM ret_changes WHERE committed_at >= now() - interval '30 days';
SELECT count(*) FILTER (WHERE committed_at < now() - interval '30 days') AS older_than_30_days,
       count(*) FILTER (WHERE committed_at >= now() - interval '30 days') AS within_30_days
  FROM ret_changes;

-- record every DELETE statement and its transaction
CREATE TABLE ret_batches (xid xid8, n bigint);
CREATE FUNCTION ret_log_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ret_batches SELECT pg_current_xact_id(), count(*) FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER ret_log AFTER DELETE ON ret_changes REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION ret_log_batch();
SELECT count(*) AS changes_rows FROM sequin_cdc.changes \gset

CALL sequin_cdc.run_retention('ret_changes', batch_size => 7);

SELECT count(*) FILTER (WHERE committed_at < now() - interval '30 days') AS older_than_30_days,
       count(*) FILTER (WHERE committed_at >= now() - interval '30 days') AS within_30_days
  FROM ret_changes;
SELECT (SELECT array_agg(id ORDER BY id) FROM ret_changes)
     = (SELECT array_agg(id ORDER BY id) FROM ret_expected) AS kept_exactly_the_window;
-- 40 rows in batches of 7, each its own transaction
SELECT count(*) AS statements, count(DISTINCT xid) AS transactions,
       array_agg(n ORDER BY xid) AS batch_sizes
  FROM ret_batches;
-- other tables untouched
SELECT count(*) AS other_rows FROM ret_other;
SELECT count(*) = :changes_rows AS changes_untouched FROM sequin_cdc.changes;

-- nothing left to do
TRUNCATE ret_batches;
CALL sequin_cdc.run_retention('ret_changes');
SELECT count(*) AS rows, count(*) FILTER (WHERE n > 0) AS deleting_statements FROM ret_batches;

-- a batch size that divides the expired rows: the last batch finds none
UPDATE ret_changes SET committed_at = committed_at - interval '60 days'
 WHERE id IN (SELECT id FROM ret_changes ORDER BY id DESC LIMIT 14);
TRUNCATE ret_batches;
CALL sequin_cdc.run_retention('ret_changes', 7);
SELECT array_agg(n ORDER BY xid) AS batch_sizes FROM ret_batches;
SELECT count(*) AS rows_left FROM ret_changes;
DROP TRIGGER ret_log ON ret_changes;

-- errors
\set VERBOSITY default
CALL sequin_cdc.run_retention('ret_other');
\set VERBOSITY terse
CALL sequin_cdc.run_retention('ret_changes', 0);
CALL sequin_cdc.run_retention(NULL);
-- it commits, so it runs as a statement of its own (as pg_cron runs it)
BEGIN;
CALL sequin_cdc.run_retention('ret_changes');
ROLLBACK;

------------------------------------------------------------------------------
-- pg_stat_retention: the latest run of the job, the job's state
------------------------------------------------------------------------------
-- (run ids far above pg_cron's own, in case the job fires during the test)
INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status,
                                  return_message, start_time, end_time)
VALUES (:jobid, 1000000, 1, current_database(), current_user, 'CALL ...', 'failed', 'ERROR: older run',
        '2024-01-01 00:00:00+00', '2024-01-01 00:00:01+00'),
       (:jobid, 1000001, 2, current_database(), current_user, 'CALL ...', 'succeeded', '1 row',
        '2024-01-01 00:10:00+00', '2024-01-01 00:10:02+00');
SELECT change_table, job_state, last_status, last_message,
       last_start = '2024-01-01 00:10:00+00' AS start_ok, last_end - last_start AS took
  FROM sequin_cdc.pg_stat_retention;
DELETE FROM cron.job_run_details WHERE jobid = :jobid;

SELECT cron.alter_job(:jobid, active => false);
SELECT change_table, job_state FROM sequin_cdc.pg_stat_retention;
-- a job removed behind our back shows as missing; setting the policy again
-- schedules a new one
SELECT cron.unschedule(:jobid);
SELECT change_table, job_state FROM sequin_cdc.pg_stat_retention;
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days') AS jobid2 \gset
SELECT :jobid2 <> :jobid AS new_job, count(*) AS jobs FROM cron.job;
SELECT change_table, job_state, jobid = :jobid2 AS same_id FROM sequin_cdc.pg_stat_retention;

------------------------------------------------------------------------------
-- drop_retention_policy
------------------------------------------------------------------------------
SELECT sequin_cdc.drop_retention_policy('ret_changes');
SELECT count(*) AS jobs FROM cron.job;
SELECT count(*) AS policies FROM sequin_cdc.retention_policies;
\set VERBOSITY default
SELECT sequin_cdc.drop_retention_policy('ret_changes');
\set VERBOSITY terse
SELECT sequin_cdc.drop_retention_policy(NULL);

-- schedule => NULL records a policy without a job (run_retention is called
-- by hand or by another scheduler)
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days', schedule => NULL) AS no_job;
SELECT change_table, schedule, jobid, job_state FROM sequin_cdc.pg_stat_retention;
CALL sequin_cdc.run_retention('ret_changes');
-- and replacing a policy with a job by one without drops the job
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days') IS NOT NULL AS scheduled;
SELECT count(*) AS jobs FROM cron.job;
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days', NULL) AS no_job;
SELECT count(*) AS jobs FROM cron.job;
SELECT sequin_cdc.drop_retention_policy('ret_changes');

------------------------------------------------------------------------------
-- privileges: the owner of the change table sets its policy; the job runs
-- as that role
------------------------------------------------------------------------------
CREATE ROLE ret_role NOLOGIN;
GRANT USAGE ON SCHEMA sequin_cdc TO ret_role;
SELECT sequin_cdc.create_change_table('public.ret_owned');
SET ROLE ret_role;
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days');
\set VERBOSITY terse
RESET ROLE;
ALTER TABLE ret_owned OWNER TO ret_role;
SET ROLE ret_role;
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_owned', '30 days');
\set VERBOSITY terse
RESET ROLE;
GRANT SELECT ON sequin_cdc.change_tables TO ret_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.retention_policies TO ret_role;
SET ROLE ret_role;
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_owned', '30 days');
\set VERBOSITY terse
RESET ROLE;
GRANT USAGE ON SCHEMA cron TO ret_role;
SET ROLE ret_role;
SELECT sequin_cdc.set_retention_policy('ret_owned', '30 days') AS owned_job \gset
RESET ROLE;
SELECT jobid = :owned_job AS same_id, username, schedule, command FROM cron.job;
-- a superuser changing it keeps the job and the role it runs as
SELECT sequin_cdc.set_retention_policy('ret_owned', '14 days', '5 * * * *') = :owned_job AS same_job;
SELECT jobid = :owned_job AS same_id, username, schedule FROM cron.job;
SELECT keep, job_owner FROM sequin_cdc.retention_policies;
SET ROLE ret_role;
CALL sequin_cdc.run_retention('ret_owned');
SELECT sequin_cdc.drop_retention_policy('ret_owned');
RESET ROLE;
SELECT count(*) AS jobs FROM cron.job;
-- a job set up by a superuser cannot be changed by the table owner
SELECT sequin_cdc.set_retention_policy('ret_owned', '30 days') IS NOT NULL AS scheduled;
SET ROLE ret_role;
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('ret_owned', '1 day');
\set VERBOSITY terse
SELECT sequin_cdc.drop_retention_policy('ret_owned');
RESET ROLE;
SELECT keep, job_owner = current_user AS mine FROM sequin_cdc.retention_policies;
SELECT sequin_cdc.drop_retention_policy('ret_owned');
ALTER TABLE ret_owned OWNER TO CURRENT_USER;
REVOKE USAGE ON SCHEMA cron FROM ret_role;
REVOKE ALL ON sequin_cdc.change_tables, sequin_cdc.retention_policies FROM ret_role;
REVOKE USAGE ON SCHEMA sequin_cdc FROM ret_role;
DROP ROLE ret_role;

------------------------------------------------------------------------------
-- pg_cron lives in another database: the error's hint gives the exact calls;
-- they work as given
------------------------------------------------------------------------------
\set regress_db :DBNAME
CREATE DATABASE ret_elsewhere;
\c ret_elsewhere
SET synchronous_commit = on;
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION sequin_cdc;
SELECT sequin_cdc.create_change_table('public.ret_changes');
SELECT sequin_cdc.set_retention_policy('ret_changes', '30 days', '*/5 * * * *');
\set VERBOSITY terse
SELECT count(*) AS policies FROM sequin_cdc.retention_policies;
-- take the two statements out of the hint
CREATE FUNCTION ret_hint() RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    PERFORM sequin_cdc.set_retention_policy('ret_changes', '30 days', '*/5 * * * *');
    RETURN NULL;
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END $$;
SELECT substring(ret_hint() FROM 'without a job: (.*;) then') AS record_here,
       substring(ret_hint() FROM 'run: (SELECT cron\.schedule_in_database.*);$') AS call_there \gset
:record_here
SELECT change_table, keep, schedule, jobid, job_state FROM sequin_cdc.pg_stat_retention;
\c :regress_db
\set VERBOSITY terse
\set SHOW_CONTEXT never
:call_there \gset
SELECT jobid = :schedule_in_database AS same_id, schedule, command, database, jobname FROM cron.job;
SELECT cron.unschedule('sequin_cdc_retention:ret_elsewhere:public.ret_changes');
\c ret_elsewhere
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- dropping a policy without a job here says where to remove the job
\set VERBOSITY default
SELECT sequin_cdc.drop_retention_policy('ret_changes');
\c :regress_db
SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never
DROP DATABASE ret_elsewhere;

------------------------------------------------------------------------------
-- capture keeps working while retention runs, and the deletes of retention
-- are not captured (the publication covers all tables, change tables too)
------------------------------------------------------------------------------
CREATE TABLE ret_src (id int PRIMARY KEY, v text);
ALTER TABLE ret_src REPLICA IDENTITY FULL;
SELECT sequin_cdc.create_change_table('public.ret_cap');
SELECT sequin_cdc.create_publication('ret_pub');
SELECT sequin_cdc.create_slot('ret_s', 'ret_pub') IS NOT NULL AS created;
SELECT sequin_cdc.add_change_retention('ret_src', 'public.ret_cap', slot => 'ret_s') AS ret_rule \gset
INSERT INTO ret_src VALUES (1, 'a'), (2, 'b'), (3, 'c');
SELECT sequin_cdc.wait_for_capture('ret_s');
SELECT action, record_pk FROM ret_cap ORDER BY seq;
-- two of them fall out of the window
UPDATE ret_cap SET committed_at = committed_at - interval '60 days' WHERE record_pk IN ('1', '2');
SELECT sequin_cdc.set_retention_policy('ret_cap', '30 days') IS NOT NULL AS scheduled;
SELECT count(*) AS changes_rows FROM sequin_cdc.changes \gset
SELECT count(*) AS other_rows FROM ret_other \gset
CALL sequin_cdc.run_retention('ret_cap', 1);
INSERT INTO ret_src VALUES (4, 'd');
UPDATE ret_src SET v = 'c2' WHERE id = 3;
SELECT sequin_cdc.wait_for_capture('ret_s');
SELECT action, record_pk, record->>'v' AS v, source_table_name FROM ret_cap ORDER BY seq;
-- no row about a change table anywhere, nothing else written
SELECT count(*) AS about_change_tables FROM ret_cap WHERE source_table_name LIKE 'ret\_%' AND source_table_name <> 'ret_src';
SELECT count(*) = :changes_rows AS changes_untouched FROM sequin_cdc.changes;
SELECT count(*) = :other_rows AS other_untouched FROM ret_other;
SELECT slot_name, state, changes_captured, errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'ret_s';

-- health() reports the policy's job, and a job deleted behind its back
SELECT check_name, status FROM sequin_cdc.health() WHERE check_name LIKE 'retention%' ORDER BY 1;
SELECT cron.unschedule(jobid) FROM sequin_cdc.retention_policies WHERE change_table = 'ret_cap'::regclass;
SELECT check_name, status, detail LIKE '%is gone%' AS says_gone
  FROM sequin_cdc.health() WHERE check_name LIKE 'retention%' ORDER BY 1;
SELECT sequin_cdc.set_retention_policy('ret_cap', '30 days') IS NOT NULL AS rescheduled;

-- clean up
SELECT sequin_cdc.drop_retention_policy('ret_cap');
SELECT sequin_cdc.drop_slot('ret_s');
SELECT sequin_cdc.drop_change_retention(:ret_rule);
DROP PUBLICATION ret_pub;
SELECT count(*) AS jobs FROM cron.job;
SELECT count(*) AS policies FROM sequin_cdc.retention_policies;
