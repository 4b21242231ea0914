SET synchronous_commit = on;
\set VERBOSITY terse
-- twophase: a prepared transaction is captured when, and only when, it is
-- committed (COMMIT PREPARED), at its place in commit order; a rolled back
-- prepared transaction leaves nothing.  Needs max_prepared_transactions > 0
-- (the test cluster sets it).

SELECT current_setting('max_prepared_transactions')::int > 0 AS prepared_transactions_enabled;

CREATE TABLE tp_t (id int PRIMARY KEY, v text);
ALTER TABLE tp_t REPLICA IDENTITY FULL;
INSERT INTO tp_t VALUES (0, 'before the rule');
SELECT sequin_cdc.create_publication('tp_p', ARRAY['tp_t']::regclass[]);
SELECT sequin_cdc.create_slot('tp_s', 'tp_p') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.tp_changes');
SELECT sequin_cdc.add_change_retention('tp_t', 'public.tp_changes') > 0 AS added;

-- prepared: nothing yet
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', '{"via": "2pc"}') IS NOT NULL AS emitted;
INSERT INTO tp_t VALUES (1, 'prepared');
UPDATE tp_t SET v = 'prepared, updated' WHERE id = 0;
PREPARE TRANSACTION 'tp_1';
SELECT sequin_cdc.wait_for_capture();
SELECT count(*) AS rows_while_prepared FROM tp_changes;

-- a transaction committed while tp_1 is still prepared comes first
INSERT INTO tp_t VALUES (2, 'committed while tp_1 was prepared');
SELECT sequin_cdc.wait_for_capture();
SELECT action, record_pk FROM tp_changes ORDER BY seq;

SELECT clock_timestamp() AS tp_before_commit \gset
COMMIT PREPARED 'tp_1';
SELECT clock_timestamp() AS tp_after_commit \gset

-- rolled back prepared transaction
BEGIN;
INSERT INTO tp_t VALUES (3, 'rolled back');
DELETE FROM tp_t WHERE id = 2;
PREPARE TRANSACTION 'tp_2';
ROLLBACK PREPARED 'tp_2';

INSERT INTO tp_t VALUES (4, 'after');
SELECT sequin_cdc.wait_for_capture();

SELECT action, record_pk, record, changes, transaction_annotations
  FROM tp_changes ORDER BY seq;
-- tp_1's rows carry the time of COMMIT PREPARED, one commit time
SELECT record_pk,
       committed_at >= :'tp_before_commit' AND committed_at <= :'tp_after_commit' AS at_commit_prepared
  FROM tp_changes WHERE transaction_annotations IS NOT NULL ORDER BY seq;
SELECT count(*) FILTER (WHERE seq <= prev_seq) AS seq_not_increasing,
       count(*) FILTER (WHERE committed_at < prev_committed) AS commit_time_going_back
  FROM (SELECT seq, committed_at,
               lag(seq) OVER (ORDER BY id) AS prev_seq,
               lag(committed_at) OVER (ORDER BY id) AS prev_committed
          FROM tp_changes) s;
SELECT count(*) AS prepared_left FROM pg_prepared_xacts WHERE gid LIKE 'tp\_%';

-- clean up
SELECT sequin_cdc.drop_slot('tp_s');
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name = 'tp_s' ORDER BY id;
