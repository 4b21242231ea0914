SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- api_errors: every bad input to the SQL API gets its own error (and, where
-- the user has to act, a hint); health() reports a non-FULL retained table.

CREATE TABLE ae_t (id int PRIMARY KEY, v text);
ALTER TABLE ae_t REPLICA IDENTITY FULL;
CREATE TABLE ae_t2 (id int PRIMARY KEY, v text);     -- replica identity DEFAULT
CREATE TABLE ae_nopk (id int, v text);
CREATE TABLE ae_other (id int PRIMARY KEY, v text);  -- in no publication
CREATE VIEW ae_view AS SELECT * FROM ae_t;

------------------------------------------------------------------------------
-- create_publication
------------------------------------------------------------------------------
SELECT sequin_cdc.create_publication('ae_p', ARRAY['ae_t', 'ae_t2', 'ae_nopk']::regclass[]);
SELECT pubname, puballtables, pubviaroot FROM pg_publication WHERE pubname = 'ae_p';
SELECT tablename FROM pg_publication_tables WHERE pubname = 'ae_p' ORDER BY 1;
\set VERBOSITY default
SELECT sequin_cdc.create_publication('ae_p', ARRAY['ae_t']::regclass[]);
\set VERBOSITY terse
SELECT sequin_cdc.create_publication('ae_p0', ARRAY[]::regclass[]);
SELECT sequin_cdc.create_publication('ae_p0', schemas => ARRAY[]::name[]);
SELECT sequin_cdc.create_publication(NULL);
SELECT count(*) FROM pg_publication WHERE pubname = 'ae_p0';

------------------------------------------------------------------------------
-- add_change_retention before any slot exists
------------------------------------------------------------------------------
SELECT sequin_cdc.create_change_table('public.ae_changes');
\set VERBOSITY default
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes');
\set VERBOSITY terse

------------------------------------------------------------------------------
-- create_slot
------------------------------------------------------------------------------
\set VERBOSITY default
-- the publication does not exist
SELECT sequin_cdc.create_slot('ae_s', 'ae_missing');
\set VERBOSITY terse
SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ae_s';
SELECT sequin_cdc.create_slot('ae_s', 'ae_p') IS NOT NULL AS created;
SELECT slot_name, plugin, slot_type, database = current_database() AS this_db
  FROM pg_replication_slots WHERE slot_name = 'ae_s';
SELECT slot_name, publication FROM sequin_cdc.slots ORDER BY 1;
\set VERBOSITY default
-- the name is taken
SELECT sequin_cdc.create_slot('ae_s', 'ae_p');
-- not a valid slot name
SELECT sequin_cdc.create_slot('AE-bad', 'ae_p');
-- inside a transaction block
BEGIN;
SELECT sequin_cdc.create_slot('ae_s_txn', 'ae_p');
ROLLBACK;
\set VERBOSITY terse
SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('AE-bad', 'ae_s_txn');

-- a role without REPLICATION (given USAGE on the schema so that it reaches
-- the function at all)
CREATE ROLE ae_r NOLOGIN;
GRANT USAGE ON SCHEMA sequin_cdc TO ae_r;
SET ROLE ae_r;
\set VERBOSITY default
SELECT sequin_cdc.create_slot('ae_s_role', 'ae_p');
SELECT sequin_cdc.drop_slot('ae_s');
\set VERBOSITY terse
RESET ROLE;
SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('ae_s', 'ae_s_role');
REVOKE USAGE ON SCHEMA sequin_cdc FROM ae_r;
DROP ROLE ae_r;

------------------------------------------------------------------------------
-- create_change_table
------------------------------------------------------------------------------
\set VERBOSITY default
SELECT sequin_cdc.create_change_table('public.ae_changes');
\set VERBOSITY terse
SELECT sequin_cdc.create_change_table('ae_t');
SELECT sequin_cdc.create_change_table('a.b.c');
SELECT sequin_cdc.create_change_table('"unterminated');
SELECT sequin_cdc.create_change_table('');
SELECT sequin_cdc.create_change_table(NULL);
SELECT sequin_cdc.create_change_table('ae_nosuchschema.x');
-- an unqualified name goes to the caller's first schema, as CREATE TABLE does
SELECT sequin_cdc.create_change_table('ae_plain_changes');
SELECT n.nspname, c.relname
  FROM sequin_cdc.change_tables ct
  JOIN pg_class c ON c.oid = ct.change_table
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname LIKE 'ae\_%'
 ORDER BY 1, 2;

------------------------------------------------------------------------------
-- add_change_retention
------------------------------------------------------------------------------
\set VERBOSITY default
-- not in the slot's publication
SELECT sequin_cdc.add_change_retention('ae_other', 'public.ae_changes');
-- no primary key
SELECT sequin_cdc.add_change_retention('ae_nopk', 'public.ae_changes');
-- unknown action
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', '{upsert}');
-- a volatile filter
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'random() > 0.5');
\set VERBOSITY terse
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', '{}');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', '{insert,NULL}');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', NULL);
-- filters: a syntax error points into the filter text, not elsewhere
\set VERBOSITY default
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'v = = 1');
\set VERBOSITY terse
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'id > 1; DROP TABLE ae_t');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'nosuch = 1');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'now() > ''2020-01-01''');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'id IN (SELECT 1)');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'count(*) > 1');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'id');
-- the decoder resolves columns only: no whole-row reference, no system column
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'ae_t IS NOT NULL');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => 'xmin <> ''0''');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', filter => '(ae_t).v = ''x''');
-- sources that must not be captured
SELECT sequin_cdc.add_change_retention('public.ae_changes', 'public.ae_changes');
SELECT sequin_cdc.add_change_retention('sequin_cdc.changes', 'public.ae_changes');
SELECT sequin_cdc.add_change_retention('sequin_cdc.slots', 'public.ae_changes');
SELECT sequin_cdc.add_change_retention('ae_view', 'public.ae_changes');
-- a change_table that is not a change table
SELECT sequin_cdc.add_change_retention('ae_t', 'ae_other');
SELECT sequin_cdc.add_change_retention('ae_t', 'ae_nosuch_changes');
SELECT sequin_cdc.add_change_retention('ae_t', NULL);
-- a slot that does not exist
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes', slot => 'ae_nosuch');
-- nothing of the above left a rule
SELECT count(*) FROM sequin_cdc.change_retention;

-- the good one, then the same again
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes') AS ae_rule \gset
SELECT source_table, change_table, actions, filter, slot_name
  FROM sequin_cdc.change_retention ORDER BY id;
\set VERBOSITY default
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes') IS NOT NULL;
\set VERBOSITY terse

-- replica identity not FULL: a WARNING, and the rule is added
\set VERBOSITY default
SELECT sequin_cdc.add_change_retention('ae_t2', 'public.ae_changes') > 0 AS added;
\set VERBOSITY terse
SELECT count(*) FROM sequin_cdc.change_retention WHERE source_table = 'ae_t2'::regclass;

-- health(): one slot, a FULL and a non-FULL retained table
SELECT sequin_cdc.wait_for_capture();
SELECT check_name, status FROM sequin_cdc.health() ORDER BY 1;

-- two slots: the slot must be named
SELECT sequin_cdc.create_publication('ae_p2', ARRAY['ae_t']::regclass[]);
SELECT sequin_cdc.create_slot('ae_s2', 'ae_p2') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.ae_changes2');
\set VERBOSITY default
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes2');
\set VERBOSITY terse
-- a change table is fed by one slot only
SELECT sequin_cdc.add_change_retention('ae_other', 'public.ae_changes', slot => 'ae_s2');
SELECT sequin_cdc.add_change_retention('ae_t', 'public.ae_changes2', slot => 'ae_s2') > 0 AS added;
SELECT source_table, change_table, slot_name
  FROM sequin_cdc.change_retention ORDER BY id;

------------------------------------------------------------------------------
-- drop_change_retention
------------------------------------------------------------------------------
SELECT sequin_cdc.drop_change_retention(-1);
SELECT sequin_cdc.drop_change_retention(:ae_rule);
SELECT sequin_cdc.drop_change_retention(:ae_rule);
SELECT source_table, change_table FROM sequin_cdc.change_retention ORDER BY id;

------------------------------------------------------------------------------
-- drop_slot
------------------------------------------------------------------------------
\set VERBOSITY default
SELECT sequin_cdc.drop_slot('ae_nosuch');
\set VERBOSITY terse
SELECT 'created' FROM pg_create_logical_replication_slot('ae_td', 'test_decoding');
SELECT sequin_cdc.drop_slot('ae_td');
SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ae_td';
SELECT pg_drop_replication_slot('ae_td');
SELECT sequin_cdc.wait_for_capture('ae_nosuch');

-- a slot of our plugin is consumed by its capture worker only
SELECT 'created' FROM pg_create_logical_replication_slot('ae_raw', 'sequin_cdc');
SELECT count(*) FROM pg_logical_slot_peek_changes('ae_raw', NULL, NULL);
SELECT count(*) FROM pg_logical_slot_get_binary_changes('ae_raw', NULL, NULL);
SELECT pg_drop_replication_slot('ae_raw');

-- clean up
SELECT sequin_cdc.drop_slot('ae_s');
SELECT sequin_cdc.drop_slot('ae_s2');
SELECT sequin_cdc.drop_slot('ae_s');
SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ae\_%';
SELECT count(*) FROM sequin_cdc.slots;
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name IN ('ae_s', 'ae_s2') ORDER BY id;
SELECT check_name, status FROM sequin_cdc.health() ORDER BY 1;
