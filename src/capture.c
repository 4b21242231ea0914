/*-------------------------------------------------------------------------
 *
 * capture.c
 *		The capture worker: consumes one slot in-process and writes its
 *		changes, exactly once and in commit order.
 *
 * The loop reads decode -> write -> confirm -> sleep.  Decoding has the
 * shape of pg_logical_slot_get_changes_guts: read WAL up to the flush
 * pointer with XLogReadRecord and feed it to LogicalDecodingProcessRecord,
 * with this library as the output plugin (output_plugin.c).  As in
 * logicalfuncs.c, the worker passes its own writer callbacks to
 * CreateDecodingContext and its state as output_writer_private; the plugin
 * hands it typed records (output_plugin.h): rows, which go into a
 * ChangeBuffer, the end of each transaction, and where backfill windows
 * hold the slot.  Then, because the plugin's callbacks cannot write, the
 * worker writes the buffered rows in one transaction of its own, grouping
 * many source transactions (batch_due is the one batching policy), and
 * only after that commit is flushed does it confirm the slot.
 *
 * Exactly once: the write transaction also advances a replication origin
 * (its origin LSN = end of the last source commit written),
 * atomically with the rows, as the core apply worker does.  On start,
 * decoding begins at that origin position, so source transactions whose
 * rows were committed are skipped even when the slot, whose position is
 * saved only at checkpoints, went back after a crash.
 *
 * The worker's own writes carry its origin, and the plugin filters those
 * origins out, so change rows are never captured again.
 *
 * Decoding runs under historic snapshots and leaves historic entries in
 * the caches; writing runs in normal transactions.  Caches are flushed at
 * each switch, as pg_logical_slot_get_changes does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/pg_publication.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/reorderbuffer.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "backfill.h"
#include "catalog.h"
#include "change_buffer.h"
#include "change_writer.h"
#include "compat.h"
#include "output_plugin.h"
#include "parked.h"
#include "sequin_cdc.h"
#include "sink_api.h"

typedef struct CaptureConfig
{
	char		slot_name[NAMEDATALEN];
	char	   *publication;
	pg_uuid_t	database_id;
} CaptureConfig;

/*
 * The batch being decoded and its bookkeeping: the writer's state, which
 * the decoding context carries as output_writer_private and the plugin's
 * records update (capture_write).
 */
typedef struct CaptureBatch
{
	ChangeBuffer *buffer;		/* the rows */
	uint64		ntxns;			/* source transactions with rows */
	XLogRecPtr	last_commit_end;	/* end of the last transaction decoded */
	TimestampTz last_commit_time;
	XLogRecPtr	hold_lsn;		/* an open backfill window started here: do
								 * not confirm the slot past it */
	bool		backfill_seen;	/* a backfill watermark was decoded */
	TimestampTz first_row_time; /* when the batch's first row came */
	TimestampTz last_write;		/* when the last batch was written */
} CaptureBatch;

static int	my_index = -1;
static CaptureSlotShared *my_entry = NULL;
static LogicalDecodingContext *decoding_ctx = NULL;

/* What the worker is doing, for its error context */
#define CAPTURE_DOING_DECODING "decoding"
static const char *capture_doing = "starting";

static void capture_succeeded(const char *slot_name);

/* Backfills of this slot may be running: look after their workers. */
static bool backfills_active = false;
static TimestampTz last_backfill_check = 0;
#define BACKFILL_CHECK_INTERVAL 10000	/* ms */

/*
 * PROC_IN_LOGICAL_DECODING, which CreateDecodingContext sets, tells other
 * backends that this process manages its xmin through the slot: their
 * snapshots leave its xid out (GetSnapshotData skips such backends).  That
 * is right while it decodes, and wrong while it writes change rows: a
 * reader whose snapshot did not list the running write transaction, but
 * saw a later one complete, judges the batch's rows as left by an aborted
 * transaction and sets HEAP_XMIN_INVALID on them, and they stay invisible
 * after the batch commits.  So the flag is set only around decoding; every
 * transaction of the worker's own runs without it.
 */
static void
set_decoding_flag(bool decoding)
{
	Assert(!IsTransactionState());
	LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
	if (decoding)
		MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
	else
		MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
	ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
	LWLockRelease(ProcArrayLock);
}

/* Publish what the worker is doing, for pg_stat_capture. */
static void
set_state(CaptureState state)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (my_entry->pid == MyProcPid)
		my_entry->state = state;
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * Is drop_slot() waiting for this worker to let the slot go, or has it
 * already dropped it and given the entry back (the entry is no longer this
 * worker's: a worker still waiting for its configuration would otherwise
 * wait forever, and keep the launcher from serving the entry's next slot)?
 */
static bool
drop_requested(void)
{
	bool		r;

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	r = my_entry->drop_requested || !my_entry->in_use || my_entry->pid != MyProcPid;
	LWLockRelease(sequin_cdc_shared->lock);
	return r;
}

/* Exit callback: give the slot's shared entry back. */
static void
capture_detach(int code, Datum arg)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (my_entry->pid == MyProcPid)
	{
		my_entry->pid = 0;
		my_entry->latch = NULL;
		my_entry->state = CAPTURE_STOPPED;
		my_entry->origin = InvalidReplOriginId;
	}
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * errcontext: which slot, what the worker was doing (capture_doing), where
 * in the WAL, which transaction and table.  Never a row's values: this
 * line is logged at every failed attempt.
 */
static void
capture_error_context(void *arg)
{
	CaptureConfig *cfg = arg;
	TransactionId xid = InvalidTransactionId;
	const char *relname = NULL;

	if (decoding_ctx == NULL || decoding_ctx->reader == NULL)
	{
		errcontext("sequin_cdc capture of slot \"%s\" (%s)", cfg->slot_name, capture_doing);
		return;
	}
	if (strcmp(capture_doing, CAPTURE_DOING_DECODING) == 0)
		sequin_cdc_plugin_position(decoding_ctx, &xid, &relname);
	if (TransactionIdIsValid(xid) && relname)
		errcontext("sequin_cdc capture of slot \"%s\" (%s), WAL position %X/%X, transaction %u, relation \"%s\"",
				   cfg->slot_name, capture_doing,
				   LSN_FORMAT_ARGS(decoding_ctx->reader->ReadRecPtr), xid, relname);
	else
		errcontext("sequin_cdc capture of slot \"%s\" (%s), WAL position %X/%X",
				   cfg->slot_name, capture_doing,
				   LSN_FORMAT_ARGS(decoding_ctx->reader->ReadRecPtr));
}

/*
 * Read the slot's configuration: its publication and the database id.
 * Returns false while the extension or the slot's row is missing.
 */
static bool
capture_load_config(CaptureConfig *cfg, MemoryContext cxt)
{
	bool		ok = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("sequin_cdc", true)))
	{
		Oid			argtypes[1] = {NAMEOID};
		Datum		args[1];
		NameData	n;

		namestrcpy(&n, cfg->slot_name);
		args[0] = NameGetDatum(&n);
		SPI_connect();
		if (SPI_execute_with_args(SEQUIN_CDC_CAPTURE_CONFIG_QUERY,
								  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		pub = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											Anum_capture_config_publication, &isnull);
			Datum		id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										   Anum_capture_config_database_id, &isnull);

			cfg->publication = MemoryContextStrdup(cxt, TextDatumGetCString(pub));
			memcpy(&cfg->database_id, DatumGetUUIDP(id), sizeof(pg_uuid_t));
			ok = true;
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ok;
}

/*
 * The slot's publication must exist and cover every table with rules of
 * the slot: capture stops with an error otherwise (recorded, retried after
 * a backoff), rather than skip their changes.  Returns a WAL position read
 * before the check: transactions that ended before it and were decoded
 * without the publication (or the table in it) belong to a gap that is
 * closed now, and the plugin captures them by the rules alone
 * (plugin_relcache.c, relcache_unpublished).
 */
static XLogRecPtr
capture_check_publication(CaptureConfig *cfg)
{
	XLogRecPtr	upto = GetXLogInsertRecPtr();
	Oid			argtypes[2] = {NAMEOID, TEXTOID};
	Datum		args[2];
	NameData	n;
	char	   *uncovered = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(get_publication_oid(cfg->publication, true)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("publication \"%s\" of replication slot \"%s\" does not exist",
						cfg->publication, cfg->slot_name),
				 errdetail("Capture stops until it exists again; the slot is not confirmed past the first change made without it."),
				 errhint("Create it again with sequin_cdc.create_publication(), covering the tables of the slot's rules, then call sequin_cdc.restart_capture('%s').",
						 cfg->slot_name)));

	namestrcpy(&n, cfg->slot_name);
	args[0] = NameGetDatum(&n);
	args[1] = CStringGetTextDatum(cfg->publication);
	SPI_connect();
	if (SPI_execute_with_args(SEQUIN_CDC_UNCOVERED_RULES_QUERY, 2, argtypes, args,
							  NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not check the tables of publication \"%s\"", cfg->publication);
	uncovered = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (uncovered != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("publication \"%s\" of replication slot \"%s\" does not cover %s, which have retention rules of the slot",
						cfg->publication, cfg->slot_name, uncovered),
				 errdetail("Capture stops until it covers them; the slot is not confirmed past the first change made without them."),
				 errhint("Add them with ALTER PUBLICATION %s ADD TABLE, or drop their rules with sequin_cdc.drop_change_retention(), then call sequin_cdc.restart_capture('%s').",
						 quote_identifier(cfg->publication), cfg->slot_name)));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return upto;
}

/*
 * Set up this session's replication origin, the slot's progress as saved
 * with the change rows (created on first use).
 */
static ReplOriginId
setup_origin(const char *slot_name)
{
	char		name[NAMEDATALEN + 16];
	ReplOriginId origin;

	sequin_cdc_origin_name(slot_name, name, sizeof(name));
	StartTransactionCommand();
	origin = replorigin_by_name(name, true);
	if (origin == InvalidReplOriginId)
		origin = replorigin_create(name);
	CommitTransactionCommand();
	sequin_cdc_replorigin_session_setup(origin);
	sequin_cdc_xact_origin = origin;
	return origin;
}

/*
 * The writer's prepare_write callback: a record is about to be put into
 * ctx->out (as logicalfuncs.c's LogicalOutputPrepareWrite).
 */
void
sequin_cdc_capture_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
								 TransactionId xid, bool last_write)
{
	resetStringInfo(ctx->out);
}

/*
 * The writer's write callback: take the plugin's record out of ctx->out
 * (output_plugin.h) into the batch: a row into the buffer, or the batch's
 * bookkeeping.
 */
void
sequin_cdc_capture_write(LogicalDecodingContext *ctx, XLogRecPtr lsn,
						 TransactionId xid, bool last_write)
{
	CaptureBatch *b = ctx->output_writer_private;
	PluginRecord rec;

	Assert(b != NULL && ctx->out->len == sizeof(PluginRecord));
	memcpy(&rec, ctx->out->data, sizeof(PluginRecord));
	switch (rec.kind)
	{
		case PLUGIN_RECORD_ROW:
		case PLUGIN_RECORD_PARK:
			if (b->buffer->nrows == 0)
				b->first_row_time = GetCurrentTimestamp();
			sequin_cdc_buffer_append(b->buffer, rec.row);
			break;
		case PLUGIN_RECORD_COMMIT:
			if (rec.had_rows)
				b->ntxns++;
			b->last_commit_end = rec.lsn;
			b->last_commit_time = rec.commit_time;
			break;
		case PLUGIN_RECORD_HOLD:
			b->hold_lsn = rec.lsn;
			break;
		case PLUGIN_RECORD_BACKFILL_SEEN:
			b->backfill_seen = true;
			break;
	}
}

/*
 * The batching policy: is the buffered batch due to be written?  It is
 * when it is full or spilled, when its first row has waited
 * sequin_cdc.batch_delay, or, unless we are in the middle of decoding, at
 * once when the last write is that long ago: an isolated change is not
 * held back, and a steady stream is written in a few larger transactions
 * rather than many small ones.  When rows wait but are not due,
 * *wait_ms says in how long they will be; otherwise it is -1.
 */
static bool
batch_due(CaptureBatch *b, TimestampTz now, bool decoding, long *wait_ms)
{
	TimestampTz due;

	*wait_ms = -1;
	if (b->buffer->nrows == 0)
		return false;
	if (b->buffer->nrows >= (uint64) sequin_cdc_batch_changes || b->buffer->file != NULL)
		return true;
	due = TimestampTzPlusMilliseconds(b->first_row_time, sequin_cdc_batch_delay);
	if (!decoding)
		due = Min(due, TimestampTzPlusMilliseconds(b->last_write, sequin_cdc_batch_delay));
	if (now >= due)
		return true;
	*wait_ms = Max(1, (due - now) / 1000);
	return false;
}

/*
 * Decode until the flush pointer, until the batch is due, or for
 * batch_delay at most (to confirm progress and notice requests while
 * WAL of no interest streams by): whichever comes first.  The buffer then
 * holds only whole transactions, since the plugin sees a transaction's
 * changes all at once, when its commit is decoded.
 */
static void
decode_batch(LogicalDecodingContext *ctx, CaptureBatch *b, XLogRecPtr upto)
{
	TimestampTz start = GetCurrentTimestamp();
	TimestampTz now = start;
	long		wait_ms;
	int			n = 0;

	pgstat_report_activity(STATE_RUNNING, "decoding");
	capture_doing = CAPTURE_DOING_DECODING;
	set_decoding_flag(true);
	while (ctx->reader->EndRecPtr < upto)
	{
		char	   *errm = NULL;
		XLogRecord *record = XLogReadRecord(ctx->reader, &errm);

		if (errm)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("could not read WAL for logical decoding: %s", errm)));
		if (record != NULL)
			LogicalDecodingProcessRecord(ctx, ctx->reader);
		CHECK_FOR_INTERRUPTS();

		/* the clock is read every 256 records only */
		if (++n % 256 == 0)
			now = GetCurrentTimestamp();
		if (batch_due(b, now, true, &wait_ms) ||
			TimestampDifferenceExceeds(start, now, sequin_cdc_batch_delay))
			break;
	}
	set_decoding_flag(false);
}

/* SequinTryStep: write the whole batch at full speed (write_rows). */
static void
write_rows_fast(void *arg)
{
	void	  **args = arg;
	CaptureConfig *cfg = args[0];
	CaptureBatch *b = args[1];
	uint64	   *rows = args[2];
	ChangeWriter *w = sequin_cdc_change_writer_begin(&cfg->database_id, cfg->slot_name);

	sequin_cdc_buffer_replay(b->buffer, sequin_cdc_change_writer_put, w);
	*rows = sequin_cdc_change_writer_end(w);
}

/*
 * Write the buffered rows, in the write transaction.  The batch is
 * written at full speed in one subtransaction; if a row is rejected (or a
 * decoded change must be parked and that fails), the subtransaction is
 * rolled back and the batch written again row by row, each rejected row
 * parked (change_writer.c).  A systemic error stops the worker as before.
 * Returns the number of change rows written.
 */
static uint64
write_rows(CaptureConfig *cfg, CaptureBatch *b)
{
	uint64		rows = 0;
	void	   *args[3] = {cfg, b, &rows};
	ErrorData  *error = NULL;
	ChangeWriterAlone alone = {.database_id = &cfg->database_id,
	.slot_name = cfg->slot_name};

	if (b->buffer->nrows == 0 || sequin_cdc_try(write_rows_fast, args, &error))
		return rows;
	FreeErrorData(error);
	sequin_cdc_buffer_replay(b->buffer, sequin_cdc_change_writer_put_alone, &alone);
	return alone.rows;
}

/* Has retry_parked_changes() asked this worker to retry (and forget it)? */
static bool
take_retry_request(void)
{
	bool		r;

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	r = my_entry->retry_parked;
	my_entry->retry_parked = false;
	LWLockRelease(sequin_cdc_shared->lock);
	return r;
}

/*
 * Write the buffered rows and the origin progress in one transaction, and
 * make sure that commit is on disk before anyone confirms the slot; then
 * start a new batch.  Parked changes whose retry was asked are written in
 * the same transaction, after the batch (retry: see parked.c).
 */
static void
write_batch(CaptureConfig *cfg, CaptureBatch *b, bool retry)
{
	uint64		rows;

	pgstat_report_activity(STATE_RUNNING, "writing change rows");
	capture_doing = "writing change rows";
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rows = write_rows(cfg, b);
	if (retry)
		rows += sequin_cdc_parked_retry(cfg->slot_name, &cfg->database_id);
	PopActiveSnapshot();

	sequin_cdc_xact_origin_lsn = b->last_commit_end;
	sequin_cdc_xact_origin_timestamp = b->last_commit_time;
	CommitTransactionCommand();
	sequin_cdc_xact_origin_lsn = InvalidXLogRecPtr;
	sequin_cdc_xact_origin_timestamp = 0;
	if (rows > 0)
	{
		XLogFlush(XactLastCommitEnd);
		sequin_cdc_wake_sinks(MyDatabaseId);
	}

	capture_succeeded(cfg->slot_name);

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	my_entry->changes_captured += rows;
	my_entry->transactions_captured += b->ntxns;
	my_entry->last_commit_time = b->last_commit_time;
	LWLockRelease(sequin_cdc_shared->lock);

	sequin_cdc_buffer_reset(b->buffer);
	b->ntxns = 0;
	b->last_write = GetCurrentTimestamp();
}

/*
 * With nothing waiting, everything the reader has passed is written or of
 * no interest: confirm it, never backwards, and not past an open backfill
 * window, whose changed keys must be seen again after a restart.  Then
 * publish the positions for pg_stat_capture.
 */
static void
confirm_progress(LogicalDecodingContext *ctx, CaptureBatch *b)
{
	XLogRecPtr	end = ctx->reader->EndRecPtr;

	capture_doing = "confirming progress";
	if (!XLogRecPtrIsInvalid(b->hold_lsn) && b->hold_lsn < end)
		end = b->hold_lsn;
	if (b->buffer->nrows == 0 && end > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(end);
		ReplicationSlotMarkDirty();
		capture_succeeded(NameStr(MyReplicationSlot->data.name));
	}

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	my_entry->last_decoded_lsn = ctx->reader->EndRecPtr;
	my_entry->confirmed_lsn = MyReplicationSlot->data.confirmed_flush;
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * Start the helper workers of this slot that should run and do not: the
 * worker of a backfill whose worker died, and sink workers.  Returns
 * whether backfills of the slot remain to be looked after.  Runs in a
 * transaction of its own.
 */
static bool
launch_helpers(const char *slot_name)
{
	bool		backfills_remain;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	backfills_remain = sequin_cdc_launch_pending_backfills(slot_name);
	sequin_cdc_launch_sinks();
	PopActiveSnapshot();
	CommitTransactionCommand();
	last_backfill_check = GetCurrentTimestamp();
	return backfills_remain;
}

/*
 * Helper supervision in the loop: while backfills of the slot may be
 * running (one was seen in the stream, or some remained at the last
 * check), relaunch helpers every BACKFILL_CHECK_INTERVAL.  Catalog access
 * needs the caches out of historic mode.
 */
static void
supervise_helpers(CaptureConfig *cfg, CaptureBatch *b, bool *caches_historic)
{
	if (b->backfill_seen)
	{
		backfills_active = true;
		b->backfill_seen = false;
	}
	if (!backfills_active ||
		!TimestampDifferenceExceeds(last_backfill_check, GetCurrentTimestamp(),
									BACKFILL_CHECK_INTERVAL))
		return;
	if (*caches_historic)
	{
		InvalidateSystemCaches();
		*caches_historic = false;
	}
	backfills_active = launch_helpers(cfg->slot_name);
}

/*
 * Errors, saying what to do, when the slot was invalidated by a cause
 * PostgreSQL's own error does not explain: on 18, by
 * idle_replication_slot_timeout (the slot was unused for longer, e.g. while
 * its worker could not run).  Other causes, and servers before 18, are left
 * to the error of slot acquisition or decoding start.
 */
static void
capture_check_slot_valid(const char *slot_name)
{
	ReplicationSlot *s = SearchNamedReplicationSlot(slot_name, true);
	const char *reason = s ? sequin_cdc_slot_invalidation_reason(s) : NULL;

	if (reason != NULL && strcmp(reason, "idle_timeout") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" was invalidated by idle_replication_slot_timeout", slot_name),
				 errdetail("The slot stayed unused longer than idle_replication_slot_timeout = %s (invalidation_reason = idle_timeout); the changes since its last confirmed position cannot be captured.",
						   GetConfigOption("idle_replication_slot_timeout", true, false)),
				 errhint("Raise idle_replication_slot_timeout (0 turns it off) in postgresql.conf and reload, then drop the slot with sequin_cdc.drop_slot(), create it again and backfill the tables.")));
}

/*
 * Consume the slot until it is dropped: set up the origin, the decoding
 * context with our writer, and the batch, then loop decode -> write ->
 * confirm -> sleep.
 */
static void
capture_loop(CaptureConfig *cfg, MemoryContext cxt)
{
	CaptureBatch *b;
	LogicalDecodingContext *ctx;
	XLogRecPtr	written_upto;
	XLogRecPtr	published_upto;
	ReplOriginId origin;
	List	   *options;
	bool		caches_historic = false;
	bool		retry = true;	/* requests may predate this worker */

	published_upto = capture_check_publication(cfg);
	origin = setup_origin(cfg->slot_name);
	written_upto = replorigin_session_get_progress(false);
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	my_entry->origin = origin;
	LWLockRelease(sequin_cdc_shared->lock);

	capture_check_slot_valid(cfg->slot_name);
	sequin_cdc_slot_acquire(cfg->slot_name);

	/*
	 * The reorder buffer holds up to logical_decoding_work_mem before it
	 * spills, and its allocations cost about half as much again in RSS:
	 * sequin_cdc.decoding_work_mem caps it for the capture worker.
	 */
	if (sequin_cdc_decoding_work_mem > 0 &&
		sequin_cdc_decoding_work_mem < logical_decoding_work_mem)
	{
		char		value[32];

		snprintf(value, sizeof(value), "%dkB", Max(64, sequin_cdc_decoding_work_mem));
		SetConfigOption("logical_decoding_work_mem", value, PGC_USERSET, PGC_S_SESSION);
	}

	b = MemoryContextAllocZero(cxt, sizeof(CaptureBatch));
	b->buffer = sequin_cdc_buffer_create(cxt, (Size) sequin_cdc_buffer_memory * 1024);

	/*
	 * Decoding starts at the slot's confirmed position, which may be before
	 * the origin's (it is saved only at checkpoints, and held back while a
	 * backfill window is open); transactions up to the origin's position
	 * are decoded again but keep no rows (the plugin's skip_upto).  Later
	 * transactions all end after it, so it is given once, here.
	 *
	 * Our writer takes the plugin's records (output_plugin.h).  It has no
	 * update_progress callback: there is no remote end to keep alive, and
	 * the loop confirms progress itself after each batch.
	 */
	options = list_make3(makeDefElem(SEQUIN_CDC_OPTION_PUBLICATION,
									 (Node *) makeString(cfg->publication), -1),
						 makeDefElem(SEQUIN_CDC_OPTION_SKIP_UPTO,
									 (Node *) makeString(psprintf("%X/%X",
																  LSN_FORMAT_ARGS(written_upto))),
									 -1),
						 makeDefElem(SEQUIN_CDC_OPTION_PUBLISHED_UPTO,
									 (Node *) makeString(psprintf("%X/%X",
																  LSN_FORMAT_ARGS(published_upto))),
									 -1));
	ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false,
								XL_ROUTINE(.page_read = read_local_xlog_page,
										   .segment_open = wal_segment_open,
										   .segment_close = wal_segment_close),
								sequin_cdc_capture_prepare_write,
								sequin_cdc_capture_write,
								NULL);
	ctx->output_writer_private = b;
	decoding_ctx = ctx;
	set_decoding_flag(false);	/* decode_batch sets it while it decodes */
	XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
	InvalidateSystemCaches();

	set_state(CAPTURE_STREAMING);
	/* a retry after a failure logs nothing more: the failure said it all */
	ereport(my_entry->failures > 0 ? DEBUG1 : LOG,
			(errmsg("sequin_cdc capture of slot \"%s\" started at %X/%X",
					cfg->slot_name, LSN_FORMAT_ARGS(MyReplicationSlot->data.confirmed_flush))));

	for (;;)
	{
		XLogRecPtr	flush;
		bool		caught_up;
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			b->buffer->mem_limit = (Size) sequin_cdc_buffer_memory * 1024;
		}
		if (drop_requested())
			break;
		supervise_helpers(cfg, b, &caches_historic);

		/* decode */
		flush = GetFlushRecPtr(NULL);
		if (ctx->reader->EndRecPtr < flush)
		{
			if (!caches_historic)
			{
				InvalidateSystemCaches();
				caches_historic = true;
			}
			decode_batch(ctx, b, flush);
		}
		caught_up = ctx->reader->EndRecPtr >= flush;

		/* write; parked changes are retried when asked (or at start) */
		retry = take_retry_request() || retry;
		if (batch_due(b, GetCurrentTimestamp(), false, &wait_ms) || retry)
		{
			InvalidateSystemCaches();
			caches_historic = false;
			write_batch(cfg, b, retry);
			retry = false;
		}

		/* confirm */
		confirm_progress(ctx, b);

		/* sleep, until WAL arrives or the buffered rows are due */
		if (caught_up)
		{
			if (b->buffer->nrows == 0)
				pgstat_report_activity(STATE_IDLE, NULL);
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait_ms >= 0 ? Min(wait_ms, sequin_cdc_poll_interval) :
							 sequin_cdc_poll_interval,
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}

	ereport(LOG,
			(errmsg("sequin_cdc capture of slot \"%s\" stopping: the slot is being dropped",
					cfg->slot_name)));
	FreeDecodingContext(ctx);
	decoding_ctx = NULL;
	ReplicationSlotRelease();
}

/*
 * A batch was written or progress confirmed: a slot whose earlier attempts
 * failed has recovered, its state and backoff start over.
 */
static void
capture_succeeded(const char *slot_name)
{
	int			failures = sequin_cdc_record_capture_success(my_entry);

	if (failures > 0)
		ereport(LOG,
				(errmsg("sequin_cdc capture of slot \"%s\" resumed after %d failed attempts",
						slot_name, failures)));
}

/*
 * The worker's top-level error handler: record the error in the slot's
 * shared entry (pg_stat_capture's state 'error', last_error, the next
 * attempt), log it as one entry that says which attempt failed and when
 * the next one comes, then exit.  The exit is a clean one (code 0), so the
 * postmaster adds no line of its own, and the launcher starts the next
 * attempt after the backoff (launcher.c).  Nothing was confirmed past the
 * failing change: the slot is confirmed only after a batch commits.
 *
 * The logged entry is the error as raised, with its detail, hint and
 * context (slot, what the worker was doing, WAL position, transaction,
 * relation), but never a row's values: no context callback of the decode
 * and write path prints them, and the detail of a constraint violation,
 * which does ("Failing row contains ..."), is left out.
 */
static void
capture_failed(CaptureConfig *cfg, MemoryContext cxt)
{
	ErrorData  *edata;
	int			failures;
	int			delay_ms;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	error_context_stack = NULL;
	LWLockReleaseAll();

	/* recorded first: whatever happens next, the launcher backs off */
	sequin_cdc_record_capture_failure(my_entry,
									  edata->message ? edata->message : "unknown error",
									  edata->sqlerrcode, &failures, &delay_ms);
	AbortOutOfAnyTransaction();
	edata->elevel = LOG;
	/* a constraint's detail shows the row ("Failing row contains ..."): never logged */
	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION)
		edata->detail = NULL;
	edata->message = psprintf("sequin_cdc capture of slot \"%s\" failed (attempt %d, next in %d.%03d s): %s",
							  cfg->slot_name, failures, delay_ms / 1000, delay_ms % 1000,
							  edata->message ? edata->message : "unknown error");
	ThrowErrorData(edata);
	RESUME_INTERRUPTS();
	proc_exit(0);
}

/*
 * The capture worker's entry point (bgw_function_name): attach to the
 * slot's shared entry, connect, wait for the configuration, start the
 * slot's helpers and consume the slot.  An error ends the worker through
 * capture_failed(); the launcher starts another after a backoff.
 */
void
sequin_cdc_capture_main(Datum arg)
{
	CaptureConfig cfg;
	Oid			dboid;
	MemoryContext cxt;
	ErrorContextCallback errcb;

	my_index = DatumGetInt32(arg);
	memset(&cfg, 0, sizeof(cfg));
	strlcpy(cfg.slot_name, MyBgworkerEntry->bgw_extra, NAMEDATALEN);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	my_entry = &sequin_cdc_shared->slots[my_index];
	if (!my_entry->in_use || strcmp(NameStr(my_entry->slot_name), cfg.slot_name) != 0 ||
		my_entry->pid != 0)
	{
		/* the slot went away, or another worker already serves it */
		LWLockRelease(sequin_cdc_shared->lock);
		proc_exit(0);
	}
	dboid = my_entry->dboid;
	my_entry->pid = MyProcPid;
	my_entry->latch = MyLatch;
	my_entry->state = CAPTURE_STARTING;
	LWLockRelease(sequin_cdc_shared->lock);
	before_shmem_exit(capture_detach, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	{
		char		appname[NAMEDATALEN + 32];

		snprintf(appname, sizeof(appname), "sequin_cdc capture %s", cfg.slot_name);
		pgstat_report_appname(appname);
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "sequin_cdc capture",
								ALLOCSET_DEFAULT_SIZES);

	errcb.callback = capture_error_context;
	errcb.arg = &cfg;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	PG_TRY();
	{
		/* wait for the extension and the slot's row (e.g. a restore) */
		while (!capture_load_config(&cfg, cxt))
		{
			set_state(CAPTURE_WAITING);
			if (drop_requested())
				proc_exit(0);
			(void) WaitLatch(MyLatch,
							 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		backfills_active = launch_helpers(cfg.slot_name);
		capture_loop(&cfg, cxt);
	}
	PG_CATCH();
	{
		capture_failed(&cfg, cxt);	/* does not return */
	}
	PG_END_TRY();

	error_context_stack = errcb.previous;
	proc_exit(0);
}
