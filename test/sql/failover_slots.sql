--
-- create_slot(..., failover => true): a failover slot on PostgreSQL 17+
-- (pg_replication_slots.failover, and a failover row in health()), refused
-- below 17 with feature_not_supported and a hint.  Two expected files:
-- failover_slots.out (15, 16) and failover_slots_1.out (17+).
--
SELECT sequin_cdc.create_publication('fo_pub');
-- without failover (the default, or false): a slot on every version
SELECT sequin_cdc.create_slot('fo_plain', 'fo_pub', failover => false) IS NOT NULL AS created;
SELECT slot_name, plugin, to_jsonb(s) ->> 'failover' AS failover
  FROM pg_replication_slots s WHERE slot_name = 'fo_plain';
SELECT count(*) AS failover_rows FROM sequin_cdc.health() WHERE check_name LIKE 'failover %';
SELECT sequin_cdc.drop_slot('fo_plain');
-- failover => true
\set VERBOSITY default
SELECT sequin_cdc.create_slot('fo_slot', 'fo_pub', failover => true) IS NOT NULL AS created;
SELECT slot_name, plugin, to_jsonb(s) ->> 'failover' AS failover
  FROM pg_replication_slots s WHERE slot_name = 'fo_slot';
SELECT count(*) AS slots_rows FROM sequin_cdc.slots WHERE slot_name = 'fo_slot';
-- synchronized_standby_slots is empty here: a warning that says what to set
SELECT check_name, status,
       detail LIKE 'failover slot, but synchronized_standby_slots is empty%' AS says_empty,
       detail LIKE '%sync_replication_slots = on%' AS names_standby_setting
  FROM sequin_cdc.health() WHERE check_name LIKE 'failover %';
SELECT sequin_cdc.drop_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'fo_slot';
DROP PUBLICATION fo_pub;
