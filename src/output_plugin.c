/*-------------------------------------------------------------------------
 *
 * output_plugin.c
 *		The sequin_cdc logical decoding output plugin: its callbacks turn
 *		decoded changes into change rows for the capture worker.
 *
 * The slots created by sequin_cdc.create_slot() name this library as their
 * output plugin, and only the slot's capture worker consumes them.  The
 * callbacks run inside the reorder buffer's transaction, under the historic
 * snapshot of the change, and cannot write; they render each captured row
 * (record, changes, record_pk) and hand it to the worker through the
 * decoding context's writer, with the other records the worker needs
 * (output_plugin.h).  The worker buffers the rows and writes them after
 * decoding (capture.c).
 *
 * Which relations and rows are captured is the relation cache's to say
 * (plugin_relcache.c); the backfill windows between watermarks are kept in
 * backfill_window.c.  Transactional messages carry backfill chunks
 * (watermark.h) and transaction annotations.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "catalog/pg_inherits.h"
#include "commands/defrem.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "backfill_window.h"
#include "change_buffer.h"
#include "compat.h"
#include "output_plugin.h"
#include "parked.h"
#include "plugin_relcache.h"
#include "row_json.h"
#include "sequin_cdc.h"
#include "watermark.h"

/* Transaction annotations, as Sequin reads them */
#define SEQUIN_CDC_ANNOTATIONS_SET		"sequin:transaction_annotations.set"
#define SEQUIN_CDC_ANNOTATIONS_CLEAR	"sequin:transaction_annotations.clear"

/* The plugin's state: ctx->output_plugin_private */
typedef struct PluginState
{
	PluginRelCache *relcache;
	BackfillWindowSet *windows;
	XLogRecPtr	skip_upto;		/* transactions ending here or before are
								 * written already: decode, but keep no rows */
	XLogRecPtr	published_upto; /* SEQUIN_CDC_OPTION_PUBLISHED_UPTO */
	MemoryContext change_cxt;	/* reset after every change */
	MemoryContext txn_cxt;		/* reset at every transaction start */
	Jsonb	   *annotations;	/* current transaction's, or NULL */
	uint64		txn_rows;		/* rows handed over in this transaction */
	bool		replay_only;	/* transaction written before: keep no rows */
	/* where decoding is, for error context lines */
	TransactionId xid;
	const char *relname;
} PluginState;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/* Hand one record to the writer (output_plugin.h). */
static void
plugin_emit(LogicalDecodingContext *ctx, const PluginRecord *rec, bool last_write)
{
	OutputPluginPrepareWrite(ctx, last_write);
	appendBinaryStringInfo(ctx->out, (const char *) rec, sizeof(PluginRecord));
	OutputPluginWrite(ctx, last_write);
}

/* Hand over where the oldest open backfill window starts. */
static void
plugin_emit_hold(LogicalDecodingContext *ctx, PluginState *st)
{
	PluginRecord rec = {.kind = PLUGIN_RECORD_HOLD};

	rec.lsn = sequin_cdc_windows_oldest(st->windows);
	plugin_emit(ctx, &rec, false);
}

/*
 * Set up decoding for the capture worker, and refuse anyone else: only the
 * worker's writer understands our records.  Creating the slot needs
 * nothing.
 */
static void
plugin_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	PluginState *st;
	char	   *publication = NULL;
	ListCell   *lc;

	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;
	if (is_init)
		return;

	if (ctx->write != sequin_cdc_capture_write)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" can only be consumed by its sequin_cdc capture worker",
						NameStr(ctx->slot->data.name)),
				 errhint("Read the change table instead; sequin_cdc.pg_stat_capture shows the worker.")));

	st = MemoryContextAllocZero(ctx->context, sizeof(PluginState));
	foreach(lc, ctx->output_plugin_options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, SEQUIN_CDC_OPTION_PUBLICATION) == 0)
			publication = defGetString(def);
		else if (strcmp(def->defname, SEQUIN_CDC_OPTION_SKIP_UPTO) == 0)
			st->skip_upto = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
															CStringGetDatum(defGetString(def))));
		else if (strcmp(def->defname, SEQUIN_CDC_OPTION_PUBLISHED_UPTO) == 0)
			st->published_upto = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
																 CStringGetDatum(defGetString(def))));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized sequin_cdc decoding option \"%s\"", def->defname)));
	}
	if (publication == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sequin_cdc decoding needs a publication")));

	st->relcache = sequin_cdc_relcache_create(ctx->context,
											  NameStr(ctx->slot->data.name),
											  publication);
	st->windows = sequin_cdc_windows_create(ctx->context);
	st->change_cxt = AllocSetContextCreate(ctx->context, "sequin_cdc change",
										   ALLOCSET_DEFAULT_SIZES);
	st->txn_cxt = AllocSetContextCreate(ctx->context, "sequin_cdc transaction",
										ALLOCSET_SMALL_SIZES);
	ctx->output_plugin_private = st;
}

/* End of decoding: the cache stops listening to invalidations. */
static void
plugin_shutdown(LogicalDecodingContext *ctx)
{
	PluginState *st = ctx->output_plugin_private;

	if (st)
		sequin_cdc_relcache_destroy(st->relcache);
}

/*
 * Where the decoder is: the transaction and relation being decoded, or
 * InvalidTransactionId / NULL between transactions.
 */
void
sequin_cdc_plugin_position(LogicalDecodingContext *ctx, TransactionId *xid,
						   const char **relname)
{
	PluginState *st = ctx ? ctx->output_plugin_private : NULL;

	*xid = st ? st->xid : InvalidTransactionId;
	*relname = st ? st->relname : NULL;
}

/* BEGIN: a new transaction; it keeps no rows if it was written before. */
static void
plugin_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	PluginState *st = ctx->output_plugin_private;

	MemoryContextReset(st->txn_cxt);
	st->annotations = NULL;
	st->txn_rows = 0;
	st->replay_only = txn->end_lsn <= st->skip_upto;
	st->xid = txn->xid;
	sequin_cdc_relcache_set_gap_closed(st->relcache, txn->end_lsn < st->published_upto);
}

/* COMMIT: tell the writer where the transaction ended. */
static void
plugin_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  XLogRecPtr commit_lsn)
{
	PluginState *st = ctx->output_plugin_private;
	PluginRecord rec = {.kind = PLUGIN_RECORD_COMMIT};

	rec.lsn = txn->end_lsn;
	rec.commit_time = sequin_cdc_txn_commit_time(txn);
	rec.had_rows = st->txn_rows > 0;
	plugin_emit(ctx, &rec, true);
	st->xid = InvalidTransactionId;
	st->relname = NULL;
}

/* Why a change is parked rather than written, for plugin_emit_rows */
typedef struct PluginParking
{
	ErrorData **failed;			/* per rule: its filter's error, or NULL */
	ErrorData  *render_error;	/* the row could not be rendered */
	Jsonb	   *columns;		/* then: each column's text, or NULL */
} PluginParking;

/* Fill the parking fields of c: stage and error. */
static void
plugin_set_park(BufferedChange *c, char stage, const ErrorData *error)
{
	c->park_stage = stage;
	c->sqlerrcode = error->sqlerrcode;
	c->error = error->message ? error->message : "unknown error";
	c->error_len = strlen(c->error);
}

/*
 * Hand over one change row per rule of e that accepted it (accepted NULL:
 * every rule), unless the transaction was written before.  With parking
 * given, a rule whose filter failed, or every accepting rule when the row
 * could not be rendered, gets a parked change instead (PLUGIN_RECORD_PARK).
 */
static void
plugin_emit_rows(LogicalDecodingContext *ctx, PluginState *st, RelEntry *e,
				 ReorderBufferTXN *txn, char action, const bool *accepted,
				 const char *pk, int pk_len, Jsonb *record, Jsonb *changes,
				 const PluginParking *parking)
{
	BufferedChange c;
	PluginRecord rec = {.row = &c};
	ListCell   *lc;
	int			i = 0;

	if (st->replay_only)
		return;
	memset(&c, 0, sizeof(c));
	c.source_oid = e->report_oid;
	c.action = action;
	c.committed_at = sequin_cdc_txn_commit_time(txn);
	c.commit_lsn = txn->end_lsn;
	c.xid = txn->xid;
	c.schema_name = e->schema_name;
	c.schema_len = strlen(e->schema_name);
	c.table_name = e->table_name;
	c.table_len = strlen(e->table_name);
	c.record_pk = pk;
	c.pk_len = pk_len;
	c.annotations = st->annotations;
	foreach(lc, e->rules)
	{
		RetentionRule *rule = lfirst(lc);
		bool		filter_failed = parking && parking->failed && parking->failed[i];

		c.change_table = rule->change_table;
		c.rule_id = rule->id;
		c.record = record;
		c.changes = changes;
		c.park_stage = PARK_NONE;
		c.columns = NULL;
		rec.kind = PLUGIN_RECORD_ROW;
		if (filter_failed)
			plugin_set_park(&c, PARK_FILTER, parking->failed[i]);
		else if ((accepted == NULL || accepted[i]) && parking && parking->render_error)
			plugin_set_park(&c, PARK_RENDER, parking->render_error);
		else if (!(accepted == NULL || accepted[i]))
		{
			i++;
			continue;
		}
		if (c.park_stage != PARK_NONE)
		{
			rec.kind = PLUGIN_RECORD_PARK;
			if (parking->render_error)
			{
				c.record = NULL;
				c.changes = NULL;
				c.columns = parking->columns;
			}
		}
		plugin_emit(ctx, &rec, false);
		st->txn_rows++;
		i++;
	}
}

/* A row to render: record, and changes for an update with the old row */
typedef struct PluginRender
{
	RelEntry   *e;
	Datum	   *values;			/* the row shown: new, or old for a delete */
	bool	   *nulls;
	const bool *include;
	Datum	   *old_values;		/* an update's whole old row, or NULL */
	bool	   *old_nulls;
	Jsonb	   *record;			/* out */
	Jsonb	   *changes;		/* out */
	Size		size;			/* the values' size, as far as summed */
	bool		too_large;		/* their size alone passes jsonb's limit */
} PluginRender;

/* Are two values of one column the same bytes (TOAST and packing aside)? */
static bool
plugin_values_equal(Datum a, Datum b, int16 typlen, bool typbyval)
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

/*
 * SequinTryStep: render record the way to_jsonb(row) shows it and, for an
 * update with the whole old row, changes: the old values of the columns
 * whose value changed.  A row whose values alone pass jsonb's limit is not
 * even tried.
 */
static void
plugin_render_step(void *arg)
{
	PluginRender *r = arg;
	RelEntry   *e = r->e;
	int			natts = e->report_desc->natts;

	if (r->too_large)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("row is too large for a jsonb record: its values take %zu bytes, more than the maximum of %d bytes",
						r->size, (int) JENTRY_OFFLENMASK)));
	r->record = sequin_cdc_row_encoder_object(e->enc, r->values, r->nulls, r->include);
	r->changes = NULL;
	if (r->old_values)
	{
		bool	   *changed = palloc0(sizeof(bool) * Max(natts, 1));

		for (int i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(e->report_desc, i);

			if (att->attisdropped || !r->include[i])
				continue;
			if (r->nulls[i] != r->old_nulls[i])
				changed[i] = true;
			else if (!r->nulls[i])
				changed[i] = !plugin_values_equal(r->values[i], r->old_values[i],
												  att->attlen, att->attbyval);
		}
		r->changes = sequin_cdc_row_encoder_object(e->enc, r->old_values, r->old_nulls, changed);
	}
}

/* SequinTryStep: each column's text, for a row that did not render. */
static void
plugin_columns_step(void *arg)
{
	PluginRender *r = arg;

	r->record = sequin_cdc_row_encoder_texts(r->e->enc, r->values, r->nulls, r->include,
											 SEQUIN_CDC_PARK_COLUMN_TEXT);
}

/*
 * The two steps above as run for a row that may fail to render: such a row
 * has a user-defined type, and to_jsonb may call that type's cast to json,
 * which may be a SQL or PL/pgSQL function.  Those expect an active
 * snapshot, which decoding does not set: the historic one is pushed (as
 * GetTransactionSnapshot() returns it while decoding), and popped by the
 * subtransaction's abort if the step fails.
 */
static void
plugin_render_step_snapshot(void *arg)
{
	PushActiveSnapshot(GetTransactionSnapshot());
	plugin_render_step(arg);
	PopActiveSnapshot();
}

static void
plugin_columns_step_snapshot(void *arg)
{
	PushActiveSnapshot(GetTransactionSnapshot());
	plugin_columns_step(arg);
	PopActiveSnapshot();
}

/*
 * Render a row (PluginRender).  A row that may fail to render (row_json.c
 * says which) is rendered in a subtransaction: when it fails, parking
 * gets the error, and each column's text as far as that can be had.
 */
static void
plugin_render(PluginRender *r, PluginParking *parking)
{
	ErrorData  *ignored = NULL;
	Size		old_size = 0;
	RowRenderRisk risk = sequin_cdc_row_encoder_risk(r->e->enc, r->values, r->nulls,
													 &r->size);

	if (r->old_values)
	{
		RowRenderRisk old_risk = sequin_cdc_row_encoder_risk(r->e->enc, r->old_values,
															 r->old_nulls, &old_size);

		risk = Max(risk, old_risk);
		r->size = Max(r->size, old_size);
	}
	r->too_large = risk == RENDER_TOO_LARGE;
	parking->render_error = NULL;
	parking->columns = NULL;
	if (risk == RENDER_SAFE)
	{
		plugin_render_step(r);
		return;
	}
	if (sequin_cdc_try_decoding(plugin_render_step_snapshot, r, &parking->render_error))
		return;
	r->changes = NULL;
	if (sequin_cdc_try_decoding(plugin_columns_step_snapshot, r, &ignored))
		parking->columns = r->record;
	r->record = NULL;
}

/*
 * INSERT, UPDATE, DELETE of a captured relation: render the row the way
 * to_jsonb(row) shows it (the new row, or the old one for a delete), the
 * old values of the columns an update changed, and record_pk; note the key
 * in the backfill windows open on the table; and hand a row to each rule
 * whose actions and filter take the change.
 *
 * Values are those of the decoded tuples, converted to the reported
 * table's columns.  What the WAL lacks is left out rather than shown
 * wrong: an unchanged TOASTed value without REPLICA IDENTITY FULL, the
 * non-key columns of a delete's old row, the changes of an update without
 * the whole old row.
 */
static void
plugin_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			  Relation rel, ReorderBufferChange *change)
{
	PluginState *st = ctx->output_plugin_private;
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
	PluginParking parking;
	PluginRender render;
	Datum	   *rv;
	bool	   *rn;
	const char *pk;
	int			pk_len;
	int			i;

	switch (change->action)
	{
		case REORDER_BUFFER_CHANGE_INSERT:
			action = 'i';
			actbit = RULE_ACT_INSERT;
			break;
		case REORDER_BUFFER_CHANGE_UPDATE:
			action = 'u';
			actbit = RULE_ACT_UPDATE;
			break;
		case REORDER_BUFFER_CHANGE_DELETE:
			action = 'd';
			actbit = RULE_ACT_DELETE;
			break;
		default:
			return;
	}

	st->relname = RelationGetRelationName(rel);
	e = sequin_cdc_relcache_get(st->relcache, rel);
	if (!e->captured)
		return;
	if ((action == 'i' && !e->pubactions.pubinsert) ||
		(action == 'u' && !e->pubactions.pubupdate) ||
		(action == 'd' && !e->pubactions.pubdelete))
		return;

	old = MemoryContextSwitchTo(st->change_cxt);

	newtup = sequin_cdc_change_new_tuple(change);
	oldtup = sequin_cdc_change_old_tuple(change);
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
		sequin_cdc_relcache_values(e, desc, newtup, nv, nn);
	}
	if (oldtup)
	{
		ov = palloc(sizeof(Datum) * Max(natts, 1));
		on = palloc(sizeof(bool) * Max(natts, 1));
		sequin_cdc_relcache_values(e, desc, oldtup, ov, on);
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

	pk = sequin_cdc_relcache_key(e, rv, rn, &pk_len);

	/* a backfill window on this table drops the chunk rows of this key */
	if (sequin_cdc_windows_on(st->windows, e->report_oid))
	{
		sequin_cdc_windows_note_key(st->windows, e->report_oid, pk, pk_len);
		if (action == 'u' && ov && e->npk > 0)
		{
			int			old_len;
			const char *old_pk = sequin_cdc_relcache_key(e, ov, on, &old_len);

			sequin_cdc_windows_note_key(st->windows, e->report_oid, old_pk, old_len);
		}
	}

	/*
	 * Which rules take it.  A delete without the whole old row cannot be
	 * judged by a filter over other columns; it is kept rather than lost.
	 */
	accepted = palloc0(sizeof(bool) * list_length(e->rules));
	parking.failed = palloc0(sizeof(ErrorData *) * list_length(e->rules));
	if (!sequin_cdc_relcache_accept(e, actbit, InvalidOid,
									!(action == 'd' && !e->identity_full),
									rv, rn, accepted, parking.failed))
	{
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->change_cxt);
		return;
	}

	render.e = e;
	render.values = rv;
	render.nulls = rn;
	render.include = include;
	render.old_values = (action == 'u' && ov && e->identity_full) ? ov : NULL;
	render.old_nulls = on;
	plugin_render(&render, &parking);
	plugin_emit_rows(ctx, st, e, txn, action, accepted, pk, pk_len,
					 render.record, render.changes, &parking);

	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
}

/* Are all leaf partitions of parent among the truncated relations? */
static bool
plugin_whole_tree_truncated(Oid parent, int nrelations, Relation relations[])
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
plugin_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				int nrelations, Relation relations[], ReorderBufferChange *change)
{
	PluginState *st = ctx->output_plugin_private;
	MemoryContext old = MemoryContextSwitchTo(st->change_cxt);
	Jsonb	   *empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	List	   *reported = NIL;

	for (int i = 0; i < nrelations; i++)
	{
		Relation	rel = relations[i];
		RelEntry   *e = sequin_cdc_relcache_get(st->relcache, rel);
		RelEntry	leaf;

		if (!e->captured || !e->pubactions.pubtruncate)
			continue;
		sequin_cdc_windows_note_truncate(st->windows, e->report_oid);
		if (e->report_oid != e->relid &&
			!plugin_whole_tree_truncated(e->report_oid, nrelations, relations))
		{
			/* this partition only, reported under its own name */
			leaf = *e;
			leaf.report_oid = RelationGetRelid(rel);
			leaf.schema_name = get_namespace_name(RelationGetNamespace(rel));
			leaf.table_name = RelationGetRelationName(rel);
			plugin_emit_rows(ctx, st, &leaf, txn, 't', NULL, "", 0, empty, NULL, NULL);
			continue;
		}
		if (list_member_oid(reported, e->report_oid))
			continue;
		reported = lappend_oid(reported, e->report_oid);
		plugin_emit_rows(ctx, st, e, txn, 't', NULL, "", 0, empty, NULL, NULL);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
}

/*
 * The watermarks of a backfill chunk (see backfill.c, watermark.h).  Low
 * opens the window; high carries the chunk: rows whose key changed in the
 * window are dropped, the others become 'read' rows for the table's rules
 * (or the one rule of the backfill's change table), filters applied as
 * for changes; end closes the window of a backfill that stopped.
 */
static void
plugin_watermark(LogicalDecodingContext *ctx, PluginState *st,
				 ReorderBufferTXN *txn, const char *prefix, Size size,
				 const char *message)
{
	BackfillMessage m;
	BackfillWindow *w;
	Relation	rel;
	RelEntry   *e;
	char	   *data;
	char	   *p;
	MemoryContext old;
	PluginParking parking;

	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_END) == 0)
	{
		char	   *text = pnstrdup(message, size);

		w = sequin_cdc_windows_find(st->windows, strtoll(text, NULL, 10));
		if (w)
		{
			sequin_cdc_windows_close(st->windows, w);
			plugin_emit_hold(ctx, st);
		}
		pfree(text);
		return;
	}
	if (size < sizeof(BackfillMessage))
		return;
	memcpy(&m, message, sizeof(m));
	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_LOW) == 0)
	{
		PluginRecord seen = {.kind = PLUGIN_RECORD_BACKFILL_SEEN};

		if (sequin_cdc_windows_open(st->windows, m.id, m.relid, txn->final_lsn))
			plugin_emit_hold(ctx, st);
		plugin_emit(ctx, &seen, false);
		return;
	}
	if (strcmp(prefix, SEQUIN_CDC_BACKFILL_HIGH) != 0)
		return;

	w = sequin_cdc_windows_find(st->windows, m.id);
	if (st->replay_only || m.nrows == 0)
	{
		if (w)
		{
			sequin_cdc_windows_close(st->windows, w);
			plugin_emit_hold(ctx, st);
		}
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
		{
			sequin_cdc_windows_close(st->windows, w);
			plugin_emit_hold(ctx, st);
		}
		return;
	}
	e = sequin_cdc_relcache_get(st->relcache, rel);
	st->relname = RelationGetRelationName(rel);

	old = MemoryContextSwitchTo(st->change_cxt);
	data = palloc(size);		/* maxaligned copy: tuples are read in place */
	memcpy(data, message, size);
	p = data + sequin_cdc_padded_size(sizeof(BackfillMessage));
	for (int r = 0; e->captured && r < m.nrows && !(w && w->truncated); r++)
	{
		HeapTupleData tup;
		int			natts = e->report_desc->natts;
		Datum	   *values = palloc(sizeof(Datum) * Max(natts, 1));
		bool	   *nulls = palloc(sizeof(bool) * Max(natts, 1));
		bool	   *accepted;
		const char *pk;
		int			pk_len;

		sequin_cdc_watermark_read_tuple(&p, m.relid, &tup);
		sequin_cdc_relcache_values(e, RelationGetDescr(rel), &tup, values, nulls);
		pk = sequin_cdc_relcache_key(e, values, nulls, &pk_len);
		if (w && sequin_cdc_window_has_key(w, pk, pk_len))
			continue;			/* its change rows in the window are newer */

		/* rows that exist are for rules that keep inserts */
		accepted = palloc0(sizeof(bool) * list_length(e->rules));
		parking.failed = palloc0(sizeof(ErrorData *) * list_length(e->rules));
		if (sequin_cdc_relcache_accept(e, RULE_ACT_INSERT, m.change_table, true,
									   values, nulls, accepted, parking.failed))
		{
			PluginRender render = {.e = e,.values = values,.nulls = nulls};

			plugin_render(&render, &parking);
			plugin_emit_rows(ctx, st, e, txn, 'r', accepted, pk, pk_len,
							 render.record, NULL, &parking);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->change_cxt);
	RelationClose(rel);
	if (w)
	{
		sequin_cdc_windows_close(st->windows, w);
		plugin_emit_hold(ctx, st);
	}
}

/*
 * Transactional messages: backfill watermarks, and transaction
 * annotations.  A message with the prefix sequin:transaction_annotations.set
 * sets the annotations of the rows that follow in the same transaction
 * (...clear unsets them).  Content that is not JSON is kept as a JSON
 * string rather than dropped.
 */
static void
plugin_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
			   XLogRecPtr message_lsn, bool transactional, const char *prefix,
			   Size message_size, const char *message)
{
	PluginState *st = ctx->output_plugin_private;
	MemoryContext old;
	char	   *text;
	JsonLexContext *lex;

	if (!transactional)
		return;
	if (sequin_cdc_is_watermark(prefix))
	{
		plugin_watermark(ctx, st, txn, prefix, message_size, message);
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
	lex = sequin_cdc_json_lexer(text, strlen(text));
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

/* The capture workers' own writes are never captured (no feedback). */
static bool
plugin_filter_origin(LogicalDecodingContext *ctx, ReplOriginId origin_id)
{
	return sequin_cdc_is_own_origin(origin_id);
}

/* The output plugin's entry point: our callbacks. */
void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->startup_cb = plugin_startup;
	cb->begin_cb = plugin_begin;
	cb->change_cb = plugin_change;
	cb->truncate_cb = plugin_truncate;
	cb->commit_cb = plugin_commit;
	cb->message_cb = plugin_message;
	cb->filter_by_origin_cb = plugin_filter_origin;
	cb->shutdown_cb = plugin_shutdown;
}
