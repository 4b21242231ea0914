SET synchronous_commit = on;
\set VERBOSITY terse
-- hard_cases: TOASTed values with and without REPLICA IDENTITY FULL, DDL in
-- the middle of the stream (also inside one transaction), renamed tables,
-- partitioned sources (partitions with another column order), TRUNCATE, a
-- FOR ALL TABLES publication (no feedback from change tables), a big
-- transaction, and a partitioned change table.

-- Small memory limits, so that big transactions and TOASTed values go
-- through the spill files: the reorder buffer's (logical_decoding_work_mem,
-- taken by the capture worker from the database's settings) and the
-- worker's own buffer of decoded rows (sequin_cdc.buffer_memory).
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = %L', current_database(), '64kB');
END $$;
ALTER SYSTEM SET sequin_cdc.buffer_memory = '64kB';
SELECT pg_reload_conf();

CREATE SCHEMA hc_other;
CREATE SCHEMA hc_sch;                                                -- published as a schema

-- TOAST
CREATE TABLE hc_toast (id int PRIMARY KEY, small text, big text);
ALTER TABLE hc_toast ALTER COLUMN big SET STORAGE EXTERNAL;   -- out of line, uncompressed
ALTER TABLE hc_toast REPLICA IDENTITY FULL;
CREATE TABLE hc_toast_d (id int PRIMARY KEY, small text, big text);  -- replica identity DEFAULT
ALTER TABLE hc_toast_d ALTER COLUMN big SET STORAGE EXTERNAL;
-- DDL mid-stream
CREATE TABLE hc_ddl (id int PRIMARY KEY, a int, b text);
ALTER TABLE hc_ddl REPLICA IDENTITY FULL;
CREATE TABLE hc_ddl1 (id int PRIMARY KEY, a int, b text);           -- the same, in one transaction
ALTER TABLE hc_ddl1 REPLICA IDENTITY FULL;
-- renames
CREATE TABLE hc_ren (id int PRIMARY KEY, v text);
ALTER TABLE hc_ren REPLICA IDENTITY FULL;
-- partitioned source; the 2024 partition has another column order and a dropped column
CREATE TABLE hc_part (id int, created date, v text, PRIMARY KEY (id, created))
    PARTITION BY RANGE (created);
CREATE TABLE hc_part_2023 PARTITION OF hc_part FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE hc_part_2024 (junk int, v text, created date NOT NULL, id int NOT NULL);
ALTER TABLE hc_part_2024 DROP COLUMN junk;
ALTER TABLE hc_part ATTACH PARTITION hc_part_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
ALTER TABLE hc_part_2023 REPLICA IDENTITY FULL;
ALTER TABLE hc_part_2024 REPLICA IDENTITY FULL;
-- truncate
CREATE TABLE hc_trunc (id int PRIMARY KEY, v text);
ALTER TABLE hc_trunc REPLICA IDENTITY FULL;
CREATE TABLE hc_trunc_ins (id int PRIMARY KEY, v text);              -- rule for inserts only
ALTER TABLE hc_trunc_ins REPLICA IDENTITY FULL;
CREATE TABLE hc_notret (id int PRIMARY KEY, v text);                 -- published, no rule
ALTER TABLE hc_notret REPLICA IDENTITY FULL;
-- COPY (multi-insert records) and INSERT ... ON CONFLICT
CREATE TABLE hc_copy (id int PRIMARY KEY, v text, n int DEFAULT 0);
ALTER TABLE hc_copy REPLICA IDENTITY FULL;
-- a filter whose column is dropped later
CREATE TABLE hc_flt (id int PRIMARY KEY, v text, w int);
ALTER TABLE hc_flt REPLICA IDENTITY FULL;
-- in a schema published as a whole
CREATE TABLE hc_sch.hc_s1 (id int PRIMARY KEY, v text);
ALTER TABLE hc_sch.hc_s1 REPLICA IDENTITY FULL;
-- a big transaction
CREATE TABLE hc_big (id int PRIMARY KEY, v text);
ALTER TABLE hc_big REPLICA IDENTITY FULL;

SELECT sequin_cdc.create_publication('hc_p',
    ARRAY['hc_toast', 'hc_toast_d', 'hc_ddl', 'hc_ddl1', 'hc_ren', 'hc_part',
          'hc_trunc', 'hc_trunc_ins', 'hc_notret', 'hc_flt', 'hc_copy', 'hc_big']::regclass[],
    schemas => ARRAY['hc_sch']);
SELECT pubviaroot FROM pg_publication WHERE pubname = 'hc_p';
SELECT sequin_cdc.create_slot('hc_s', 'hc_p') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.hc_changes');
SELECT sequin_cdc.create_change_table('public.hc_pchanges', partitioned => true);
SELECT sequin_cdc.add_change_retention('hc_toast', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_toast_d', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_ddl', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_ddl1', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_ren', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_part', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_trunc', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_trunc_ins', 'public.hc_changes', '{insert}') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_flt', 'public.hc_changes',
                                       filter => 'v <> ''skip''') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_sch.hc_s1', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_copy', 'public.hc_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('hc_big', 'public.hc_pchanges') > 0 AS added;

------------------------------------------------------------------------------
-- TOAST, REPLICA IDENTITY FULL: an update that does not touch the big value
-- still carries it in record, and changes does not list it
------------------------------------------------------------------------------
INSERT INTO hc_toast VALUES (1, 'a', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i));
INSERT INTO hc_toast VALUES (2, 'a', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i));
SELECT pg_column_size(big) > 100000 AS stored_big, octet_length(big) AS len FROM hc_toast WHERE id = 1;
UPDATE hc_toast SET small = 'b' WHERE id = 1;                                 -- big unchanged
UPDATE hc_toast SET big = big || 'x' WHERE id = 2;                            -- big changed
DELETE FROM hc_toast WHERE id = 1;
SELECT sequin_cdc.wait_for_capture();
SELECT c.action, c.record_pk, c.record->>'small' AS small,
       md5(c.record->>'big') = (SELECT md5(string_agg(md5(i::text), '')) FROM generate_series(1, 4000) i) AS big_is_original,
       length(c.record->>'big') AS big_len,
       c.changes ->> 'small' AS changes_small,
       c.changes ? 'big' AS changes_has_big,
       length(c.changes->>'big') AS changes_big_len
  FROM hc_changes c WHERE c.source_table_name = 'hc_toast' ORDER BY c.seq;

------------------------------------------------------------------------------
-- TOAST, REPLICA IDENTITY DEFAULT: the unchanged big value is left out of
-- record (never a placeholder), changes is null, a delete has only the key
------------------------------------------------------------------------------
INSERT INTO hc_toast_d VALUES (1, 'a', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i));
UPDATE hc_toast_d SET small = 'b' WHERE id = 1;
UPDATE hc_toast_d SET big = 'small now', small = 'c' WHERE id = 1;
UPDATE hc_toast_d SET id = 2 WHERE id = 1;                                    -- key change
DELETE FROM hc_toast_d WHERE id = 2;
SELECT sequin_cdc.wait_for_capture();
SELECT c.action, c.record_pk,
       CASE WHEN length(c.record->>'big') > 1000 THEN c.record - 'big' || '{"big": "<128000 chars>"}' ELSE c.record END AS record,
       length(c.record->>'big') AS big_len, c.changes
  FROM hc_changes c WHERE c.source_table_name = 'hc_toast_d' ORDER BY c.seq;
SELECT count(*) AS placeholders FROM hc_changes
 WHERE record::text LIKE '%unchanged%toast%' OR changes::text LIKE '%unchanged%toast%';

------------------------------------------------------------------------------
-- DDL between changes: every row is rendered with the columns of its time
------------------------------------------------------------------------------
INSERT INTO hc_ddl VALUES (1, 10, 'one');
ALTER TABLE hc_ddl ADD COLUMN c int DEFAULT 7;
INSERT INTO hc_ddl VALUES (2, 20, 'two', 8);
UPDATE hc_ddl SET a = 11 WHERE id = 1;              -- a row from before the new column
ALTER TABLE hc_ddl DROP COLUMN b;
INSERT INTO hc_ddl VALUES (3, 30, 9);
UPDATE hc_ddl SET a = 21 WHERE id = 2;
ALTER TABLE hc_ddl RENAME COLUMN a TO a_renamed;
INSERT INTO hc_ddl VALUES (4, 40, 10);
ALTER TABLE hc_ddl ALTER COLUMN a_renamed TYPE text;
INSERT INTO hc_ddl VALUES (5, 'fifty', 11);
UPDATE hc_ddl SET a_renamed = a_renamed || '!' WHERE id = 4;
ALTER TABLE hc_ddl ALTER COLUMN c TYPE bigint;
INSERT INTO hc_ddl VALUES (6, 'sixty', 9007199254740993);
DELETE FROM hc_ddl WHERE id = 1;

-- the same steps in one transaction
BEGIN;
INSERT INTO hc_ddl1 VALUES (1, 10, 'one');
ALTER TABLE hc_ddl1 ADD COLUMN c int DEFAULT 7;
INSERT INTO hc_ddl1 VALUES (2, 20, 'two', 8);
UPDATE hc_ddl1 SET a = 11 WHERE id = 1;
ALTER TABLE hc_ddl1 DROP COLUMN b;
INSERT INTO hc_ddl1 VALUES (3, 30, 9);
UPDATE hc_ddl1 SET a = 21 WHERE id = 2;
ALTER TABLE hc_ddl1 RENAME COLUMN a TO a_renamed;
INSERT INTO hc_ddl1 VALUES (4, 40, 10);
ALTER TABLE hc_ddl1 ALTER COLUMN a_renamed TYPE text;
INSERT INTO hc_ddl1 VALUES (5, 'fifty', 11);
UPDATE hc_ddl1 SET a_renamed = a_renamed || '!' WHERE id = 4;
ALTER TABLE hc_ddl1 ALTER COLUMN c TYPE bigint;
INSERT INTO hc_ddl1 VALUES (6, 'sixty', 9007199254740993);
DELETE FROM hc_ddl1 WHERE id = 1;
COMMIT;
SELECT sequin_cdc.wait_for_capture();
SELECT action, record_pk, record, changes
  FROM hc_changes WHERE source_table_name = 'hc_ddl' ORDER BY seq;
-- one transaction: the same rows, all with one commit time
SELECT count(*) AS rows, count(DISTINCT committed_at) AS commit_times
  FROM hc_changes WHERE source_table_name = 'hc_ddl1';
SELECT count(*) AS differing
  FROM (SELECT row_number() OVER (ORDER BY seq) AS n, action, record_pk, record, changes
          FROM hc_changes WHERE source_table_name = 'hc_ddl') a
  FULL JOIN
       (SELECT row_number() OVER (ORDER BY seq) AS n, action, record_pk, record, changes
          FROM hc_changes WHERE source_table_name = 'hc_ddl1') b USING (n)
 WHERE a.action IS DISTINCT FROM b.action OR a.record_pk IS DISTINCT FROM b.record_pk
    OR a.record::text IS DISTINCT FROM b.record::text
    OR a.changes::text IS DISTINCT FROM b.changes::text;
-- the last row of each key matches the table as it is now, except where
-- DDL came after that row (rows 2 and 3 were written before the rename)
SELECT c.record_pk, c.record::text = to_jsonb(t)::text AS same_as_now
  FROM (SELECT DISTINCT ON (record_pk) record_pk, record, action
          FROM hc_changes WHERE source_table_name = 'hc_ddl' ORDER BY record_pk, seq DESC) c
  JOIN hc_ddl t ON t.id::text = c.record_pk
 ORDER BY 1;

------------------------------------------------------------------------------
-- renamed table, moved to another schema
------------------------------------------------------------------------------
INSERT INTO hc_ren VALUES (1, 'before');
ALTER TABLE hc_ren RENAME TO hc_ren2;
INSERT INTO hc_ren2 VALUES (2, 'after rename');
ALTER TABLE hc_ren2 SET SCHEMA hc_other;
UPDATE hc_other.hc_ren2 SET v = 'after set schema' WHERE id = 1;
SELECT sequin_cdc.wait_for_capture();
SELECT source_table_schema, source_table_name, action, record_pk, record,
       source_table_oid = 'hc_other.hc_ren2'::regclass::oid AS same_oid
  FROM hc_changes WHERE record_pk IN ('1', '2') AND source_table_oid = 'hc_other.hc_ren2'::regclass::oid
 ORDER BY seq;

------------------------------------------------------------------------------
-- partitioned source: rows reported as the parent, in the parent's columns
------------------------------------------------------------------------------
INSERT INTO hc_part VALUES (1, '2023-05-01', 'in 2023'), (2, '2024-05-01', 'in 2024');
UPDATE hc_part SET v = 'in 2024, updated' WHERE id = 2;
UPDATE hc_part SET v = 'in 2023, updated' WHERE id = 1;
UPDATE hc_part SET created = '2024-06-01' WHERE id = 1;         -- moves to the other partition
DELETE FROM hc_part WHERE id = 2;
SELECT sequin_cdc.wait_for_capture();
SELECT source_table_schema, source_table_name, action, record_pk, record, changes,
       source_table_oid = 'hc_part'::regclass::oid AS parent_oid
  FROM hc_changes WHERE source_table_name LIKE 'hc\_part%' ORDER BY seq;

------------------------------------------------------------------------------
-- TRUNCATE: one row per truncated retained table, whatever the actions;
-- nothing for a table without a rule
------------------------------------------------------------------------------
INSERT INTO hc_trunc VALUES (1, 'x'), (2, 'y');
INSERT INTO hc_trunc_ins VALUES (1, 'x');
INSERT INTO hc_notret VALUES (1, 'x');
TRUNCATE hc_trunc;
TRUNCATE hc_trunc_ins, hc_notret;
TRUNCATE hc_part;
BEGIN;
INSERT INTO hc_trunc VALUES (3, 'before truncate, same transaction');
TRUNCATE hc_trunc;
INSERT INTO hc_trunc VALUES (4, 'after truncate, same transaction');
COMMIT;
INSERT INTO hc_trunc VALUES (5, 'after');
SELECT sequin_cdc.wait_for_capture();
SELECT source_table_name, action, record_pk, record, changes
  FROM hc_changes
 WHERE source_table_name IN ('hc_trunc', 'hc_trunc_ins', 'hc_notret', 'hc_part')
   AND seq > (SELECT max(seq) FROM hc_changes WHERE source_table_name = 'hc_part' AND action <> 'truncate')
 ORDER BY seq;
-- truncating one partition does not empty the partitioned table, so it must
-- not be reported as a truncate of it
INSERT INTO hc_part VALUES (10, '2023-02-01', 'in 2023'), (11, '2024-02-01', 'in 2024');
TRUNCATE hc_part_2023;
SELECT sequin_cdc.wait_for_capture();
SELECT id FROM hc_part ORDER BY id;
SELECT source_table_name, action, record_pk FROM hc_changes
 WHERE source_table_name = 'hc_part'
   AND seq >= (SELECT min(seq) FROM hc_changes
                WHERE source_table_name = 'hc_part' AND record_pk = '[10, "2023-02-01"]')
 ORDER BY seq;

------------------------------------------------------------------------------
-- COPY writes multi-insert WAL records (one record, many rows); upserts
------------------------------------------------------------------------------
COPY hc_copy (id, v) FROM stdin;
1	one
2	two
3	\N
4	four, with a comma
\.
INSERT INTO hc_copy VALUES (2, 'two again') ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = hc_copy.n + 1;
INSERT INTO hc_copy VALUES (5, 'five') ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = hc_copy.n + 1;
INSERT INTO hc_copy VALUES (1, 'ignored') ON CONFLICT (id) DO NOTHING;
INSERT INTO hc_copy VALUES (6, 'six') ON CONFLICT (id) DO NOTHING;
SELECT sequin_cdc.wait_for_capture();
SELECT action, record_pk, record, changes
  FROM hc_changes WHERE source_table_name = 'hc_copy' ORDER BY seq;
SELECT count(DISTINCT committed_at) = 1 AS copy_one_commit
  FROM hc_changes WHERE source_table_name = 'hc_copy' AND record_pk IN ('1', '2', '3', '4') AND action = 'insert';

------------------------------------------------------------------------------
-- a filter that no longer parses (its column was dropped) keeps every row
-- rather than losing any
------------------------------------------------------------------------------
INSERT INTO hc_flt VALUES (1, 'skip', 1), (2, 'keep', 2);
ALTER TABLE hc_flt DROP COLUMN v;
INSERT INTO hc_flt VALUES (3, 3);
UPDATE hc_flt SET w = 10 WHERE id = 1;
SELECT sequin_cdc.wait_for_capture();
SELECT action, record_pk, record, changes
  FROM hc_changes WHERE source_table_name = 'hc_flt' ORDER BY seq;

------------------------------------------------------------------------------
-- a schema publication covers its tables, also those created later
------------------------------------------------------------------------------
INSERT INTO hc_sch.hc_s1 VALUES (1, 'one');
CREATE TABLE hc_sch.hc_s2 (id int PRIMARY KEY, v text);
ALTER TABLE hc_sch.hc_s2 REPLICA IDENTITY FULL;
SELECT sequin_cdc.add_change_retention('hc_sch.hc_s2', 'public.hc_changes') > 0 AS added;
INSERT INTO hc_sch.hc_s2 VALUES (1, 'created after the slot');
UPDATE hc_sch.hc_s1 SET v = 'uno' WHERE id = 1;
SELECT sequin_cdc.wait_for_capture();
SELECT source_table_schema, source_table_name, action, record_pk, record, changes
  FROM hc_changes WHERE source_table_schema = 'hc_sch' ORDER BY seq;

------------------------------------------------------------------------------
-- a big transaction, into a partitioned change table
------------------------------------------------------------------------------
INSERT INTO hc_big SELECT i, repeat('v', 100) FROM generate_series(1, 20000) i;
SELECT sequin_cdc.wait_for_capture();
SELECT count(*) AS rows, count(DISTINCT record_pk) AS keys, min(record_pk::int), max(record_pk::int),
       count(DISTINCT committed_at) AS commit_times, count(DISTINCT seq) AS seqs,
       bool_and(id = seq) AS id_is_seq
  FROM hc_pchanges WHERE source_table_name = 'hc_big';
-- inside the transaction, seq follows the statement's order
SELECT count(*) AS out_of_order
  FROM (SELECT record_pk::int AS k, lag(record_pk::int) OVER (ORDER BY seq) AS prev
          FROM hc_pchanges WHERE source_table_name = 'hc_big') s
 WHERE k <= prev;
SELECT tableoid::regclass AS partition, count(*) FROM hc_pchanges GROUP BY 1 ORDER BY 1;
-- it did go through the reorder buffer's spill files
SELECT spill_txns > 0 AS spilled FROM pg_stat_replication_slots WHERE slot_name = 'hc_s';
SELECT c.relname, c.relkind FROM sequin_cdc.change_tables ct JOIN pg_class c ON c.oid = ct.change_table
 WHERE c.relname LIKE 'hc\_%' ORDER BY 1;

------------------------------------------------------------------------------
-- FOR ALL TABLES: a second slot; its change table gets exactly the rows of
-- its rule, never its own writes, another slot's writes or sequin_cdc's tables
------------------------------------------------------------------------------
CREATE TABLE hc_allsrc (id int PRIMARY KEY, v text);
ALTER TABLE hc_allsrc REPLICA IDENTITY FULL;
SELECT sequin_cdc.create_publication('hc_p_all');
SELECT puballtables FROM pg_publication WHERE pubname = 'hc_p_all';
SELECT sequin_cdc.create_slot('hc_s_all', 'hc_p_all') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.hc_all_changes');
SELECT sequin_cdc.add_change_retention('hc_allsrc', 'public.hc_all_changes', slot => 'hc_s_all') > 0 AS added;
INSERT INTO hc_allsrc SELECT i, 'v' || i FROM generate_series(1, 50) i;
UPDATE hc_allsrc SET v = v || '!' WHERE id <= 10;
DELETE FROM hc_allsrc WHERE id > 45;
-- meanwhile the other slot writes its change table
INSERT INTO hc_other.hc_ren2 VALUES (3, 'other slot');
SELECT sequin_cdc.wait_for_capture();
SELECT source_table_schema, source_table_name, action, count(*)
  FROM hc_all_changes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT count(*) FILTER (WHERE source_table_schema = 'sequin_cdc') AS from_sequin_cdc,
       count(*) FILTER (WHERE source_table_oid IN (SELECT change_table::oid FROM sequin_cdc.change_tables)) AS from_change_tables,
       count(*) AS total
  FROM hc_all_changes;
-- the first slot's change table is untouched by the second
SELECT count(*) FROM hc_changes WHERE source_table_name = 'hc_allsrc';
SELECT slot_name, state, errors FROM sequin_cdc.pg_stat_capture ORDER BY slot_name;

-- clean up
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I RESET logical_decoding_work_mem', current_database());
END $$;
ALTER SYSTEM RESET sequin_cdc.buffer_memory;
SELECT pg_reload_conf();
SELECT sequin_cdc.drop_slot('hc_s');
SELECT sequin_cdc.drop_slot('hc_s_all');
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name IN ('hc_s', 'hc_s_all') ORDER BY id;
