/*-------------------------------------------------------------------------
 *
 * plugin_relcache.h
 *		The output plugin's cache of decoded relations: what is captured of
 *		each, by which retention rules, reported under which name.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_PLUGIN_RELCACHE_H
#define SEQUIN_CDC_PLUGIN_RELCACHE_H

#include "postgres.h"

#include "access/attmap.h"
#include "catalog/pg_publication.h"
#include "nodes/execnodes.h"
#include "utils/rel.h"

#include "row_json.h"

/* Action bits, as a rule's actions array lists them */
#define RULE_ACT_INSERT	0x01
#define RULE_ACT_UPDATE	0x02
#define RULE_ACT_DELETE	0x04

/* One retention rule of the slot on a relation */
typedef struct RetentionRule
{
	int64		id;
	Oid			change_table;
	int			actions;		/* RULE_ACT_* bits */
	ExprState  *filter;			/* NULL: every row */
	bool		filter_broken;	/* filter no longer parses: keep everything */
} RetentionRule;

/*
 * What is captured of one decoded relation.  Rows are reported as the
 * rule's source: the relation itself or, for a partition, the ancestor
 * that has the rules, in that table's columns.
 */
typedef struct RelEntry
{
	Oid			relid;			/* hash key: the decoded relation */
	bool		valid;
	bool		captured;		/* published and has rules of this slot */
	MemoryContext cxt;

	PublicationActions pubactions;
	Oid			report_oid;		/* the rules' source: relid or an ancestor */
	char	   *schema_name;
	char	   *table_name;
	TupleDesc	report_desc;
	AttrMap    *map;			/* decoded columns -> report columns, or NULL */
	RowEncoder *enc;
	int			npk;
	AttrNumber *pk;				/* report attnums of the primary key */
	bool		identity_full;	/* does WAL carry whole old rows? */
	bool	   *identity;		/* report columns in the replica identity */
	List	   *rules;			/* RetentionRule * */
	EState	   *estate;			/* for filters */
	TupleTableSlot *slot;		/* report-shaped row for filters */
} RelEntry;

typedef struct PluginRelCache PluginRelCache;

extern PluginRelCache *sequin_cdc_relcache_create(MemoryContext parent,
												  const char *slot_name,
												  const char *publication);
extern void sequin_cdc_relcache_destroy(PluginRelCache *cache);
extern void sequin_cdc_relcache_set_gap_closed(PluginRelCache *cache, bool gap_closed);
extern RelEntry *sequin_cdc_relcache_get(PluginRelCache *cache, Relation rel);
extern void sequin_cdc_relcache_values(RelEntry *e, TupleDesc desc, HeapTuple tup,
									   Datum *values, bool *nulls);
extern const char *sequin_cdc_relcache_key(RelEntry *e, Datum *values, bool *nulls,
									 int *len);
extern bool sequin_cdc_relcache_accept(RelEntry *e, int action, Oid change_table,
									   bool use_filters, Datum *values,
									   bool *nulls, bool *accepted,
									   ErrorData **failed);

#endif							/* SEQUIN_CDC_PLUGIN_RELCACHE_H */
