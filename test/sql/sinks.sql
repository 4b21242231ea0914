SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- sinks: the SQL API of webhook sinks.  Bad input gets an errcode (printed
-- from LAST_ERROR_SQLSTATE) and a hint; create/pause/drop; pg_stat_sinks
-- never shows headers or URL credentials; sequin_cdc.sinks is closed to
-- PUBLIC and, for granted roles, limited to their own sinks; replay_sink and
-- replay_sink_from_seq rewind the cursor (never forward) and return how
-- many delivered changes will be sent again.  Sinks are created paused in
-- the same transaction, so no worker starts and no HTTP request is made
-- (delivery is tested against a real receiver in test/t/007_webhook.pl).

-- A change table with known rows, written directly as the capture worker
-- would: seq 1..20, committed in hours 0 (seq 1-4), 1 (5-9), 2 (10-14),
-- 3 (15-19) and 4 (20).
SELECT sequin_cdc.create_change_table('public.sk_changes');
INSERT INTO public.sk_changes (id, seq, source_database_id, source_table_oid,
    source_table_schema, source_table_name, record_pk, record, action, committed_at)
SELECT g, g, (SELECT id FROM sequin_cdc.database_identity), 1, 'public', 't', g::text,
       jsonb_build_object('id', g), 'insert',
       timestamptz '2024-01-01 00:00:00+00' + (g / 5) * interval '1 hour'
  FROM generate_series(1, 20) g;
CREATE TABLE sk_plain (id int PRIMARY KEY);

------------------------------------------------------------------------------
-- Bad input
------------------------------------------------------------------------------
\set VERBOSITY default
-- URLs
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'ftp://example.com/hook', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'example.com/hook', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'http://exa mple.com/', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', NULL, 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
-- names
SELECT sequin_cdc.create_webhook_sink('  ', 'https://example.com/hook', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
-- headers
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '["Authorization", "x"]');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '"Bearer x"');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '{"X-Retries": 3}');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '{"Bad Name": "x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '{"Content-Length": "1"}');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', '{"X-Evil": "a\r\nHost: other"}');
\echo :LAST_ERROR_SQLSTATE
-- batch_size and timeout_ms
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', batch_size => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', batch_size => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', batch_size => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', batch_size => 10001);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'public.sk_changes', timeout_ms => 0);
\echo :LAST_ERROR_SQLSTATE
-- change tables: an ordinary table, a table that does not exist
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'sk_plain');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.create_webhook_sink('sk_bad', 'https://example.com/hook', 'no_such_table');
\echo :LAST_ERROR_SQLSTATE
-- unknown sinks
SELECT sequin_cdc.drop_sink('sk_nope');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.pause_sink('sk_nope');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.resume_sink(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.replay_sink('sk_nope', now());
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.replay_sink_from_seq('sk_nope', 1);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT count(*) AS sinks FROM sequin_cdc.sinks;

------------------------------------------------------------------------------
-- Create (paused, so that no worker runs), inspect, duplicates
------------------------------------------------------------------------------
BEGIN;
SELECT sequin_cdc.create_webhook_sink('sk_a', 'https://user:pw@example.com:8443/hooks/a?token=s3cr3t#frag',
    'public.sk_changes', '{"Authorization": "Bearer s3cr3t", "X-Team": "orders"}', 10, 2000) > 0 AS created;
SELECT sequin_cdc.pause_sink('sk_a');
COMMIT;
BEGIN;
SELECT sequin_cdc.create_webhook_sink('sk_default', 'http://127.0.0.1:1/') > 0 AS created;
SELECT sequin_cdc.pause_sink('sk_default');
COMMIT;

-- the configuration, headers included, is in the table
SELECT name, url, change_table, headers, batch_size, timeout_ms, state, owner = current_user::regrole AS mine
  FROM sequin_cdc.sinks ORDER BY name;
-- defaults: the default change table, starting after its last change
SELECT change_table, batch_size, timeout_ms,
       cursor_seq = (SELECT coalesce(max(seq), 0) FROM sequin_cdc.changes) AS starts_now
  FROM sequin_cdc.sinks WHERE name = 'sk_default';

SELECT name, state, worker_pid, endpoint, change_table, batch_size, timeout_ms
  FROM sequin_cdc.pg_stat_sinks ORDER BY name;
-- a new sink starts after the last change of its change table
SELECT cursor_seq, backlog, delivered, requests, failed_attempts, consecutive_failures,
       last_http_status, last_error, last_failure_at, last_success_at
  FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
-- no headers, no URL (credentials) in the view
SELECT attname FROM pg_attribute
 WHERE attrelid = 'sequin_cdc.pg_stat_sinks'::regclass AND attnum > 0 ORDER BY attnum;
SELECT sequin_cdc._sink_endpoint('https://user:pw@example.com:8443/a/b?token=x#f') AS endpoint,
       sequin_cdc._sink_endpoint('http://[::1]:8080') AS ipv6,
       sequin_cdc._sink_endpoint('no url') AS invalid;

\set VERBOSITY default
SELECT sequin_cdc.create_webhook_sink('sk_a', 'https://example.com/other', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse

------------------------------------------------------------------------------
-- Replay: the cursor is at 20 (the last change when the sink was created)
------------------------------------------------------------------------------
-- from a seq: 18, 19, 20 again
SELECT sequin_cdc.replay_sink_from_seq('sk_a', 18) AS resent;
SELECT cursor_seq, backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
\set VERBOSITY default
-- never forward: seq 20 has not been delivered any more
SELECT sequin_cdc.replay_sink_from_seq('sk_a', 20);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.replay_sink_from_seq('sk_a', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.replay_sink('sk_a', NULL);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
-- since 02:00: seq 10..17 were delivered and will be sent again
SELECT sequin_cdc.replay_sink('sk_a', '2024-01-01 02:00:00+00') AS resent;
SELECT cursor_seq, backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
-- since 03:00: starts after the cursor, nothing to send again, no change
SELECT sequin_cdc.replay_sink('sk_a', '2024-01-01 03:00:00+00') AS resent;
SELECT cursor_seq, backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
-- between two commits: from the first change committed at or after it
SELECT sequin_cdc.replay_sink('sk_a', '2024-01-01 00:30:00+00') AS resent;
SELECT cursor_seq, backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
-- everything retained; rows deleted by retention are not counted
DELETE FROM public.sk_changes WHERE seq <= 2;
SELECT sequin_cdc.replay_sink('sk_a', '-infinity') AS resent;
SELECT cursor_seq, backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a';
-- in the future: nothing
SELECT sequin_cdc.replay_sink('sk_a', '2030-01-01 00:00:00+00') AS resent;
-- each rewind starts a new Idempotency-Key epoch
SELECT replay_epoch FROM sequin_cdc.sinks WHERE name = 'sk_a';

------------------------------------------------------------------------------
-- Privileges: PUBLIC cannot read sinks (headers are secrets); a granted role
-- manages its own sinks only
------------------------------------------------------------------------------
CREATE ROLE regress_sink_user;
GRANT USAGE ON SCHEMA sequin_cdc TO regress_sink_user;
SET ROLE regress_sink_user;
SELECT headers FROM sequin_cdc.sinks;
\set VERBOSITY default
SELECT sequin_cdc.create_webhook_sink('sk_user', 'https://example.com/u', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
RESET ROLE;
GRANT SELECT ON sequin_cdc.change_tables TO regress_sink_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.sinks TO regress_sink_user;
GRANT USAGE ON SEQUENCE sequin_cdc.sinks_id_seq TO regress_sink_user;
GRANT SELECT ON sequin_cdc.pg_stat_sinks TO regress_sink_user;
SET ROLE regress_sink_user;
\set VERBOSITY default
-- it must be able to read the change table
SELECT sequin_cdc.create_webhook_sink('sk_user', 'https://example.com/u', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
RESET ROLE;
GRANT SELECT ON public.sk_changes TO regress_sink_user;
SET ROLE regress_sink_user;
BEGIN;
SELECT sequin_cdc.create_webhook_sink('sk_user', 'https://example.com/u', 'public.sk_changes',
    '{"Authorization": "Bearer mine"}') > 0 AS created;
SELECT sequin_cdc.pause_sink('sk_user');
COMMIT;
-- its own row only, headers included
SELECT name, headers, owner FROM sequin_cdc.sinks ORDER BY name;
-- the view shows every sink, without secrets
SELECT name, endpoint, state FROM sequin_cdc.pg_stat_sinks ORDER BY name;
\set VERBOSITY default
-- other roles' sinks are invisible to it
SELECT sequin_cdc.drop_sink('sk_a');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc._start_sink((SELECT id FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a'));
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc._stop_sink((SELECT id FROM sequin_cdc.pg_stat_sinks WHERE name = 'sk_a'));
\echo :LAST_ERROR_SQLSTATE
-- a name taken by another role's (hidden) sink
BEGIN;
SELECT sequin_cdc.create_webhook_sink('sk_a', 'https://example.com/u', 'public.sk_changes');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
\set VERBOSITY terse
SELECT sequin_cdc.replay_sink('sk_user', '-infinity') AS resent;
SELECT sequin_cdc.drop_sink('sk_user');
RESET ROLE;
SELECT name FROM sequin_cdc.sinks ORDER BY name;
REVOKE ALL ON sequin_cdc.sinks, sequin_cdc.change_tables, sequin_cdc.pg_stat_sinks, public.sk_changes
  FROM regress_sink_user;
REVOKE ALL ON SEQUENCE sequin_cdc.sinks_id_seq FROM regress_sink_user;
REVOKE ALL ON SCHEMA sequin_cdc FROM regress_sink_user;
DROP ROLE regress_sink_user;

------------------------------------------------------------------------------
-- Drop
------------------------------------------------------------------------------
SELECT sequin_cdc.drop_sink('sk_a');
SELECT sequin_cdc.drop_sink('sk_default');
SELECT count(*) AS sinks FROM sequin_cdc.sinks;
SELECT count(*) AS rows_kept FROM public.sk_changes;

DROP TABLE sk_plain;
DELETE FROM sequin_cdc.change_tables WHERE change_table = 'public.sk_changes'::regclass;
DROP TABLE public.sk_changes;
