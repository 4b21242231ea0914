/*-------------------------------------------------------------------------
 *
 * workers.c
 *		Starting every kind of background worker, and running the start,
 *		wake and stop requests of a transaction at its commit.
 *
 * One function starts every worker: the launcher (a static worker,
 * registered at preload), capture workers (started by the launcher, one
 * per slot), backfill workers and sink workers (started at the commit of
 * the SQL call that wants them, and by the capture worker of their
 * database after a restart).  All are BGW_NEVER_RESTART except the
 * launcher: whoever started a dynamic worker decides whether it should run
 * again, and a worker of a dropped database does not loop on FATAL.
 *
 * The commit-time queue follows PostgreSQL's own (async.c's pending
 * notifies, the apply launcher's wakeup at commit): a worker started before
 * the commit would not see the rows it is meant to act on, and a worker
 * stopped for a drop that is rolled back would leave an active object
 * without one.  So requests wait in a list in TopMemoryContext, tagged
 * with the subtransaction that made them; an xact callback runs them at
 * commit and a subxact callback keeps the list in step with savepoints.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"

#include "shmem.h"
#include "workers.h"

/* ----------------------------------------------------------------
 * Starting workers
 * ----------------------------------------------------------------
 */

/* What differs between the kinds of worker */
typedef struct WorkersKindInfo
{
	const char *function;		/* entry point, looked up by name */
	const char *type;			/* bgw_type: pg_stat_activity.backend_type */
	const char *hint;			/* when no worker slot is free */
} WorkersKindInfo;

static const WorkersKindInfo workers_kinds[] = {
	[SEQUIN_WORKER_LAUNCHER] = {
		"sequin_cdc_launcher_main", "sequin_cdc launcher",
		"Raise max_worker_processes.",
	},
	[SEQUIN_WORKER_CAPTURE] = {
		"sequin_cdc_capture_main", "sequin_cdc capture",
		"Raise max_worker_processes: sequin_cdc needs one worker per slot plus its launcher.",
	},
	[SEQUIN_WORKER_BACKFILL] = {
		"sequin_cdc_backfill_main", "sequin_cdc backfill",
		"Raise max_worker_processes; the backfill resumes when its slot's capture worker restarts.",
	},
	[SEQUIN_WORKER_SINK] = {
		"sequin_cdc_sink_main", "sequin_cdc sink",
		"Raise max_worker_processes, then call sequin_cdc.resume_sink(); sinks also start when the capture worker of their database starts.",
	},
};

/*
 * Start a worker; see workers.h for the arguments.  The worker's name says
 * what it serves ("sequin_cdc capture <slot>", "sequin_cdc backfill <id>"),
 * its type what it is.
 */
bool
sequin_cdc_start_worker(SequinWorkerKind kind, int64 id, Oid dboid,
						const char *name, BackgroundWorkerHandle **handle)
{
	const WorkersKindInfo *info = &workers_kinds[kind];
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "sequin_cdc");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "%s", info->function);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "%s", info->type);

	switch (kind)
	{
		case SEQUIN_WORKER_LAUNCHER:
			/* needs no database: slots are in shared memory */
			bgw.bgw_restart_time = 1;
			snprintf(bgw.bgw_name, BGW_MAXLEN, "%s", info->type);
			RegisterBackgroundWorker(&bgw);
			return true;
		case SEQUIN_WORKER_CAPTURE:
			/* the database is in its slot entry, the name in bgw_extra */
			bgw.bgw_flags |= BGWORKER_BACKEND_DATABASE_CONNECTION;
			snprintf(bgw.bgw_name, BGW_MAXLEN, "%s %s", info->type, name);
			bgw.bgw_main_arg = Int32GetDatum((int32) id);
			strlcpy(bgw.bgw_extra, name, BGW_EXTRALEN);
			break;
		case SEQUIN_WORKER_BACKFILL:
		case SEQUIN_WORKER_SINK:
			{
				SequinWorkerArg a = {id, dboid};

				bgw.bgw_flags |= BGWORKER_BACKEND_DATABASE_CONNECTION;
				snprintf(bgw.bgw_name, BGW_MAXLEN, "%s %lld", info->type, (long long) id);
				memcpy(bgw.bgw_extra, &a, sizeof(a));
				break;
			}
	}
	if (handle != NULL)
		bgw.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&bgw, handle))
	{
		if (handle != NULL)
			*handle = NULL;
		if (kind == SEQUIN_WORKER_CAPTURE)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start the capture worker for replication slot \"%s\"", name),
					 errhint("%s", info->hint)));
		else
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start a worker for %s %lld",
							kind == SEQUIN_WORKER_BACKFILL ? "backfill" : "sink",
							(long long) id),
					 errhint("%s", info->hint)));
		return false;
	}
	return true;
}

/*
 * The first steps of a backfill or sink worker: the standard signal
 * handlers (reload on SIGHUP, die on SIGTERM), a connection to the
 * database it was started for as the bootstrap superuser (which needs no
 * LOGIN; user code runs as its owner through run_as.c), and its type as
 * its name in pg_stat_activity.  Returns the arguments it was started with.
 */
SequinWorkerArg
sequin_cdc_worker_init(void)
{
	SequinWorkerArg a;

	memcpy(&a, MyBgworkerEntry->bgw_extra, sizeof(a));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(a.dboid, InvalidOid, 0);
	pgstat_report_appname(MyBgworkerEntry->bgw_type);
	return a;
}

/* ----------------------------------------------------------------
 * Actions at commit
 * ----------------------------------------------------------------
 */

/* A queued action */
typedef struct WorkersPending
{
	SequinCommitAction action;
	int64		id;
	SubTransactionId subid;		/* the subtransaction that queued it */
} WorkersPending;

static List *workers_pending = NIL; /* in TopMemoryContext */
static bool workers_callbacks_registered = false;

/* What an action acts on: actions on one target supersede each other. */
typedef enum WorkersTarget
{
	WORKERS_TARGET_LAUNCHER,
	WORKERS_TARGET_BACKFILL,
	WORKERS_TARGET_SINK,
	WORKERS_TARGET_CAPTURE,
} WorkersTarget;

/* The target of an action. */
static WorkersTarget
workers_target(SequinCommitAction action)
{
	switch (action)
	{
		case SEQUIN_AT_COMMIT_WAKE_LAUNCHER:
		case SEQUIN_AT_COMMIT_RETRY_CAPTURE:
			return WORKERS_TARGET_LAUNCHER;
		case SEQUIN_AT_COMMIT_START_BACKFILL:
			return WORKERS_TARGET_BACKFILL;
		case SEQUIN_AT_COMMIT_RETRY_PARKED:
			return WORKERS_TARGET_CAPTURE;
		case SEQUIN_AT_COMMIT_START_SINK:
		case SEQUIN_AT_COMMIT_WAKE_SINK:
		case SEQUIN_AT_COMMIT_STOP_SINK:
			break;
	}
	return WORKERS_TARGET_SINK;
}

/* What the transaction did, for the error that refuses PREPARE. */
static const char *
workers_target_deed(WorkersTarget target)
{
	switch (target)
	{
		case WORKERS_TARGET_LAUNCHER:
			return "created a sequin_cdc slot or restarted capture";
		case WORKERS_TARGET_BACKFILL:
			return "started a backfill";
		case WORKERS_TARGET_CAPTURE:
			return "asked for a retry of parked changes";
		case WORKERS_TARGET_SINK:
			break;
	}
	return "created, paused, resumed, replayed or dropped a sink";
}

/* Run one action, after the commit: it must not throw. */
static void
workers_run_action(WorkersPending *p)
{
	switch (p->action)
	{
		case SEQUIN_AT_COMMIT_WAKE_LAUNCHER:
			sequin_cdc_wake_launcher();
			break;
		case SEQUIN_AT_COMMIT_RETRY_CAPTURE:
			sequin_cdc_retry_capture_now(MyDatabaseId, (int) p->id);
			sequin_cdc_wake_launcher();
			break;
		case SEQUIN_AT_COMMIT_START_BACKFILL:
			(void) sequin_cdc_start_worker(SEQUIN_WORKER_BACKFILL, p->id,
										   MyDatabaseId, NULL, NULL);
			break;
		case SEQUIN_AT_COMMIT_START_SINK:
			(void) sequin_cdc_signal_sink(MyDatabaseId, p->id, false);
			(void) sequin_cdc_start_worker(SEQUIN_WORKER_SINK, p->id,
										   MyDatabaseId, NULL, NULL);
			break;
		case SEQUIN_AT_COMMIT_WAKE_SINK:
			if (!sequin_cdc_signal_sink(MyDatabaseId, p->id, false))
				(void) sequin_cdc_start_worker(SEQUIN_WORKER_SINK, p->id,
											   MyDatabaseId, NULL, NULL);
			break;
		case SEQUIN_AT_COMMIT_STOP_SINK:
			(void) sequin_cdc_signal_sink(MyDatabaseId, p->id, true);
			break;
		case SEQUIN_AT_COMMIT_RETRY_PARKED:
			sequin_cdc_request_parked_retry((int) p->id);
			break;
	}
}

/*
 * Is an action superseded by another on the same target in the list?  The
 * last start or stop wins (a pause then a resume starts a worker, a resume
 * then a drop stops it); a wake only wakes what those leave running, so it
 * never overrides them: resume_sink() then replay_sink() must still start a
 * worker when the old one is on its way out.
 */
static bool
workers_superseded(List *pending, ListCell *cell)
{
	WorkersPending *p = lfirst(cell);
	bool		p_wake = (p->action == SEQUIN_AT_COMMIT_WAKE_SINK);
	bool		later = false;
	ListCell   *lc;

	foreach(lc, pending)
	{
		WorkersPending *q = lfirst(lc);
		bool		q_wake = (q->action == SEQUIN_AT_COMMIT_WAKE_SINK);

		if (lc == cell)
		{
			later = true;
			continue;
		}
		if (q->id != p->id || workers_target(q->action) != workers_target(p->action))
			continue;
		if (later && (!q_wake || p_wake))
			return true;		/* a later start/stop, or a later wake of a wake */
		if (!later && p_wake && !q_wake)
			return true;		/* a wake after a start/stop adds nothing */
	}
	return false;
}

/*
 * End of the top transaction: refuse PREPARE while actions are queued, run
 * them at commit, forget them in every other case.
 */
static void
workers_xact_callback(XactEvent event, void *arg)
{
	List	   *pending = workers_pending;
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (pending != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has %s",
								workers_target_deed(workers_target(((WorkersPending *) linitial(pending))->action))),
						 errdetail("sequin_cdc starts and stops its workers when such a transaction commits, and a prepared transaction commits later, maybe in another session."),
						 errhint("Run it in a transaction of its own that commits directly.")));
			return;
		case XACT_EVENT_COMMIT:
			/* forget them first: whatever happens, they run only once */
			workers_pending = NIL;
			foreach(lc, pending)
			{
				if (!workers_superseded(pending, lc))
					workers_run_action(lfirst(lc));
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			workers_pending = NIL;
			break;
		default:
			return;
	}
	list_free_deep(pending);
}

/*
 * End of a subtransaction: a rolled back one takes its actions with it, a
 * committed one hands them to its parent.
 */
static void
workers_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	foreach(lc, workers_pending)
	{
		WorkersPending *p = lfirst(lc);

		if (p->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			workers_pending = foreach_delete_current(workers_pending, lc);
			pfree(p);
		}
		else
			p->subid = parentSubid;
	}
}

/* Queue an action for the commit of this transaction; see workers.h. */
void
sequin_cdc_at_commit(SequinCommitAction action, int64 id)
{
	MemoryContext old;
	WorkersPending *p;

	if (!workers_callbacks_registered)
	{
		RegisterXactCallback(workers_xact_callback, NULL);
		RegisterSubXactCallback(workers_subxact_callback, NULL);
		workers_callbacks_registered = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	p = palloc(sizeof(WorkersPending));
	p->action = action;
	p->id = id;
	p->subid = GetCurrentSubTransactionId();
	workers_pending = lappend(workers_pending, p);
	MemoryContextSwitchTo(old);
}
