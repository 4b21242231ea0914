/*-------------------------------------------------------------------------
 *
 * sink_worker.c
 *		The sink worker: one background worker per sink delivers the rows
 *		of a change table, in seq order and in batches, through the sink's
 *		type (sink_worker.h: SinkType; sink_webhook.c POSTs them).
 *
 * One worker per sink, not one event loop for all of them: a sink that
 * waits on a slow endpoint, backs off from a failing one or blocks on DNS
 * stalls nobody else, a crash or an error in one sink's code path stays in
 * that process, and the delivery loop stays a simple sequence of steps.
 * The price, a process per sink, is small: sinks are few (the shared
 * registry holds SEQUIN_CDC_MAX_SINKS), and a worker sleeps on its latch
 * when it has nothing to send.  Capture never waits for a sink either: it
 * only sets the latches of the sink workers of its database after each
 * committed batch (sequin_cdc_wake_sinks), so a new change is read within
 * one wake-up, and a one-second timeout covers everything else.
 *
 * A delivery step is:
 *	 1. a short transaction reads the sink's row and, unless a batch is
 *		already pending, the rows after the cursor in seq order, one at a
 *		time through a cursor, rendering each as its JSON element, until
 *		batch_size rows or until the next element would take the batch
 *		past max_batch_bytes (one change at least), and commits: a
 *		worker's memory is one batch of elements and one row, whatever
 *		batch_size and the width of the rows;
 *	 2. no transaction open, the sink's type delivers the batch once (the
 *		webhook type: one POST of {"data": [...]});
 *	 3. after a delivery, a short transaction moves the cursor to the
 *		batch's last seq and updates the statistics; after a failure it
 *		records the failure and the worker retries the same changes (the
 *		webhook: the same bytes, with the same Idempotency-Key) after a
 *		capped exponential backoff with jitter; after a fatal failure it
 *		records it and pauses the sink.
 * The cursor only moves forward over what was acknowledged, and only if
 * it still is where the batch started (replay_sink may have moved it
 * meanwhile), so nothing is skipped and delivery is at-least-once: a crash
 * between the acknowledgement and the cursor's commit sends that batch
 * again.  That commit is asynchronous (synchronous_commit = off in the
 * worker) for the same reason: losing it re-sends, it never skips.
 *
 * Who runs what: the worker connects as the bootstrap superuser, which
 * needs no LOGIN and bypasses the row level security of sequin_cdc.sinks,
 * to read and update its sink's row; it reads the change table as the
 * sink's owner, restricted (run_as.c: SECURITY_RESTRICTED_OPERATION, and
 * settings changed by the row level security policies it runs are rolled
 * back), so a sink sends only what its owner may read, checked at every
 * batch: the owner must still exist (its OID is only a number in the
 * sink's row) and hold SELECT on the change table, or the batch fails with
 * an error saying so (recorded and retried, never read as another role).
 *
 * A worker survives its own errors (they are recorded in the sink's row
 * and retried); it exits when its sink is paused or gone.  Wake-ups from
 * capture during a backoff do not cut it short; a replay during a backoff
 * takes effect at the next attempt.  sink_api.c starts and stops workers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "run_as.h"
#include "sequin_cdc.h"
#include "sink_worker.h"
#include "workers.h"

/* Retry delays: 100 ms doubling up to 30 s, half of each one random */
#define SINK_BACKOFF_BASE_MS	100
#define SINK_BACKOFF_MAX_MS		30000
/* Sleep when idle and nobody wakes us */
#define SINK_IDLE_TIMEOUT_MS	1000
/* How long a new worker waits for a stopping one to give up the sink */
#define SINK_ATTACH_WAIT_MS		5000
/* Failed attempts in a row between two log lines about them */
#define SINK_FAILURE_LOG_EVERY	20

/* The sink types this library knows, by the name the sink's row gives */
static const SinkType *const sw_types[] = {
	&sequin_cdc_webhook_sink_type,
	&sequin_cdc_kafka_sink_type,
};

/*
 * The sink's type, as a name: its type column.  A library newer than the
 * extension's SQL (before ALTER EXTENSION UPDATE) finds no such column:
 * every sink of 0.3.0 is a webhook, its url an http(s) URL.
 */
#define SW_KIND_SQL "s.type"
#define SW_KIND_SQL_0_3 \
	"CASE WHEN s.url OPERATOR(pg_catalog.~*) '^https?://' THEN 'webhook' END"

/* Columns of the configuration query (sw_load_config) */
enum
{
	SW_CONFIG_NAME = 1,
	SW_CONFIG_KIND,
	SW_CONFIG_CHANGE_TABLE,
	SW_CONFIG_BATCH_SIZE,
	SW_CONFIG_STATE,
	SW_CONFIG_CURSOR_SEQ,
	SW_CONFIG_EPOCH,
	SW_CONFIG_OWNER,
	SW_CONFIG_MAX_BATCH_BYTES,
	SW_CONFIG_TYPE_COLUMNS,		/* the type's config_columns from here on */
};

/* Columns of the batch query (sw_read_batch), counted from 0 */
enum
{
	SW_ROW_SEQ,
	SW_ROW_SCHEMA,
	SW_ROW_TABLE,
	SW_ROW_RECORD_PK,
	SW_ROW_RECORD,
	SW_ROW_CHANGES,
	SW_ROW_ACTION,
	SW_ROW_COMMITTED_AT,
	SW_ROW_ANNOTATIONS,
	SW_ROW_DATABASE_ID,
	SW_ROW_NCOLUMNS,
};

/* What a step did, for the loop to sleep accordingly */
typedef enum SinkStep
{
	STEP_DELIVERED,
	STEP_IDLE,
	STEP_FAILED,
	STEP_STOP,
} SinkStep;

/* The batch being delivered: kept until it is acknowledged */
typedef struct SinkPending
{
	bool		valid;
	int64		start_cursor;	/* cursor_seq when it was read */
	SinkBatch	batch;
} SinkPending;

static SinkConfig cfg;
static SinkPending pending;
static const SinkType *sink_type = NULL;	/* known after the first step */
static void *type_state = NULL;
static MemoryContext worker_cxt;
static MemoryContext config_cxt;
static MemoryContext batch_cxt;
static MemoryContext deliver_cxt;	/* reset before each attempt */
static bool cfg_loaded = false;
static bool started_logged = false;
static int	failures = 0;		/* consecutive failed steps */
static int	sw_registry_idx = -1;	/* this worker's entry in the sink registry */

static SPIPlanPtr config_plan = NULL;
static SPIPlanPtr read_plan = NULL;
static Oid	read_plan_table = InvalidOid;
static SPIPlanPtr success_plan = NULL;
static SPIPlanPtr failure_plan = NULL;

/* Every error of the worker names its sink. */
static void
sw_error_context(void *arg)
{
	if (cfg_loaded)
		errcontext("sequin_cdc sink \"%s\" (id %lld)", cfg.name, (long long) cfg.id);
	else
		errcontext("sequin_cdc sink %lld", (long long) cfg.id);
}

/*
 * A statement prepared once per worker (re-planned by the plan cache):
 * *plan, prepared from sql on first use.
 */
static SPIPlanPtr
sw_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "could not prepare sink statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/* Is sequin_cdc.sinks there?  (Not when the extension is being dropped.) */
bool
sequin_cdc_sinks_table_exists(void)
{
	Oid			nsp = get_namespace_oid("sequin_cdc", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("sinks", nsp));
}

/*
 * The sink type of this name; an error if this library has none.
 */
static const SinkType *
sw_find_type(const char *kind)
{
	for (int i = 0; i < lengthof(sw_types); i++)
	{
		if (kind != NULL && strcmp(sw_types[i]->name, kind) == 0)
			return sw_types[i];
	}
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("sink %lld has a type this server does not know: %s",
					(long long) cfg.id, kind ? kind : "none"),
			 errhint("Install the sequin_cdc library of the extension's version and restart the server, or drop the sink.")));
	return NULL;				/* keep the compiler quiet */
}

/* The expression of the sink's type over sequin_cdc.sinks s (SW_KIND_SQL) */
static const char *
sw_kind_sql(void)
{
	Oid			sinks = get_relname_relid("sinks", get_namespace_oid("sequin_cdc", false));

	return get_attnum(sinks, "type") != InvalidAttrNumber ? SW_KIND_SQL : SW_KIND_SQL_0_3;
}

/*
 * At the first step: find the sink's type, create its state and prepare
 * the configuration query, the common columns followed by the type's.
 * The worker keeps that type: its state (a connection, say) belongs to
 * it.  False if the sink's row is gone.  SPI connected.
 */
static bool
sw_choose_type(void)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(cfg.id)};
	const SinkType *type;
	char	   *kind;
	const char *kind_sql = sw_kind_sql();

	if (SPI_execute_with_args(psprintf("SELECT %s FROM sequin_cdc.sinks s "
									   "WHERE s.id OPERATOR(pg_catalog.=) $1", kind_sql),
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the sink's type");
	if (SPI_processed != 1)
		return false;
	kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	type = sw_find_type(kind);

	(void) sw_plan(&config_plan,
				   psprintf("SELECT s.name, %s, "
							"s.change_table::pg_catalog.oid, s.batch_size, s.state, "
							"s.cursor_seq, s.replay_epoch, s.owner::pg_catalog.oid, "
							"s.max_batch_bytes, %s "
							"FROM sequin_cdc.sinks s WHERE s.id OPERATOR(pg_catalog.=) $1",
							kind_sql, type->config_columns),
				   1, argtypes);
	type_state = type->create(&cfg, worker_cxt);
	sink_type = type;
	return true;
}

/*
 * Read the sink's row into cfg, and its type's columns into the type's
 * state; false if the row is gone.  Inside the step's transaction, SPI
 * connected.
 */
static bool
sw_load_config(void)
{
	Datum		args[1] = {Int64GetDatum(cfg.id)};
	HeapTuple	t;
	TupleDesc	d;
	bool		isnull;
	MemoryContext old;
	StringInfoData name_json;

	if (sink_type == NULL && !sw_choose_type())
		return false;
	if (SPI_execute_plan(config_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the sink's configuration");
	if (SPI_processed != 1)
		return false;

	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	cfg_loaded = false;			/* the error context must not use freed names */
	MemoryContextReset(config_cxt);
	old = MemoryContextSwitchTo(config_cxt);
	cfg.name = SPI_getvalue(t, d, SW_CONFIG_NAME);
	initStringInfo(&name_json);
	escape_json(&name_json, cfg.name);
	cfg.name_json = name_json.data;
	cfg_loaded = true;
	cfg.kind = SPI_getvalue(t, d, SW_CONFIG_KIND);
	cfg.change_table = DatumGetObjectId(SPI_getbinval(t, d, SW_CONFIG_CHANGE_TABLE, &isnull));
	cfg.batch_size = DatumGetInt32(SPI_getbinval(t, d, SW_CONFIG_BATCH_SIZE, &isnull));
	cfg.active = strcmp(SPI_getvalue(t, d, SW_CONFIG_STATE), "active") == 0;
	cfg.cursor_seq = DatumGetInt64(SPI_getbinval(t, d, SW_CONFIG_CURSOR_SEQ, &isnull));
	cfg.epoch = DatumGetInt32(SPI_getbinval(t, d, SW_CONFIG_EPOCH, &isnull));
	cfg.owner = DatumGetObjectId(SPI_getbinval(t, d, SW_CONFIG_OWNER, &isnull));
	cfg.max_batch_bytes = DatumGetInt32(SPI_getbinval(t, d, SW_CONFIG_MAX_BATCH_BYTES, &isnull));
	if (cfg.kind == NULL || strcmp(cfg.kind, sink_type->name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the type of sink \"%s\" changed from %s to %s",
						cfg.name, sink_type->name, cfg.kind ? cfg.kind : "none"),
				 errhint("Pause the sink and resume it with sequin_cdc.resume_sink(): a new worker starts with the new type.")));
	sink_type->load_config(type_state, &cfg, t, d, SW_CONFIG_TYPE_COLUMNS);
	MemoryContextSwitchTo(old);
	return true;
}

/* Forget the pending batch (delivered, or to be read again). */
static void
sw_discard_batch(void)
{
	MemoryContextReset(batch_cxt);
	memset(&pending, 0, sizeof(pending));
}

/* Append a jsonb value as JSON text (null for SQL null). */
static void
sw_append_jsonb(StringInfo b, Datum v, bool isnull)
{
	if (isnull)
		appendStringInfoString(b, "null");
	else
	{
		Jsonb	   *jb = DatumGetJsonbP(v);

		(void) JsonbToCString(b, &jb->root, VARSIZE(jb));
	}
}

/*
 * Append a text value as a JSON string (null for SQL null), and return it
 * as a C string kept in the batch's context (NULL for SQL null).
 */
static const char *
sw_append_text(StringInfo b, Datum v, bool isnull)
{
	char	   *s;

	if (isnull)
	{
		appendStringInfoString(b, "null");
		return NULL;
	}
	s = TextDatumGetCString(v);
	escape_json(b, s);
	return MemoryContextStrdup(batch_cxt, s);
}

/*
 * Render one change row as its JSON element at the end of the batch's
 * elements, and describe it in *c.  Every sink type sends this element.
 */
static void
sw_add_change(SinkChange *c, Datum *v, bool *nulls)
{
	StringInfo	b = &pending.batch.elements;
	char	   *dbid;
	char		ts[MAXDATELEN + 1];
	int			utc = 0;

	c->seq = DatumGetInt64(v[SW_ROW_SEQ]);
	dbid = nulls[SW_ROW_DATABASE_ID] ? "" :
		DatumGetCString(DirectFunctionCall1(uuid_out, v[SW_ROW_DATABASE_ID]));
	c->idempotency_key = MemoryContextStrdup(batch_cxt,
											 psprintf("%s:%u:" INT64_FORMAT, dbid,
													  cfg.change_table, c->seq));
	if (b->len > 0)
		appendStringInfoChar(b, ',');
	c->element_offset = b->len;

	appendStringInfoString(b, "{\"record\":");
	sw_append_jsonb(b, v[SW_ROW_RECORD], nulls[SW_ROW_RECORD]);
	appendStringInfoString(b, ",\"changes\":");
	sw_append_jsonb(b, v[SW_ROW_CHANGES], nulls[SW_ROW_CHANGES]);
	appendStringInfoString(b, ",\"action\":");
	c->action = sw_append_text(b, v[SW_ROW_ACTION], nulls[SW_ROW_ACTION]);
	appendStringInfoString(b, ",\"metadata\":{\"table_schema\":");
	c->schema = sw_append_text(b, v[SW_ROW_SCHEMA], nulls[SW_ROW_SCHEMA]);
	appendStringInfoString(b, ",\"table_name\":");
	c->table = sw_append_text(b, v[SW_ROW_TABLE], nulls[SW_ROW_TABLE]);
	appendStringInfoString(b, ",\"commit_timestamp\":");
	if (nulls[SW_ROW_COMMITTED_AT])
		appendStringInfoString(b, "null");
	else
		appendStringInfo(b, "\"%s\"", JsonEncodeDateTime(ts, v[SW_ROW_COMMITTED_AT],
														 TIMESTAMPTZOID, &utc));
	appendStringInfo(b, ",\"seq\":" INT64_FORMAT ",\"record_pk\":", c->seq);
	c->record_pk = sw_append_text(b, v[SW_ROW_RECORD_PK], nulls[SW_ROW_RECORD_PK]);
	appendStringInfo(b, ",\"idempotency_key\":\"%s\"", c->idempotency_key);
	appendStringInfoString(b, ",\"transaction_annotations\":");
	sw_append_jsonb(b, v[SW_ROW_ANNOTATIONS], nulls[SW_ROW_ANNOTATIONS]);
	appendStringInfoString(b, ",\"database_id\":");
	if (nulls[SW_ROW_DATABASE_ID])
		appendStringInfoString(b, "null");
	else
		appendStringInfo(b, "\"%s\"", dbid);
	appendStringInfo(b, ",\"sink\":{\"id\":" INT64_FORMAT ",\"name\":%s}}}",
					 cfg.id, cfg.name_json);
	c->element_len = b->len - c->element_offset;
}

/*
 * Prepare the batch query for the sink's change table (again when that
 * changes).
 */
static void
sw_prepare_read(void)
{
	Oid			argtypes[2] = {INT8OID, INT4OID};
	char	   *rel;
	char	   *nsp;

	if (read_plan != NULL && read_plan_table != cfg.change_table)
	{
		SPI_freeplan(read_plan);
		read_plan = NULL;
	}
	if (read_plan != NULL)
		return;

	rel = get_rel_name(cfg.change_table);
	nsp = rel ? get_namespace_name(get_rel_namespace(cfg.change_table)) : NULL;
	if (rel == NULL || nsp == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the change table of sink \"%s\" does not exist", cfg.name),
				 errhint("Drop the sink with sequin_cdc.drop_sink() and create it again for an existing change table.")));
	(void) sw_plan(&read_plan,
				   psprintf("SELECT seq::pg_catalog.int8, source_table_schema::pg_catalog.text, "
							"source_table_name::pg_catalog.text, record_pk::pg_catalog.text, "
							"record::pg_catalog.jsonb, changes::pg_catalog.jsonb, "
							"action::pg_catalog.text, committed_at::pg_catalog.timestamptz, "
							"transaction_annotations::pg_catalog.jsonb, "
							"source_database_id::pg_catalog.uuid "
							"FROM %s WHERE seq OPERATOR(pg_catalog.>) $1 "
							"ORDER BY seq LIMIT $2",
							quote_qualified_identifier(nsp, rel)),
				   2, argtypes);
	read_plan_table = cfg.change_table;
}

/*
 * Fetch the next row of the batch query's portal, as the sink's owner (the
 * executor may run the owner's code: row level security policies); false
 * after the last one.  The row is SPI_tuptable->vals[0].
 */
static bool
sw_fetch_row(Portal portal)
{
	SequinUserContext ucxt;

	sequin_cdc_switch_to_user(cfg.owner, &ucxt);
	SPI_cursor_fetch(portal, true, 1);
	sequin_cdc_restore_user(&ucxt);
	return SPI_processed == 1;
}

/*
 * Read the next batch after the cursor, as the sink's owner, and render
 * its elements.  Rows come one at a time through a cursor, each rendered
 * in a context reset after it: the batch stops at batch_size changes, or
 * before the element that would take it past max_batch_bytes (the first
 * one always goes, whatever its size).  Inside the step's transaction,
 * SPI connected.
 */
static void
sw_read_batch(void)
{
	Datum		args[2];
	SequinUserContext ucxt;
	Portal		portal;
	SinkBatch  *batch = &pending.batch;
	MemoryContext row_cxt;
	MemoryContext old;
	int			allocated = 0;

	sw_prepare_read();

	/* the owner's OID is only a number in the sink's row: check it */
	if (!sequin_cdc_role_exists(cfg.owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of sink \"%s\" (OID %u) no longer exists", cfg.name, cfg.owner),
				 errdetail("A sink reads its change table with the privileges of its owner, and of no other."),
				 errhint("Drop the sink with sequin_cdc.drop_sink() and create it again as an existing role.")));
	/* SELECT on the change table is checked by the executor, as the owner */

	args[0] = Int64GetDatum(cfg.cursor_seq);
	args[1] = Int32GetDatum(cfg.batch_size);
	sequin_cdc_switch_to_user(cfg.owner, &ucxt);
	portal = SPI_cursor_open(NULL, read_plan, args, NULL, true);
	sequin_cdc_restore_user(&ucxt);

	sw_discard_batch();
	old = MemoryContextSwitchTo(batch_cxt);
	initStringInfo(&batch->elements);
	MemoryContextSwitchTo(old);
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "sequin_cdc sink row",
									ALLOCSET_DEFAULT_SIZES);

	while (batch->nchanges < cfg.batch_size && sw_fetch_row(portal))
	{
		Datum		v[SW_ROW_NCOLUMNS];
		bool		nulls[SW_ROW_NCOLUMNS];
		int			len_before = batch->elements.len;

		if (batch->nchanges == allocated)
		{
			allocated = allocated == 0 ? 64 : Min(allocated * 2, cfg.batch_size);
			batch->changes = batch->changes == NULL ?
				MemoryContextAlloc(batch_cxt, sizeof(SinkChange) * allocated) :
				repalloc(batch->changes, sizeof(SinkChange) * allocated);
		}
		old = MemoryContextSwitchTo(row_cxt);
		for (int c = 0; c < SW_ROW_NCOLUMNS; c++)
			v[c] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								 c + 1, &nulls[c]);
		sw_add_change(&batch->changes[batch->nchanges], v, nulls);
		MemoryContextSwitchTo(old);
		MemoryContextReset(row_cxt);
		SPI_freetuptable(SPI_tuptable);

		if (batch->nchanges > 0 && batch->elements.len > cfg.max_batch_bytes)
		{
			/* it goes first in the next batch */
			batch->elements.len = len_before;
			batch->elements.data[len_before] = '\0';
			break;
		}
		batch->nchanges++;
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(row_cxt);
	if (batch->nchanges == 0)
	{
		sw_discard_batch();
		return;
	}
	batch->first_seq = batch->changes[0].seq;
	batch->last_seq = batch->changes[batch->nchanges - 1].seq;
	pending.start_cursor = cfg.cursor_seq;
	pending.valid = true;
}

/* ---- bookkeeping transactions ---- */

/*
 * Run one of the sink row's UPDATEs in a short transaction of its own;
 * false if the sink's row is gone.
 */
static bool
sw_update_row(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
			  Datum *args, const char *nulls, const char *what)
{
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute_plan(sw_plan(plan, sql, nargs, argtypes), args, nulls,
						 false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not %s of sink %lld", what, (long long) cfg.id);
	found = SPI_processed == 1;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return found;
}

/*
 * After a delivery: move the cursor past the batch, if it still is where
 * the batch started, and count.  False if the sink is gone.
 */
static bool
sw_save_success(const SinkResult *r)
{
	Oid			argtypes[5] = {INT8OID, INT8OID, INT8OID, INT8OID, INT4OID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(cfg.id);
	args[1] = Int64GetDatum(pending.start_cursor);
	args[2] = Int64GetDatum(pending.batch.last_seq);
	args[3] = Int64GetDatum((int64) pending.batch.nchanges);
	args[4] = Int32GetDatum((int32) r->status);
	if (!r->responded)
		nulls[4] = 'n';

	return sw_update_row(&success_plan,
						 "UPDATE sequin_cdc.sinks SET "
						 "cursor_seq = CASE WHEN cursor_seq = $2 THEN $3 ELSE cursor_seq END, "
						 "delivered = delivered + $4, requests = requests + 1, "
						 "consecutive_failures = 0, last_http_status = $5, "
						 "last_success_at = pg_catalog.now() "
						 "WHERE id = $1",
						 5, argtypes, args, nulls, "save the cursor");
}

/*
 * Count a failed attempt and keep its error; pause the sink too if the
 * failure is fatal.  False if the sink is gone.
 */
static bool
sw_save_failure(bool responded, long status, const char *error, bool pause)
{
	Oid			argtypes[5] = {INT8OID, BOOLOID, INT4OID, TEXTOID, BOOLOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(cfg.id);
	args[1] = BoolGetDatum(responded);
	args[2] = Int32GetDatum((int32) status);
	if (!responded)
		nulls[2] = 'n';
	args[3] = CStringGetTextDatum(error);
	args[4] = BoolGetDatum(pause);

	return sw_update_row(&failure_plan,
						 "UPDATE sequin_cdc.sinks SET "
						 "requests = requests + CASE WHEN $2 THEN 1 ELSE 0 END, "
						 "failed_attempts = failed_attempts + 1, "
						 "consecutive_failures = consecutive_failures + 1, "
						 "last_http_status = $3, last_error = $4, "
						 "last_failure_at = pg_catalog.now(), "
						 "state = CASE WHEN $5 THEN 'paused' ELSE state END "
						 "WHERE id = $1",
						 5, argtypes, args, nulls, "record a failure");
}

/*
 * Record an error of the worker's own (not a delivery failure) in the
 * sink's row, after the error was caught and the transaction aborted.
 * Recording may fail too (the extension is being dropped, say): then it
 * is dropped.  False if the sink is gone.
 */
static bool
sw_record_error(const char *message)
{
	volatile bool found = true;

	PG_TRY();
	{
		found = sw_save_failure(false, 0, message, false);
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();
		StartTransactionCommand();
		found = sequin_cdc_sinks_table_exists();
		CommitTransactionCommand();
	}
	PG_END_TRY();
	return found;
}

/* ---- the loop ---- */

/*
 * Act on a delivery attempt's result: save the cursor, or record the
 * failure (and pause the sink on a fatal one).
 */
static SinkStep
sw_after_delivery(const SinkResult *r)
{
	SinkBatch  *batch = &pending.batch;

	switch (r->outcome)
	{
		case SINK_DELIVERED:
			if (!sw_save_success(r))
				return STEP_STOP;
			if (failures > 0)
				ereport(LOG,
						(errmsg("sequin_cdc sink \"%s\" delivers again after %d failed attempts",
								cfg.name, failures)));
			sw_discard_batch();
			return STEP_DELIVERED;
		case SINK_RETRY:
			if (failures == 0 || (failures + 1) % SINK_FAILURE_LOG_EVERY == 0)
				ereport(LOG,
						(errmsg("sequin_cdc sink \"%s\" could not deliver seq " INT64_FORMAT " to " INT64_FORMAT ": %s",
								cfg.name, batch->first_seq, batch->last_seq, r->error),
						 errhint("The batch is retried with backoff until the endpoint accepts it; sequin_cdc.pg_stat_sinks shows the last error.")));
			if (!sw_save_failure(r->responded, r->status, r->error, false))
				return STEP_STOP;
			return STEP_FAILED;
		case SINK_FATAL:
			ereport(LOG,
					(errmsg("sequin_cdc sink \"%s\" is paused: it cannot deliver seq " INT64_FORMAT " to " INT64_FORMAT ": %s",
							cfg.name, batch->first_seq, batch->last_seq, r->error),
					 errhint("Fix the cause, then call sequin_cdc.resume_sink(); sequin_cdc.pg_stat_sinks shows the error.")));
			(void) sw_save_failure(r->responded, r->status, r->error, true);
			return STEP_STOP;
	}
	return STEP_FAILED;			/* keep the compiler quiet */
}

/*
 * One step: read (config and, if none is pending, a batch), deliver, save.
 */
static SinkStep
sw_step(void)
{
	bool		found = false;
	SinkResult	r;
	MemoryContext old;

	pgstat_report_activity(STATE_RUNNING, "reading changes");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (sequin_cdc_sinks_table_exists())
	{
		SPI_connect();
		found = sw_load_config();
		if (found && cfg.active)
		{
			/* replay_sink (or anyone) moved the cursor: start from there */
			if (pending.valid && pending.start_cursor != cfg.cursor_seq)
				sw_discard_batch();
			if (!pending.valid)
				sw_read_batch();
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (!found || !cfg.active)
		return STEP_STOP;
	if (!started_logged)
	{
		ereport(LOG,
				(errmsg("sequin_cdc sink \"%s\" delivering after seq " INT64_FORMAT,
						cfg.name, cfg.cursor_seq)));
		started_logged = true;
	}
	if (!pending.valid)
		return STEP_IDLE;

	memset(&r, 0, sizeof(r));
	MemoryContextReset(deliver_cxt);
	old = MemoryContextSwitchTo(deliver_cxt);
	sequin_cdc_sink_set_in_flight(sw_registry_idx, pending.batch.nchanges);
	sink_type->deliver(type_state, &cfg, &pending.batch, &r);
	sequin_cdc_sink_set_in_flight(sw_registry_idx, 0);
	MemoryContextSwitchTo(old);
	if (!PostmasterIsAlive())
		proc_exit(1);
	CHECK_FOR_INTERRUPTS();
	return sw_after_delivery(&r);
}

/*
 * A step, with the worker's own errors (SQL, privileges, memory) caught:
 * they are logged and recorded as a failed attempt, and the step retried.
 */
static SinkStep
sw_step_guarded(void)
{
	volatile SinkStep step = STEP_FAILED;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		step = sw_step();
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(worker_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	if (edata == NULL)
		return step;

	sw_discard_batch();
	if (sw_registry_idx >= 0)
		sequin_cdc_sink_set_in_flight(sw_registry_idx, 0);
	if (read_plan != NULL)
	{
		SPI_freeplan(read_plan);
		read_plan = NULL;
	}
	ereport(LOG,
			(errmsg("sequin_cdc sink %lld: %s", (long long) cfg.id,
					edata->message ? edata->message : "unknown error"),
			 edata->hint ? errhint("%s", edata->hint) : 0));
	step = sw_record_error(edata->message ? edata->message : "unknown error") ?
		STEP_FAILED : STEP_STOP;
	FreeErrorData(edata);
	return step;
}

/* Reload the configuration file if the postmaster asked for it. */
static void
sw_reload_config(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Sleep until deadline; wake-ups by capture do not shorten a backoff. */
static void
sw_sleep_until(TimestampTz deadline)
{
	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		sw_reload_config();
	}
}

/* 100 ms, 200 ms, ... 30 s; the second half of each delay is random */
static long
sw_backoff_ms(int n)
{
	double		d = SINK_BACKOFF_BASE_MS * pow(2.0, Min(n, 20) - 1);

	d = Min(d, (double) SINK_BACKOFF_MAX_MS);
	return (long) (d / 2 + pg_prng_double(&pg_global_prng_state) * d / 2);
}

/*
 * Deliver until the sink is paused or gone: step, then sleep on the latch
 * when idle, or back off after a failure.
 */
static void
sw_loop(void)
{
	for (;;)
	{
		SinkStep	step;

		CHECK_FOR_INTERRUPTS();
		sw_reload_config();

		step = sw_step_guarded();
		switch (step)
		{
			case STEP_STOP:
				return;
			case STEP_DELIVERED:
				failures = 0;
				break;
			case STEP_IDLE:
				failures = 0;
				pgstat_report_activity(STATE_IDLE, NULL);
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 SINK_IDLE_TIMEOUT_MS, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				break;
			case STEP_FAILED:
				failures++;
				pgstat_report_activity(STATE_IDLE, "waiting to retry");
				sw_sleep_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   sw_backoff_ms(failures)));
				break;
		}
	}
}

/*
 * Take the sink in the shared registry.  A worker that is being stopped
 * (pause then resume, a drop racing a restart) may still hold it for a
 * moment, so wait a little before leaving the sink to it.
 */
static bool
sw_attach(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   SINK_ATTACH_WAIT_MS);

	while ((sw_registry_idx = sequin_cdc_sink_attach(cfg.id)) < 0)
	{
		if (!sequin_cdc_sink_running(MyDatabaseId, cfg.id))
		{
			/* the registry is full */
			char	   *msg = psprintf("too many sink workers are running (at most %d)",
									   SEQUIN_CDC_MAX_SINKS);

			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("sequin_cdc sink %lld cannot start: %s", (long long) cfg.id, msg),
					 errhint("Pause or drop sinks you do not need, then call sequin_cdc.resume_sink() for this one.")));
			(void) sw_record_error(msg);
			return false;
		}
		if (GetCurrentTimestamp() >= deadline)
			return false;		/* another worker delivers this sink */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * Entry point of a sink worker (bgw_function_name): connect, take the
 * sink in the registry, deliver until it is paused or dropped.
 */
void
sequin_cdc_sink_main(Datum arg)
{
	SequinWorkerArg a;
	ErrorContextCallback errcb;

	/* as the bootstrap superuser: no LOGIN needed, sees every sink's row */
	a = sequin_cdc_worker_init();
	memset(&cfg, 0, sizeof(cfg));
	memset(&pending, 0, sizeof(pending));
	cfg.id = a.id;

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "sequin_cdc sink",
									   ALLOCSET_DEFAULT_SIZES);
	config_cxt = AllocSetContextCreate(worker_cxt, "sequin_cdc sink config",
									   ALLOCSET_SMALL_SIZES);
	batch_cxt = AllocSetContextCreate(worker_cxt, "sequin_cdc sink batch",
									  ALLOCSET_DEFAULT_SIZES);
	deliver_cxt = AllocSetContextCreate(worker_cxt, "sequin_cdc sink delivery",
										ALLOCSET_DEFAULT_SIZES);

	errcb.callback = sw_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (!sw_attach())
		proc_exit(0);

	/* our names are qualified; a lost cursor commit only means a re-send */
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	sw_loop();

	ereport(LOG,
			(errmsg("sequin_cdc sink %lld stopping: it is paused or dropped",
					(long long) cfg.id)));
	if (sink_type != NULL)
		sink_type->destroy(type_state);
	error_context_stack = errcb.previous;
	proc_exit(0);
}
