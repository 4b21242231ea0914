-- bench/sql/setup.sql -- schema and peers for bench/run.sh (database "bench").
--
-- Everything here is created once; bench/run.sh resets the data between runs
-- with bench_reset() (TRUNCATE gives fresh files and empty indexes).

CREATE EXTENSION IF NOT EXISTS sequin_cdc;   -- bench/lib.sh created it

-- The workload table: orders-like, REPLICA IDENTITY FULL, 100k rows preloaded.
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id int,
    status text,
    amount numeric(12,2),
    note text,
    updated_at timestamptz
);
ALTER TABLE orders REPLICA IDENTITY FULL;
-- insert ids: a free-standing sequence, read by the pgbench script (\gset)
CREATE SEQUENCE orders_id_seq;

-- Narrow table for the big-transaction memory figure.
CREATE TABLE mem_t (id bigint PRIMARY KEY, v int);
ALTER TABLE mem_t REPLICA IDENTITY FULL;

SELECT sequin_cdc.create_publication('bench_pub', ARRAY['public.orders', 'public.mem_t']::regclass[]);

-- Change tables, all with Sequin's schema and indexes.
SELECT sequin_cdc.create_change_table('public.order_changes');  -- sequin_cdc capture
SELECT sequin_cdc.create_change_table('public.diy_changes');    -- DIY wal2json drain
SELECT sequin_cdc.create_change_table('public.audit_changes');  -- trigger peer
SELECT sequin_cdc.create_change_table('public.raw_changes');    -- raw write limit
SELECT sequin_cdc.create_change_table('public.mem_changes');    -- memory figure

-- Fresh state: 100k orders, sequence after them, change tables empty.
CREATE PROCEDURE bench_reset()
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE orders, mem_t, order_changes, diy_changes, audit_changes, raw_changes, mem_changes;
    INSERT INTO orders (id, customer_id, status, amount, note, updated_at)
    SELECT g, 1 + g % 20000, 'new', (g % 99900 + 100) / 100.0,
           'order ' || g || ' for customer ' || (1 + g % 20000) || ', standard shipping',
           now()
      FROM generate_series(1, 100000) g;
    PERFORM setval('orders_id_seq', 100000);
END
$$;

-- Real row changes made to a table so far (cumulative statistics).
CREATE FUNCTION bench_row_changes(t regclass) RETURNS bigint
LANGUAGE sql AS $$
    SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = t
$$;

------------------------------------------------------------------------------
-- Peer 1: the DIY drain.  What a pg_cron job would run: consume the wal2json
-- slot "diy" in batches of upto_nchanges, parse the JSON with SQL into a
-- change table with Sequin's schema (record as an object of the columns,
-- changes = old values of the changed columns, record_pk from the key,
-- committed_at from the commit timestamp), one transaction per batch, until
-- the slot has nothing left.  Returns the number of change rows written.
------------------------------------------------------------------------------
CREATE PROCEDURE diy_drain(batch int, INOUT written bigint DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    got bigint;
    n bigint;
BEGIN
    written := 0;
    LOOP
        WITH raw AS MATERIALIZED (
            SELECT c.ord, c.data::jsonb AS j
              FROM pg_logical_slot_get_changes('diy', NULL, batch,
                       'format-version', '2', 'include-timestamp', '1',
                       'include-pk', '1', 'add-tables', 'public.orders')
                   WITH ORDINALITY AS c(lsn, xid, data, ord)
        ), rows AS (
            SELECT r.ord, r.j,
                   CASE r.j->>'action' WHEN 'I' THEN 'insert' WHEN 'U' THEN 'update' ELSE 'delete' END AS action,
                   rec.v AS record,
                   old.v AS old_record
              FROM raw r
              CROSS JOIN LATERAL (
                  SELECT jsonb_object_agg(c->>'name', c->'value') AS v
                    FROM jsonb_array_elements(CASE WHEN r.j->>'action' = 'D' THEN r.j->'identity'
                                                   ELSE r.j->'columns' END) c) rec
              LEFT JOIN LATERAL (
                  SELECT jsonb_object_agg(c->>'name', c->'value') AS v
                    FROM jsonb_array_elements(r.j->'identity') c
                   WHERE r.j->>'action' = 'U') old ON true
             WHERE r.j->>'action' IN ('I', 'U', 'D')
        ), ins AS (
            INSERT INTO diy_changes (id, seq, source_database_id, source_table_oid,
                                     source_table_schema, source_table_name, record_pk,
                                     record, changes, action, committed_at)
            SELECT w.s, w.s,
                   (SELECT id FROM sequin_cdc.database_identity),
                   to_regclass(format('%I.%I', w.j->>'schema', w.j->>'table'))::oid,
                   w.j->>'schema', w.j->>'table',
                   (SELECT string_agg(w.record ->> (p->>'name'), ',') FROM jsonb_array_elements(w.j->'pk') p),
                   w.record,
                   (SELECT jsonb_object_agg(o.key, o.value) FROM jsonb_each(w.old_record) o
                     WHERE (w.record -> o.key) IS DISTINCT FROM o.value),
                   w.action,
                   (w.j->>'timestamp')::timestamptz
              FROM (SELECT nextval('diy_changes_id_seq') AS s, x.*
                      FROM (SELECT * FROM rows ORDER BY ord) x) w
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM ins) INTO got, n;
        written := written + n;
        COMMIT;
        EXIT WHEN got = 0;
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- Peer 2: the audit trigger.  AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW,
-- in the writing transaction, into a change table with Sequin's schema:
-- record = to_jsonb(NEW/OLD), changes = old values of the changed columns.
-- committed_at can only be the transaction's start time (now()).
-- The database id is baked in when the function is created (no lookup per row).
------------------------------------------------------------------------------
DO $do$
BEGIN
    EXECUTE format($f$
CREATE FUNCTION audit_changes_trg() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    o jsonb;
    ch jsonb;
    s bigint := nextval('audit_changes_id_seq');
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := to_jsonb(OLD);
    ELSE
        r := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        o := to_jsonb(OLD);
        SELECT jsonb_object_agg(e.key, e.value) INTO ch
          FROM jsonb_each(o) e WHERE (r -> e.key) IS DISTINCT FROM e.value;
    END IF;
    INSERT INTO audit_changes (id, seq, source_database_id, source_table_oid, source_table_schema,
                               source_table_name, record_pk, record, changes, action, committed_at)
    VALUES (s, s, %L, TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME,
            r ->> TG_ARGV[0], r, ch, lower(TG_OP), now());
    RETURN NULL;
END
$$$f$, (SELECT id FROM sequin_cdc.database_identity));
END
$do$;
