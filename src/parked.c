/*-------------------------------------------------------------------------
 *
 * parked.c
 *		Parked changes: no single change stops a slot.
 *
 * A change whose retention filter raises an error, whose row cannot be
 * rendered (jsonb holds at most 256 MB; an output function or a cast to
 * json may fail) or that its change table rejects (a constraint, a
 * trigger) is written into sequin_cdc.parked_changes instead of its change
 * table, with the error and the row as far as it could be rendered, in
 * the capture worker's write transaction: the one that writes the batch it
 * came in and advances the slot's replication origin, so a parked change
 * is parked exactly once, like a written one.  Capture goes on.
 *
 * Which errors are about one change is decided here, once
 * (sequin_cdc_error_is_systemic): a connection, serialization, resource,
 * operator or internal error is not the change's fault, and stops the
 * worker as before; everything else raised while filtering, rendering or
 * writing one change parks it (and, while decoding, a plain internal
 * error too: sequin_cdc_try_decoding).  sequin_cdc_try() runs such a step in a
 * subtransaction, the way a PL/pgSQL exception block does; callers use it
 * only off the happy path (rules with a filter, rows that may not render,
 * a batch that failed).
 *
 * Retries are performed by the capture worker itself, in its next write
 * transaction (retry_parked_changes() marks the rows and wakes it at
 * commit): the worker is the single writer of its change tables, so a
 * retried change row gets a seq after every row written before it, and no
 * reader can miss it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/resowner.h"

#include "catalog.h"
#include "change_writer.h"
#include "filter.h"
#include "parked.h"
#include "shmem.h"
#include "workers.h"

/* Longest error message and key text a log line about a parked change shows */
#define PARK_LOG_TEXT	200

/*
 * Is an error systemic, i.e. not about the one change being filtered,
 * rendered or written?  Connection problems (08), serialization failures
 * and deadlocks (40), insufficient resources such as a full disk (53),
 * operator intervention such as a cancel or shutdown (57), system (58)
 * and internal (XX) errors: the worker stops and retries the whole
 * batch later, confirming nothing past it.  Every other class (data
 * exceptions, constraint violations, program limits, a user trigger's
 * RAISE, ...) parks the change.
 */
bool
sequin_cdc_error_is_systemic(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_CONNECTION_EXCEPTION:
		case ERRCODE_TRANSACTION_ROLLBACK:
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_OPERATOR_INTERVENTION:
		case ERRCODE_SYSTEM_ERROR:
		case ERRCODE_INTERNAL_ERROR:
			return true;
		default:
			return false;
	}
}

/*
 * Run step(arg) in a subtransaction.  True when it succeeded; false, with
 * the error in *error (allocated in the caller's memory context), when it
 * raised an error about the change; a systemic error is thrown on (as a
 * PL/pgSQL block without a matching handler does).  What the step did is
 * rolled back when it fails.
 *
 * While decoding (filtering and rendering), a plain internal error
 * (XX000, elog(ERROR)) is about the change too: the step runs only the
 * row, the rule and the historic catalog, so it fails the same way every
 * time (e.g. a type's output function or cast in PL/pgSQL, which cannot run
 * its queries under logical decoding); thrown on, it would stop the slot
 * for good.  Corruption (XX001, XX002) stays systemic.
 */
static bool
parked_try(SequinTryStep step, void *arg, ErrorData **error, bool decoding)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		step(arg);
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
		if (sequin_cdc_error_is_systemic(edata->sqlerrcode) &&
			!(decoding && edata->sqlerrcode == ERRCODE_INTERNAL_ERROR))
			ReThrowError(edata);
		*error = edata;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* A step of writing or retrying one change, run by parked_try(). */
bool
sequin_cdc_try(SequinTryStep step, void *arg, ErrorData **error)
{
	return parked_try(step, arg, error, false);
}

/* A step of filtering or rendering one change while decoding. */
bool
sequin_cdc_try_decoding(SequinTryStep step, void *arg, ErrorData **error)
{
	return parked_try(step, arg, error, true);
}

/* The name of a parking stage, as parked_changes.stage holds it. */
static const char *
park_stage_name(char stage)
{
	switch (stage)
	{
		case PARK_FILTER:
			return "filter";
		case PARK_RENDER:
			return "render";
		case PARK_WRITE:
			return "write";
	}
	elog(ERROR, "unknown parking stage '%c'", stage);
	return NULL;
}

/* A jsonb datum, or a null one. */
static Datum
park_jsonb(Jsonb *j, char *nulls, int i)
{
	nulls[i] = j ? ' ' : 'n';
	return j ? JsonbPGetDatum(j) : (Datum) 0;
}

/*
 * Park change c of slot slot_name: its error (SQLSTATE sqlerrcode,
 * message) at stage, and the row as far as it was rendered.  Runs in the
 * capture worker's write transaction.  One log line says so, with the
 * table, key and error but never the row.
 */
void
sequin_cdc_park(const char *slot_name, const BufferedChange *c, char stage,
				int sqlerrcode, const char *message)
{
	Oid			types[SEQUIN_CDC_PARK_NARGS] = {
		NAMEOID, INT8OID, INT8OID, TEXTOID, TEXTOID, REGCLASSOID,
		TEXTOID, TEXTOID, LSNOID, XIDOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID,
		JSONBOID, JSONBOID, JSONBOID, JSONBOID
	};
	Datum		values[SEQUIN_CDC_PARK_NARGS];
	char		nulls[SEQUIN_CDC_PARK_NARGS];
	NameData	slot;
	char	   *schema = pnstrdup(c->schema_name, c->schema_len);
	char	   *table = pnstrdup(c->table_name, c->table_len);
	char	   *pk = pnstrdup(c->record_pk, c->pk_len);
	const char *state = unpack_sql_state(sqlerrcode);

	memset(nulls, ' ', sizeof(nulls));
	namestrcpy(&slot, slot_name);
	values[0] = NameGetDatum(&slot);
	values[1] = Int64GetDatum(c->rule_id);
	nulls[1] = c->rule_id > 0 ? ' ' : 'n';
	values[2] = Int64GetDatum((int64) c->source_oid);
	values[3] = CStringGetTextDatum(schema);
	values[4] = CStringGetTextDatum(table);
	values[5] = ObjectIdGetDatum(c->change_table);
	values[6] = CStringGetTextDatum(pk);
	values[7] = CStringGetTextDatum(sequin_cdc_action_name(c->action));
	values[8] = LSNGetDatum(c->commit_lsn);
	values[9] = TransactionIdGetDatum(c->xid);
	nulls[9] = TransactionIdIsValid(c->xid) ? ' ' : 'n';
	values[10] = TimestampTzGetDatum(c->committed_at);
	values[11] = CStringGetTextDatum(park_stage_name(stage));
	values[12] = CStringGetTextDatum(state);
	values[13] = CStringGetTextDatum(message ? message : "unknown error");
	values[14] = park_jsonb(c->record, nulls, 14);
	values[15] = park_jsonb(c->changes, nulls, 15);
	values[16] = park_jsonb(c->columns, nulls, 16);
	values[17] = park_jsonb(c->annotations, nulls, 17);

	SPI_connect();
	if (SPI_execute_with_args(SEQUIN_CDC_PARK_INSERT, SEQUIN_CDC_PARK_NARGS,
							  types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not park a change of \"%s.%s\"", schema, table);
	SPI_finish();

	ereport(WARNING,
			(errcode(sqlerrcode),
			 errmsg("sequin_cdc slot \"%s\" parked a change of \"%s.%s\" with key %.*s%s at the %s stage, SQLSTATE %s: %.*s%s",
					slot_name, schema, table,
					PARK_LOG_TEXT, pk, strlen(pk) > PARK_LOG_TEXT ? "..." : "",
					park_stage_name(stage), state,
					PARK_LOG_TEXT, message ? message : "",
					message && strlen(message) > PARK_LOG_TEXT ? "..." : ""),
			 errhidestmt(true),
			 errhidecontext(true)));
}

/* Park c, a change the decoder could not filter or render. */
void
sequin_cdc_park_decoded(const char *slot_name, const BufferedChange *c)
{
	char	   *message = pnstrdup(c->error, c->error_len);

	sequin_cdc_park(slot_name, c, c->park_stage, c->sqlerrcode, message);
	pfree(message);
}

/* Park c with a caught error (its message, never its detail). */
void
sequin_cdc_park_error(const char *slot_name, const BufferedChange *c, char stage,
					  const ErrorData *error)
{
	sequin_cdc_park(slot_name, c, stage, error->sqlerrcode, error->message);
}

/* One parked change being retried */
typedef struct ParkRetry
{
	int64		id;
	char		stage;
	int64		rule_id;
	BufferedChange change;
	const pg_uuid_t *database_id;
	const char *slot_name;
	bool		written;
} ParkRetry;

/* A text column of the retry query, copied out of SPI's memory. */
static char *
park_text(HeapTuple tup, TupleDesc desc, int col, int *len)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	char	   *s = isnull ? pstrdup("") : TextDatumGetCString(d);

	if (len)
		*len = strlen(s);
	return s;
}

/* A jsonb column of the retry query, copied out of SPI's memory, or NULL. */
static Jsonb *
park_jsonb_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

/*
 * Does the current filter of the rule from the change's source table to
 * its change table (the rule it was kept for, or one that replaced it)
 * take the parked row?  The row is rebuilt from its record with
 * jsonb_populate_record over the source table as it is now, and the filter
 * parsed as the decoder parses it.  Without such a rule the error says
 * so, and the change stays parked.
 */
static bool
park_filter_accepts(ParkRetry *r)
{
	Oid			argtypes[2] = {OIDOID, OIDOID};
	Datum		args[2];
	char		nulls[2] = {'n', ' '};
	bool		isnull;
	Oid			source = r->change.source_oid;
	char	   *filter;
	Relation	rel;
	Expr	   *expr;
	EState	   *estate;
	ExprState  *es;
	ExprContext *econtext;
	TupleTableSlot *slot;
	HeapTupleHeader th;
	HeapTupleData tup;
	Datum		res;
	bool		accepts;

	args[0] = ObjectIdGetDatum(source);
	args[1] = ObjectIdGetDatum(r->change.change_table);
	if (SPI_execute_with_args(SEQUIN_CDC_RULE_FILTER_QUERY, 2, argtypes, args, NULL,
							  true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no retention rule writes changes of \"%s.%s\" into this change table any more",
						r->change.schema_name, r->change.table_name),
				 errhint("Add the rule again with sequin_cdc.add_change_retention(), or drop the parked change with sequin_cdc.drop_parked_changes().")));
	filter = park_text(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, Anum_rule_filter, NULL);
	if (filter[0] == '\0')
		return true;
	if (r->change.record == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parked change %lld has no record to filter", (long long) r->id),
				 errhint("Drop it with sequin_cdc.drop_parked_changes().")));

	rel = table_open(source, AccessShareLock);
	argtypes[0] = rel->rd_rel->reltype;
	argtypes[1] = JSONBOID;
	args[0] = (Datum) 0;
	args[1] = JsonbPGetDatum(r->change.record);
	if (SPI_execute_with_args("SELECT pg_catalog.jsonb_populate_record($1, $2)",
							  2, argtypes, args, nulls, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not rebuild the row of parked change %lld", (long long) r->id);
	th = DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   1, &isnull));
	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = source;
	tup.t_data = th;

	expr = sequin_cdc_parse_filter(rel, filter);
	estate = CreateExecutorState();
	es = ExecPrepareExpr(expr, estate);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	ExecStoreHeapTuple(&tup, slot, false);
	econtext = GetPerTupleExprContext(estate);
	econtext->ecxt_scantuple = slot;
	res = ExecEvalExprSwitchContext(es, econtext, &isnull);
	accepts = !isnull && DatumGetBool(res);
	ExecDropSingleTupleTableSlot(slot);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return accepts;
}

/*
 * SequinTryStep: retry one parked change: check the current filter when
 * it was the filter that failed, write the change row, and remove the
 * parked row.  Render errors cannot be retried: the row was never held.
 */
static void
park_retry_one(void *arg)
{
	ParkRetry  *r = arg;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];

	if (r->stage == PARK_RENDER)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a change that could not be rendered cannot be retried"),
				 errhint("Drop it with sequin_cdc.drop_parked_changes().")));
	if (r->stage != PARK_FILTER || park_filter_accepts(r))
	{
		ChangeWriter *w = sequin_cdc_change_writer_begin(r->database_id, r->slot_name);

		sequin_cdc_change_writer_put(&r->change, w);
		r->written = sequin_cdc_change_writer_end(w) > 0;
		if (!r->written)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("change table with OID %u no longer exists", r->change.change_table),
					 errhint("Drop the parked change with sequin_cdc.drop_parked_changes().")));
	}
	args[0] = Int64GetDatum(r->id);
	if (SPI_execute_with_args(SEQUIN_CDC_PARK_DELETE, 1, argtypes, args, NULL,
							  false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove parked change %lld", (long long) r->id);
}

/*
 * Retry the parked changes of slot_name whose retry was asked, oldest
 * first, in the caller's (the capture worker's write) transaction: each
 * is written to its change table (with a new seq, after every change row
 * written before) and removed, or, when it fails again, keeps its place
 * with the new error.  Returns the number of change rows written.
 */
uint64
sequin_cdc_parked_retry(const char *slot_name, const pg_uuid_t *database_id)
{
	Oid			argtypes[1] = {NAMEOID};
	Datum		args[1];
	NameData	slot;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "sequin_cdc parked retry",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	ParkRetry  *retries;
	uint64		n;
	uint64		written = 0;

	/* the extension's SQL may be older than the library (before 0.4.0) */
	if (!OidIsValid(get_relname_relid(SEQUIN_CDC_PARKED_TABLE,
									  get_namespace_oid(SEQUIN_CDC_SCHEMA, true))))
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return 0;
	}
	namestrcpy(&slot, slot_name);
	args[0] = NameGetDatum(&slot);
	SPI_connect();
	if (SPI_execute_with_args(SEQUIN_CDC_PARK_RETRY_QUERY, 1, argtypes, args, NULL,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the parked changes of slot \"%s\"", slot_name);
	n = SPI_processed;
	MemoryContextSwitchTo(cxt);
	retries = palloc0(sizeof(ParkRetry) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ParkRetry  *r = &retries[i];
		BufferedChange *c = &r->change;
		bool		isnull;
		char	   *stage = park_text(tup, desc, Anum_park_retry_stage, NULL);

		r->id = DatumGetInt64(SPI_getbinval(tup, desc, Anum_park_retry_id, &isnull));
		r->stage = strcmp(stage, "filter") == 0 ? PARK_FILTER :
			strcmp(stage, "render") == 0 ? PARK_RENDER : PARK_WRITE;
		r->rule_id = DatumGetInt64(SPI_getbinval(tup, desc, Anum_park_retry_rule_id, &isnull));
		r->database_id = database_id;
		r->slot_name = slot_name;
		c->source_oid = (Oid) DatumGetInt64(SPI_getbinval(tup, desc, Anum_park_retry_source_oid, &isnull));
		c->schema_name = park_text(tup, desc, Anum_park_retry_schema, &c->schema_len);
		c->table_name = park_text(tup, desc, Anum_park_retry_table, &c->table_len);
		c->change_table = DatumGetObjectId(SPI_getbinval(tup, desc, Anum_park_retry_change_table, &isnull));
		c->record_pk = park_text(tup, desc, Anum_park_retry_record_pk, &c->pk_len);
		c->action = sequin_cdc_action_code(park_text(tup, desc, Anum_park_retry_action, NULL));
		c->commit_lsn = DatumGetLSN(SPI_getbinval(tup, desc, Anum_park_retry_commit_lsn, &isnull));
		c->committed_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, Anum_park_retry_committed_at, &isnull));
		c->record = park_jsonb_col(tup, desc, Anum_park_retry_record);
		c->changes = park_jsonb_col(tup, desc, Anum_park_retry_changes);
		c->annotations = park_jsonb_col(tup, desc, Anum_park_retry_annotations);
		c->rule_id = r->rule_id;
		c->park_stage = PARK_NONE;
	}
	SPI_freetuptable(SPI_tuptable);

	for (uint64 i = 0; i < n; i++)
	{
		ParkRetry  *r = &retries[i];
		ErrorData  *error = NULL;

		if (sequin_cdc_try(park_retry_one, r, &error))
		{
			written += r->written ? 1 : 0;
			continue;
		}
		{
			Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
			Datum		vals[3];

			vals[0] = Int64GetDatum(r->id);
			vals[1] = CStringGetTextDatum(unpack_sql_state(error->sqlerrcode));
			vals[2] = CStringGetTextDatum(error->message ? error->message : "unknown error");
			if (SPI_execute_with_args(SEQUIN_CDC_PARK_RETRY_FAILED, 3, types, vals, NULL,
									  false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not update parked change %lld", (long long) r->id);
			ereport(WARNING,
					(errcode(error->sqlerrcode),
					 errmsg("sequin_cdc slot \"%s\": retry of parked change %lld failed again, SQLSTATE %s: %.*s",
							slot_name, (long long) r->id, unpack_sql_state(error->sqlerrcode),
							PARK_LOG_TEXT, error->message ? error->message : ""),
					 errhidestmt(true),
					 errhidecontext(true)));
		}
	}
	SPI_finish();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return written;
}

PG_FUNCTION_INFO_V1(sequin_cdc_retry_parked_wake);

/*
 * _retry_parked_wake(slot): when the calling transaction commits, the
 * slot's capture worker retries the parked changes marked for retry.
 * Nothing happens for a slot without a worker entry: its worker retries
 * them when it starts.
 */
Datum
sequin_cdc_retry_parked_wake(PG_FUNCTION_ARGS)
{
	Name		slot = PG_GETARG_NAME(0);
	int			idx;

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	idx = sequin_cdc_find_slot_entry(NameStr(*slot));
	LWLockRelease(sequin_cdc_shared->lock);
	if (idx >= 0)
		sequin_cdc_at_commit(SEQUIN_AT_COMMIT_RETRY_PARKED, idx);
	PG_RETURN_VOID();
}
