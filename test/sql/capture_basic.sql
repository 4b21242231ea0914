SET synchronous_commit = on;
\set VERBOSITY terse
-- capture_basic: inserts, updates and deletes land in the change table with
-- the right action, record, changes, record_pk, metadata and order; rolled
-- back work does not; action subsets, filters, several rules, dropping a rule
-- and transaction annotations behave as documented.  This file is the one
-- that uses the default change table sequin_cdc.changes.

CREATE TABLE cb_t (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new',
                   amount numeric, note text);
ALTER TABLE cb_t REPLICA IDENTITY FULL;
CREATE TABLE cb_ins (id int PRIMARY KEY, v text);
ALTER TABLE cb_ins REPLICA IDENTITY FULL;
CREATE TABLE cb_flt (id int PRIMARY KEY, status text, v int);
ALTER TABLE cb_flt REPLICA IDENTITY FULL;
CREATE TABLE cb_two (id int PRIMARY KEY, v text);
ALTER TABLE cb_two REPLICA IDENTITY FULL;
CREATE TABLE cb_drop (id int PRIMARY KEY, v text);
ALTER TABLE cb_drop REPLICA IDENTITY FULL;
CREATE TABLE cb_ann (id int PRIMARY KEY, v text);
ALTER TABLE cb_ann REPLICA IDENTITY FULL;
CREATE TABLE cb_fx (id int PRIMARY KEY, kind text, amount numeric, meta jsonb, tags text[]);
ALTER TABLE cb_fx REPLICA IDENTITY FULL;
CREATE TABLE cb_unretained (id int PRIMARY KEY, v text);  -- published, no rule
ALTER TABLE cb_unretained REPLICA IDENTITY FULL;

SELECT sequin_cdc.create_publication('cb_p',
    ARRAY['cb_t', 'cb_ins', 'cb_flt', 'cb_two', 'cb_drop', 'cb_ann', 'cb_fx', 'cb_unretained']::regclass[]);
SELECT sequin_cdc.create_slot('cb_s', 'cb_p') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.cb_changes');
SELECT sequin_cdc.create_change_table('public.cb_changes2');
SELECT sequin_cdc.create_change_table('public.cb_fx1');
SELECT sequin_cdc.create_change_table('public.cb_fx2');
SELECT sequin_cdc.create_change_table('public.cb_fx3');

-- a change made before the rule exists is not kept
INSERT INTO cb_t VALUES (0, 'before the rule');

-- default change table and actions
SELECT sequin_cdc.add_change_retention('cb_t') > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_ins', 'public.cb_changes', '{insert}') > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_flt', 'public.cb_changes',
                                       filter => 'status <> ''draft''') > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_two', 'public.cb_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_two', 'public.cb_changes2') > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_drop', 'public.cb_changes') AS cb_drop_rule \gset
SELECT sequin_cdc.add_change_retention('cb_ann', 'public.cb_changes') > 0 AS added;
-- filters with the operators of Sequin's column filters, and more
SELECT sequin_cdc.add_change_retention('cb_fx', 'public.cb_fx1',
    filter => $$kind IN ('a', 'b') AND amount > 100$$) > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_fx', 'public.cb_fx2',
    filter => $$meta->>'src' = 'web' OR meta @> '{"vip": true}' OR meta #>> '{x,y}' IS NOT NULL$$) > 0 AS added;
SELECT sequin_cdc.add_change_retention('cb_fx', 'public.cb_fx3',
    filter => $$'urgent' = ANY (tags) AND kind NOT IN ('z') AND lower(kind) LIKE 'a%'$$) > 0 AS added;
SELECT source_table, change_table, actions, filter, slot_name
  FROM sequin_cdc.change_retention ORDER BY id;

------------------------------------------------------------------------------
-- insert, update, delete; several statements in one transaction
------------------------------------------------------------------------------
BEGIN;
SELECT now() AS cb_tx1_start \gset
INSERT INTO cb_t VALUES (1, 'new', 10.50, NULL);
INSERT INTO cb_t VALUES (2, 'new', 20, 'second');
INSERT INTO cb_t VALUES (3, 'new', NULL, 'third');
COMMIT;
SELECT clock_timestamp() AS cb_tx1_end \gset

BEGIN;
SELECT now() AS cb_tx2_start \gset
UPDATE cb_t SET status = 'paid', amount = 11 WHERE id = 1;   -- two columns change
UPDATE cb_t SET note = 'now set' WHERE id = 1;               -- NULL -> value
UPDATE cb_t SET note = NULL WHERE id = 2;                    -- value -> NULL
UPDATE cb_t SET status = status WHERE id = 3;                -- nothing changes
UPDATE cb_t SET amount = 20.0 WHERE id = 2;                  -- numerically equal, text differs
DELETE FROM cb_t WHERE id = 3;
COMMIT;
SELECT clock_timestamp() AS cb_tx2_end \gset

UPDATE cb_t SET id = 100 WHERE id = 1;                       -- key change
INSERT INTO cb_unretained VALUES (1, 'not retained');

SELECT sequin_cdc.wait_for_capture();

SELECT action, record_pk, record, changes, transaction_annotations
  FROM sequin_cdc.changes WHERE source_table_name = 'cb_t' ORDER BY seq;

-- the rows of one transaction share its commit time, which is after its
-- start and before the client saw the commit; in commit order
SELECT action, record_pk,
       committed_at >= :'cb_tx1_start' AND committed_at <= :'cb_tx1_end' AS in_tx1,
       committed_at >= :'cb_tx2_start' AND committed_at <= :'cb_tx2_end' AS in_tx2
  FROM sequin_cdc.changes WHERE source_table_name = 'cb_t' ORDER BY seq;
SELECT count(DISTINCT committed_at) AS commit_times
  FROM sequin_cdc.changes WHERE source_table_name = 'cb_t';

-- metadata
SELECT count(*) AS n,
       bool_and(source_table_oid = 'cb_t'::regclass::oid) AS oid_ok,
       bool_and(source_table_schema = 'public') AS schema_ok,
       bool_and(source_database_id = (SELECT id FROM sequin_cdc.database_identity)) AS db_ok,
       bool_and(inserted_at IS NOT NULL AND inserted_at >= committed_at) AS inserted_ok,
       bool_and(id = seq) AS id_is_seq,
       count(DISTINCT seq) = count(*) AS seq_unique
  FROM sequin_cdc.changes WHERE source_table_name = 'cb_t';

-- seq strictly increasing in id order, commit times never going back
SELECT count(*) FILTER (WHERE seq <= prev_seq) AS seq_not_increasing,
       count(*) FILTER (WHERE committed_at < prev_committed) AS commit_time_going_back
  FROM (SELECT seq, committed_at,
               lag(seq) OVER (ORDER BY id) AS prev_seq,
               lag(committed_at) OVER (ORDER BY id) AS prev_committed
          FROM sequin_cdc.changes) s;

-- nothing of a table without a rule, nothing of another change table
SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name <> 'cb_t';
SELECT count(*) FROM public.cb_changes WHERE source_table_name IN ('cb_t', 'cb_unretained');

------------------------------------------------------------------------------
-- rolled back work is not captured
------------------------------------------------------------------------------
BEGIN;
INSERT INTO cb_t VALUES (10, 'kept');
SAVEPOINT a;
INSERT INTO cb_t VALUES (11, 'rolled back to savepoint');
UPDATE cb_t SET note = 'rolled back update' WHERE id = 10;
ROLLBACK TO a;
INSERT INTO cb_t VALUES (12, 'kept after rollback to savepoint');
SAVEPOINT b;
INSERT INTO cb_t VALUES (13, 'released savepoint');
RELEASE b;
COMMIT;
BEGIN;
INSERT INTO cb_t VALUES (20, 'rolled back');
DELETE FROM cb_t WHERE id = 2;
ROLLBACK;
SELECT sequin_cdc.wait_for_capture();
SELECT action, record_pk, record->>'status' AS status
  FROM sequin_cdc.changes WHERE source_table_name = 'cb_t' AND seq > (
       SELECT max(seq) FROM sequin_cdc.changes
        WHERE source_table_name = 'cb_t' AND record_pk = '100')
 ORDER BY seq;

------------------------------------------------------------------------------
-- actions subset: only inserts
------------------------------------------------------------------------------
INSERT INTO cb_ins VALUES (1, 'a'), (2, 'b');
UPDATE cb_ins SET v = 'a2' WHERE id = 1;
DELETE FROM cb_ins WHERE id = 2;
INSERT INTO cb_ins VALUES (3, 'c');

------------------------------------------------------------------------------
-- filter status <> 'draft': new row for insert/update, old row for delete
------------------------------------------------------------------------------
INSERT INTO cb_flt VALUES (1, 'draft', 1), (2, 'live', 2), (3, NULL, 3), (4, 'live', 4);
UPDATE cb_flt SET status = 'live', v = 11 WHERE id = 1;    -- draft -> live: kept
UPDATE cb_flt SET status = 'draft', v = 12 WHERE id = 2;   -- live -> draft: not kept
UPDATE cb_flt SET v = 13 WHERE id = 3;                     -- NULL status: not kept
DELETE FROM cb_flt WHERE id = 1;                           -- old row live: kept
DELETE FROM cb_flt WHERE id = 2;                           -- old row draft: not kept
DELETE FROM cb_flt WHERE id = 3;                           -- old row NULL: not kept

INSERT INTO cb_fx VALUES
    (1, 'a', 150, '{"src": "web"}', '{urgent}'),
    (2, 'b', 50, '{"vip": true}', '{}'),
    (3, 'c', 500, '{"x": {"y": 1}}', NULL),
    (4, 'A', 1, NULL, '{urgent,x}'),
    (5, NULL, NULL, NULL, NULL);

------------------------------------------------------------------------------
-- two rules on one table: each change table gets its own copy
------------------------------------------------------------------------------
INSERT INTO cb_two VALUES (1, 'one');
UPDATE cb_two SET v = 'uno' WHERE id = 1;
DELETE FROM cb_two WHERE id = 1;

------------------------------------------------------------------------------
-- drop_change_retention: nothing from its commit on
------------------------------------------------------------------------------
INSERT INTO cb_drop VALUES (1, 'before drop');
SELECT sequin_cdc.drop_change_retention(:cb_drop_rule);
INSERT INTO cb_drop VALUES (2, 'after drop');
UPDATE cb_drop SET v = 'after drop' WHERE id = 1;
BEGIN;
INSERT INTO cb_drop VALUES (3, 'after drop, other transaction');
COMMIT;

------------------------------------------------------------------------------
-- transaction annotations
------------------------------------------------------------------------------
BEGIN;
INSERT INTO cb_ann VALUES (1, 'before the message');
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set',
                               '{"user": "alice", "request": 42}') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (2, 'annotated');
UPDATE cb_ann SET v = 'annotated update' WHERE id = 1;
COMMIT;
INSERT INTO cb_ann VALUES (3, 'next transaction: none');
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set',
                               'not json at all') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (4, 'text annotation');
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set',
                               '["second", "wins"]') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (5, 'replaced annotation');
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.clear', '') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (6, 'cleared');
COMMIT;
BEGIN;
-- not transactional, other prefix: ignored
SELECT pg_logical_emit_message(false, 'sequin:transaction_annotations.set', '{"ignored": true}') IS NOT NULL AS emitted;
SELECT pg_logical_emit_message(true, 'other:prefix', '{"ignored": true}') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (7, 'no annotation');
COMMIT;
-- an annotated transaction that rolls back leaves nothing behind
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', '{"user": "mallory"}') IS NOT NULL AS emitted;
INSERT INTO cb_ann VALUES (8, 'rolled back');
ROLLBACK;
INSERT INTO cb_ann VALUES (9, 'after a rolled back annotation');
-- set inside a savepoint that is rolled back: gone with it
BEGIN;
SAVEPOINT s1;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', '{"user": "undone"}') IS NOT NULL AS emitted;
ROLLBACK TO s1;
INSERT INTO cb_ann VALUES (10, 'annotation rolled back with its savepoint');
COMMIT;

SELECT sequin_cdc.wait_for_capture();

SELECT source_table_name, action, record_pk, record, changes
  FROM public.cb_changes WHERE source_table_name IN ('cb_ins', 'cb_flt') ORDER BY seq;
SELECT tbl, action, record_pk, record, changes FROM (
    SELECT 'cb_changes' AS tbl, seq, action, record_pk, record, changes
      FROM public.cb_changes WHERE source_table_name = 'cb_two'
    UNION ALL
    SELECT 'cb_changes2', seq, action, record_pk, record, changes
      FROM public.cb_changes2 WHERE source_table_name = 'cb_two') s
 ORDER BY tbl, seq;
SELECT count(*) AS all_rows, bool_and(id = seq) AS id_is_seq FROM public.cb_changes2;
SELECT 'cb_fx1' AS tbl, string_agg(record_pk, ',' ORDER BY seq) AS kept FROM public.cb_fx1
UNION ALL
SELECT 'cb_fx2', string_agg(record_pk, ',' ORDER BY seq) FROM public.cb_fx2
UNION ALL
SELECT 'cb_fx3', string_agg(record_pk, ',' ORDER BY seq) FROM public.cb_fx3
ORDER BY 1;
SELECT action, record_pk, record FROM public.cb_changes
 WHERE source_table_name = 'cb_drop' ORDER BY seq;
SELECT action, record_pk, record->>'v' AS v, transaction_annotations
  FROM public.cb_changes WHERE source_table_name = 'cb_ann' ORDER BY seq;
SELECT jsonb_typeof(transaction_annotations) AS kind, count(*)
  FROM public.cb_changes WHERE source_table_name = 'cb_ann'
 GROUP BY 1 ORDER BY 1;

-- one sequence over the whole change table, in commit order
SELECT count(*) FILTER (WHERE seq <= prev_seq) AS seq_not_increasing,
       count(*) FILTER (WHERE committed_at < prev_committed) AS commit_time_going_back,
       count(*) = count(DISTINCT seq) AS seq_unique,
       bool_and(id = seq) AS id_is_seq
  FROM (SELECT id, seq, committed_at,
               lag(seq) OVER (ORDER BY id) AS prev_seq,
               lag(committed_at) OVER (ORDER BY id) AS prev_committed
          FROM public.cb_changes) s;

------------------------------------------------------------------------------
-- many transactions decoded in one go, on a wide table: what the decoder
-- caches about a table must outlive each decoded transaction
------------------------------------------------------------------------------
DO $$ BEGIN
  EXECUTE (SELECT format('CREATE TABLE cb_wide (id int PRIMARY KEY, %s)',
                         string_agg(format('c%s int', i), ', ' ORDER BY i))
             FROM generate_series(1, 60) i);
END $$;
ALTER TABLE cb_wide REPLICA IDENTITY FULL;
ALTER PUBLICATION cb_p ADD TABLE cb_wide;
SELECT sequin_cdc.add_change_retention('cb_wide', 'public.cb_changes') > 0 AS added;
DO $$ BEGIN
  FOR i IN 1..30 LOOP
    INSERT INTO cb_wide (id, c1, c60) VALUES (i, i, -i);
    COMMIT;
  END LOOP;
END $$;
UPDATE cb_wide SET c30 = id WHERE id <= 10;
DELETE FROM cb_wide WHERE id > 25;
SELECT sequin_cdc.wait_for_capture();
SELECT action, count(*), sum((record->>'c1')::int) AS sum_c1, sum((record->>'c60')::int) AS sum_c60,
       count(*) FILTER (WHERE jsonb_typeof(record) = 'object' AND record ?& ARRAY['id', 'c1', 'c30', 'c60']) AS complete
  FROM public.cb_changes WHERE source_table_name = 'cb_wide' GROUP BY action ORDER BY action;

------------------------------------------------------------------------------
-- pg_stat_capture
------------------------------------------------------------------------------
SELECT slot_name, database = current_database() AS this_db, pid IS NOT NULL AS has_pid,
       state, changes_captured > 0 AS changes, transactions_captured > 0 AS transactions,
       changes_captured >= transactions_captured AS counts_consistent,
       last_decoded_lsn IS NOT NULL AS decoded, confirmed_flush_lsn IS NOT NULL AS confirmed,
       lag_bytes >= 0 AS lag_ok, last_commit_time IS NOT NULL AS commit_time,
       errors, last_error, last_error_time, active, wal_status IS NOT NULL AS wal_status
  FROM sequin_cdc.pg_stat_capture ORDER BY slot_name;
-- every captured row was counted
SELECT changes_captured = (SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name LIKE 'cb\_%')
                         + (SELECT count(*) FROM public.cb_changes)
                         + (SELECT count(*) FROM public.cb_changes2)
                         + (SELECT count(*) FROM public.cb_fx1)
                         + (SELECT count(*) FROM public.cb_fx2)
                         + (SELECT count(*) FROM public.cb_fx3) AS counted
  FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'cb_s';

-- clean up: slot and rules (sequin_cdc.changes stays free for other slots)
SELECT sequin_cdc.drop_slot('cb_s');
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name = 'cb_s' ORDER BY id;
SELECT count(*) FROM sequin_cdc.pg_stat_capture;
