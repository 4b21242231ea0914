/*-------------------------------------------------------------------------
 *
 * catalog.h
 *		Names and column numbers of sequin_cdc's own tables, for the C code
 *		that reads them directly rather than through SQL.
 *
 * The column numbers follow the CREATE TABLE statements of the extension
 * scripts (sql/); a column is only ever added at the end, so they hold for
 * every version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_CATALOG_H
#define SEQUIN_CDC_CATALOG_H

/* ------------------------------------------------------------------------
 * The decode path: sequin_cdc.change_retention, the retention rules, read
 * by the output plugin (plugin_relcache.c) under the historic snapshot.
 * ------------------------------------------------------------------------
 */
#define SEQUIN_CDC_SCHEMA			"sequin_cdc"
#define SEQUIN_CDC_RULES_TABLE		"change_retention"

#define Anum_change_retention_id			1
#define Anum_change_retention_source_table	2
#define Anum_change_retention_change_table	3
#define Anum_change_retention_actions		4
#define Anum_change_retention_filter		5
#define Anum_change_retention_slot_name		6

#endif							/* SEQUIN_CDC_CATALOG_H */
