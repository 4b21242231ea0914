/*-------------------------------------------------------------------------
 *
 * sink_api.c
 *		The C side of the sink SQL API (see the sinks section of sql/):
 *		URL checks, starting, waking and stopping sink workers when the
 *		calling transaction commits, the list of running sink workers; and
 *		sequin_cdc_launch_sinks(), which brings the sinks of a database
 *		back when its capture worker starts.
 *
 * Workers are started at the commit of create_webhook_sink() and
 * resume_sink(), and by the capture worker of the database when it starts
 * (sequin_cdc_launch_sinks), which brings sinks back after a restart or a
 * crash.  drop_sink() and pause_sink() terminate the worker at commit.
 * The postmaster never restarts a sink worker (BGW_NEVER_RESTART): what
 * stopped it on purpose stays stopped, and a worker of a dropped database
 * does not loop on FATAL.  sink_worker.c is the worker itself.
 *
 * Who may manage sinks: superusers, and roles a superuser grants access to
 * sequin_cdc.sinks (see sql/, which names the grants); the table is closed
 * to PUBLIC because headers hold secrets, and row level security limits
 * such roles to the sinks of roles they are members of.  pg_stat_sinks
 * shows every sink without headers, and the URL only as scheme, host, port
 * and path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "sequin_cdc.h"
#include "sink_api.h"
#include "sink_webhook.h"
#include "sink_worker.h"

PG_FUNCTION_INFO_V1(sequin_cdc_sink_check_url);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_endpoint);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_start);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_wake);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_stop);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_workers);

/* ----------------------------------------------------------------
 * URL checks (create_webhook_sink) and the endpoint shown by
 * pg_stat_sinks
 * ----------------------------------------------------------------
 */

/* _sink_check_url(url): error with a hint unless url is http(s) with a host */
Datum
sequin_cdc_sink_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *problem = sequin_cdc_webhook_url_problem(url);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook URL \"%s\"", url),
				 errdetail("The URL is not usable: %s.", problem),
				 errhint("Give an absolute http:// or https:// URL, such as https://example.com/webhooks/orders.")));
	PG_RETURN_VOID();
}

/*
 * _sink_endpoint(url): scheme://host[:port]/path, without user
 * information, query or fragment, which often carry credentials.
 */
Datum
sequin_cdc_sink_endpoint(PG_FUNCTION_ARGS)
{
	char	   *endpoint = sequin_cdc_webhook_endpoint(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (endpoint == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(endpoint));
}

/* ----------------------------------------------------------------
 * Starting and stopping workers at commit
 *
 * To be replaced by workers.c (sequin_cdc_start_worker and its
 * commit-time action queue): sapi_launch_worker, sink_xact_callback,
 * sink_subxact_callback and queue_sink_action are this file's own copies
 * of those mechanisms until then.
 * ----------------------------------------------------------------
 */

typedef enum SinkAction
{
	SINK_START,					/* start a worker (it waits for a stopping one) */
	SINK_WAKE,					/* wake the worker, or start one if none runs */
	SINK_STOP,					/* terminate the worker */
} SinkAction;

typedef struct PendingSinkAction
{
	int64		sink_id;
	SinkAction	action;
	SubTransactionId subid;
} PendingSinkAction;

static List *pending_actions = NIL;	/* in TopMemoryContext */
static bool sink_callbacks_registered = false;

/*
 * Start a worker for the sink (to be replaced by workers.c); only warns
 * when none can start, as it runs after a commit.
 */
static void
sapi_launch_worker(int64 sink_id, Oid dboid)
{
	BackgroundWorker bgw;
	SinkWorkerArg a = {sink_id, dboid};

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "sequin_cdc");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sequin_cdc_sink_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "sequin_cdc sink %lld", (long long) sink_id);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "sequin_cdc sink");
	memcpy(bgw.bgw_extra, &a, sizeof(a));
	if (!RegisterDynamicBackgroundWorker(&bgw, NULL))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a worker for sink %lld", (long long) sink_id),
				 errhint("Raise max_worker_processes, then call sequin_cdc.resume_sink(); sinks also start when the capture worker of their database starts.")));
}

/*
 * Stop the worker of a sink of this database (SIGTERM), or wake it (its
 * latch); false if none runs.
 */
static bool
sapi_signal_worker(int64 sink_id, bool stop)
{
	pid_t		pid = 0;

	LWLockAcquire(SequinCdcShared_state->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &SequinCdcShared_state->sinks[i];

		if (s->in_use && s->dboid == MyDatabaseId && s->sink_id == sink_id)
		{
			pid = s->pid;
			if (!stop && s->latch)
				SetLatch(s->latch);
		}
	}
	LWLockRelease(SequinCdcShared_state->lock);
	if (pid != 0 && stop)
		(void) kill(pid, SIGTERM);
	return pid != 0;
}

/*
 * At commit, act on the last request per sink: a worker started before the
 * commit would not see the new row or state, and stopping one for a drop
 * that is rolled back would leave an active sink without a worker.  This
 * runs after the commit record, where nothing may throw: launching only
 * warns.
 */
static void
sink_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT)
	{
		foreach(lc, pending_actions)
		{
			PendingSinkAction *a = lfirst(lc);
			bool		superseded = false;
			ListCell   *later;

			for_each_cell(later, pending_actions, lnext(pending_actions, lc))
			{
				if (((PendingSinkAction *) lfirst(later))->sink_id == a->sink_id)
					superseded = true;
			}
			if (superseded)
				continue;
			if (a->action == SINK_STOP)
				(void) sapi_signal_worker(a->sink_id, true);
			else if (!sapi_signal_worker(a->sink_id, false) || a->action == SINK_START)
				sapi_launch_worker(a->sink_id, MyDatabaseId);
		}
	}
	/* (a prepared transaction forgets them: resume_sink() after COMMIT PREPARED) */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		list_free_deep(pending_actions);
		pending_actions = NIL;
	}
}

/* Requests made in a rolled back subtransaction are forgotten. */
static void
sink_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	foreach(lc, pending_actions)
	{
		PendingSinkAction *a = lfirst(lc);

		if (a->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			pending_actions = foreach_delete_current(pending_actions, lc);
			pfree(a);
		}
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			a->subid = parentSubid;
	}
}

/*
 * The caller may act on a sink only if it can see its row: superusers see
 * every sink, other roles their own (row level security on
 * sequin_cdc.sinks).
 */
static void
sapi_require_visible_sink(int64 sink_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(sink_id)};
	bool		found;

	SPI_connect();
	found = SPI_execute_with_args("SELECT 1 FROM sequin_cdc.sinks WHERE id OPERATOR(pg_catalog.=) $1",
								  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
	SPI_finish();
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("sink %lld does not exist", (long long) sink_id),
				 errhint("sequin_cdc.pg_stat_sinks lists the sinks.")));
}

/*
 * Act on the sink when the transaction commits (to be replaced by
 * workers.c), if the caller may see it.
 */
static void
queue_sink_action(int64 sink_id, SinkAction action)
{
	PendingSinkAction *a;

	sequin_cdc_require_preload();
	sapi_require_visible_sink(sink_id);
	if (!sink_callbacks_registered)
	{
		RegisterXactCallback(sink_xact_callback, NULL);
		RegisterSubXactCallback(sink_subxact_callback, NULL);
		sink_callbacks_registered = true;
	}
	a = MemoryContextAlloc(TopMemoryContext, sizeof(PendingSinkAction));
	a->sink_id = sink_id;
	a->action = action;
	a->subid = GetCurrentSubTransactionId();
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		pending_actions = lappend(pending_actions, a);
		MemoryContextSwitchTo(old);
	}
}

/*
 * _start_sink(id): start a worker for the sink when this transaction
 * commits.  If one still runs (a pause and a resume in a row, where it may
 * not have exited yet), the new one waits for it and leaves if it stays.
 */
Datum
sequin_cdc_sink_start(PG_FUNCTION_ARGS)
{
	queue_sink_action(PG_GETARG_INT64(0), SINK_START);
	PG_RETURN_VOID();
}

/* _wake_sink(id): at commit, wake the sink's worker, or start one */
Datum
sequin_cdc_sink_wake(PG_FUNCTION_ARGS)
{
	queue_sink_action(PG_GETARG_INT64(0), SINK_WAKE);
	PG_RETURN_VOID();
}

/* _stop_sink(id): terminate the sink's worker when this transaction commits */
Datum
sequin_cdc_sink_stop(PG_FUNCTION_ARGS)
{
	queue_sink_action(PG_GETARG_INT64(0), SINK_STOP);
	PG_RETURN_VOID();
}

/* _sink_workers(): (sink_id, pid) of the running sink workers of this database */
Datum
sequin_cdc_sink_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SinkShared	copy[SEQUIN_CDC_MAX_SINKS];

	sequin_cdc_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	LWLockAcquire(SequinCdcShared_state->lock, LW_SHARED);
	memcpy(copy, SequinCdcShared_state->sinks, sizeof(copy));
	LWLockRelease(SequinCdcShared_state->lock);

	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		if (!copy[i].in_use || copy[i].dboid != MyDatabaseId)
			continue;
		values[0] = Int64GetDatum(copy[i].sink_id);
		values[1] = Int32GetDatum(copy[i].pid);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Start a worker for every active sink of this database that has none
 * (declared in sink_api.h, with when it runs).
 */
void
sequin_cdc_launch_sinks(void)
{
	if (!sequin_cdc_sinks_table_exists())
		return;
	SPI_connect();
	if (SPI_execute("SELECT id FROM sequin_cdc.sinks WHERE state OPERATOR(pg_catalog.=) 'active' ORDER BY id",
					true, 0) == SPI_OK_SELECT)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

			if (!sequin_cdc_sink_running(MyDatabaseId, id))
				sapi_launch_worker(id, MyDatabaseId);
		}
	}
	SPI_finish();
}
