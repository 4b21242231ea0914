------------------------------------------------------------------------------
-- Kafka sinks (delivered by the sink workers, src/sink_kafka.c)
------------------------------------------------------------------------------

-- A sink's type, and the columns of a Kafka sink: bootstrap brokers, topic
-- (a name or a template with {schema} and {table}), message key mode and
-- librdkafka properties, which may hold secrets (sasl.password,
-- ssl.key.pem): like headers, they are in no view, log line or error.
ALTER TABLE sequin_cdc.sinks
    ADD COLUMN type text NOT NULL DEFAULT 'webhook' CHECK (type IN ('webhook', 'kafka')),
    ADD COLUMN kafka_brokers text,
    ADD COLUMN kafka_topic text,
    ADD COLUMN kafka_key text CHECK (kafka_key IN ('record_pk', 'table', 'none')),
    ADD COLUMN kafka_properties jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(kafka_properties) = 'object');
ALTER TABLE sequin_cdc.sinks ALTER COLUMN url DROP NOT NULL;
ALTER TABLE sequin_cdc.sinks DROP CONSTRAINT sinks_url_check;
ALTER TABLE sequin_cdc.sinks ADD CONSTRAINT sinks_type_columns_check CHECK (coalesce(
    CASE type
        WHEN 'webhook' THEN url ~* '^https?://' AND kafka_brokers IS NULL AND kafka_topic IS NULL
        ELSE url IS NULL AND kafka_brokers IS NOT NULL AND kafka_topic IS NOT NULL AND kafka_key IS NOT NULL
    END, false));
COMMENT ON TABLE sequin_cdc.sinks IS
    'Sinks (webhook or kafka): endpoint, headers or Kafka properties (secret), batch size, timeout, state, cursor (last delivered seq) and delivery statistics. Not readable by PUBLIC; row level security limits other roles to their own sinks.';

CREATE FUNCTION sequin_cdc._kafka_check_config(brokers text, topic text, key text,
                                               property_names text[], property_values text[])
RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_kafka_check_config';
COMMENT ON FUNCTION sequin_cdc._kafka_check_config(text, text, text, text[], text[]) IS
    'Internal: raises an error unless librdkafka accepts the Kafka sink configuration for the current user; property values appear in no error.';

CREATE FUNCTION sequin_cdc.create_kafka_sink(
    name text,
    brokers text,
    topic text,
    change_table regclass DEFAULT 'sequin_cdc.changes',
    key text DEFAULT 'record_pk',
    properties jsonb DEFAULT '{}',
    batch_size int DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_properties jsonb := coalesce(properties, '{}');
    p record;
    start_seq bigint;
    sink_id bigint;
BEGIN
    PERFORM sequin_cdc._check_sink_privileges('SELECT, INSERT');
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'sink name must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the sink, e.g. sequin_cdc.create_kafka_sink(''orders_kafka'', ''kafka1:9092'', ''{schema}.{table}'').';
    END IF;
    IF brokers IS NULL OR topic IS NULL OR key IS NULL THEN
        RAISE EXCEPTION 'brokers, topic and key must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'E.g. sequin_cdc.create_kafka_sink(''orders_kafka'', ''kafka1:9092'', ''{schema}.{table}'').';
    END IF;
    IF change_table IS NULL
       OR NOT EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct
                       WHERE ct.change_table = create_kafka_sink.change_table) THEN
        RAISE EXCEPTION '"%" is not a change table', coalesce(change_table::text, 'NULL')
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Use sequin_cdc.changes (the default) or a table made by sequin_cdc.create_change_table().';
    END IF;
    PERFORM sequin_cdc._require_select(change_table, format('permission denied for change table %s', change_table),
        'A sink sends what its owner may read, and reads it as its owner.');
    IF jsonb_typeof(v_properties) <> 'object' THEN
        RAISE EXCEPTION 'properties must be a JSON object, not %', jsonb_typeof(v_properties)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass librdkafka properties as an object, e.g. ''{"compression.type": "zstd"}''.';
    END IF;
    FOR p IN SELECT e.key, e.value FROM jsonb_each(v_properties) e ORDER BY e.key LOOP
        IF jsonb_typeof(p.value) NOT IN ('string', 'number', 'boolean') THEN
            RAISE EXCEPTION 'value of Kafka property "%" must be a string, not %', p.key, jsonb_typeof(p.value)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Quote every property value, e.g. ''{"linger.ms": "5"}''.';
        END IF;
    END LOOP;
    -- librdkafka's own checks, as the owner-to-be (values in no error)
    PERFORM sequin_cdc._kafka_check_config(brokers, topic, key,
        ARRAY(SELECT e.key FROM jsonb_each_text(v_properties) e ORDER BY e.key),
        ARRAY(SELECT e.value FROM jsonb_each_text(v_properties) e ORDER BY e.key));
    -- everything the table checks, before the row (with its secrets) is
    -- built: a failing row is shown in the constraint's error
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is the most changes produced before the cursor moves; the default is 1000.';
    END IF;
    IF EXISTS (SELECT 1 FROM sequin_cdc.sinks k WHERE k.name = create_kafka_sink.name) THEN
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name, or drop the sink first with sequin_cdc.drop_sink().';
    END IF;

    -- New sinks send what is committed from now on; replay_sink() sends
    -- what the change table already holds.
    EXECUTE format('SELECT coalesce(max(seq), 0) FROM %s', change_table) INTO start_seq;
    BEGIN
        INSERT INTO sequin_cdc.sinks AS k (name, type, change_table, batch_size, cursor_seq,
                                           kafka_brokers, kafka_topic, kafka_key, kafka_properties)
        VALUES (create_kafka_sink.name, 'kafka', create_kafka_sink.change_table,
                create_kafka_sink.batch_size, start_seq, create_kafka_sink.brokers,
                create_kafka_sink.topic, create_kafka_sink.key, v_properties)
        RETURNING k.id INTO sink_id;
    EXCEPTION WHEN unique_violation THEN
        -- a sink of another role, which row level security hides
        RAISE EXCEPTION 'sink "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Choose another name; sink names are unique in the database.';
    END;
    PERFORM sequin_cdc._start_sink(sink_id);
    RETURN sink_id;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.create_kafka_sink(text, text, text, regclass, text, jsonb, int) IS
    'Creates a Kafka sink: a background worker produces each change committed to change_table from now on as one message (value: the change''s JSON element; key: record_pk, table or none; headers idempotency_key, action, table, seq) to topic ({schema} and {table} replaced) on the brokers, with an idempotent producer configured by the librdkafka properties, at least once and in seq order per key, up to batch_size changes per step. Returns the sink id.';

CREATE FUNCTION sequin_cdc._sink_in_flight(OUT sink_id bigint, OUT in_flight int)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_sink_in_flight';

-- pg_stat_sinks, one row per sink: a Kafka sink's endpoint is its broker
-- list; its type; how many changes the batch being delivered holds
CREATE VIEW sequin_cdc.pg_stat_sinks AS
SELECT s.id,
       s.name,
       s.state,
       w.pid AS worker_pid,
       CASE s.type WHEN 'kafka' THEN 'kafka://' || s.kafka_brokers
                   ELSE sequin_cdc._sink_endpoint(s.url) END AS endpoint,
       s.change_table::text AS change_table,
       s.cursor_seq,
       sequin_cdc._sink_backlog(s.id) AS backlog,
       s.delivered,
       s.requests,
       s.failed_attempts,
       s.consecutive_failures,
       s.last_http_status,
       s.last_error,
       s.last_failure_at,
       s.last_success_at,
       s.batch_size,
       s.timeout_ms,
       s.owner::text AS owner,
       s.created_at,
       s.type,
       coalesce(f.in_flight, 0) AS in_flight
  FROM sequin_cdc.sinks s
  LEFT JOIN sequin_cdc._sink_workers() w ON w.sink_id = s.id
  LEFT JOIN sequin_cdc._sink_in_flight() f ON f.sink_id = s.id;
COMMENT ON VIEW sequin_cdc.pg_stat_sinks IS
    'One row per sink: state (active, paused), worker pid, endpoint (a webhook''s URL without credentials or query, kafka://brokers), cursor seq, backlog, delivered changes, requests, failed attempts, consecutive failures, last HTTP status, last error, the times of the last failure and success, the type (webhook, kafka) and the changes in flight (in the batch being delivered). Never shows headers or Kafka properties.';
