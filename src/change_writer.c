/*-------------------------------------------------------------------------
 *
 * change_writer.c
 *		Inserting change rows into change tables, inside the capture
 *		worker's write transaction.
 *
 * Rows go through the executor's simple-insert path (as the logical
 * replication apply worker does), so constraints, indexes, triggers and
 * partition routing of the change table are honoured.  id and seq come
 * from one nextval of the table's id sequence: the worker is the single
 * writer of its change tables and appends in stream order, so seq is
 * unique and strictly increasing in commit order, and id order is seq
 * order.
 *
 * Who runs what: the capture worker is the bootstrap superuser, but a
 * change table may belong to anyone who can create a table, and its
 * triggers, CHECK constraints, generated columns, index and partition key
 * expressions are that role's code.  So each insert, and the AFTER
 * triggers it queued, run as the change table's owner under
 * SECURITY_RESTRICTED_OPERATION (run_as.c), as PostgreSQL 16's apply
 * worker does with run_as_owner = false; the owner must hold INSERT on
 * its own table and the table must not enforce row level security on it,
 * as with the apply worker.  A column the writer does not fill gets its
 * default, evaluated as the owner too (the apply worker's
 * slot_fill_defaults), or NULL when it has none.
 *
 * A change its table rejects (a constraint, a trigger's error) must not
 * stop the slot: the capture worker writes a batch with
 * sequin_cdc_change_writer_put at full speed in a subtransaction, and when
 * that fails, writes it again row by row with
 * sequin_cdc_change_writer_put_alone, each row in a subtransaction of its
 * own, parking the ones that fail (parked.c).  Parked records from the
 * decoder (a filter or render error) are parked in stream order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "change_writer.h"
#include "compat.h"
#include "parked.h"
#include "run_as.h"
#include "sequin_cdc.h"

/* The change-row columns we fill, by name */
enum
{
	COL_ID, COL_SEQ, COL_DB, COL_OID, COL_SCHEMA, COL_TABLE, COL_PK,
	COL_RECORD, COL_CHANGES, COL_ACTION, COL_ANNOTATIONS, COL_COMMITTED,
	COL_INSERTED, NCOLS
};

static const char *const column_names[NCOLS] = {
	"id", "seq", "source_database_id", "source_table_oid",
	"source_table_schema", "source_table_name", "record_pk", "record",
	"changes", "action", "transaction_annotations", "committed_at",
	"inserted_at"
};

/* Where a change row went, to check before commit that it is there. */
typedef struct WrittenRow
{
	Relation	rel;			/* the change table, or its partition */
	ItemPointerData tid;
} WrittenRow;

typedef struct WriteTarget
{
	Oid			relid;			/* hash key */
	bool		missing;		/* the table was dropped */
	Relation	rel;
	Oid			owner;			/* runs the table's code */
	EState	   *estate;
	ResultRelInfo *rri;
	ModifyTableState *mtstate;	/* for partition routing */
	PartitionTupleRouting *proute;
	TupleTableSlot *slot;
	Oid			seqoid;
	AttrNumber	col[NCOLS];		/* 0 = table has no such column */
	int			ndefaults;		/* other columns with a default */
	AttrNumber *default_col;
	ExprState **default_expr;
} WriteTarget;

struct ChangeWriter
{
	MemoryContext cxt;
	MemoryContext row_cxt;
	EState	   *trigger_estate; /* fires the AFTER triggers of the run */
	Oid			run_owner;		/* owner of the run; InvalidOid: none */
	HTAB	   *targets;
	pg_uuid_t	database_id;
	const char *slot_name;		/* for parked changes */
	TimestampTz now;
	WrittenRow *written;		/* rows inserted, in order */
	uint64		nwritten;
	uint64		maxwritten;
};

/*
 * Start writing a batch; the caller is in the write transaction, which
 * must stay open until sequin_cdc_change_writer_end.
 */
ChangeWriter *
sequin_cdc_change_writer_begin(const pg_uuid_t *database_id, const char *slot_name)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "sequin_cdc change writer",
											  ALLOCSET_DEFAULT_SIZES);
	ChangeWriter *w = MemoryContextAllocZero(cxt, sizeof(ChangeWriter));
	HASHCTL		hctl;

	w->cxt = cxt;
	w->row_cxt = AllocSetContextCreate(cxt, "sequin_cdc change row",
									   ALLOCSET_DEFAULT_SIZES);
	w->database_id = *database_id;
	w->slot_name = MemoryContextStrdup(cxt, slot_name);
	w->now = GetCurrentTransactionStartTimestamp();
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(Oid);
	hctl.entrysize = sizeof(WriteTarget);
	hctl.hcxt = cxt;
	w->targets = hash_create("sequin_cdc write targets", 16, &hctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return w;
}

/*
 * AFTER triggers.  The insert only queues them; they fire when the
 * trigger "query" ends, all queued events at once, and a trigger runs as
 * whoever is the current user then.  Change rows of different tables
 * interleave in stream order, so one scope for the whole batch would fire
 * the triggers of every table as one role.  Instead each run of
 * consecutive rows whose tables have the same owner is its own scope,
 * ended (its AFTER triggers fired) as that owner before a row of another
 * owner is inserted; the usual single-owner batch stays one scope.  This
 * is the apply worker's model too, which ends the scope after every
 * change it applies.
 */
static void
begin_run(ChangeWriter *w, Oid owner)
{
	MemoryContext old = MemoryContextSwitchTo(w->cxt);

	w->trigger_estate = CreateExecutorState();
	MemoryContextSwitchTo(old);
	AfterTriggerBeginQuery();
	w->run_owner = owner;
}

/* Fire the AFTER triggers of the current run as its owner, and close it. */
static void
end_run(ChangeWriter *w)
{
	SequinUserContext ucxt;

	if (!OidIsValid(w->run_owner))
		return;
	sequin_cdc_switch_to_user(w->run_owner, &ucxt);
	AfterTriggerEndQuery(w->trigger_estate);
	sequin_cdc_restore_user(&ucxt);
	/* the tables AfterTriggerEndQuery opened to fire the triggers */
	ExecCloseResultRelations(w->trigger_estate);
	FreeExecutorState(w->trigger_estate);
	w->trigger_estate = NULL;
	w->run_owner = InvalidOid;
}

/*
 * The owner must be able to insert into its change table: ours is an
 * insert on its behalf, and an owner can revoke INSERT from itself (or
 * force row level security, whose policies the simple insert path would
 * not apply), e.g. to stop a table from growing.  Refuse rather than
 * write past its will.
 */
static void
check_owner_may_insert(WriteTarget *t)
{
	Oid			relid = RelationGetRelid(t->rel);

	if (pg_class_aclcheck(relid, t->owner, ACL_INSERT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("owner \"%s\" of change table \"%s\" may not insert into it",
						GetUserNameFromId(t->owner, false), RelationGetRelationName(t->rel)),
				 errdetail("Change rows are inserted with the privileges of the change table's owner."),
				 errhint("Give the privilege back with GRANT INSERT ON %s TO %s, or drop the retention rules that write to the table.",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(t->rel)),
													RelationGetRelationName(t->rel)),
						 quote_identifier(GetUserNameFromId(t->owner, false)))));
	if (check_enable_rls(relid, t->owner, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("change table \"%s\" enforces row level security on its owner \"%s\"",
						RelationGetRelationName(t->rel), GetUserNameFromId(t->owner, false)),
				 errdetail("Change rows are inserted with the privileges of the change table's owner."),
				 errhint("Run ALTER TABLE %s NO FORCE ROW LEVEL SECURITY.",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(t->rel)),
													RelationGetRelationName(t->rel)))));
}

/*
 * The columns the writer does not fill that have a default (or are
 * identity columns), with their default expressions ready to run, as the
 * apply worker's slot_fill_defaults prepares them.  Generated columns are
 * the insert's to compute.
 */
static void
open_target_defaults(WriteTarget *t, TupleDesc desc)
{
	t->ndefaults = 0;
	t->default_col = palloc(sizeof(AttrNumber) * Max(desc->natts, 1));
	t->default_expr = palloc(sizeof(ExprState *) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		ours = false;
		Expr	   *expr;

		if (att->attisdropped || att->attgenerated)
			continue;
		for (int c = 0; c < NCOLS && !ours; c++)
			ours = t->col[c] == att->attnum;
		if (ours)
			continue;
		expr = (Expr *) build_column_default(t->rel, att->attnum);
		if (expr == NULL)
			continue;
		expr = expression_planner(expr);
		t->default_col[t->ndefaults] = att->attnum;
		t->default_expr[t->ndefaults] = ExecInitExpr(expr, NULL);
		t->ndefaults++;
	}
}

/*
 * Open change table t->relid for inserts, once per batch: the executor
 * state for the insert path and partition routing, its id sequence and
 * which change-row columns it has.  A dropped table is marked missing.
 */
static void
open_target(ChangeWriter *w, WriteTarget *t)
{
	RangeTblEntry *rte;
	TupleDesc	desc;
	List	   *seqs;
	MemoryContext old = MemoryContextSwitchTo(w->cxt);

	t->rel = try_table_open(t->relid, RowExclusiveLock);
	if (t->rel == NULL)
	{
		t->missing = true;
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("change table with OID %u no longer exists; its changes are not kept", t->relid),
				 errhint("Drop the retention rules that point to it with sequin_cdc.drop_change_retention().")));
		MemoryContextSwitchTo(old);
		return;
	}
	t->owner = t->rel->rd_rel->relowner;
	check_owner_may_insert(t);
	desc = RelationGetDescr(t->rel);
	for (int c = 0; c < NCOLS; c++)
	{
		t->col[c] = 0;
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && strcmp(NameStr(att->attname), column_names[c]) == 0)
				t->col[c] = att->attnum;
		}
	}
	open_target_defaults(t, desc);
	seqs = getOwnedSequences(t->relid);
	t->seqoid = seqs ? linitial_oid(seqs) : InvalidOid;
	if (!OidIsValid(t->seqoid) || t->col[COL_SEQ] == 0 || t->col[COL_RECORD] == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" is not a sequin_cdc change table",
						RelationGetRelationName(t->rel)),
				 errhint("Create change tables with sequin_cdc.create_change_table().")));

	t->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = t->relid;
	rte->relkind = t->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	sequin_cdc_init_range_table(t->estate, rte);
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, 1, NULL, 0);
	t->estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(t->rri, false);
	t->slot = ExecInitExtraTupleSlot(t->estate, desc, &TTSOpsVirtual);
	if (t->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		t->mtstate = makeNode(ModifyTableState);
		t->mtstate->ps.plan = NULL;
		t->mtstate->ps.state = t->estate;
		t->mtstate->operation = CMD_INSERT;
		t->mtstate->resultRelInfo = t->rri;
		t->proute = ExecSetupPartitionTupleRouting(t->estate, t->rel);
	}
	MemoryContextSwitchTo(old);
}

/* The action column's text for a buffered action code. */
const char *
sequin_cdc_action_name(char action)
{
	switch (action)
	{
		case 'i':
			return "insert";
		case 'u':
			return "update";
		case 'd':
			return "delete";
		case 't':
			return "truncate";
		case 'r':
			return "read";
	}
	elog(ERROR, "unknown change action '%c'", action);
	return NULL;
}

/* The buffered action code for an action column's text. */
char
sequin_cdc_action_code(const char *name)
{
	static const char codes[] = "iudtr";

	for (int i = 0; codes[i]; i++)
	{
		if (strcmp(name, sequin_cdc_action_name(codes[i])) == 0)
			return codes[i];
	}
	elog(ERROR, "unknown change action \"%s\"", name);
	return '\0';
}

/* Set change-row column c in the target's slot, if the table has it. */
static void
set_col(WriteTarget *t, int c, Datum v, bool isnull)
{
	if (t->col[c] == 0)
		return;
	t->slot->tts_values[t->col[c] - 1] = v;
	t->slot->tts_isnull[t->col[c] - 1] = isnull;
}

/* ChangeBufferCallback: insert one row. */
void
sequin_cdc_change_writer_put(BufferedChange *c, void *arg)
{
	ChangeWriter *w = arg;
	WriteTarget *t;
	bool		found;
	MemoryContext old;
	int64		id;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	SequinUserContext ucxt;

	if (c->park_stage != PARK_NONE)
	{
		/* the decoder could not filter or render it */
		sequin_cdc_park_decoded(w->slot_name, c);
		return;
	}

	t = hash_search(w->targets, &c->change_table, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) t) + sizeof(Oid), 0, sizeof(WriteTarget) - sizeof(Oid));
		open_target(w, t);
	}
	if (t->missing)
		return;
	if (t->owner != w->run_owner)
	{
		end_run(w);
		begin_run(w, t->owner);
	}

	old = MemoryContextSwitchTo(w->row_cxt);
	id = nextval_internal(t->seqoid, false);

	ExecClearTuple(t->slot);
	for (int i = 0; i < t->slot->tts_tupleDescriptor->natts; i++)
		t->slot->tts_isnull[i] = true;
	set_col(t, COL_ID, Int64GetDatum(id), false);
	set_col(t, COL_SEQ, Int64GetDatum(id), false);
	set_col(t, COL_DB, UUIDPGetDatum(&w->database_id), false);
	set_col(t, COL_OID, Int64GetDatum((int64) c->source_oid), false);
	set_col(t, COL_SCHEMA, PointerGetDatum(cstring_to_text_with_len(c->schema_name, c->schema_len)), false);
	set_col(t, COL_TABLE, PointerGetDatum(cstring_to_text_with_len(c->table_name, c->table_len)), false);
	set_col(t, COL_PK, PointerGetDatum(cstring_to_text_with_len(c->record_pk, c->pk_len)), false);
	set_col(t, COL_RECORD, JsonbPGetDatum(c->record), false);
	set_col(t, COL_CHANGES, JsonbPGetDatum(c->changes), c->changes == NULL);
	set_col(t, COL_ACTION, CStringGetTextDatum(sequin_cdc_action_name(c->action)), false);
	set_col(t, COL_ANNOTATIONS, JsonbPGetDatum(c->annotations), c->annotations == NULL);
	set_col(t, COL_COMMITTED, TimestampTzGetDatum(c->committed_at), false);
	set_col(t, COL_INSERTED, TimestampTzGetDatum(w->now), false);

	/*
	 * Defaults of the other columns, partition routing (key expressions),
	 * BEFORE triggers, generated columns, constraints and index
	 * expressions run here: as the owner.
	 */
	sequin_cdc_switch_to_user(t->owner, &ucxt);
	for (int d = 0; d < t->ndefaults; d++)
	{
		int			i = t->default_col[d] - 1;

		t->slot->tts_values[i] = ExecEvalExpr(t->default_expr[d],
											  GetPerTupleExprContext(t->estate),
											  &t->slot->tts_isnull[i]);
	}
	ExecStoreVirtualTuple(t->slot);
	rri = t->rri;
	slot = t->slot;
	if (t->proute)
	{
		TupleConversionMap *map;

		rri = ExecFindPartition(t->mtstate, t->rri, t->proute, t->slot, t->estate);
		map = sequin_cdc_root_to_child_map(rri, t->estate);
		if (map)
			slot = execute_attr_map_slot(map->attrMap, slot, rri->ri_PartitionTupleSlot);
	}
	ExecSimpleRelationInsert(rri, t->estate, slot);
	sequin_cdc_restore_user(&ucxt);

	/*
	 * The insert sets the slot's TID; a BEFORE trigger that returned NULL
	 * leaves it unset.  A change row that is not stored is a lost change.
	 */
	if (!ItemPointerIsValid(&slot->tts_tid))
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("change row for \"%.*s.%.*s\" was not stored in \"%s\"",
						c->schema_len, c->schema_name, c->table_len, c->table_name,
						RelationGetRelationName(rri->ri_RelationDesc)),
				 errdetail("A BEFORE INSERT trigger on the change table returned NULL."),
				 errhint("Change tables must keep every row they are given: drop or fix the trigger.")));
	if (w->nwritten == w->maxwritten)
	{
		w->maxwritten = Max(1024, w->maxwritten * 2);
		w->written = w->written
			? repalloc_huge(w->written, w->maxwritten * sizeof(WrittenRow))
			: MemoryContextAllocHuge(w->cxt, w->maxwritten * sizeof(WrittenRow));
	}
	w->written[w->nwritten].rel = rri->ri_RelationDesc;
	w->written[w->nwritten].tid = slot->tts_tid;
	w->nwritten++;

	MemoryContextSwitchTo(old);
	MemoryContextReset(w->row_cxt);
	ResetPerTupleExprContext(t->estate);
}

/*
 * Check that every row inserted is visible to the writing transaction
 * itself, after its triggers ran: none was deleted again, routed away or
 * marked invalid behind our back.  Any of those would otherwise commit
 * as a silent gap, with the origin moved past the changes.
 */
static void
verify_written(ChangeWriter *w)
{
	Snapshot	snap;
	Relation	rel = NULL;
	TupleTableSlot *slot = NULL;
	uint64		missing = 0;
	const char *missing_rel = NULL;

	CommandCounterIncrement();
	snap = RegisterSnapshot(GetLatestSnapshot());
	for (uint64 i = 0; i < w->nwritten; i++)
	{
		WrittenRow *r = &w->written[i];

		if (r->rel != rel)
		{
			if (slot)
				ExecDropSingleTupleTableSlot(slot);
			rel = r->rel;
			slot = table_slot_create(rel, NULL);
		}
		if (!table_tuple_fetch_row_version(rel, &r->tid, snap, slot))
		{
			if (missing++ == 0)
				missing_rel = RelationGetRelationName(rel);
		}
		ExecClearTuple(slot);
		CHECK_FOR_INTERRUPTS();
	}
	if (slot)
		ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snap);

	if (missing > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%llu of %llu change rows inserted into \"%s\" are not visible before commit",
						(unsigned long long) missing, (unsigned long long) w->nwritten,
						missing_rel),
				 errdetail("The write transaction is rolled back; the capture worker restarts and writes the batch again."),
				 errhint("Look for triggers or rules on the change table that delete the rows they are given.")));
}

/*
 * Fire the last run's AFTER triggers, check the rows, and close every
 * table written.  Returns the number of rows inserted; the caller commits.
 * The check reads the rows back at the storage level (no user code runs),
 * so it stays the worker's own.
 */
uint64
sequin_cdc_change_writer_end(ChangeWriter *w)
{
	HASH_SEQ_STATUS it;
	WriteTarget *t;
	uint64		rows = w->nwritten;

	end_run(w);
	verify_written(w);
	hash_seq_init(&it, w->targets);
	while ((t = hash_seq_search(&it)) != NULL)
	{
		if (t->missing)
			continue;
		if (t->proute)
			ExecCleanupTupleRouting(t->mtstate, t->proute);
		ExecCloseIndices(t->rri);
		ExecResetTupleTable(t->estate->es_tupleTable, false);
		FreeExecutorState(t->estate);
		table_close(t->rel, NoLock);
	}
	MemoryContextDelete(w->cxt);
	return rows;
}

/* SequinTryStep: write one change row with a writer of its own. */
static void
put_alone_step(void *arg)
{
	void	  **args = arg;
	ChangeWriterAlone *alone = args[0];
	BufferedChange *c = args[1];
	ChangeWriter *w = sequin_cdc_change_writer_begin(alone->database_id,
													 alone->slot_name);

	sequin_cdc_change_writer_put(c, w);
	alone->rows += sequin_cdc_change_writer_end(w);
}

/*
 * ChangeBufferCallback for a batch that failed as a whole: write one row
 * in a subtransaction of its own (its AFTER triggers and the visibility
 * check included), and park it when its change table rejects it.  Slow,
 * and only used after a failure.
 */
void
sequin_cdc_change_writer_put_alone(BufferedChange *c, void *arg)
{
	ChangeWriterAlone *alone = arg;
	ErrorData  *error = NULL;
	void	   *args[2] = {alone, c};

	if (c->park_stage != PARK_NONE)
	{
		/* the decoder could not filter or render it */
		sequin_cdc_park_decoded(alone->slot_name, c);
		return;
	}
	if (!sequin_cdc_try(put_alone_step, args, &error))
	{
		sequin_cdc_park_error(alone->slot_name, c, PARK_WRITE, error);
		FreeErrorData(error);
	}
}
