/*-------------------------------------------------------------------------
 *
 * decode.c
 *		The sequin_cdc logical decoding output plugin: decoded changes to
 *		change rows.
 *
 * The slots created by sequin_cdc.create_slot() name this library as their
 * output plugin, and only the slot's capture worker consumes them.  The
 * callbacks run inside the reorder buffer's transaction, under the historic
 * snapshot of the change, and cannot write; they render each captured row
 * (record, changes, record_pk) and append it to the worker's ChangeBuffer,
 * which the worker writes after decoding (see capture.c).
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

#include "access/attmap.h"
#include "access/detoast.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_index.h"
#include "catalog/pg_publication.h"
#include "commands/defrem.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "mb/pg_wchar.h"
#include "utils/syscache.h"

#include "backfill.h"
#include "change_buffer.h"
#include "common/hashfn.h"
#include "decode.h"
#include "filter.h"
#include "row_json.h"
#include "sequin_cdc.h"

ChangeBuffer *sequin_cdc_decode_target = NULL;
DecodePosition sequin_cdc_decode_position;

/* Action bits, as stored in a rule's actions array */
#define ACT_INSERT	0x01
#define ACT_UPDATE	0x02
#define ACT_DELETE	0x04

typedef struct RetentionRule
{
	int64		id;
	Oid			change_table;
	int			actions;
	ExprState  *filter;			/* NULL: every row */
	bool		filter_broken;	/* filter no longer parses: keep everything */
} RetentionRule;

typedef struct RelEntry
{
	Oid			relid;			/* hash key: the decoded relation */
	bool		valid;
	bool		captured;
	MemoryContext cxt;

	PublicationActions pubactions;
	Oid			report_oid;		/* the rule's source: relid or an ancestor */
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

typedef struct DecodeState
{
	char	   *slot_name;
	char	   *publication;
	ChangeBuffer *buffer;
	MemoryContext cache_cxt;	/* RelEntry contexts live under it */
	MemoryContext change_cxt;	/* reset after every change */
	MemoryContext txn_cxt;		/* reset at every transaction start */
	HTAB	   *rels;
	Jsonb	   *annotations;	/* current transaction's, or NULL */
	uint64		txn_rows;
	bool		replay_only;	/* transaction written before: keep no rows */
	List	   *windows;		/* open backfill windows */
} DecodeState;

/*
 * A backfill window: from a chunk's low watermark to its high watermark,
 * the keys of the table that changed.  Keys are hashed, with the key text
 * kept for an exact comparison.
 */
typedef struct BackfillWindow
{
	int64		id;
	Oid			relid;			/* the table read (the rule source) */
	XLogRecPtr	low_lsn;		/* commit of the low watermark */
	bool		truncated;		/* the table was truncated in the window */
	MemoryContext cxt;
	HTAB	   *keys;			/* uint64 hash -> WindowKey */
} BackfillWindow;

typedef struct WindowKey
{
	uint64		hash;
	List	   *texts;			/* key texts with this hash */
} WindowKey;

/* The state the cache callbacks flush; one decoding context per process. */
static DecodeState *active_state = NULL;
static bool callbacks_registered = false;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

static void
invalidate_all(void)
{
	HASH_SEQ_STATUS it;
	RelEntry   *e;

	if (active_state == NULL || active_state->rels == NULL)
		return;
	hash_seq_init(&it, active_state->rels);
	while ((e = hash_seq_search(&it)) != NULL)
		e->valid = false;
}

static void
relcache_cb(Datum arg, Oid relid)
{
	invalidate_all();
}

static void
syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_all();
}

static void
seq_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	DecodeState *st;
	HASHCTL		hctl;
	ListCell   *lc;

	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;
	if (is_init)
		return;					/* slot creation: nothing to set up */

	if (sequin_cdc_decode_target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" can only be consumed by its sequin_cdc capture worker",
						NameStr(ctx->slot->data.name)),
				 errhint("Read the change table instead; sequin_cdc.pg_stat_capture shows the worker.")));

	st = MemoryContextAllocZero(ctx->context, sizeof(DecodeState));
	st->slot_name = MemoryContextStrdup(ctx->context, NameStr(ctx->slot->data.name));
	st->buffer = sequin_cdc_decode_target;
	foreach(lc, ctx->output_plugin_options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "publication") == 0)
			st->publication = MemoryContextStrdup(ctx->context, defGetString(def));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized sequin_cdc decoding option \"%s\"", def->defname)));
	}
	if (st->publication == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sequin_cdc decoding needs a publication")));

	st->cache_cxt = AllocSetContextCreate(ctx->context, "sequin_cdc relation cache",
										  ALLOCSET_DEFAULT_SIZES);
	st->change_cxt = AllocSetContextCreate(ctx->context, "sequin_cdc change",
										   ALLOCSET_DEFAULT_SIZES);
	st->txn_cxt = AllocSetContextCreate(ctx->context, "sequin_cdc transaction",
										ALLOCSET_SMALL_SIZES);
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(Oid);
	hctl.entrysize = sizeof(RelEntry);
	hctl.hcxt = st->cache_cxt;
	st->rels = hash_create("sequin_cdc relations", 64, &hctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	active_state = st;
	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relcache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONOID, syscache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONRELMAP, syscache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(PUBLICATIONNAMESPACEMAP, syscache_cb, (Datum) 0);
		callbacks_registered = true;
	}
	ctx->output_plugin_private = st;
}

static void
seq_shutdown(LogicalDecodingContext *ctx)
{
	if (active_state == ctx->output_plugin_private)
		active_state = NULL;
}

/* ------------------------------------------------------------------------
 * Relation cache
 * ------------------------------------------------------------------------
 */

static int
parse_actions(ArrayType *arr)
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
			mask |= ACT_INSERT;
		else if (strcmp(a, "update") == 0)
			mask |= ACT_UPDATE;
		else if (strcmp(a, "delete") == 0)
			mask |= ACT_DELETE;
	}
	return mask;
}

/*
 * Parse a rule's filter against the report relation.  A filter that no
 * longer parses (a column it names was dropped) must not stop capture, and
 * must not lose changes: it is reported and the rule keeps every row.
 */
static void
build_filter(RelEntry *e, RetentionRule *rule, Relation report_rel,
			 const char *filter)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Expr	   *expr = sequin_cdc_parse_filter(report_rel, filter);

		if (e->estate == NULL)
		{
			e->estate = CreateExecutorState();
			e->slot = MakeSingleTupleTableSlot(e->report_desc, &TTSOpsVirtual);
		}
		rule->filter = ExecPrepareExpr(expr, e->estate);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
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
	PG_END_TRY();
}

/*
 * The rules of this slot whose source is one of candidates; the first
 * candidate (in the order given) that has any wins, and is returned.
 */
static Oid
load_rules(DecodeState *st, RelEntry *e, List *candidates, List **filters)
{
	Oid			nsp = get_namespace_oid("sequin_cdc", true);
	Oid			rules_oid;
	Relation	rules_rel;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			chosen = InvalidOid;
	int			best = INT_MAX;

	*filters = NIL;
	if (!OidIsValid(nsp))
		return InvalidOid;
	rules_oid = get_relname_relid("change_retention", nsp);
	if (!OidIsValid(rules_oid))
		return InvalidOid;

	rules_rel = table_open(rules_oid, AccessShareLock);
	scan = systable_beginscan(rules_rel, InvalidOid, false, NULL, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		TupleDesc	desc = RelationGetDescr(rules_rel);
		bool		isnull;
		Oid			source;
		Name		slot;
		int			pos = 0;
		ListCell   *lc;
		RetentionRule *rule;
		Datum		d;

		/* columns: id, source_table, change_table, actions, filter, slot_name */
		slot = DatumGetName(heap_getattr(tup, 6, desc, &isnull));
		if (isnull || strcmp(NameStr(*slot), st->slot_name) != 0)
			continue;
		source = DatumGetObjectId(heap_getattr(tup, 2, desc, &isnull));
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
		rule->id = DatumGetInt64(heap_getattr(tup, 1, desc, &isnull));
		rule->change_table = DatumGetObjectId(heap_getattr(tup, 3, desc, &isnull));
		rule->actions = parse_actions(DatumGetArrayTypeP(heap_getattr(tup, 4, desc, &isnull)));
		d = heap_getattr(tup, 5, desc, &isnull);
		e->rules = lappend(e->rules, rule);
		*filters = lappend(*filters, isnull ? NULL : TextDatumGetCString(d));
	}
	systable_endscan(scan);
	table_close(rules_rel, AccessShareLock);
	return chosen;
}

/* Is one of candidates (a relation and its ancestors) in the publication? */
static bool
is_published(Publication *pub, List *candidates)
{
	ListCell   *lc;

	if (pub->alltables)
		return true;
	foreach(lc, candidates)
	{
		Oid			relid = lfirst_oid(lc);

		if (list_member_oid(GetRelationPublications(relid), pub->oid) ||
			list_member_oid(GetSchemaPublications(get_rel_namespace(relid)), pub->oid))
			return true;
	}
	return false;
}

static void
build_entry(DecodeState *st, RelEntry *e, Relation rel)
{
	Oid			pubid;
	Publication *pub;
	List	   *candidates;
	List	   *filters;
	Relation	report_rel;
	ListCell   *lc,
			   *lf;
	Bitmapset  *idattrs;

	e->captured = false;
	pubid = get_publication_oid(st->publication, true);
	if (!OidIsValid(pubid))
		return;
	pub = GetPublication(pubid);

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
	if (!is_published(pub, candidates))
		return;
	e->pubactions = pub->pubactions;

	e->report_oid = load_rules(st, e, candidates, &filters);
	if (!OidIsValid(e->report_oid) || e->rules == NIL)
		return;

	report_rel = e->report_oid == RelationGetRelid(rel) ? rel :
		RelationIdGetRelation(e->report_oid);
	if (!RelationIsValid(report_rel))
		return;

	e->schema_name = MemoryContextStrdup(e->cxt,
										 get_namespace_name(RelationGetNamespace(report_rel)));
	e->table_name = MemoryContextStrdup(e->cxt, RelationGetRelationName(report_rel));
	{
		MemoryContext old = MemoryContextSwitchTo(e->cxt);

		e->report_desc = CreateTupleDescCopy(RelationGetDescr(report_rel));
		if (report_rel != rel)
			e->map = build_attrmap_by_name_if_req(RelationGetDescr(rel), e->report_desc);
		MemoryContextSwitchTo(old);
	}
	e->enc = row_encoder_create(e->report_desc, e->cxt);

	/* primary key of the reported table, in key order */
	(void) RelationGetIndexList(report_rel);
	if (OidIsValid(report_rel->rd_pkindex))
	{
		HeapTuple	itup = SearchSysCache1(INDEXRELID,
										   ObjectIdGetDatum(report_rel->rd_pkindex));

		if (HeapTupleIsValid(itup))
		{
			Form_pg_index idx = (Form_pg_index) GETSTRUCT(itup);

			e->npk = idx->indnkeyatts;
			e->pk = MemoryContextAlloc(e->cxt, sizeof(AttrNumber) * Max(e->npk, 1));
			for (int i = 0; i < e->npk; i++)
				e->pk[i] = idx->indkey.values[i];
			ReleaseSysCache(itup);
		}
	}

	/*
	 * What the WAL holds of old rows depends on the decoded relation's own
	 * replica identity (for a partition, the partition's).
	 */
	e->identity_full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
	e->identity = MemoryContextAllocZero(e->cxt, sizeof(bool) * Max(e->report_desc->natts, 1));
	idattrs = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
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

			build_filter(e, lfirst(lc), report_rel, filter);
			MemoryContextSwitchTo(old);
		}
	}

	if (report_rel != rel)
		RelationClose(report_rel);
	e->captured = true;
}

static RelEntry *
get_entry(DecodeState *st, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	bool		found;
	RelEntry   *e = hash_search(st->rels, &relid, HASH_ENTER, &found);

	if (found && e->valid)
		return e;
	if (found)
		MemoryContextDelete(e->cxt);
	memset(e, 0, sizeof(RelEntry));
	e->relid = relid;
	e->cxt = AllocSetContextCreate(st->cache_cxt, "sequin_cdc relation",
								   ALLOCSET_SMALL_SIZES);
	/* an invalidation while we build marks it for another rebuild */
	e->valid = true;
	{
		/* catalog lookups leave garbage: let it go with the entry */
		MemoryContext old = MemoryContextSwitchTo(e->cxt);

		build_entry(st, e, rel);
		MemoryContextSwitchTo(old);
	}
	return e;
}

/* ------------------------------------------------------------------------
 * Changes
 * ------------------------------------------------------------------------
 */

static void
seq_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	DecodeState *st = ctx->output_plugin_private;

	MemoryContextReset(st->txn_cxt);
	st->annotations = NULL;
	st->txn_rows = 0;
	st->replay_only = txn->end_lsn <= st->buffer->skip_upto;
	sequin_cdc_decode_position.xid = txn->xid;
}

static void
seq_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   XLogRecPtr commit_lsn)
{
	DecodeState *st = ctx->output_plugin_private;

	if (st->txn_rows > 0)
		st->buffer->ntxns++;
	st->buffer->last_commit_end = txn->end_lsn;
	st->buffer->last_commit_time = txn->xact_time.commit_time;
	sequin_cdc_decode_position.xid = InvalidTransactionId;
	sequin_cdc_decode_position.relname = NULL;
}

static bool
values_equal(Datum a, Datum b, int16 typlen, bool typbyval)
{
	if (typlen == -1)
	{
		struct varlena *x = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(a));
		struct varlena *y = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(b));

		return VARSIZE_ANY_EXHDR(x) == VARSIZE_ANY_EXHDR(y) &&
			memcmp(VARDATA_ANY(x), VARDATA_ANY(y), VARSIZE_ANY_EXHDR(x)) == 0;
	}
	return datumIsEqual(a, b, typbyval, typlen);
}

/* Deform a decoded tuple into report-shaped arrays. */
static void
report_values(RelEntry *e, TupleDesc desc, HeapTuple tup,
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

static bool
filter_accepts(RelEntry *e, RetentionRule *rule, Datum *values, bool *nulls)
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

static void
append_rows(DecodeState *st, RelEntry *e, ReorderBufferTXN *txn, char action,
			const bool *accepted, char *pk, int pk_len, Jsonb *record,
			Jsonb *changes)
{
	BufferedChange c;
	ListCell   *lc;
	int			i = 0;

	if (st->replay_only)
		return;
	c.source_oid = e->report_oid;
	c.action = action;
	c.committed_at = txn->xact_time.commit_time;
	c.commit_lsn = txn->end_lsn;
	c.schema_name = e->schema_name;
	c.schema_len = strlen(e->schema_name);
	c.table_name = e->table_name;
	c.table_len = strlen(e->table_name);
	c.record_pk = pk;
	c.pk_len = pk_len;
	c.record = record;
	c.changes = changes;
	c.annotations = st->annotations;
	foreach(lc, e->rules)
	{
		RetentionRule *rule = lfirst(lc);

		if (accepted == NULL || accepted[i])
		{
			c.change_table = rule->change_table;
			change_buffer_append(st->buffer, &c);
			st->txn_rows++;
		}
		i++;
	}
}

/* ------------------------------------------------------------------------
 * Backfill windows
 * ------------------------------------------------------------------------
 */

static BackfillWindow *
find_window(DecodeState *st, int64 id)
{
	ListCell   *lc;

	foreach(lc, st->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (w->id == id)
			return w;
	}
	return NULL;
}

/* The slot must not be confirmed past the oldest open window. */
static void
update_hold(DecodeState *st)
{
	XLogRecPtr	hold = InvalidXLogRecPtr;
	ListCell   *lc;

	foreach(lc, st->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (XLogRecPtrIsInvalid(hold) || w->low_lsn < hold)
			hold = w->low_lsn;
	}
	st->buffer->hold_lsn = hold;
}

static bool
window_has_key(BackfillWindow *w, const char *key, int len, bool add)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, len, 0);
	bool		found;
	WindowKey  *wk;
	ListCell   *lc;

	wk = hash_search(w->keys, &h, add ? HASH_ENTER : HASH_FIND, &found);
	if (wk == NULL)
		return false;
	if (!found)
		wk->texts = NIL;
	foreach(lc, wk->texts)
	{
		if (strcmp(lfirst(lc), key) == 0)
			return true;
	}
	if (add)
	{
		MemoryContext old = MemoryContextSwitchTo(w->cxt);

		wk->texts = lappend(wk->texts, pnstrdup(key, len));
		MemoryContextSwitchTo(old);
	}
	return false;
}

/* Note a changed key of relid in every window open on it. */
static void
note_changed_key(DecodeState *st, Oid relid, const char *key, int len)
{
	ListCell   *lc;

	foreach(lc, st->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (w->relid == relid)
			(void) window_has_key(w, key, len, true);
	}
}

static bool
window_open_on(DecodeState *st, Oid relid)
{
	ListCell   *lc;

	foreach(lc, st->windows)
	{
		if (((BackfillWindow *) lfirst(lc))->relid == relid)
			return true;
	}
	return false;
}

static void
open_window(DecodeState *st, ReorderBufferTXN *txn, const BackfillMessage *m)
{
	BackfillWindow *w;
	MemoryContext cxt;
	HASHCTL		hctl;

	if (find_window(st, m->id))
		return;
	cxt = AllocSetContextCreate(st->cache_cxt, "sequin_cdc backfill window",
								ALLOCSET_SMALL_SIZES);
	w = MemoryContextAllocZero(cxt, sizeof(BackfillWindow));
	w->id = m->id;
	w->relid = m->relid;
	w->low_lsn = txn->final_lsn;
	w->cxt = cxt;
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(uint64);
	hctl.entrysize = sizeof(WindowKey);
	hctl.hcxt = cxt;
	w->keys = hash_create("sequin_cdc backfill window keys", 256, &hctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	{
		MemoryContext old = MemoryContextSwitchTo(st->cache_cxt);

		st->windows = lappend(st->windows, w);
		MemoryContextSwitchTo(old);
	}
	update_hold(st);
}

static void
close_window(DecodeState *st, BackfillWindow *w)
{
	MemoryContext old = MemoryContextSwitchTo(st->cache_cxt);

	st->windows = list_delete_ptr(st->windows, w);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(w->cxt);
	update_hold(st);
}

static void
seq_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
		   Relation rel, ReorderBufferChange *change)
{
	DecodeState *st = ctx->output_plugin_private;
	RelEntry   *e;
	char		action;
	int			actbit;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	MemoryContext old;
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts;
	Datum	   *nv = NULL,
			   *ov = NULL;
	bool	   *nn = NULL,
			   *on = NULL;
	bool	   *include;
	bool	   *accepted;
	bool		any = false;
	Datum	   *rv;
	bool	   *rn;
	Jsonb	   *record;
	Jsonb	   *changes = NULL;
	char	   *pk;
	int			pk_len;
	int			i;
	ListCell   *lc;

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			action = 'i';
			actbit = ACT_INSERT;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			action = 'u';
			actbit = ACT_UPDATE;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			action = 'd';
			actbit = ACT_DELETE;
			break;
		default:
			return;
	}

	sequin_cdc_decode_position.relname = RelationGetRelationName(rel);
	e = get_entry(st, rel);
	if (!e->captured)
		return;
	if ((action == 'i' && !e->pubactions.pubinsert) ||
		(action == 'u' && !e->pubactions.pubupdate) ||
		(action == 'd' && !e->pubactions.pubdelete))
		return;

	old = MemoryContextSwitchTo(st->change_cxt);

	if (change->data.tp.newtuple)
		newtup = &change->data.tp.newtuple->tuple;
	if (change->data.tp.oldtuple)
		oldtup = &change->data.tp.oldtuple->tuple;
	if ((action != 'd' && newtup == NULL) || (action == 'd' && oldtup == NULL))
	{
		/* a delete without any old key: nothing to render */
		MemoryContextSwitchTo(old);
		return;
	}

	natts = e->report_desc->natts;
	include = palloc(sizeof(bool) * Max(natts, 1));
	for (i = 0; i < natts; i++)
		include[i] = true;
	if (newtup)
	{
		nv = palloc(sizeof(Datum) * Max(natts, 1));
		nn = palloc(sizeof(bool) * Max(natts, 1));
		report_values(e, desc, newtup, nv, nn);
	}
	if (oldtup)
	{
		ov = palloc(sizeof(Datum) * Max(natts, 1));
		on = palloc(sizeof(bool) * Max(natts, 1));
		report_values(e, desc, oldtup, ov, on);
	}

	/*
	 * An update that did not touch a TOASTed column logs a pointer to the
	 * stored value, not the value.  With REPLICA IDENTITY FULL the old row
	 * has it; without, the column is left out of record rather than shown
	 * wrong.
	 */
	if (newtup)
	{
		for (i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(e->report_desc, i);

			if (nn[i] || att->attlen != -1 ||
				!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(nv[i])))
				continue;
			if (ov && e->identity_full && !on[i] &&
				!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(ov[i])))
				nv[i] = ov[i];
			else
				include[i] = false;
		}
	}

	if (action == 'd')
	{
		rv = ov;
		rn = on;
		if (!e->identity_full)
		{
			for (i = 0; i < natts; i++)
				include[i] = e->identity[i];
		}
	}
	else
	{
		rv = nv;
		rn = nn;
	}

	if (e->npk > 0)
		pk = row_encoder_key_text(e->enc, e->npk, e->pk, rv, rn, &pk_len);
	else
	{
		pk = "";
		pk_len = 0;
	}

	/* a backfill window on this table drops the chunk rows of this key */
	if (st->windows != NIL && window_open_on(st, e->report_oid))
	{
		note_changed_key(st, e->report_oid, pk, pk_len);
		if (action == 'u' && ov && e->npk > 0)
		{
			int			old_len;
			char	   *old_pk = row_encoder_key_text(e->enc, e->npk, e->pk, ov, on, &old_len);

			note_changed_key(st, e->report_oid, old_pk, old_len);
		}
	}

	/* which rules take it */
	accepted = palloc0(sizeof(bool) * list_length(e->rules));
	i = 0;
	foreach(lc, e->rules)
	{
		RetentionRule *rule = lfirst(lc);

		/*
		 * A delete without the whole old row cannot be judged by a filter
		 * over other columns; it is kept rather than lost.
		 */
		if ((rule->actions & actbit) &&
			(action == 'd' && !e->identity_full ? true :
			 filter_accepts(e, rule, rv, rn)))
		{
			accepted[i] = true;
			any = true;
		}
		i++;
	}
	if (!any)
	{
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->change_cxt);
		return;
	}

	record = row_encoder_object(e->enc, rv, rn, include);
	if (action == 'u' && ov && e->identity_full)
	{
		bool	   *changed = palloc0(sizeof(bool) * Max(natts, 1));

		for (i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(e->report_desc, i);

			if (att->attisdropped || !include[i])
				continue;
			if (nn[i] != on[i])
				changed[i] = true;
			else if (!nn[i])
				changed[i] = !values_equal(nv[i], ov[i], att->attlen, att->attbyval);
		}
		changes = row_encoder_object(e->enc, ov, on, changed);
	}
	append_rows(st, e, txn, action, accepted, pk, pk_len, record, changes);

	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
}

/* Are all leaf partitions of parent among the truncated relations? */
static bool
whole_tree_truncated(Oid parent, int nrelations, Relation relations[])
{
	ListCell   *lc;

	foreach(lc, find_all_inheritors(parent, NoLock, NULL))
	{
		Oid			child = lfirst_oid(lc);
		bool		found = false;

		if (!RELKIND_HAS_STORAGE(get_rel_relkind(child)))
			continue;
		for (int i = 0; i < nrelations && !found; i++)
			found = RelationGetRelid(relations[i]) == child;
		if (!found)
			return false;
	}
	return true;
}

/*
 * TRUNCATE of a retained table is written as one row with action
 * 'truncate', an empty record and an empty record_pk, whatever the rule's
 * actions and filter: a consumer must learn that every earlier row of the
 * table is gone, and it must never look like a set of deletes.
 *
 * The WAL names only the leaf partitions.  When all leaves of a retained
 * partitioned table are truncated, one row names the partitioned table;
 * when only some are, each truncated partition gets its own row under its
 * own name, since the partitioned table still has rows.
 */
static void
seq_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			 int nrelations, Relation relations[], ReorderBufferChange *change)
{
	DecodeState *st = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(st->change_cxt);
	Jsonb	   *empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	List	   *reported = NIL;

	for (int i = 0; i < nrelations; i++)
	{
		Relation	rel = relations[i];
		RelEntry   *e = get_entry(st, rel);
		RelEntry	leaf;

		if (!e->captured || !e->pubactions.pubtruncate)
			continue;
		{
			ListCell   *lc;

			foreach(lc, st->windows)
			{
				BackfillWindow *w = lfirst(lc);

				if (w->relid == e->report_oid)
					w->truncated = true;
			}
		}
		if (e->report_oid != e->relid &&
			!whole_tree_truncated(e->report_oid, nrelations, relations))
		{
			/* this partition only, reported under its own name */
			leaf = *e;
			leaf.report_oid = RelationGetRelid(rel);
			leaf.schema_name = get_namespace_name(RelationGetNamespace(rel));
			leaf.table_name = RelationGetRelationName(rel);
			append_rows(st, &leaf, txn, 't', NULL, "", 0, empty, NULL);
			continue;
		}
		if (list_member_oid(reported, e->report_oid))
			continue;
		reported = lappend_oid(reported, e->report_oid);
		append_rows(st, e, txn, 't', NULL, "", 0, empty, NULL);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
}

/*
 * The watermarks of a backfill chunk (see backfill.c).  Low opens the
 * window; high carries the chunk: rows whose key changed in the window are
 * dropped, the others become 'read' rows for the table's rules (or the one
 * rule of the backfill's change table), filters applied as for changes.
 */
static void
backfill_message(DecodeState *st, ReorderBufferTXN *txn, const char *prefix,
				 Size size, const char *message)
{
	BackfillMessage m;
	BackfillWindow *w;
	Relation	rel;
	RelEntry   *e;
	char	   *data;
	char	   *p;
	MemoryContext old;

	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_END) == 0)
	{
		char	   *text = pnstrdup(message, size);

		w = find_window(st, strtoll(text, NULL, 10));
		if (w)
			close_window(st, w);
		pfree(text);
		return;
	}
	if (size < sizeof(BackfillMessage))
		return;
	memcpy(&m, message, sizeof(m));
	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_LOW) == 0)
	{
		open_window(st, txn, &m);
		st->buffer->backfill_seen = true;
		return;
	}
	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_HIGH) != 0)
		return;

	w = find_window(st, m.id);
	if (st->replay_only || m.nrows == 0)
	{
		if (w)
			close_window(st, w);
		return;
	}
	if (w == NULL)
		ereport(WARNING,
				(errmsg("backfill %lld: chunk without its low watermark; its rows are written unchecked",
						(long long) m.id)));

	rel = RelationIdGetRelation(m.relid);
	if (!RelationIsValid(rel))
	{
		if (w)
			close_window(st, w);
		return;
	}
	e = get_entry(st, rel);
	sequin_cdc_decode_position.relname = RelationGetRelationName(rel);

	old = MemoryContextSwitchTo(st->change_cxt);
	data = palloc(size);		/* maxaligned copy: tuples are read in place */
	memcpy(data, message, size);
	p = data + MAXALIGN(sizeof(BackfillMessage));
	for (int r = 0; e->captured && r < m.nrows && !(w && w->truncated); r++)
	{
		uint32		len;
		HeapTupleData tup;
		int			natts = e->report_desc->natts;
		Datum	   *values = palloc(sizeof(Datum) * Max(natts, 1));
		bool	   *nulls = palloc(sizeof(bool) * Max(natts, 1));
		bool	   *accepted;
		bool		any = false;
		char	   *pk;
		int			pk_len;
		ListCell   *lc;
		int			i = 0;

		memcpy(&len, p, sizeof(len));
		p += MAXALIGN(sizeof(len));
		tup.t_len = len;
		tup.t_data = (HeapTupleHeader) p;
		ItemPointerSetInvalid(&tup.t_self);
		tup.t_tableOid = m.relid;
		p += MAXALIGN(len);

		report_values(e, RelationGetDescr(rel), &tup, values, nulls);
		pk = e->npk > 0 ? row_encoder_key_text(e->enc, e->npk, e->pk, values, nulls, &pk_len) : "";
		if (e->npk == 0)
			pk_len = 0;
		if (w && window_has_key(w, pk, pk_len, false))
			continue;			/* its change rows in the window are newer */

		accepted = palloc0(sizeof(bool) * list_length(e->rules));
		foreach(lc, e->rules)
		{
			RetentionRule *rule = lfirst(lc);

			/* rows that exist are for rules that keep inserts */
			if ((rule->actions & ACT_INSERT) &&
				(!OidIsValid(m.change_table) || rule->change_table == m.change_table) &&
				filter_accepts(e, rule, values, nulls))
			{
				accepted[i] = true;
				any = true;
			}
			i++;
		}
		if (any)
			append_rows(st, e, txn, 'r', accepted, pk, pk_len,
						row_encoder_object(e->enc, values, nulls, NULL), NULL);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
	RelationClose(rel);
	if (w)
		close_window(st, w);
}

/*
 * Transactional messages with the prefix sequin:transaction_annotations.set
 * set the annotations of the rows that follow in the same transaction
 * (...clear unsets them).  Content that is not JSON is kept as a JSON
 * string rather than dropped.
 */
static void
seq_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			XLogRecPtr message_lsn, bool transactional, const char *prefix,
			Size message_size, const char *message)
{
	DecodeState *st = ctx->output_plugin_private;
	MemoryContext old;
	char	   *text;
	JsonLexContext *lex;

	if (!transactional)
		return;
	if (strncmp(prefix, "sequin_cdc:backfill.", 20) == 0)
	{
		backfill_message(st, txn, prefix, message_size, message);
		return;
	}
	if (strcmp(prefix, SEQUIN_CDC_ANNOTATIONS_CLEAR) == 0)
	{
		st->annotations = NULL;
		return;
	}
	if (strcmp(prefix, SEQUIN_CDC_ANNOTATIONS_SET) != 0)
		return;

	old = MemoryContextSwitchTo(st->txn_cxt);
	text = pnstrdup(message, message_size);
	lex = makeJsonLexContextCstringLen(text, strlen(text), GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS)
		st->annotations = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	else
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = text;
		v.val.string.len = strlen(text);
		st->annotations = JsonbValueToJsonb(&v);
	}
	MemoryContextSwitchTo(old);
}

static bool
seq_filter_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	return sequin_cdc_is_own_origin(origin_id);
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = seq_startup;
	cb->begin_cb = seq_begin;
	cb->change_cb = seq_change;
	cb->truncate_cb = seq_truncate;
	cb->commit_cb = seq_commit;
	cb->message_cb = seq_message;
	cb->filter_by_origin_cb = seq_filter_origin;
	cb->shutdown_cb = seq_shutdown;
}
