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
