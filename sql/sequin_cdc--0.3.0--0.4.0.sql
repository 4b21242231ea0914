/* sequin_cdc--0.3.0--0.4.0.sql: no change stalls a slot or is lost
 * silently (issue 12), a Kafka sink (issue 14).
 *
 * Each section below belongs to one piece of that work; the fresh 0.4.0
 * install script (joined from sql/src) must equal 0.3.0 updated by this
 * script (test/t/011_upgrade.pl compares them). */

\echo Use "ALTER EXTENSION sequin_cdc UPDATE TO '0.4.0'" to load this file. \quit

------------------------------------------------------------------------------
-- Parked changes: what cannot be filtered, rendered or written
------------------------------------------------------------------------------

-- (end of parked changes)

------------------------------------------------------------------------------
-- Worker state and backoff; sink batches capped by bytes
------------------------------------------------------------------------------

-- (end of worker state)

------------------------------------------------------------------------------
-- DDL on objects capture depends on; DROP EXTENSION
------------------------------------------------------------------------------

-- (end of DDL guards)

------------------------------------------------------------------------------
-- pg_dump / pg_restore
------------------------------------------------------------------------------

-- (end of dump and restore)

------------------------------------------------------------------------------
-- Kafka sink
------------------------------------------------------------------------------

-- (end of Kafka sink)
