-- retention_partman: the retention policy of a partitioned change table is
-- pg_partman's. set_retention_policy refuses without pg_partman (with a
-- hint), else hands the table to it (daily partitions on committed_at,
-- retention = keep, old partitions dropped, infinite time partitions), moves
-- the rows it already had, and schedules a pg_cron job; running the job's
-- command drops the partitions older than the window and the expired rows of
-- the default partition, and keeps the rest. Capture into such a table keeps
-- working.
SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never

SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cron;
DROP EXTENSION IF EXISTS pg_partman CASCADE;
DROP SCHEMA IF EXISTS partman CASCADE;
RESET client_min_messages;

SELECT sequin_cdc.create_change_table('public.retp_changes', partitioned => true);

-- the partitions of retp_changes, with their bounds
CREATE VIEW retp_parts AS
SELECT c.oid::regclass AS part, b[1]::timestamptz AS lo, b[2]::timestamptz AS hi
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid,
       regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \('([^']+)'\) TO \('([^']+)'\)$$) b
 WHERE i.inhparent = 'retp_changes'::regclass;

------------------------------------------------------------------------------
-- without pg_partman
------------------------------------------------------------------------------
\set VERBOSITY default
SELECT sequin_cdc.set_retention_policy('retp_changes', '3 days');
\set VERBOSITY terse
SELECT count(*) AS jobs FROM cron.job WHERE jobname LIKE '%retp\_changes';
SELECT count(*) AS policies FROM sequin_cdc.retention_policies WHERE change_table = 'retp_changes'::regclass;

CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;

------------------------------------------------------------------------------
-- rows of the last 10 days, one an hour, in our default partition
------------------------------------------------------------------------------
INSERT INTO retp_changes (seq, source_database_id, source_table_oid, source_table_schema,
                          source_table_name, record_pk, record, action, committed_at)
SELECT g, (SELECT id FROM sequin_cdc.database_identity), 1, 'public', 'retp_source', g::text,
       jsonb_build_object('id', g), 'insert', now() - make_interval(hours => g, mins => 30)
  FROM generate_series(0, 239) g;
SELECT tableoid::regclass AS partition, count(*) FROM retp_changes GROUP BY 1 ORDER BY 1;

------------------------------------------------------------------------------
-- set_retention_policy: keep 5 days
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('retp_changes', '5 days') AS jobid \gset
SELECT parent_table, control, partition_interval, retention, retention_keep_table,
       infinite_time_partitions, automatic_maintenance
  FROM partman.part_config WHERE parent_table = 'public.retp_changes';
SELECT jobid = :jobid AS same_id, schedule, command FROM cron.job WHERE jobname LIKE '%retp\_changes';
SELECT change_table, method, keep, schedule, jobid = :jobid AS same_id, job_state
  FROM sequin_cdc.pg_stat_retention WHERE change_table = 'retp_changes'::regclass;

-- daily partitions from the start of the window to premake days ahead, and
-- a default partition (pg_partman's own, named like ours)
SELECT count(*) >= 10 AS enough, bool_and(lo + interval '1 day' = hi) AS daily,
       count(DISTINCT lo) = count(*) AS distinct_days,
       min(lo) = date_trunc('day', now() - interval '5 days') AS starts_at_window,
       max(hi) >= now() + interval '4 days' AS premade
  FROM retp_parts WHERE lo IS NOT NULL;
SELECT part, lo, hi FROM retp_parts WHERE lo IS NULL;
SELECT count(*) AS partitions FROM retp_parts WHERE lo IS NOT NULL \gset
-- every row kept; the ones older than the first partition wait in the default
SELECT count(*) AS total,
       count(*) FILTER (WHERE tableoid = 'retp_changes_default'::regclass) > 0 AS some_in_default,
       count(*) FILTER (WHERE tableoid = 'retp_changes_default'::regclass)
         = count(*) FILTER (WHERE committed_at < date_trunc('day', now() - interval '5 days')) AS default_is_the_old_rows
  FROM retp_changes;
SELECT count(*) AS default_rows FROM retp_changes_default \gset
SELECT count(*) AS kept_3_days FROM retp_changes WHERE committed_at > now() - interval '3 days' \gset
SELECT :kept_3_days AS rows_younger_than_3_days;

------------------------------------------------------------------------------
-- replace: keep 3 days, another schedule; same job
------------------------------------------------------------------------------
SELECT sequin_cdc.set_retention_policy('retp_changes', '3 days', '15 * * * *') = :jobid AS same_job;
SELECT retention, retention_keep_table, infinite_time_partitions
  FROM partman.part_config WHERE parent_table = 'public.retp_changes';
SELECT count(*) AS jobs, min(schedule) AS schedule FROM cron.job WHERE jobname LIKE '%retp\_changes';
SELECT count(*) = :partitions AS partitions_unchanged FROM retp_parts WHERE lo IS NOT NULL;

------------------------------------------------------------------------------
-- the job's command: pg_partman drops the partitions older than 3 days,
-- run_retention empties the default partition of expired rows
------------------------------------------------------------------------------
SELECT count(*) AS expired_partitions,
       string_agg(part::text, ',') AS expired_names
  FROM retp_parts WHERE hi < now() - interval '3 days' \gset
SELECT :expired_partitions AS partitions_entirely_older_than_3_days;
SELECT count(*) AS rows_in_expired_partitions FROM retp_changes c JOIN retp_parts p ON p.part = c.tableoid::regclass
 WHERE p.hi < now() - interval '3 days' \gset
SELECT :rows_in_expired_partitions > 0 AS expired_partitions_have_rows;
SELECT command AS job_command FROM cron.job WHERE jobid = :jobid \gset
:job_command \gset
SELECT :deleted = :default_rows AS deleted_the_default_rows;
SELECT count(*) FILTER (WHERE part::text = ANY (string_to_array(:'expired_names', ','))) AS expired_left,
       count(*) FILTER (WHERE hi <= now() - interval '3 days') AS entirely_older_than_3_days,
       min(lo) = date_trunc('day', now() - interval '3 days') AS oldest_holds_the_window_start,
       max(hi) >= now() + interval '4 days' AS premade
  FROM retp_parts WHERE lo IS NOT NULL;
SELECT count(*) = 240 - :default_rows - :rows_in_expired_partitions AS total_ok,
       count(*) FILTER (WHERE committed_at > now() - interval '3 days') = :kept_3_days AS younger_kept,
       count(*) FILTER (WHERE committed_at < now() - interval '4 days') AS older_than_4_days,
       count(*) FILTER (WHERE committed_at <= now() - interval '3 days'
                          AND committed_at >= date_trunc('day', now() - interval '3 days')) =
         count(*) FILTER (WHERE committed_at <= now() - interval '3 days') AS older_only_in_first_day
  FROM retp_changes;
SELECT count(*) AS default_rows_left FROM retp_changes_default;
-- a new change goes to today's partition
INSERT INTO retp_changes (seq, source_database_id, source_table_oid, source_table_schema,
                          source_table_name, record_pk, record, action, committed_at)
VALUES (1000, (SELECT id FROM sequin_cdc.database_identity), 1, 'public', 'retp_source', '1000',
        '{}', 'insert', now());
SELECT p.lo <= now() AND now() < p.hi AS in_todays_partition
  FROM retp_changes c JOIN retp_parts p ON p.part = c.tableoid::regclass WHERE c.seq = 1000;

------------------------------------------------------------------------------
-- capture into the pg_partman table keeps working while retention runs;
-- nothing of the change tables is captured
------------------------------------------------------------------------------
CREATE TABLE retp_src (id int PRIMARY KEY, v text);
ALTER TABLE retp_src REPLICA IDENTITY FULL;
SELECT sequin_cdc.create_publication('retp_pub');
SELECT sequin_cdc.create_slot('retp_s', 'retp_pub') IS NOT NULL AS created;
SELECT sequin_cdc.add_change_retention('retp_src', 'public.retp_changes', slot => 'retp_s') AS retp_rule \gset
SELECT count(*) AS before_rows FROM retp_changes \gset
INSERT INTO retp_src VALUES (1, 'a'), (2, 'b');
-- age one row out of the window: it moves to the default partition
UPDATE retp_changes SET committed_at = now() - interval '20 days' WHERE seq = 1000;
CALL sequin_cdc.run_retention('retp_changes');
UPDATE retp_src SET v = 'b2' WHERE id = 2;
DELETE FROM retp_src WHERE id = 1;
SELECT sequin_cdc.wait_for_capture('retp_s');
SELECT action, record_pk, record->>'v' AS v, p.lo <= c.committed_at AND c.committed_at < p.hi AS in_its_day
  FROM retp_changes c JOIN retp_parts p ON p.part = c.tableoid::regclass
 WHERE source_table_name = 'retp_src' ORDER BY seq;
SELECT count(*) - :before_rows AS new_rows,
       count(*) FILTER (WHERE source_table_name <> 'retp_source' AND source_table_name <> 'retp_src') AS about_other_tables
  FROM retp_changes;
SELECT slot_name, changes_captured, errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'retp_s';
SELECT sequin_cdc.drop_slot('retp_s');
SELECT sequin_cdc.drop_change_retention(:retp_rule);
DROP PUBLICATION retp_pub;

------------------------------------------------------------------------------
-- drop_retention_policy: no job, no retention; the table stays with
-- pg_partman. Setting a policy again only sets the retention.
------------------------------------------------------------------------------
\set VERBOSITY default
SELECT sequin_cdc.drop_retention_policy('retp_changes');
\set VERBOSITY terse
SELECT count(*) AS jobs FROM cron.job WHERE jobname LIKE '%retp\_changes';
SELECT count(*) AS policies FROM sequin_cdc.retention_policies WHERE change_table = 'retp_changes'::regclass;
SELECT parent_table, retention FROM partman.part_config WHERE parent_table = 'public.retp_changes';
SELECT count(*) AS partitions FROM retp_parts WHERE lo IS NOT NULL \gset
SELECT sequin_cdc.set_retention_policy('retp_changes', '2 days', '0 * * * *') IS NOT NULL AS scheduled;
SELECT retention FROM partman.part_config WHERE parent_table = 'public.retp_changes';
SELECT count(*) = :partitions AS partitions_unchanged FROM retp_parts WHERE lo IS NOT NULL;
SELECT count(*) AS jobs, min(schedule) AS schedule FROM cron.job WHERE jobname LIKE '%retp\_changes';
SELECT sequin_cdc.drop_retention_policy('retp_changes');

-- clean up
SET client_min_messages = warning;
DROP EXTENSION pg_partman CASCADE;
DROP SCHEMA partman CASCADE;
RESET client_min_messages;
SELECT count(*) AS jobs FROM cron.job;
