/*-------------------------------------------------------------------------
 *
 * catalog.h
 *		Names of sequin_cdc's own tables and the numbers of the columns
 *		that C code reads from them.
 *
 * The tables are defined in sql/; C code names them and their columns
 * only through the constants here, so that a reader finds every C
 * reader of a table in one grep, and a column added to a table cannot
 * shift what C code reads.  Where C code reads a table through SPI, the
 * column list of the query is defined here too, next to the Anum_
 * constants that number its result columns.
 *
 * One section per table, each saying which files read it.  Column
 * numbers follow the CREATE TABLE statements of sql/src/; a column is only
 * ever added at the end, so they hold for every version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_CATALOG_H
#define SEQUIN_CDC_CATALOG_H

/* The extension, and its schema, which holds every table below */
#define SEQUIN_CDC_EXTENSION		"sequin_cdc"
#define SEQUIN_CDC_SCHEMA			"sequin_cdc"

/* ----------------------------------------------------------------
 * slots: one row per slot made by create_slot() (api.c, capture.c)
 * database_identity: the uuid of this database in change rows (capture.c)
 * ----------------------------------------------------------------
 */
#define SEQUIN_CDC_SLOTS_TABLE		"slots"
#define SEQUIN_CDC_SLOTS_QUALIFIED	"sequin_cdc.slots"
#define SEQUIN_CDC_DATABASE_IDENTITY_QUALIFIED "sequin_cdc.database_identity"

#define Anum_slots_slot_name		1
#define Anum_slots_publication		2

/* What a capture worker reads when it starts ($1: its slot), and where */
#define SEQUIN_CDC_CAPTURE_CONFIG_QUERY \
	"SELECT s.publication::text, d.id FROM " SEQUIN_CDC_SLOTS_QUALIFIED " s, " \
	SEQUIN_CDC_DATABASE_IDENTITY_QUALIFIED " d WHERE s.slot_name = $1"
#define Anum_capture_config_publication	1
#define Anum_capture_config_database_id	2

/*
 * The tables with retention rules of a slot ($1) that its publication ($2)
 * does not cover now (not the table, nor a partition or an ancestor of
 * it), as one text, or null; rules of dropped tables are left out.
 */
#define SEQUIN_CDC_UNCOVERED_RULES_QUERY \
	"SELECT pg_catalog.string_agg(r.source_table::pg_catalog.text, ', ' ORDER BY r.id) " \
	"FROM sequin_cdc." SEQUIN_CDC_RULES_TABLE " r " \
	"WHERE r.slot_name OPERATOR(pg_catalog.=) $1 " \
	"AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) r.source_table) " \
	"AND NOT EXISTS (SELECT FROM pg_catalog.pg_get_publication_tables($2) pt " \
	"WHERE pt.relid IN (SELECT r.source_table::pg_catalog.oid " \
	"UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(r.source_table) t " \
	"UNION SELECT a.relid FROM pg_catalog.pg_partition_ancestors(r.source_table) a))"

/* ----------------------------------------------------------------
 * backfills: one row per backfill, with its cursor (backfill.c)
 * ----------------------------------------------------------------
 */
#define SEQUIN_CDC_BACKFILLS_TABLE	"backfills"
#define SEQUIN_CDC_BACKFILLS_QUALIFIED "sequin_cdc.backfills"

/* backfills.state of a backfill whose worker has work left */
#define SEQUIN_CDC_BACKFILL_RUNNING	"running"

/* What the backfill worker reads of its row, and where in the result */
#define SEQUIN_CDC_BACKFILL_JOB_COLUMNS \
	"source_table::oid, change_table::oid, where_clause, chunk_size, " \
	"last_key, state, run_as::oid"
#define Anum_backfill_job_source_table	1
#define Anum_backfill_job_change_table	2
#define Anum_backfill_job_where_clause	3
#define Anum_backfill_job_chunk_size	4
#define Anum_backfill_job_last_key		5
#define Anum_backfill_job_state			6
#define Anum_backfill_job_run_as		7

/* What the capture worker reads to restart the backfills of its slot */
#define SEQUIN_CDC_BACKFILL_PENDING_COLUMNS "id"
#define Anum_backfill_pending_id		1

/* ------------------------------------------------------------------------
 * The decode path: sequin_cdc.change_retention, the retention rules, read
 * by the output plugin (plugin_relcache.c) under the historic snapshot.
 * ------------------------------------------------------------------------
 */
#define SEQUIN_CDC_RULES_TABLE		"change_retention"

#define Anum_change_retention_id			1
#define Anum_change_retention_source_table	2
#define Anum_change_retention_change_table	3
#define Anum_change_retention_actions		4
#define Anum_change_retention_filter		5
#define Anum_change_retention_slot_name		6

/* ------------------------------------------------------------------------
 * parked_changes: changes that could not be filtered, rendered or written
 * (parked.c writes and retries them)
 * ------------------------------------------------------------------------
 */
#define SEQUIN_CDC_PARKED_TABLE		"parked_changes"
#define SEQUIN_CDC_PARKED_QUALIFIED	"sequin_cdc.parked_changes"

#define SEQUIN_CDC_PARK_INSERT \
	"INSERT INTO " SEQUIN_CDC_PARKED_QUALIFIED " (slot_name, rule_id, " \
	"source_table_oid, source_table_schema, source_table_name, change_table, " \
	"record_pk, action, commit_lsn, xid, committed_at, stage, sqlstate, error, " \
	"record, changes, record_columns, transaction_annotations) " \
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, " \
	"$15, $16, $17, $18)"
#define SEQUIN_CDC_PARK_NARGS		18

/* The parked changes of a slot ($1) whose retry was asked, oldest first */
#define SEQUIN_CDC_PARK_RETRY_QUERY \
	"SELECT id, stage, rule_id, source_table_oid, source_table_schema, " \
	"source_table_name, change_table::oid, record_pk, action, commit_lsn, " \
	"committed_at, record, changes, transaction_annotations FROM " \
	SEQUIN_CDC_PARKED_QUALIFIED " WHERE slot_name = $1 AND retry_requested " \
	"ORDER BY id"
#define Anum_park_retry_id				1
#define Anum_park_retry_stage			2
#define Anum_park_retry_rule_id			3
#define Anum_park_retry_source_oid		4
#define Anum_park_retry_schema			5
#define Anum_park_retry_table			6
#define Anum_park_retry_change_table	7
#define Anum_park_retry_record_pk		8
#define Anum_park_retry_action			9
#define Anum_park_retry_commit_lsn		10
#define Anum_park_retry_committed_at	11
#define Anum_park_retry_record			12
#define Anum_park_retry_changes			13
#define Anum_park_retry_annotations		14

/* A retried change written, or no longer wanted ($1: its id) */
#define SEQUIN_CDC_PARK_DELETE \
	"DELETE FROM " SEQUIN_CDC_PARKED_QUALIFIED " WHERE id = $1"
/* A retry that failed again ($1: id, $2: sqlstate, $3: error) */
#define SEQUIN_CDC_PARK_RETRY_FAILED \
	"UPDATE " SEQUIN_CDC_PARKED_QUALIFIED " SET retry_requested = false, " \
	"retries = retries + 1, last_retry_at = now(), sqlstate = $2, error = $3 " \
	"WHERE id = $1"
/*
 * The current filter of the rule from a source table ($1) to a change table
 * ($2): the rule a parked change was kept for, or the one that replaced it
 */
#define SEQUIN_CDC_RULE_FILTER_QUERY \
	"SELECT filter FROM sequin_cdc.change_retention " \
	"WHERE source_table::oid = $1 AND change_table::oid = $2"
#define Anum_rule_filter				1

/* ----------------------------------------------------------------
 * sinks and retention_policies: what DROP EXTENSION must not leave behind
 * (ddl_guard.c reads the names of both, and the slots above)
 * ----------------------------------------------------------------
 */
#define SEQUIN_CDC_SINKS_TABLE		"sinks"
#define Anum_sinks_name				2

#define SEQUIN_CDC_RETENTION_POLICIES_TABLE	"retention_policies"
#define Anum_retention_policies_change_table	1

#endif							/* SEQUIN_CDC_CATALOG_H */
