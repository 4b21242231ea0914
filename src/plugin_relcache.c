/*-------------------------------------------------------------------------
 *
 * plugin_relcache.c
 *		The output plugin's relation cache: per decoded relation, whether
 *		it is captured, by which retention rules (with their filters), and
 *		how its rows are reported (name, columns, primary key, replica
 *		identity).
 *
 * What is captured is decided per relation and cached:
 *  - the relation (or, for a partition, its ancestor) is covered by the
 *    slot's publication, honouring the publication's actions;
 *  - a retention rule of this slot names it (sequin_cdc.change_retention,
 *    a user_catalog_table, read with the historic snapshot so that a rule
 *    starts exactly at the commit that added it);
 *  - the rule's actions and filter accept the change.
 * Rules on a partitioned table cover its partitions; their rows are
 * reported as the partitioned table, converted to its columns.
 *
 * The cache is flushed on any relcache invalidation and on publication
 * changes.  Invalidations replay at their place in the stream, so a DDL or a
 * new rule takes effect exactly where it happened.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_publication.h"
#include "executor/executor.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "compat.h"
#include "filter.h"
#include "parked.h"
#include "plugin_relcache.h"
#include "row_json.h"

struct PluginRelCache
{
	char	   *slot_name;
	char	   *publication;
	bool		gap_closed;		/* the transaction being decoded ended
								 * before the worker saw the publication
								 * cover every retained table (see
								 * relcache_unpublished) */
	MemoryContext cxt;			/* RelEntry contexts live under it */
	HTAB	   *rels;			/* relid -> RelEntry */
};

/* The cache the invalidation callbacks flush; one per process at most. */
static PluginRelCache *active_cache = NULL;
static bool callbacks_registered = false;

/* Mark every entry for a rebuild at its next use. */
static void
relcache_invalidate_all(void)
{
	HASH_SEQ_STATUS it;
	RelEntry   *e;

	if (active_cache == NULL)
		return;
	hash_seq_init(&it, active_cache->rels);
	while ((e = hash_seq_search(&it)) != NULL)
		e->valid = false;
}

/* Relcache invalidation callback: any relation may change what we capture. */
static void
relcache_relation_cb(Datum arg, Oid relid)
{
	relcache_invalidate_all();
}

/* Syscache invalidation callback, for the publication catalogs. */
static void
relcache_syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	relcache_invalidate_all();
}

/*
 * An empty cache for a slot and its publication, under parent.  It becomes
 * the one the invalidation callbacks flush.
 */
PluginRelCache *
sequin_cdc_relcache_create(MemoryContext parent, const char *slot_name,
						   const char *publication)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "sequin_cdc relation cache",
											  ALLOCSET_DEFAULT_SIZES);
	PluginRelCache *cache = MemoryContextAllocZero(cxt, sizeof(PluginRelCache));
	HASHCTL		hctl;

	cache->cxt = cxt;
	cache->slot_name = MemoryContextStrdup(cxt, slot_name);
	cache->publication = MemoryContextStrdup(cxt, publication);
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(Oid);
	hctl.entrysize = sizeof(RelEntry);
	hctl.hcxt = cxt;
	cache->rels = hash_create("sequin_cdc relations", 64, &hctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	active_cache = cache;
	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relcache_relation_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONOID, relcache_syscache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONRELMAP, relcache_syscache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONNAMESPACEMAP, relcache_syscache_cb, (Datum) 0);
		callbacks_registered = true;
	}
	return cache;
}

/* Stop flushing cache; its memory goes with its parent context. */
void
sequin_cdc_relcache_destroy(PluginRelCache *cache)
{
	if (active_cache == cache)
		active_cache = NULL;
}

/* A rule's actions array as RULE_ACT_* bits. */
static int
relcache_parse_actions(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			mask = 0;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *a;

		if (nulls[i])
			continue;
		a = TextDatumGetCString(elems[i]);
		if (strcmp(a, "insert") == 0)
			mask |= RULE_ACT_INSERT;
		else if (strcmp(a, "update") == 0)
			mask |= RULE_ACT_UPDATE;
		else if (strcmp(a, "delete") == 0)
			mask |= RULE_ACT_DELETE;
	}
	return mask;
}

/* A filter to compile, by sequin_cdc_try */
typedef struct RelcacheFilterBuild
{
	RelEntry   *e;
	RetentionRule *rule;
	Relation	report_rel;
	const char *filter;
} RelcacheFilterBuild;

/* SequinTryStep: parse and compile one rule's filter. */
static void
relcache_build_filter_step(void *arg)
{
	RelcacheFilterBuild *b = arg;
	Expr	   *expr = sequin_cdc_parse_filter_unlocked(b->report_rel, b->filter);

	if (b->e->estate == NULL)
	{
		b->e->estate = CreateExecutorState();
		b->e->slot = MakeSingleTupleTableSlot(b->e->report_desc, &TTSOpsVirtual);
	}
	b->rule->filter = ExecPrepareExpr(expr, b->e->estate);
}

/*
 * Parse a rule's filter against the report relation's (historic) columns.
 * A filter that no longer parses (a column it names was dropped) must not
 * stop capture, and must not lose changes: it is reported and the rule
 * keeps every row.
 */
static void
relcache_build_filter(RelEntry *e, RetentionRule *rule, Relation report_rel,
					  const char *filter)
{
	RelcacheFilterBuild b = {e, rule, report_rel, filter};
	ErrorData  *edata = NULL;

	if (sequin_cdc_try_decoding(relcache_build_filter_step, &b, &edata))
		return;
	rule->filter = NULL;
	rule->filter_broken = true;
	ereport(WARNING,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("filter of retention rule %lld on \"%s.%s\" no longer applies: %s",
					(long long) rule->id, e->schema_name, e->table_name,
					edata->message),
			 errdetail("Every change of the table is captured until the rule is replaced."),
			 errhint("Drop the rule with sequin_cdc.drop_change_retention(%lld) and add it again with a filter that matches the table.",
					 (long long) rule->id)));
	FreeErrorData(edata);
}

/*
 * Load into e->rules the rules of this slot whose source is one of
 * candidates, with their filter texts in *filters; the first candidate (in
 * the order given) that has any wins, and is returned.
 */
static Oid
relcache_load_rules(PluginRelCache *cache, RelEntry *e, List *candidates,
					List **filters)
{
	Oid			nsp = get_namespace_oid(SEQUIN_CDC_SCHEMA, true);
	Oid			rules_oid;
	Relation	rules_rel;
	TupleDesc	desc;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			chosen = InvalidOid;
	int			best = INT_MAX;

	*filters = NIL;
	if (!OidIsValid(nsp))
		return InvalidOid;
	rules_oid = get_relname_relid(SEQUIN_CDC_RULES_TABLE, nsp);
	if (!OidIsValid(rules_oid))
		return InvalidOid;

	rules_rel = table_open(rules_oid, AccessShareLock);
	desc = RelationGetDescr(rules_rel);
	scan = systable_beginscan(rules_rel, InvalidOid, false, NULL, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Oid			source;
		Name		slot;
		int			pos = 0;
		ListCell   *lc;
		RetentionRule *rule;
		Datum		d;

		slot = DatumGetName(heap_getattr(tup, Anum_change_retention_slot_name,
										 desc, &isnull));
		if (isnull || strcmp(NameStr(*slot), cache->slot_name) != 0)
			continue;
		source = DatumGetObjectId(heap_getattr(tup, Anum_change_retention_source_table,
											   desc, &isnull));
		foreach(lc, candidates)
		{
			if (lfirst_oid(lc) == source)
				break;
			pos++;
		}
		if (lc == NULL || pos > best)
			continue;
		if (pos < best)
		{
			/* a closer-to-root source: drop what we had */
			e->rules = NIL;
			*filters = NIL;
			best = pos;
			chosen = source;
		}

		rule = MemoryContextAllocZero(e->cxt, sizeof(RetentionRule));
		rule->id = DatumGetInt64(heap_getattr(tup, Anum_change_retention_id,
											  desc, &isnull));
		rule->change_table = DatumGetObjectId(heap_getattr(tup, Anum_change_retention_change_table,
														   desc, &isnull));
		rule->actions = relcache_parse_actions(DatumGetArrayTypeP(heap_getattr(tup, Anum_change_retention_actions,
																			   desc, &isnull)));
		d = heap_getattr(tup, Anum_change_retention_filter, desc, &isnull);
		e->rules = lappend(e->rules, rule);
		*filters = lappend(*filters, isnull ? NULL : TextDatumGetCString(d));
	}
	systable_endscan(scan);
	table_close(rules_rel, AccessShareLock);
	return chosen;
}

/*
 * Is one of candidates (a relation and its ancestors, the root first) in
 * the publication?  A FOR ALL TABLES publication takes every table but
 * those of its EXCEPT list (19); as in pgoutput, only a root can be listed
 * there, so a partition is excluded by its root's entry.
 */
static bool
relcache_is_published(Publication *pub, List *candidates)
{
	ListCell   *lc;

	if (pub->alltables)
		return !list_member_oid(sequin_cdc_relation_excluded_publications(linitial_oid(candidates)),
								pub->oid);
	foreach(lc, candidates)
	{
		Oid			relid = lfirst_oid(lc);

		if (list_member_oid(sequin_cdc_relation_publications(relid), pub->oid) ||
			list_member_oid(GetSchemaPublications(get_rel_namespace(relid)), pub->oid))
			return true;
	}
	return false;
}

/*
 * A relation with retention rules of the slot is not published, in the
 * catalog as of the change being decoded: the slot's publication was
 * dropped (has_publication false), or the relation was taken out of it,
 * after the rules were made (add_change_retention requires it covered).
 * Skipping its changes would lose them silently, so capture stops here with
 * an error: the worker records it, backs off and retries, and confirms
 * nothing past this change.  Once the publication exists again and covers
 * every retained table, the worker says so (the plugin's
 * published_upto option, set when the worker checked it, capture.c): for
 * transactions that ended before that check, the missing publication was
 * a gap now closed, and the changes are captured by the rules alone, with
 * every action; such an entry is built again at its next use.
 */
static void
relcache_unpublished(PluginRelCache *cache, RelEntry *e, Relation rel,
					 bool has_publication)
{
	if (cache->gap_closed)
	{
		e->pubactions.pubinsert = e->pubactions.pubupdate =
			e->pubactions.pubdelete = e->pubactions.pubtruncate = true;
		e->valid = false;
		return;
	}
	if (!has_publication)
		ereport(ERROR,
				(errcode(ERRCODE_OPERATOR_INTERVENTION),
				 errmsg("publication \"%s\" of replication slot \"%s\" was dropped while the slot was in use",
						cache->publication, cache->slot_name),
				 errdetail("Table \"%s\" has retention rules of the slot and changed after the drop. Capture stops here; the slot is not confirmed past this change.",
						   RelationGetRelationName(rel)),
				 errhint("Create the publication again with sequin_cdc.create_publication(), covering the tables of the slot's rules: capture then resumes with the changes made meanwhile.")));
	ereport(ERROR,
			(errcode(ERRCODE_OPERATOR_INTERVENTION),
			 errmsg("table \"%s\" was removed from publication \"%s\" while it has retention rules of replication slot \"%s\"",
					RelationGetRelationName(rel), cache->publication, cache->slot_name),
			 errdetail("Capture stops here; the slot is not confirmed past this change."),
			 errhint("Add the table back with ALTER PUBLICATION ... ADD TABLE, or drop its rules with sequin_cdc.drop_change_retention(): capture then resumes with the changes made meanwhile.")));
}

/*
 * Tell the cache whether the transaction about to be decoded ended before
 * the worker last saw the publication cover every retained table
 * (relcache_unpublished).
 */
void
sequin_cdc_relcache_set_gap_closed(PluginRelCache *cache, bool gap_closed)
{
	cache->gap_closed = gap_closed;
}

/*
 * Fill entry e for the decoded relation rel, in e->cxt, from the catalog
 * as of the change being decoded: is it published, which rules of the
 * slot take it (its own, or those of the closest-to-root ancestor that has
 * some), and what the reporting needs: the rule source's name, columns
 * and column map, primary key, replica identity and compiled filters.
 * Leaves e->captured false when nothing of rel is kept; a relation with
 * rules that is not published stops capture (relcache_unpublished).
 */
static void
relcache_build_entry(PluginRelCache *cache, RelEntry *e, Relation rel)
{
	Oid			pubid;
	Publication *pub;
	List	   *candidates;
	List	   *filters;
	Relation	report_rel;
	ListCell   *lc,
			   *lf;
	Bitmapset  *idattrs;
	bool		published;

	e->captured = false;
	pubid = get_publication_oid(cache->publication, true);
	pub = OidIsValid(pubid) ? GetPublication(pubid) : NULL;

	/*
	 * Candidate rule sources: the root first, down to the relation itself.
	 * get_partition_ancestors lists the parent first.
	 */
	candidates = list_make1_oid(RelationGetRelid(rel));
	if (rel->rd_rel->relispartition)
	{
		foreach(lc, get_partition_ancestors(RelationGetRelid(rel)))
			candidates = lcons_oid(lfirst_oid(lc), candidates);
	}
	published = pub != NULL && relcache_is_published(pub, candidates);
	if (published)
		e->pubactions = pub->pubactions;
	else if (pub != NULL && pub->alltables)
		return;					/* left out by EXCEPT (19): a choice */

	e->report_oid = relcache_load_rules(cache, e, candidates, &filters);
	if (!OidIsValid(e->report_oid) || e->rules == NIL)
		return;
	if (!published)
		relcache_unpublished(cache, e, rel, pub != NULL);

	/* decoding takes no locks: the historic relcache entry, as core does */
	report_rel = e->report_oid == RelationGetRelid(rel) ? rel :
		RelationIdGetRelation(e->report_oid);
	if (!RelationIsValid(report_rel))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not open relation %u, which has retention rules of replication slot \"%s\"",
						e->report_oid, cache->slot_name),
				 errdetail("Capture stops here rather than skip the changes of \"%s\"; the slot is not confirmed past this change.",
						   RelationGetRelationName(rel))));

	e->schema_name = MemoryContextStrdup(e->cxt,
										 get_namespace_name(RelationGetNamespace(report_rel)));
	e->table_name = MemoryContextStrdup(e->cxt, RelationGetRelationName(report_rel));
	{
		MemoryContext old = MemoryContextSwitchTo(e->cxt);

		e->report_desc = CreateTupleDescCopy(RelationGetDescr(report_rel));
		if (report_rel != rel)
			e->map = sequin_cdc_attrmap_by_name_if_req(RelationGetDescr(rel), e->report_desc);
		e->npk = sequin_cdc_primary_key(report_rel, &e->pk);
		MemoryContextSwitchTo(old);
	}
	/* from the relation's own descriptor: a copy has no attgenerated */
	e->enc = sequin_cdc_row_encoder_create(RelationGetDescr(report_rel), e->cxt);

	/*
	 * What the WAL holds of old rows depends on the decoded relation's own
	 * replica identity (for a partition, the partition's).  Looked up as
	 * pgoutput does, without locking the index: RelationGetIndexAttrBitmap
	 * would lock every index of the table, and wait for user locks.
	 */
	e->identity_full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
	e->identity = MemoryContextAllocZero(e->cxt, sizeof(bool) * Max(e->report_desc->natts, 1));
	idattrs = RelationGetIdentityKeyBitmap(rel);
	for (int j = 0; j < e->report_desc->natts; j++)
	{
		AttrNumber	src = e->map ? e->map->attnums[j] : j + 1;

		if (src > 0 &&
			bms_is_member(src - FirstLowInvalidHeapAttributeNumber, idattrs))
			e->identity[j] = true;
	}

	forboth(lc, e->rules, lf, filters)
	{
		char	   *filter = lfirst(lf);

		if (filter)
		{
			MemoryContext old = MemoryContextSwitchTo(e->cxt);

			relcache_build_filter(e, lfirst(lc), report_rel, filter);
			MemoryContextSwitchTo(old);
		}
	}

	if (report_rel != rel)
		RelationClose(report_rel);
	e->captured = true;
}

/*
 * The entry of decoded relation rel, built (again) if it is new or was
 * invalidated since.
 */
RelEntry *
sequin_cdc_relcache_get(PluginRelCache *cache, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	bool		found;
	RelEntry   *e = hash_search(cache->rels, &relid, HASH_ENTER, &found);

	if (found && e->valid)
		return e;
	if (found)
		MemoryContextDelete(e->cxt);
	memset(e, 0, sizeof(RelEntry));
	e->relid = relid;
	e->cxt = AllocSetContextCreate(cache->cxt, "sequin_cdc relation",
								   ALLOCSET_SMALL_SIZES);
	/* an invalidation while we build marks it for another rebuild */
	e->valid = true;
	{
		/* catalog lookups leave garbage: let it go with the entry */
		MemoryContext old = MemoryContextSwitchTo(e->cxt);

		relcache_build_entry(cache, e, rel);
		MemoryContextSwitchTo(old);
	}
	return e;
}

/*
 * Deform a decoded tuple of desc (the decoded relation's) into
 * report-shaped arrays, natts of e->report_desc long.
 */
void
sequin_cdc_relcache_values(RelEntry *e, TupleDesc desc, HeapTuple tup,
						   Datum *values, bool *nulls)
{
	int			n = desc->natts;
	Datum	   *v = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nl = palloc(sizeof(bool) * Max(n, 1));

	heap_deform_tuple(tup, desc, v, nl);
	for (int j = 0; j < e->report_desc->natts; j++)
	{
		AttrNumber	src = e->map ? e->map->attnums[j] : j + 1;

		if (src > 0 && src <= n)
		{
			values[j] = v[src - 1];
			nulls[j] = nl[src - 1];
		}
		else
		{
			values[j] = (Datum) 0;
			nulls[j] = true;
		}
	}
}

/*
 * record_pk of a report-shaped row: the primary key as text, "" (len 0)
 * for a table without one.
 */
const char *
sequin_cdc_relcache_key(RelEntry *e, Datum *values, bool *nulls, int *len)
{
	if (e->npk == 0)
	{
		*len = 0;
		return "";
	}
	return sequin_cdc_row_encoder_key_text(e->enc, e->npk, e->pk, values,
										   nulls, len);
}

/* Does rule's filter accept the report-shaped row? */
static bool
relcache_filter_accepts(RelEntry *e, RetentionRule *rule, Datum *values,
						bool *nulls)
{
	ExprContext *econtext;
	Datum		res;
	bool		isnull;
	TupleTableSlot *slot = e->slot;

	if (rule->filter == NULL)
		return true;
	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * e->report_desc->natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * e->report_desc->natts);
	ExecStoreVirtualTuple(slot);
	econtext = GetPerTupleExprContext(e->estate);
	econtext->ecxt_scantuple = slot;
	res = ExecEvalExprSwitchContext(rule->filter, econtext, &isnull);
	ResetPerTupleExprContext(e->estate);
	return !isnull && DatumGetBool(res);
}

/* A filter evaluation run by sequin_cdc_try */
typedef struct RelcacheFilterCall
{
	RelEntry   *e;
	RetentionRule *rule;
	Datum	   *values;
	bool	   *nulls;
	bool		accepts;
} RelcacheFilterCall;

/* SequinTryStep: evaluate one rule's filter. */
static void
relcache_filter_step(void *arg)
{
	RelcacheFilterCall *call = arg;

	call->accepts = relcache_filter_accepts(call->e, call->rule, call->values,
											call->nulls);
}

/*
 * Which of e's rules take a row: those whose actions include action (a
 * RULE_ACT_* bit), that write change_table if it is valid, and whose
 * filter accepts the report-shaped row, when use_filters (a filter cannot
 * judge a row the WAL does not hold whole: such a row is kept rather than
 * lost).  Sets accepted[i] for the i-th rule.  A filter that raises an
 * error about the row (100 / a with a = 0) neither takes nor drops it: its
 * error goes into failed[i], to park the change (parked.c); only filters
 * are evaluated in a subtransaction, rules without one cost nothing.
 * Returns whether any rule took the row or failed on it.
 */
bool
sequin_cdc_relcache_accept(RelEntry *e, int action, Oid change_table,
						   bool use_filters, Datum *values, bool *nulls,
						   bool *accepted, ErrorData **failed)
{
	ListCell   *lc;
	int			i = 0;
	bool		any = false;

	foreach(lc, e->rules)
	{
		RetentionRule *rule = lfirst(lc);
		RelcacheFilterCall call = {e, rule, values, nulls, true};

		failed[i] = NULL;
		accepted[i] = (rule->actions & action) &&
			(!OidIsValid(change_table) || rule->change_table == change_table);
		if (accepted[i] && use_filters && rule->filter != NULL &&
			!sequin_cdc_try_decoding(relcache_filter_step, &call, &failed[i]))
			accepted[i] = false;
		else if (accepted[i] && use_filters)
			accepted[i] = call.accepts;
		any |= accepted[i] || failed[i] != NULL;
		i++;
	}
	return any;
}
