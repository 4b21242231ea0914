/*-------------------------------------------------------------------------
 *
 * backfill.c
 *		The backfill worker: reads a table in primary key chunks and hands
 *		each chunk to the capture worker through the WAL.
 *
 * DBLog's watermark algorithm, with the WAL as the log.  For each chunk:
 *   1. a transaction writes the low watermark (a transactional logical
 *      message) and commits;
 *   2. a second transaction reads the next chunk by primary key (keyset
 *      pagination, never OFFSET), writes it inside the high watermark
 *      message, advances the backfill's cursor and commits.
 * The capture worker decodes both in commit order.  Between the two it
 * notes the keys of every change of the table; at the high watermark it
 * drops the chunk rows whose key changed in that window (their change rows
 * are already in the stream, newer than the chunk) and writes the rest as
 * 'read' rows, at that position in the stream.  So for every key the last
 * entry of the stream is the table's row, and the capture worker stays the
 * single writer of its change tables.
 *
 * The cursor advances in the transaction that writes the chunk, so a
 * restart resumes after the last chunk that reached the WAL and repeats
 * none.  Workers are started by backfill() and, after a restart, by the
 * capture worker of the backfill's slot; a session advisory lock keeps one
 * worker per backfill.
 *
 * Who runs what: the worker connects as the bootstrap superuser, to keep
 * the backfill's row and write the watermarks, and reads the table as the
 * role that called backfill() (run_as), restricted (run_as.c): row level
 * security policies of the table apply to that role and run as it, and
 * the read sees only what that role may read.  Before every chunk the
 * worker checks that the role still exists and may still read the table;
 * if not the backfill fails, with a message saying why, and never goes on
 * as another role.  The where clause is parsed as one boolean expression
 * over the table's columns, built-in code only (filter.c), and it is that
 * parse tree, deparsed, that goes into the chunk query: the text the user
 * gave is never pasted into SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/message.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "backfill.h"
#include "catalog.h"
#include "compat.h"
#include "filter.h"
#include "row_json.h"
#include "run_as.h"
#include "sequin_cdc.h"
#include "watermark.h"
#include "workers.h"

PG_FUNCTION_INFO_V1(sequin_cdc_start_backfill);

/* advisory lock class of backfill workers: 'SQBF' */
#define BACKFILL_LOCK_CLASS 1397834310

typedef struct BackfillJob
{
	int64		id;
	Oid			relid;
	Oid			change_table;
	char	   *where_clause;
	Oid			run_as;			/* reads the table */
	int			chunk_size;
	int			nkeys;
	char	  **last_key;		/* NULL before the first chunk */
} BackfillJob;

/*
 * _start_backfill(id): called by backfill() for the row it just inserted;
 * the worker starts when that row is committed.  It takes the role to read
 * as from the backfill's row, never from who started it.
 */
Datum
sequin_cdc_start_backfill(PG_FUNCTION_ARGS)
{
	sequin_cdc_require_preload();
	sequin_cdc_at_commit(SEQUIN_AT_COMMIT_START_BACKFILL, PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/*
 * Start workers for the running backfills of a slot; returns whether there
 * are any.  The capture worker calls this, inside a transaction, when it
 * starts (so backfills go on after a server restart) and every few seconds
 * while backfills run (so one whose worker was terminated goes on).  The
 * advisory lock turns away a second worker for the same backfill.
 */
bool
sequin_cdc_launch_pending_backfills(const char *slot_name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(slot_name)};
	bool		any = false;

	SPI_connect();
	if (SPI_execute_with_args("SELECT " SEQUIN_CDC_BACKFILL_PENDING_COLUMNS
							  " FROM " SEQUIN_CDC_BACKFILLS_QUALIFIED
							  " WHERE state = '" SEQUIN_CDC_BACKFILL_RUNNING "'"
							  " AND slot_name = $1::name",
							  1, argtypes, args, NULL, true, 0) == SPI_OK_SELECT)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc,
														 Anum_backfill_pending_id,
														 &isnull));

			(void) sequin_cdc_start_worker(SEQUIN_WORKER_BACKFILL, id, MyDatabaseId,
										   NULL, NULL);
			any = true;
		}
	}
	SPI_finish();
	return any;
}

/* Read the backfill's row; false if it is not (yet) there or not running. */
static bool
backfill_load_job(BackfillJob *job, MemoryContext cxt)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(job->id)};
	bool		found = false;

	SPI_connect();
	if (SPI_execute_with_args("SELECT " SEQUIN_CDC_BACKFILL_JOB_COLUMNS
							  " FROM " SEQUIN_CDC_BACKFILLS_QUALIFIED " WHERE id = $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		v;
		char	   *state = SPI_getvalue(t, d, Anum_backfill_job_state);

		if (strcmp(state, SEQUIN_CDC_BACKFILL_RUNNING) == 0)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			found = true;
			job->relid = DatumGetObjectId(SPI_getbinval(t, d, Anum_backfill_job_source_table, &isnull));
			v = SPI_getbinval(t, d, Anum_backfill_job_change_table, &isnull);
			job->change_table = isnull ? InvalidOid : DatumGetObjectId(v);
			v = SPI_getbinval(t, d, Anum_backfill_job_where_clause, &isnull);
			job->where_clause = isnull ? NULL : TextDatumGetCString(v);
			job->chunk_size = DatumGetInt32(SPI_getbinval(t, d, Anum_backfill_job_chunk_size, &isnull));
			job->run_as = DatumGetObjectId(SPI_getbinval(t, d, Anum_backfill_job_run_as, &isnull));
			v = SPI_getbinval(t, d, Anum_backfill_job_last_key, &isnull);
			job->last_key = NULL;
			job->nkeys = 0;
			if (!isnull)
			{
				Datum	   *elems;
				bool	   *enulls;

				deconstruct_array(DatumGetArrayTypeP(v), TEXTOID, -1, false,
								  TYPALIGN_INT, &elems, &enulls, &job->nkeys);
				job->last_key = palloc(sizeof(char *) * Max(job->nkeys, 1));
				for (int i = 0; i < job->nkeys; i++)
					job->last_key[i] = TextDatumGetCString(elems[i]);
			}
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	return found;
}

/* Primary key columns of rel, in key order; the chunks are read by them. */
static int
primary_key(Relation rel, AttrNumber **keys)
{
	int			n = sequin_cdc_primary_key(rel, keys);

	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no primary key", RelationGetRelationName(rel)),
				 errhint("Add a primary key and start the backfill again.")));
	return n;
}

/*
 * The where clause as SQL text we made: parsed and checked (filter.c),
 * then deparsed from the parse tree, with the table aliased t.  Whatever
 * the user wrote, this is one parenthesized boolean expression.
 */
static char *
deparse_condition(BackfillJob *job, Relation rel)
{
	Expr	   *expr = sequin_cdc_parse_backfill_where(rel, job->where_clause);

	return deparse_expression((Node *) expr,
							  deparse_context_for("t", RelationGetRelid(rel)),
							  true, true);
}

/* SELECT * ... WHERE key > last key AND condition ORDER BY key LIMIT chunk */
static char *
chunk_query(BackfillJob *job, Relation rel, int nkeys, AttrNumber *keys)
{
	StringInfoData q;
	TupleDesc	desc = RelationGetDescr(rel);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT * FROM %s t WHERE ",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	if (job->last_key)
	{
		appendStringInfoChar(&q, '(');
		for (int i = 0; i < nkeys; i++)
			appendStringInfo(&q, "%st.%s", i ? ", " : "",
							 quote_identifier(NameStr(TupleDescAttr(desc, keys[i] - 1)->attname)));
		appendStringInfoString(&q, ") > (");
		for (int i = 0; i < nkeys; i++)
			appendStringInfo(&q, "%s$%d::%s", i ? ", " : "", i + 1,
							 format_type_be(TupleDescAttr(desc, keys[i] - 1)->atttypid));
		appendStringInfoString(&q, ")");
	}
	else
		appendStringInfoString(&q, "true");
	if (job->where_clause)
		appendStringInfo(&q, " AND (%s)", deparse_condition(job, rel));
	appendStringInfoString(&q, " ORDER BY ");
	for (int i = 0; i < nkeys; i++)
		appendStringInfo(&q, "%st.%s", i ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(desc, keys[i] - 1)->attname)));
	appendStringInfo(&q, " LIMIT %d", job->chunk_size);
	return q.data;
}

/* Close the backfill's open window, if any; caller is in a transaction. */
void
sequin_cdc_backfill_end_message(int64 id)
{
	char		text[32];

	snprintf(text, sizeof(text), "%lld", (long long) id);
	sequin_cdc_log_message(SEQUIN_CDC_BACKFILL_END, text, strlen(text));
}

/*
 * The role the backfill reads as must still exist and still be allowed to
 * read the table; otherwise the backfill fails here (the caller records
 * the error in its row) rather than read as anyone else.
 */
static void
check_run_as(BackfillJob *job)
{
	char	   *relname;

	if (!sequin_cdc_role_exists(job->run_as))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that started backfill %lld (OID %u) no longer exists",
						(long long) job->id, job->run_as),
				 errdetail("A backfill reads the table with the privileges of the role that called sequin_cdc.backfill(), and of no other."),
				 errhint("Start the backfill again with sequin_cdc.backfill() as a role that may read the table.")));
	relname = get_rel_name(job->relid);
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the table of backfill %lld no longer exists", (long long) job->id),
				 errhint("Nothing is left to backfill; start a backfill of another table with sequin_cdc.backfill().")));
	if (pg_class_aclcheck(job->relid, job->run_as, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" that started backfill %lld may no longer read table \"%s\"",
						GetUserNameFromId(job->run_as, false), (long long) job->id, relname),
				 errdetail("A backfill reads the table with the privileges of the role that called sequin_cdc.backfill(), and of no other."),
				 errhint("Grant the role SELECT on the table again and start a new backfill with sequin_cdc.backfill().")));
}

/* Step 1 of a chunk: the low watermark, in a transaction of its own. */
static void
write_low_watermark(BackfillJob *job)
{
	BackfillMessage m;

	memset(&m, 0, sizeof(m));
	m.id = job->id;
	m.relid = job->relid;
	m.change_table = job->change_table;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	sequin_cdc_log_message(SEQUIN_CDC_BACKFILL_LOW, (const char *) &m, sizeof(m));
	CommitTransactionCommand();
}

/*
 * Read one chunk and write it as the high watermark, with the cursor, in
 * one transaction.  Returns false when the backfill is over (done, or
 * cancelled meanwhile).
 */
static bool
write_chunk(BackfillJob *job, MemoryContext cxt)
{
	Relation	rel;
	AttrNumber *keys;
	int			nkeys;
	TupleDesc	desc;
	char	   *query;
	Oid		   *argtypes;
	Datum	   *args;
	uint64		n;
	StringInfoData msg;
	BackfillMessage m;
	Datum	   *values;
	bool	   *nulls;
	int		   *spi_col;
	Datum	   *key_texts = NULL;
	bool		done;
	bool		still_running;
	SequinUserContext ucxt;
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();

	/*
	 * A writer's commit record can precede the low watermark while its
	 * change is not yet visible (it becomes visible after the WAL flush and
	 * any synchronous replication wait).  Such a change would be neither in
	 * the chunk nor in the window.  Writers hold their RowExclusiveLock
	 * until after they are visible, so waiting for the current holders
	 * (as CREATE INDEX CONCURRENTLY does) makes every writer that committed
	 * before the low watermark visible to the chunk's snapshot; later ones
	 * commit inside the window.
	 */
	{
		List	   *tags = NIL;
		ListCell   *lc;

		foreach(lc, find_all_inheritors(job->relid, NoLock, NULL))
		{
			LOCKTAG    *tag = palloc(sizeof(LOCKTAG));

			SET_LOCKTAG_RELATION(*tag, MyDatabaseId, lfirst_oid(lc));
			tags = lappend(tags, tag);
		}
		WaitForLockersMultiple(tags, ShareLock, false);
	}

	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(job->relid, AccessShareLock);
	check_run_as(job);			/* with the catalog as of the lock, just before the read */
	desc = RelationGetDescr(rel);
	nkeys = primary_key(rel, &keys);

	/*
	 * From here to the end of the read we are run_as, restricted, with a
	 * search_path of pg_catalog only: the condition was checked to call
	 * built-in code only, and its deparsed text must resolve to that same
	 * built-in code when the chunk query is parsed.
	 */
	sequin_cdc_switch_to_user(job->run_as, &ucxt);
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	query = chunk_query(job, rel, nkeys, keys);
	argtypes = palloc(sizeof(Oid) * nkeys);
	args = palloc(sizeof(Datum) * nkeys);
	for (int i = 0; i < nkeys; i++)
	{
		argtypes[i] = TEXTOID;
		args[i] = job->last_key && i < job->nkeys ?
			CStringGetTextDatum(job->last_key[i]) : (Datum) 0;
	}

	SPI_connect();
	rc = SPI_execute_with_args(query, job->last_key ? nkeys : 0, argtypes, args,
							   NULL, true, 0);
	sequin_cdc_restore_user(&ucxt);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "backfill chunk query failed");
	n = SPI_processed;

	/* SPI rows have the live columns; the message carries table-shaped tuples */
	spi_col = palloc(sizeof(int) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		spi_col[i] = att->attisdropped ? 0 :
			SPI_fnumber(SPI_tuptable->tupdesc, NameStr(att->attname));
	}
	values = palloc(sizeof(Datum) * Max(desc->natts, 1));
	nulls = palloc(sizeof(bool) * Max(desc->natts, 1));

	initStringInfo(&msg);
	memset(&m, 0, sizeof(m));
	m.id = job->id;
	m.relid = job->relid;
	m.change_table = job->change_table;
	m.nrows = (int32) n;
	sequin_cdc_append_padded(&msg, &m, sizeof(m));
	for (uint64 r = 0; r < n; r++)
	{
		HeapTuple	src = SPI_tuptable->vals[r];
		HeapTuple	tup;

		for (int i = 0; i < desc->natts; i++)
		{
			if (spi_col[i] > 0)
				values[i] = SPI_getbinval(src, SPI_tuptable->tupdesc, spi_col[i], &nulls[i]);
			else
			{
				values[i] = (Datum) 0;
				nulls[i] = true;
			}
		}
		tup = heap_form_tuple(desc, values, nulls);
		if (HeapTupleHasExternal(tup))
			tup = toast_flatten_tuple(tup, desc);	/* values, not TOAST pointers */
		sequin_cdc_watermark_append_tuple(&msg, tup);

		if (r == n - 1)
		{
			/* the cursor: the last row's key, as text */
			key_texts = palloc(sizeof(Datum) * nkeys);
			for (int k = 0; k < nkeys; k++)
			{
				Oid			outfunc;
				bool		isvarlena;
				Form_pg_attribute att = TupleDescAttr(desc, keys[k] - 1);

				getTypeOutputInfo(att->atttypid, &outfunc, &isvarlena);
				key_texts[k] = CStringGetTextDatum(OidOutputFunctionCall(outfunc,
																		 values[keys[k] - 1]));
			}
		}
		heap_freetuple(tup);
	}
	done = n < (uint64) job->chunk_size;
	sequin_cdc_log_message(SEQUIN_CDC_BACKFILL_HIGH, msg.data, msg.len);

	{
		Oid			uargtypes[4] = {INT8OID, TEXTARRAYOID, INT8OID, BOOLOID};
		Datum		uargs[4];
		char		unulls[4] = {' ', ' ', ' ', ' '};

		uargs[0] = Int64GetDatum(job->id);
		if (key_texts)
			uargs[1] = PointerGetDatum(construct_array(key_texts, nkeys, TEXTOID, -1, false, TYPALIGN_INT));
		else
		{
			uargs[1] = (Datum) 0;
			unulls[1] = 'n';
		}
		uargs[2] = Int64GetDatum((int64) n);
		uargs[3] = BoolGetDatum(done);
		SPI_execute_with_args("UPDATE sequin_cdc.backfills SET "
							  "last_key = coalesce($2, last_key), chunks = chunks + 1, "
							  "rows_processed = rows_processed + $3, "
							  "state = CASE WHEN $4 THEN 'completed' ELSE state END, "
							  "finished_at = CASE WHEN $4 THEN now() ELSE finished_at END "
							  "WHERE id = $1 AND state = 'running'",
							  4, uargtypes, uargs, unulls, false, 0);
		still_running = SPI_processed == 1;
	}

	if (key_texts)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		job->nkeys = nkeys;
		job->last_key = palloc(sizeof(char *) * nkeys);
		for (int k = 0; k < nkeys; k++)
			job->last_key[k] = TextDatumGetCString(key_texts[k]);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();

	if (!still_running)
	{
		/* cancelled while we read: this chunk is not sent */
		AbortCurrentTransaction();
		StartTransactionCommand();
		sequin_cdc_backfill_end_message(job->id);
		CommitTransactionCommand();
		return false;
	}
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return !done;
}

/*
 * Take the session advisory lock of backfill id; false if another worker
 * holds it.  Held until the worker exits.
 */
static bool
backfill_take_lock(int64 id)
{
	return DatumGetBool(DirectFunctionCall2(pg_try_advisory_lock_int4,
											Int32GetDatum(BACKFILL_LOCK_CLASS),
											Int32GetDatum((int32) id)));
}

/*
 * Run a backfill to its end: wait for its row (backfill() may not have
 * committed yet), make sure no other worker has it, then one low
 * watermark and one chunk at a time until the table is read or the
 * backfill is cancelled.
 */
static void
backfill_run(BackfillJob *job, MemoryContext cxt)
{
	bool		found = false;
	bool		locked;

	/* backfill() starts us before its transaction commits: wait for it */
	for (int tries = 0; tries < 300 && !found; tries++)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (tries == 0)
			locked = backfill_take_lock(job->id);
		found = locked && backfill_load_job(job, cxt);
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (!locked)
			return;				/* another worker has it */
		if (!found)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	if (!found)
		return;

	ereport(LOG, (errmsg("sequin_cdc backfill %lld started", (long long) job->id)));
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		pgstat_report_activity(STATE_RUNNING, "reading a chunk");
		write_low_watermark(job);
		if (!write_chunk(job, cxt))
			break;
	}
	ereport(LOG, (errmsg("sequin_cdc backfill %lld finished", (long long) job->id)));
}

/*
 * Entry point of a backfill worker (bgw_extra: SequinWorkerArg).  An error
 * fails the backfill: it is recorded in the row, its window is closed, and
 * the worker exits; nothing restarts it.
 */
void
sequin_cdc_backfill_main(Datum arg)
{
	SequinWorkerArg a;
	BackfillJob job;
	MemoryContext cxt;

	/* the bootstrap superuser; the table is read as run_as (write_chunk) */
	a = sequin_cdc_worker_init();
	memset(&job, 0, sizeof(job));
	job.id = a.id;
	cxt = AllocSetContextCreate(TopMemoryContext, "sequin_cdc backfill",
								ALLOCSET_DEFAULT_SIZES);

	PG_TRY();
	{
		backfill_run(&job, cxt);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		Oid			argtypes[2] = {INT8OID, TEXTOID};
		Datum		args[2];

		/* report, then record the failure in the backfill's row */
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();

		args[0] = Int64GetDatum(job.id);
		args[1] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		SPI_execute_with_args("UPDATE " SEQUIN_CDC_BACKFILLS_QUALIFIED " SET state = 'failed', "
							  "finished_at = now(), last_error = $2 "
							  "WHERE id = $1 AND state = '" SEQUIN_CDC_BACKFILL_RUNNING "'",
							  2, argtypes, args, NULL, false, 0);
		SPI_finish();
		sequin_cdc_backfill_end_message(job.id);
		PopActiveSnapshot();
		CommitTransactionCommand();
		proc_exit(1);
	}
	PG_END_TRY();
	proc_exit(0);
}
