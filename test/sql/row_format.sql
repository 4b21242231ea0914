SET synchronous_commit = on;
\set VERBOSITY terse
-- row_format: record (and changes) are exactly what to_jsonb(row) gives, for
-- columns of many built-in and user-defined types and their edge values;
-- record_pk is the key's text for one column and an unambiguous JSON array
-- for several.

-- Rendering of dates, times, intervals and floats follows the settings of
-- the process that renders.  The capture worker gets the database's
-- settings; pin them, and use the same in this session, so that
-- to_jsonb() here is comparable with the worker's rows.
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'UTC');
  EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'ISO, MDY');
  EXECUTE format('ALTER DATABASE %I SET IntervalStyle = %L', current_database(), 'postgres');
  EXECUTE format('ALTER DATABASE %I SET extra_float_digits = %L', current_database(), '1');
END $$;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;

CREATE TYPE rf_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN rf_posint AS int CHECK (VALUE > 0);
CREATE DOMAIN rf_email AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN rf_day AS date;
CREATE TYPE rf_addr AS (street text, zip int, tags text[], seen timestamptz);

-- c_xml is an xml column when the server has xml (built with libxml), else
-- text, which renders the same: a JSON string of the value's text form
CREATE FUNCTION pg_temp.rf_xml_type() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM '<a/>'::xml;
    RETURN 'xml';
EXCEPTION WHEN feature_not_supported THEN
    RETURN 'text';
END $$;
SELECT pg_temp.rf_xml_type() AS rf_xml_type \gset

CREATE TABLE rf_t (
    id int PRIMARY KEY,
    c_dropped_early text,
    c_int2 smallint, c_int4 int, c_int8 bigint,
    c_num numeric, c_num_typmod numeric(12, 3),
    c_real real, c_double double precision,
    c_text text, c_varchar varchar(10), c_char char(5), c_qchar "char", c_name name,
    c_bytea bytea, c_bool bool,
    c_date date, c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz,
    c_interval interval,
    c_uuid uuid, c_inet inet, c_cidr cidr, c_macaddr macaddr, c_money money, c_oid oid,
    c_json json, c_jsonb jsonb,
    c_int_arr int[], c_text_arr text[], c_int_2d int[][], c_num_arr numeric[],
    c_float_arr float8[], c_tstz_arr timestamptz[], c_jsonb_arr jsonb[], c_mood_arr rf_mood[],
    c_mood rf_mood, c_posint rf_posint, c_email rf_email, c_day rf_day, c_addr rf_addr,
    c_int4range int4range, c_tstzrange tstzrange, c_tsvector tsvector, c_xml :rf_xml_type,
    c_bit bit(4), c_varbit varbit, c_point point,
    "Mixed Case" int, "with space" text,
    c_big_text text,
    c_gen bigint GENERATED ALWAYS AS (c_int4::bigint * 2) STORED
);
ALTER TABLE rf_t DROP COLUMN c_dropped_early;
ALTER TABLE rf_t REPLICA IDENTITY FULL;

-- types with a cast to json (hstore), multiranges, domains over jsonb and
-- composites, arrays of domains and of composites
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE DOMAIN rf_doc AS jsonb CHECK (jsonb_typeof(VALUE) = 'object');
CREATE DOMAIN rf_addr_d AS rf_addr;
CREATE TABLE rf_ext (id int PRIMARY KEY, c_hstore hstore, c_hstore_arr hstore[],
                     c_multirange int4multirange, c_doc rf_doc, c_posint_arr rf_posint[],
                     c_addr_arr rf_addr[], c_addr_d rf_addr_d, c_mood rf_mood);
ALTER TABLE rf_ext REPLICA IDENTITY FULL;

-- composite and single-column keys
CREATE TABLE rf_k2 (x text, y text, v int, PRIMARY KEY (x, y));
ALTER TABLE rf_k2 REPLICA IDENTITY FULL;
CREATE TABLE rf_kmix (a int, b text, v int, PRIMARY KEY (b, a));   -- key order is not column order
ALTER TABLE rf_kmix REPLICA IDENTITY FULL;
CREATE TABLE rf_ktext (k text PRIMARY KEY, v int);
ALTER TABLE rf_ktext REPLICA IDENTITY FULL;
CREATE TABLE rf_kuuid (k uuid PRIMARY KEY, v int);
CREATE TABLE rf_knum (k numeric PRIMARY KEY, v int);
CREATE TABLE rf_kdate (k date, n bigint, PRIMARY KEY (k, n));

SELECT sequin_cdc.create_publication('rf_p',
    ARRAY['rf_t', 'rf_ext', 'rf_k2', 'rf_kmix', 'rf_ktext', 'rf_kuuid', 'rf_knum', 'rf_kdate']::regclass[]);
SELECT sequin_cdc.create_slot('rf_s', 'rf_p') IS NOT NULL AS created;
SELECT sequin_cdc.create_change_table('public.rf_changes');
SELECT sequin_cdc.add_change_retention('rf_t', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_ext', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_k2', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_kmix', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_ktext', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_kuuid', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_knum', 'public.rf_changes') > 0 AS added;
SELECT sequin_cdc.add_change_retention('rf_kdate', 'public.rf_changes') > 0 AS added;

------------------------------------------------------------------------------
-- rows
------------------------------------------------------------------------------
INSERT INTO rf_t (id, c_int2, c_int4, c_int8, c_num, c_num_typmod, c_real, c_double,
                  c_text, c_varchar, c_char, c_qchar, c_name, c_bytea, c_bool,
                  c_date, c_time, c_timetz, c_ts, c_tstz, c_interval,
                  c_uuid, c_inet, c_cidr, c_macaddr, c_money, c_oid, c_json, c_jsonb,
                  c_int_arr, c_text_arr, c_int_2d, c_num_arr, c_float_arr, c_tstz_arr,
                  c_jsonb_arr, c_mood_arr, c_mood, c_posint, c_email, c_day, c_addr,
                  c_int4range, c_tstzrange, c_tsvector, c_xml, c_bit, c_varbit, c_point,
                  "Mixed Case", "with space", c_big_text)
VALUES
-- 1: ordinary values
(1, 1, 2, 3, 4.5, 6.125, 1.5, 2.25,
 'plain', 'short', 'ab', 'x', 'a_name', '\xdeadbeef', true,
 '2024-02-29', '13:14:15.5', '13:14:15+02', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123456+00', '1 year 2 mons 3 days 04:05:06.5',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, 12345,
 '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2.50, "x"]}',
 '{1,2,3}', '{a,b,c}', '{{1,2},{3,4}}', '{1.5,2.50}', '{0.5,-1.25}', '{"2024-01-01 00:00:00+00"}',
 ARRAY['{"k": 1}'::jsonb, '[1]'], '{sad,happy}', 'ok', 7, 'me@example.com', '2000-01-01', ROW('Main St 1', 12345, '{home,work}', '2024-01-01 12:00:00+00'),
 '[1,10)', '[2024-01-01 00:00:00+00,2024-01-02 00:00:00+00)', 'a fat cat', '<a b="1">text</a>', B'1010', B'101', '(1.5,-2)',
 1, 'spaced', 'short text'),
-- 2: strings, escapes, unicode, infinities
(2, -32768, -2147483648, -9223372036854775808, 'NaN', -0.001, 'Infinity', '-Infinity',
 E'quote " backslash \\ newline \n tab \t cr \r ctl \x01 emoji 😀 accent é', '', 'a', '"', 'Ünïcödé',
 '\x00ff', false,
 'infinity', '00:00:00', '23:59:59.999999-12:30', '-infinity', 'infinity', '-1 days -02:00:00',
 '00000000-0000-0000-0000-000000000000', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', -99.99, 0,
 '  {"dup": 1, "dup": 2, "sp" :  "x"}  ', '[1, "two", null, true, {"three": 3}]',
 '{NULL,-1,NULL}', E'{"with, comma","with \\"quote\\"",NULL,"NULL","",''}', '{{NULL,2},{3,NULL}}', '{NaN,Infinity,-Infinity,0}',
 '{NaN,Infinity,-Infinity,1e-7}', '{infinity,-infinity}',
 ARRAY['"str"'::jsonb, 'null', '{}'], '{}', 'sad', 1, 'a@b', 'infinity', ROW(NULL, NULL, '{}', 'infinity'),
 'empty', '(,)', '', '<x/>', B'0000', B'', '(0,0)',
 -1, E'tab\there', repeat('compressible ', 20000)),
-- 3: numeric precision, float edge values, jsonb scalars
(3, 32767, 2147483647, 9223372036854775807, 123456789012345678901234567890.123456789, 999999999.999,
 'NaN', 1e-7,
 'x', '0123456789', 'abcde', 'z', '', '\x', true,
 '0001-01-01', '24:00:00', '00:00:00+14', '1999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', '0',
 'ffffffff-ffff-ffff-ffff-ffffffffffff', '0.0.0.0/0', '0.0.0.0/0', '00:00:00:00:00:00', 0, 4294967295,
 '"just a string"', '"just a string"',
 '{}', '{}', '{{{1}}}', '{1e-20,1e20,-0.0}', '{0.1,1e300,-0}', '{}',
 '{}', '{ok}', 'happy', 2147483647, 'x@y', '1999-12-31', ROW('', 0, '{NULL}', NULL),
 '[-5,-5]', '[2020-01-01 00:00:00+00,)', 'a:1A b:2B', '<doc><![CDATA[<raw>]]></doc>', B'1111', B'1', '(-0,1e-5)',
 0, '', NULL),
-- 4: more float and numeric edges
(4, 0, 0, 0, 'Infinity', 0, 0.1, 0.1,
 'y', NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, '2000-06-15 08:30:00+05:30', '1 microsecond',
 NULL, NULL, NULL, NULL, NULL, NULL,
 'null', 'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(5, NULL, NULL, NULL, '-Infinity', NULL, '-Infinity', 'NaN',
 NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL,
 '3.0', '1.10', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- 6: every column NULL but the key
INSERT INTO rf_t (id) VALUES (6);
-- 7: a big jsonb document (stored compressed)
INSERT INTO rf_t (id, c_jsonb, c_json)
SELECT 7, jsonb_agg(jsonb_build_object('i', i, 'v', repeat('v', 10))), ('[' || string_agg(i::text, ',') || ']')::json
  FROM generate_series(1, 5000) i;

-- the rows as they were inserted
CREATE TABLE rf_snap AS SELECT * FROM rf_t;

-- updates: several columns, one column, NULL to values, only the generated column's input
UPDATE rf_t SET c_text = 'plain, updated', c_jsonb = '{"b": 2}', c_int_arr = '{3,2,1}',
                c_addr = ROW('Main St 2', 12345, '{home}', '2024-01-01 12:00:00+00'),
                c_mood = 'happy', c_num = 4.50
 WHERE id = 1;
UPDATE rf_t SET c_bool = true WHERE id = 2;
UPDATE rf_t SET c_int4 = 21, c_tstz = '2030-01-01 00:00:00+00', c_text_arr = '{x,NULL}',
                c_point = '(3,4)', c_xml = '<y/>', c_big_text = 'was null'
 WHERE id = 6;
UPDATE rf_t SET c_double = 'Infinity', c_real = '-Infinity' WHERE id = 3;
DELETE FROM rf_t WHERE id = 4;

INSERT INTO rf_ext VALUES
  (1, 'a=>1, "b c"=>"d \"e\"", n=>NULL', ARRAY['x=>1'::hstore, ''], '{[1,3), [5,7)}', '{"k": [1, {"n": null}]}',
   '{1,2,NULL}', ARRAY[ROW('s', 1, '{t}', '2024-01-01 00:00:00+00')::rf_addr, NULL],
   ROW('d', 2, NULL, '-infinity'), 'sad'),
  (2, '', '{}', '{}', '{}', '{}', '{}', ROW(NULL, NULL, NULL, NULL), NULL),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE rf_ext SET c_hstore = c_hstore || 'z=>26', c_multirange = '{[0,1)}' WHERE id = 1;

-- keys
INSERT INTO rf_k2 VALUES ('1,a', 'b', 1), ('1', 'a,b', 2), ('"q"', '[x]', 3), ('', '', 4);
UPDATE rf_k2 SET v = 20 WHERE x = '1' AND y = 'a,b';
DELETE FROM rf_k2 WHERE x = '1,a';
INSERT INTO rf_kmix VALUES (1, 'a,b', 1), (10, 'x', 2);
UPDATE rf_kmix SET a = 2 WHERE b = 'a,b';
INSERT INTO rf_ktext VALUES ('hello, "world"', 1), ('[1, "a,b"]', 2), (E'new\nline', 3);
DELETE FROM rf_ktext WHERE k = 'hello, "world"';
INSERT INTO rf_kuuid VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1);
INSERT INTO rf_knum VALUES (1.50, 1), ('NaN', 2), (-0.0, 3);
INSERT INTO rf_kdate VALUES ('2024-02-29', 9007199254740993), ('infinity', -1);

SELECT sequin_cdc.wait_for_capture();

------------------------------------------------------------------------------
-- record = to_jsonb(row)
------------------------------------------------------------------------------
-- inserts against the rows as inserted (compared as text: jsonb equality
-- would take 4.5 and 4.50 for the same)
SELECT c.record_pk, c.record::text = to_jsonb(s)::text AS same
  FROM rf_changes c JOIN rf_snap s ON s.id::text = c.record_pk
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert' ORDER BY c.seq;
-- (should a row differ: the columns that do)
SELECT c.record_pk, e.key, e.value AS expected, c.record -> e.key AS got
  FROM rf_changes c JOIN rf_snap s ON s.id::text = c.record_pk,
       jsonb_each(to_jsonb(s)) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert'
   AND (c.record -> e.key)::text IS DISTINCT FROM e.value::text
 ORDER BY c.seq, e.key;
SELECT c.record_pk, k AS extra_key
  FROM rf_changes c, jsonb_object_keys(c.record) k
 WHERE c.source_table_name = 'rf_t'
   AND k NOT IN (SELECT attname FROM pg_attribute
                  WHERE attrelid = 'rf_t'::regclass AND attnum > 0 AND NOT attisdropped)
 ORDER BY c.seq, k;

-- updates against the rows as they are now, changes against the difference
SELECT c.record_pk, c.record::text = to_jsonb(t)::text AS record_same,
       c.changes::text = (SELECT jsonb_object_agg(o.key, o.value)::text
                      FROM jsonb_each(to_jsonb(s)) o
                     WHERE o.value::text IS DISTINCT FROM (to_jsonb(t) -> o.key)::text) AS changes_same,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(c.changes) k) AS changed
  FROM rf_changes c JOIN rf_t t ON t.id::text = c.record_pk JOIN rf_snap s ON s.id = t.id
 WHERE c.source_table_name = 'rf_t' AND c.action = 'update' ORDER BY c.seq;
SELECT c.record_pk, e.key, e.value AS expected, c.record -> e.key AS got
  FROM rf_changes c JOIN rf_t t ON t.id::text = c.record_pk,
       jsonb_each(to_jsonb(t)) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'update'
   AND (c.record -> e.key)::text IS DISTINCT FROM e.value::text
 ORDER BY c.seq, e.key;

-- the delete carries the old row
SELECT c.record_pk, c.record::text = to_jsonb(s)::text AS same, c.changes IS NULL AS no_changes
  FROM rf_changes c JOIN rf_snap s ON s.id::text = c.record_pk
 WHERE c.source_table_name = 'rf_t' AND c.action = 'delete' ORDER BY c.seq;

SELECT action, count(*) FROM rf_changes WHERE source_table_name = 'rf_t' GROUP BY 1 ORDER BY 1;

------------------------------------------------------------------------------
-- some records as they are, for the reader
------------------------------------------------------------------------------
SELECT e.key, e.value
  FROM rf_changes c, jsonb_each(c.record) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert' AND c.record_pk = '1'
 ORDER BY e.key;
SELECT e.key, e.value
  FROM rf_changes c, jsonb_each(c.record) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert' AND c.record_pk = '2'
   AND e.key <> 'c_big_text'
 ORDER BY e.key;
SELECT length(record->>'c_big_text') AS big_text_length,
       md5(record->>'c_big_text') = md5(repeat('compressible ', 20000)) AS big_text_same
  FROM rf_changes
 WHERE source_table_name = 'rf_t' AND action = 'insert' AND record_pk = '2';
SELECT e.key, e.value
  FROM rf_changes c, jsonb_each(c.record) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert' AND c.record_pk = '3'
 ORDER BY e.key;
SELECT e.key, e.value
  FROM rf_changes c, jsonb_each(c.record) e
 WHERE c.source_table_name = 'rf_t' AND c.action = 'insert' AND c.record_pk IN ('4', '5')
   AND e.value <> 'null'
 ORDER BY c.record_pk, e.key;
SELECT (SELECT count(*) FROM jsonb_each(record)) AS keys,
       (SELECT count(*) FROM jsonb_each(record) WHERE value = 'null') AS null_values
  FROM rf_changes
 WHERE source_table_name = 'rf_t' AND action = 'insert' AND record_pk = '6';
SELECT jsonb_array_length(record->'c_jsonb') AS elements,
       record->'c_jsonb'->4999 AS last,
       jsonb_array_length(record->'c_json') AS json_elements
  FROM rf_changes
 WHERE source_table_name = 'rf_t' AND action = 'insert' AND record_pk = '7';
SELECT record_pk, changes
  FROM rf_changes WHERE source_table_name = 'rf_t' AND action = 'update' ORDER BY seq;

-- hstore and friends: the last row of each key against the table
SELECT c.record_pk, c.action, c.record::text = to_jsonb(t)::text AS same, c.record
  FROM rf_changes c JOIN rf_ext t ON t.id::text = c.record_pk
 WHERE c.source_table_name = 'rf_ext'
   AND c.seq = (SELECT max(seq) FROM rf_changes c2
                 WHERE c2.source_table_name = 'rf_ext' AND c2.record_pk = c.record_pk)
 ORDER BY c.seq;
SELECT record_pk, changes FROM rf_changes
 WHERE source_table_name = 'rf_ext' AND action = 'update' ORDER BY seq;

------------------------------------------------------------------------------
-- record_pk
------------------------------------------------------------------------------
SELECT source_table_name, action, record_pk, record
  FROM rf_changes WHERE source_table_name NOT IN ('rf_t', 'rf_ext') ORDER BY seq;
-- keys that a comma-join would confuse stay apart, and parse back
SELECT record_pk, record_pk::jsonb ->> 0 AS x, record_pk::jsonb ->> 1 AS y
  FROM rf_changes WHERE source_table_name = 'rf_k2' AND action = 'insert' ORDER BY seq;
SELECT count(DISTINCT record_pk) AS distinct_keys, count(*) AS inserts
  FROM rf_changes WHERE source_table_name = 'rf_k2' AND action = 'insert';
-- every composite record_pk is the JSON array of the key columns' record values
SELECT source_table_name, record_pk,
       record_pk::jsonb = CASE source_table_name
           WHEN 'rf_k2' THEN jsonb_build_array(record->'x', record->'y')
           WHEN 'rf_kmix' THEN jsonb_build_array(record->'b', record->'a')
           WHEN 'rf_kdate' THEN jsonb_build_array(record->'k', record->'n') END AS matches_record
  FROM rf_changes WHERE source_table_name IN ('rf_k2', 'rf_kmix', 'rf_kdate') ORDER BY seq;

-- clean up
SELECT sequin_cdc.drop_slot('rf_s');
SELECT sequin_cdc.drop_change_retention(id) FROM sequin_cdc.change_retention
 WHERE slot_name = 'rf_s' ORDER BY id;
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I RESET TimeZone', current_database());
  EXECUTE format('ALTER DATABASE %I RESET DateStyle', current_database());
  EXECUTE format('ALTER DATABASE %I RESET IntervalStyle', current_database());
  EXECUTE format('ALTER DATABASE %I RESET extra_float_digits', current_database());
END $$;
