SET synchronous_commit = on;
\set VERBOSITY terse
\set SHOW_CONTEXT never
-- backfill: bad input to backfill() and cancel_backfill() gets an errcode
-- (printed from LAST_ERROR_SQLSTATE) and a hint; a backfill writes every row
-- of the table as one 'read' row whose record is to_jsonb of the row, in
-- chunks of chunk_size (keyset pagination, also over a composite key), and
-- pg_stat_backfills shows it completed with the right counters; "where"
-- backfills a subset; rule filters apply to read rows; change_table limits a
-- backfill to one change table.  Change tables of their own: capture_basic
-- owns sequin_cdc.changes.

-- The capture worker renders read rows with the database's settings (as
-- row_format.sql does): pin them so that to_jsonb() here is comparable.
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'UTC');
  EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'ISO, MDY');
END $$;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';

CREATE TABLE bf_t (id int PRIMARY KEY, dropme int, v text, n numeric(10,2), ts timestamptz,
                   j jsonb, tags text[], flag bool);
ALTER TABLE bf_t REPLICA IDENTITY FULL;
ALTER TABLE bf_t DROP COLUMN dropme;     -- read rows leave dropped columns out
CREATE TABLE bf_ck (a int, b text, v int, PRIMARY KEY (a, b));   -- composite key
ALTER TABLE bf_ck REPLICA IDENTITY FULL;
CREATE TABLE bf_part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE bf_part_1 PARTITION OF bf_part FOR VALUES FROM (0) TO (5);
CREATE TABLE bf_part_2 PARTITION OF bf_part FOR VALUES FROM (5) TO (100);
ALTER TABLE bf_part REPLICA IDENTITY FULL;
ALTER TABLE bf_part_1 REPLICA IDENTITY FULL;
ALTER TABLE bf_part_2 REPLICA IDENTITY FULL;
CREATE TABLE bf_empty (id int PRIMARY KEY, v text);
ALTER TABLE bf_empty REPLICA IDENTITY FULL;
CREATE TABLE bf_nopk (id int, v text);
CREATE TABLE bf_norule (id int PRIMARY KEY, v text);             -- published, no rule
ALTER TABLE bf_norule REPLICA IDENTITY FULL;

SELECT sequin_cdc.create_publication('bf_p',
    ARRAY['bf_t', 'bf_ck', 'bf_part', 'bf_empty', 'bf_nopk', 'bf_norule']::regclass[]);
SELECT sequin_cdc.create_slot('bf_s', 'bf_p') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.bf_changes');
SELECT sequin_cdc.create_change_table('public.bf_even');
SELECT sequin_cdc.create_change_table('public.bf_unused');

-- the rows exist before the rules: the change tables only learn of them
-- through a backfill
INSERT INTO bf_t
SELECT g, 'row ' || g, g * 1.5, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour',
       jsonb_build_object('g', g, 'odd', g % 2 = 1, 'nested', jsonb_build_array(g, 'x')),
       ARRAY['t' || g, 'u'], CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END
  FROM generate_series(1, 50) g;
UPDATE bf_t SET v = NULL, n = NULL, j = NULL WHERE id = 7;
-- a value stored out of line (TOAST): the read row has the value itself
UPDATE bf_t SET v = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g) WHERE id = 50;
INSERT INTO bf_part SELECT g, 'p' || g FROM generate_series(1, 10) g;
INSERT INTO bf_ck SELECT g / 4, 'k' || (g % 4) || CASE WHEN g % 2 = 0 THEN ' "quoted", comma' ELSE '' END, g
  FROM generate_series(0, 21) g;
ANALYZE bf_t;   -- reltuples = 50 exactly: estimated_total is deterministic
ANALYZE bf_ck;
ANALYZE bf_empty;

SELECT sequin_cdc.add_change_retention('bf_t', 'public.bf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('bf_ck', 'public.bf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('bf_part', 'public.bf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('bf_empty', 'public.bf_changes') > 0 AS added;

-- Wait (up to 30 s) until a backfill is no longer running; returns its state.
CREATE FUNCTION bf_wait(bf bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    FOR i IN 1 .. 600 LOOP
        SELECT b.state INTO st FROM sequin_cdc.pg_stat_backfills b WHERE b.id = bf;
        EXIT WHEN st IS DISTINCT FROM 'running';
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN st;
END
$$;

------------------------------------------------------------------------------
-- bad input
------------------------------------------------------------------------------
\set VERBOSITY default
-- unknown table: the regclass cast fails before backfill() runs
SELECT sequin_cdc.backfill('bf_nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.backfill(NULL);
\echo :LAST_ERROR_SQLSTATE
-- no primary key
SELECT sequin_cdc.backfill('bf_nopk');
\echo :LAST_ERROR_SQLSTATE
-- no retention rule
SELECT sequin_cdc.backfill('bf_norule');
\echo :LAST_ERROR_SQLSTATE
-- a change table that no rule of the table writes to
SELECT sequin_cdc.backfill('bf_t', 'public.bf_unused');
\echo :LAST_ERROR_SQLSTATE
-- chunk_size out of range
SELECT sequin_cdc.backfill('bf_t', chunk_size => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.backfill('bf_t', chunk_size => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.backfill('bf_t', chunk_size => NULL);
\echo :LAST_ERROR_SQLSTATE
-- invalid conditions
SELECT sequin_cdc.backfill('bf_t', "where" => 'no_such_column > 1');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.backfill('bf_t', "where" => 'id +');
\echo :LAST_ERROR_SQLSTATE
SELECT sequin_cdc.backfill('bf_t', "where" => 'id');
\echo :LAST_ERROR_SQLSTATE
-- cancel_backfill of a backfill that does not exist
SELECT sequin_cdc.cancel_backfill(424242);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
-- nothing was registered by the failed calls
SELECT count(*) AS backfills FROM sequin_cdc.backfills;

------------------------------------------------------------------------------
-- a whole table, 7 rows a chunk: 50 read rows, 8 chunks
------------------------------------------------------------------------------
SELECT sequin_cdc.backfill('bf_t', chunk_size => 7) AS bf1 \gset
SELECT :bf1 > 0 AS has_id;
SELECT bf_wait(:bf1);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT table_name, change_table, state, rows_processed, estimated_total, chunks, where_clause,
       started_at <= finished_at AS times_ok, last_error
  FROM sequin_cdc.pg_stat_backfills WHERE id = :bf1;
SELECT action, count(*), count(DISTINCT record_pk) AS keys, min(record_pk::int), max(record_pk::int)
  FROM public.bf_changes GROUP BY action ORDER BY action;
-- record is to_jsonb of the row, record_pk its key, metadata like a change's
SELECT count(*) AS same_as_table FROM public.bf_changes c JOIN bf_t t ON c.record_pk = t.id::text
 WHERE c.action = 'read' AND c.record = to_jsonb(t);
SELECT count(*) AS rows_without_read FROM bf_t t
 WHERE NOT EXISTS (SELECT 1 FROM public.bf_changes c WHERE c.action = 'read' AND c.record_pk = t.id::text);
SELECT source_table_schema, source_table_name, source_table_oid = 'bf_t'::regclass::oid AS oid_ok,
       source_database_id = (SELECT id FROM sequin_cdc.database_identity) AS db_ok,
       count(*) FILTER (WHERE changes IS NULL) AS no_changes,
       count(*) FILTER (WHERE transaction_annotations IS NULL) AS no_annotations,
       count(*) FILTER (WHERE committed_at IS NOT NULL AND inserted_at >= committed_at) AS times_ok
  FROM public.bf_changes GROUP BY 1, 2, 3, 4;
-- a row with NULLs, as to_jsonb shows it; the TOASTed value whole
SELECT record_pk, record FROM public.bf_changes WHERE record_pk IN ('6', '7') ORDER BY seq;
SELECT record_pk, length(record->>'v') AS v_length, record ? 'dropme' AS has_dropped
  FROM public.bf_changes WHERE record_pk = '50';
-- read in key order, seq increasing with id
SELECT bool_and(k > pk) AS key_order FROM (
    SELECT record_pk::int AS k, lag(record_pk::int) OVER (ORDER BY seq) AS pk
      FROM public.bf_changes WHERE action = 'read') x WHERE pk IS NOT NULL;
SELECT count(*) - count(DISTINCT seq) AS duplicate_seq FROM public.bf_changes;
SELECT bool_and(seq > ps) AS seq_follows_id FROM (
    SELECT seq, lag(seq) OVER (ORDER BY id) AS ps FROM public.bf_changes) x WHERE ps IS NOT NULL;
-- a completed backfill cannot be cancelled
\set VERBOSITY default
SELECT sequin_cdc.cancel_backfill(:bf1);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT state FROM sequin_cdc.pg_stat_backfills WHERE id = :bf1;

------------------------------------------------------------------------------
-- "where": a subset, evaluated per chunk
------------------------------------------------------------------------------
SELECT count(*) AS reads_before, max(id) AS last_id FROM public.bf_changes WHERE action = 'read' \gset
SELECT sequin_cdc.backfill('bf_t', "where" => 'id <= 10', chunk_size => 4) AS bf2 \gset
SELECT bf_wait(:bf2);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT table_name, change_table, state, rows_processed, estimated_total, chunks, where_clause, last_error
  FROM sequin_cdc.pg_stat_backfills WHERE id = :bf2;
SELECT count(*) - :reads_before AS new_reads FROM public.bf_changes WHERE action = 'read';
SELECT record_pk, record->>'v' AS v, record = to_jsonb(t) AS same
  FROM public.bf_changes c JOIN bf_t t ON c.record_pk = t.id::text
 WHERE c.action = 'read' AND c.id > :last_id
 ORDER BY c.seq;
-- Sequin's replay: rows changed recently, with now() in the condition
SELECT sequin_cdc.backfill('bf_t', "where" => $$ts >= timestamptz '2024-01-02 00:00+00' AND ts < now()$$) AS bf2b \gset
SELECT bf_wait(:bf2b);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT state, rows_processed, estimated_total, chunks, where_clause FROM sequin_cdc.pg_stat_backfills WHERE id = :bf2b;
SELECT count(*) AS reads, min(record_pk::int), max(record_pk::int), count(*) FILTER (WHERE record = to_jsonb(t)) AS same
  FROM public.bf_changes c JOIN bf_t t ON c.record_pk = t.id::text
 WHERE c.action = 'read' AND c.id > :last_id AND t.id > 10;
-- a condition matching nothing completes with no rows
SELECT sequin_cdc.backfill('bf_t', "where" => $$v = 'no such value'$$) AS bf3 \gset
SELECT bf_wait(:bf3);
SELECT state, rows_processed, estimated_total, chunks FROM sequin_cdc.pg_stat_backfills WHERE id = :bf3;

------------------------------------------------------------------------------
-- live changes after a backfill come after its read rows
------------------------------------------------------------------------------
UPDATE bf_t SET v = 'changed' WHERE id = 3;
DELETE FROM bf_t WHERE id = 5;
INSERT INTO bf_t (id, v) VALUES (51, 'new');
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT action, record_pk, record->>'v' AS v, changes FROM public.bf_changes
 WHERE record_pk IN ('3', '5', '51') ORDER BY seq;
-- the stream rebuilds the table: the last entry of every key is its row
WITH last AS (
    SELECT DISTINCT ON (record_pk) record_pk, action, record
      FROM public.bf_changes WHERE source_table_name = 'bf_t' ORDER BY record_pk, seq DESC)
SELECT count(*) AS mismatches
  FROM last l FULL JOIN bf_t t ON l.record_pk = t.id::text
 WHERE NOT coalesce(t.id IS NOT NULL AND l.action <> 'delete' AND l.record = to_jsonb(t)
                    OR t.id IS NULL AND l.action = 'delete', false);

------------------------------------------------------------------------------
-- an empty table, and a composite key read 3 rows at a time
------------------------------------------------------------------------------
SELECT sequin_cdc.backfill('bf_empty') AS bf4 \gset
SELECT bf_wait(:bf4);
SELECT state, rows_processed, estimated_total, chunks FROM sequin_cdc.pg_stat_backfills WHERE id = :bf4;
SELECT sequin_cdc.backfill('bf_ck', chunk_size => 3) AS bf5 \gset
SELECT bf_wait(:bf5);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT state, rows_processed, estimated_total, chunks FROM sequin_cdc.pg_stat_backfills WHERE id = :bf5;
SELECT count(*) AS reads, count(DISTINCT record_pk) AS keys,
       count(*) FILTER (WHERE c.record = to_jsonb(t)) AS same_as_table
  FROM public.bf_changes c JOIN bf_ck t ON c.record_pk = jsonb_build_array(t.a, t.b)::text
 WHERE c.action = 'read' AND c.source_table_name = 'bf_ck';
SELECT record_pk FROM public.bf_changes WHERE source_table_name = 'bf_ck' ORDER BY seq LIMIT 5;
-- a partitioned table: read through the root, reported under its name
SELECT sequin_cdc.backfill('bf_part', chunk_size => 4) AS bf5b \gset
SELECT bf_wait(:bf5b);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT state, rows_processed, chunks FROM sequin_cdc.pg_stat_backfills WHERE id = :bf5b;
SELECT c.source_table_name, count(*) AS reads, count(*) FILTER (WHERE c.record = to_jsonb(t)) AS same_as_table
  FROM public.bf_changes c JOIN bf_part t ON c.record_pk = t.id::text
 WHERE c.action = 'read' AND c.source_table_name LIKE 'bf\_part%' GROUP BY 1;

------------------------------------------------------------------------------
-- a rule with a filter, and change_table
------------------------------------------------------------------------------
SELECT sequin_cdc.add_change_retention('bf_t', 'public.bf_even', filter => 'id % 2 = 0') > 0 AS added;
SELECT count(*) AS changes_rows FROM public.bf_changes \gset
-- only into bf_even, only the rows of its filter
SELECT sequin_cdc.backfill('bf_t', 'public.bf_even', chunk_size => 9) AS bf6 \gset
SELECT bf_wait(:bf6);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT table_name, change_table, state, rows_processed, estimated_total, chunks
  FROM sequin_cdc.pg_stat_backfills WHERE id = :bf6;
SELECT count(*) - :changes_rows AS new_rows_in_bf_changes FROM public.bf_changes;
SELECT action, count(*), count(*) FILTER (WHERE record_pk::int % 2 = 0) AS even,
       count(*) FILTER (WHERE c.record = to_jsonb(t)) AS same_as_table
  FROM public.bf_even c JOIN bf_t t ON c.record_pk = t.id::text GROUP BY action ORDER BY action;
SELECT (SELECT count(*) FROM bf_t WHERE id % 2 = 0) AS even_rows_in_table;
-- no change_table: every rule of the table, each with its filter
SELECT count(*) AS even_rows FROM public.bf_even \gset
SELECT sequin_cdc.backfill('bf_t', chunk_size => 20) AS bf7 \gset
SELECT bf_wait(:bf7);
SELECT sequin_cdc.wait_for_capture('bf_s');
SELECT table_name, change_table, state, rows_processed, chunks FROM sequin_cdc.pg_stat_backfills WHERE id = :bf7;
SELECT count(*) - :changes_rows AS new_rows_in_bf_changes FROM public.bf_changes;
SELECT count(*) - :even_rows AS new_rows_in_bf_even,
       count(*) FILTER (WHERE record_pk::int % 2 <> 0) AS odd
  FROM public.bf_even;

------------------------------------------------------------------------------
-- pg_stat_backfills: every backfill of this file, by id
------------------------------------------------------------------------------
SELECT row_number() OVER (ORDER BY id) AS n, id > 0 AS id_ok, table_name, change_table, state,
       rows_processed, estimated_total, chunks, where_clause, last_error
  FROM sequin_cdc.pg_stat_backfills ORDER BY id;

-- clean up: slot and rules
SELECT sequin_cdc.drop_slot('bf_s');
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name = 'bf_s' ORDER BY id;
DROP PUBLICATION bf_p;
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I RESET TimeZone', current_database());
  EXECUTE format('ALTER DATABASE %I RESET DateStyle', current_database());
END $$;
