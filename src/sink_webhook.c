/*-------------------------------------------------------------------------
 *
 * sink_webhook.c
 *		Webhook sinks: a background worker per sink POSTs the rows of a
 *		change table, in seq order and in batches, to an HTTP endpoint
 *		with libcurl; plus the C parts of the sink SQL API.
 *
 * One worker per sink, not one curl multi loop for all of them: a sink
 * that waits on a slow endpoint, backs off from a failing one or blocks on
 * DNS stalls nobody else, a crash or an error in one sink's code path stays
 * in that process, and the delivery loop stays a simple sequence of steps.
 * The price, a process per sink, is small: sinks are few (the shared
 * registry holds SEQUIN_CDC_MAX_SINKS), and a worker sleeps on its latch
 * when it has nothing to send.  Capture never waits for a sink either: it
 * only sets the latches of the sink workers of its database after each
 * committed batch (sequin_cdc_wake_sinks), so a new change is read within
 * one wake-up, and a one-second timeout covers everything else.
 *
 * A delivery step is:
 *	 1. a short transaction reads the sink's row and, unless a batch is
 *		already pending, up to batch_size rows after the cursor in seq
 *		order, and commits;
 *	 2. no transaction open, one POST of {"data": [...]} with libcurl;
 *	 3. after a 2xx, a short transaction moves the cursor to the batch's
 *		last seq and updates the statistics; after anything else (other
 *		status, timeout, connection or TLS error) it records the failure
 *		and the worker retries the same bytes, with the same
 *		Idempotency-Key, after a capped exponential backoff with jitter.
 * The cursor only moves forward over what was acknowledged, and only if
 * it still is where the batch started (replay_sink may have moved it
 * meanwhile), so nothing is skipped and delivery is at-least-once: a crash
 * between the 2xx and the cursor's commit sends that batch again.  That
 * commit is asynchronous (synchronous_commit = off in the worker) for the
 * same reason: losing it re-sends, it never skips.
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
 * Who may manage sinks: superusers, and roles a superuser grants access to
 * sequin_cdc.sinks (see sql/, which names the grants); the table is closed
 * to PUBLIC because headers hold secrets, and row level security limits
 * such roles to the sinks of roles they are members of.  pg_stat_sinks
 * shows every sink without headers, and the URL only as scheme, host, port
 * and path.
 *
 * Workers are started at the commit of create_webhook_sink() and
 * resume_sink(), and by the capture worker of the database when it starts
 * (sequin_cdc_launch_sinks), which brings sinks back after a restart or a
 * crash.  drop_sink() and pause_sink() terminate the worker at commit.  A
 * worker survives its own errors (they are recorded in the sink's row and
 * retried); it exits when its sink is paused or gone.  The postmaster never
 * restarts it (BGW_NEVER_RESTART): what stopped it on purpose stays
 * stopped, and a worker of a dropped database does not loop on FATAL.
 *
 * Wake-ups from capture during a backoff do not cut it short; a replay
 * during a backoff takes effect at the next attempt.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <signal.h>

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
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
#include "sink_webhook.h"

PG_FUNCTION_INFO_V1(sequin_cdc_sink_check_url);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_endpoint);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_start);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_wake);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_stop);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_workers);

/* Retry delays: 100 ms doubling up to 30 s, half of each one random */
#define SINK_BACKOFF_BASE_MS	100
#define SINK_BACKOFF_MAX_MS		30000
/* Sleep when idle and nobody wakes us */
#define SINK_IDLE_TIMEOUT_MS	1000
/* Longest connect phase of a request (the whole request: timeout_ms) */
#define SINK_CONNECT_TIMEOUT_MS	10000
/* Bytes of an error response kept for last_error */
#define SINK_RESPONSE_KEEP		200
/* How long a new worker waits for a stopping one to give up the sink */
#define SINK_ATTACH_WAIT_MS		5000

#define SINK_USER_AGENT			"sequin_cdc/0.1.0"

typedef struct SinkWorkerArg
{
	int64		sink_id;
	Oid			dboid;
} SinkWorkerArg;

/* ----------------------------------------------------------------
 * URL checks (create_webhook_sink) and the endpoint shown by
 * pg_stat_sinks
 * ----------------------------------------------------------------
 */

/* Why url is not a usable webhook URL, or NULL. */
static const char *
url_problem(const char *url)
{
	CURLU	   *h;
	CURLUcode	rc;
	char	   *host = NULL;
	const char *problem = NULL;

	if (pg_strncasecmp(url, "http://", 7) != 0 && pg_strncasecmp(url, "https://", 8) != 0)
		return "it does not start with http:// or https://";
	if (strpbrk(url, " \t\r\n") != NULL)
		return "it contains white space";

	h = curl_url();
	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	rc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
		problem = pstrdup(curl_url_strerror(rc));
	else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
			 host == NULL || host[0] == '\0')
		problem = "it has no host";
	curl_free(host);
	curl_url_cleanup(h);
	return problem;
}

/* _sink_check_url(url): error with a hint unless url is http(s) with a host */
Datum
sequin_cdc_sink_check_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *problem = url_problem(url);

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
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *h = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *path = NULL;
	char	   *result = NULL;

	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		(void) curl_url_get(h, CURLUPART_PORT, &port, 0);
		(void) curl_url_get(h, CURLUPART_PATH, &path, 0);
		result = psprintf("%s://%s%s%s%s", scheme, host,
						  port ? ":" : "", port ? port : "", path ? path : "/");
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(h);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/* ----------------------------------------------------------------
 * Starting and stopping workers at commit
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

void
sequin_cdc_launch_sink(int64 sink_id, Oid dboid)
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
signal_sink_worker(int64 sink_id, bool stop)
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
				(void) signal_sink_worker(a->sink_id, true);
			else if (!signal_sink_worker(a->sink_id, false) || a->action == SINK_START)
				sequin_cdc_launch_sink(a->sink_id, MyDatabaseId);
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
require_visible_sink(int64 sink_id)
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

static void
queue_sink_action(int64 sink_id, SinkAction action)
{
	PendingSinkAction *a;

	sequin_cdc_require_preload();
	require_visible_sink(sink_id);
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

/* Is sequin_cdc.sinks there?  (Not when the extension is being dropped.) */
static bool
sinks_table_exists(void)
{
	Oid			nsp = get_namespace_oid("sequin_cdc", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("sinks", nsp));
}

void
sequin_cdc_launch_sinks(void)
{
	if (!sinks_table_exists())
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
				sequin_cdc_launch_sink(id, MyDatabaseId);
		}
	}
	SPI_finish();
}

/* ----------------------------------------------------------------
 * The worker
 * ----------------------------------------------------------------
 */

/* The sink's row, as read at the start of each step */
typedef struct SinkConfig
{
	int64		id;
	char	   *name;
	char	   *name_json;		/* "name", JSON-escaped */
	char	   *url;
	Oid			change_table;
	int			batch_size;
	int			timeout_ms;
	bool		active;
	int64		cursor_seq;
	int32		epoch;
	Oid			owner;
	int			nheaders;
	char	  **headers;		/* "Name: value" */
} SinkConfig;

/* The batch being delivered: kept, byte for byte, until a 2xx */
typedef struct SinkBatch
{
	bool		valid;
	int64		start_cursor;	/* cursor_seq when it was read */
	int64		first_seq;
	int64		last_seq;
	int			nrows;
	StringInfoData body;
} SinkBatch;

typedef enum SinkStep
{
	STEP_DELIVERED,
	STEP_IDLE,
	STEP_FAILED,
	STEP_STOP,
} SinkStep;

typedef struct PostResult
{
	bool		ok;
	bool		http;			/* a response came back */
	long		status;
	char		error[SEQUIN_CDC_ERROR_LEN];
} PostResult;

static SinkConfig cfg;
static SinkBatch batch;
static MemoryContext worker_cxt;
static MemoryContext config_cxt;
static MemoryContext batch_cxt;
static bool cfg_loaded = false;
static bool started_logged = false;
static int	failures = 0;		/* consecutive failed steps */

static CURL *curl_handle = NULL;
static char curl_errbuf[CURL_ERROR_SIZE];
static char response_buf[SINK_RESPONSE_KEEP + 1];
static size_t response_len;

static SPIPlanPtr config_plan = NULL;
static SPIPlanPtr read_plan = NULL;
static Oid	read_plan_table = InvalidOid;
static SPIPlanPtr success_plan = NULL;
static SPIPlanPtr failure_plan = NULL;

static void
sink_error_context(void *arg)
{
	if (cfg_loaded)
		errcontext("sequin_cdc sink \"%s\" (id %lld)", cfg.name, (long long) cfg.id);
	else
		errcontext("sequin_cdc sink %lld", (long long) cfg.id);
}

/* A statement prepared once per worker (re-planned by the plan cache). */
static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
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

/* A header line from the row is sent only if it cannot break the request. */
static bool
header_line_ok(const char *line)
{
	const char *colon = strchr(line, ':');

	if (colon == NULL || colon == line)
		return false;
	for (const char *p = line; p < colon; p++)
	{
		if (!(isalnum((unsigned char) *p) || strchr("!#$%&'*+-.^_`|~", *p)))
			return false;
	}
	return strpbrk(line, "\r\n") == NULL;
}

/*
 * Read the sink's row into cfg; false if it is gone.  Inside the step's
 * transaction, SPI connected.
 */
static bool
load_config(void)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(cfg.id)};
	SPIPlanPtr	plan;
	HeapTuple	t;
	TupleDesc	d;
	bool		isnull;
	MemoryContext old;
	char	   *state;
	Datum		v;

	plan = kept_plan(&config_plan,
					 "SELECT s.name, s.url, s.change_table::pg_catalog.oid, s.batch_size, "
					 "s.timeout_ms, s.state, s.cursor_seq, s.replay_epoch, s.owner::pg_catalog.oid, "
					 "ARRAY(SELECT pg_catalog.concat(h.key, ': ', h.value) "
					 "FROM pg_catalog.jsonb_each_text(s.headers) h ORDER BY h.key) "
					 "FROM sequin_cdc.sinks s WHERE s.id OPERATOR(pg_catalog.=) $1",
					 1, argtypes);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the sink's configuration");
	if (SPI_processed != 1)
		return false;

	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	cfg_loaded = false;			/* the error context must not use freed names */
	MemoryContextReset(config_cxt);
	old = MemoryContextSwitchTo(config_cxt);
	cfg.name = SPI_getvalue(t, d, 1);
	{
		StringInfoData s;

		initStringInfo(&s);
		escape_json(&s, cfg.name);
		cfg.name_json = s.data;
	}
	cfg_loaded = true;
	cfg.url = SPI_getvalue(t, d, 2);
	cfg.change_table = DatumGetObjectId(SPI_getbinval(t, d, 3, &isnull));
	cfg.batch_size = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
	cfg.timeout_ms = DatumGetInt32(SPI_getbinval(t, d, 5, &isnull));
	state = SPI_getvalue(t, d, 6);
	cfg.active = strcmp(state, "active") == 0;
	cfg.cursor_seq = DatumGetInt64(SPI_getbinval(t, d, 7, &isnull));
	cfg.epoch = DatumGetInt32(SPI_getbinval(t, d, 8, &isnull));
	cfg.owner = DatumGetObjectId(SPI_getbinval(t, d, 9, &isnull));
	v = SPI_getbinval(t, d, 10, &isnull);
	cfg.nheaders = 0;
	cfg.headers = NULL;
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(v), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &n);
		cfg.headers = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			char	   *line;

			if (enulls[i])
				continue;
			line = TextDatumGetCString(elems[i]);
			if (!header_line_ok(line))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("sink \"%s\" has an invalid header", cfg.name),
						 errhint("Header names are HTTP tokens and values have no line breaks; drop the sink and create it again with valid headers.")));
			cfg.headers[cfg.nheaders++] = line;
		}
	}
	MemoryContextSwitchTo(old);
	if (url_problem(cfg.url) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink \"%s\" has an invalid URL", cfg.name),
				 errhint("Drop the sink and create it again with an http:// or https:// URL.")));
	return true;
}

static void
discard_batch(void)
{
	MemoryContextReset(batch_cxt);
	memset(&batch, 0, sizeof(batch));
}

static void
append_jsonb(StringInfo b, Datum v, bool isnull)
{
	if (isnull)
		appendStringInfoString(b, "null");
	else
	{
		Jsonb	   *jb = DatumGetJsonbP(v);

		(void) JsonbToCString(b, &jb->root, VARSIZE(jb));
	}
}

static void
append_text(StringInfo b, Datum v, bool isnull)
{
	if (isnull)
		appendStringInfoString(b, "null");
	else
		escape_json(b, TextDatumGetCString(v));
}

/*
 * Read the next batch after the cursor, as the sink's owner, and render
 * it as the request body.  Inside the step's transaction, SPI connected.
 */
static void
read_batch(void)
{
	Oid			argtypes[2] = {INT8OID, INT4OID};
	Datum		args[2];
	SequinUserContext ucxt;
	int			rc;
	uint64		n;
	StringInfo	b;
	MemoryContext old;

	if (read_plan != NULL && read_plan_table != cfg.change_table)
	{
		SPI_freeplan(read_plan);
		read_plan = NULL;
	}
	if (read_plan == NULL)
	{
		char	   *rel = get_rel_name(cfg.change_table);
		char	   *nsp = rel ? get_namespace_name(get_rel_namespace(cfg.change_table)) : NULL;

		if (rel == NULL || nsp == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("the change table of sink \"%s\" does not exist", cfg.name),
					 errhint("Drop the sink with sequin_cdc.drop_sink() and create it again for an existing change table.")));
		(void) kept_plan(&read_plan,
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
	rc = SPI_execute_plan(read_plan, args, NULL, true, 0);
	sequin_cdc_restore_user(&ucxt);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the change table of sink \"%s\"", cfg.name);
	n = SPI_processed;
	if (n == 0)
		return;

	discard_batch();
	old = MemoryContextSwitchTo(batch_cxt);
	b = &batch.body;
	initStringInfo(b);
	MemoryContextSwitchTo(old);

	appendStringInfoString(b, "{\"data\":[");
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Datum		v[10];
		bool		nulls[10];
		int64		seq;
		char	   *dbid;
		char		ts[MAXDATELEN + 1];
		int			utc = 0;

		for (int c = 0; c < 10; c++)
			v[c] = SPI_getbinval(t, d, c + 1, &nulls[c]);
		seq = DatumGetInt64(v[0]);
		dbid = nulls[9] ? "" : DatumGetCString(DirectFunctionCall1(uuid_out, v[9]));

		if (i > 0)
			appendStringInfoChar(b, ',');
		appendStringInfoString(b, "{\"record\":");
		append_jsonb(b, v[4], nulls[4]);
		appendStringInfoString(b, ",\"changes\":");
		append_jsonb(b, v[5], nulls[5]);
		appendStringInfoString(b, ",\"action\":");
		append_text(b, v[6], nulls[6]);
		appendStringInfoString(b, ",\"metadata\":{\"table_schema\":");
		append_text(b, v[1], nulls[1]);
		appendStringInfoString(b, ",\"table_name\":");
		append_text(b, v[2], nulls[2]);
		appendStringInfoString(b, ",\"commit_timestamp\":");
		if (nulls[7])
			appendStringInfoString(b, "null");
		else
			appendStringInfo(b, "\"%s\"", JsonEncodeDateTime(ts, v[7], TIMESTAMPTZOID, &utc));
		appendStringInfo(b, ",\"seq\":" INT64_FORMAT ",\"record_pk\":", seq);
		append_text(b, v[3], nulls[3]);
		appendStringInfo(b, ",\"idempotency_key\":\"%s:%u:" INT64_FORMAT "\"",
						 dbid, cfg.change_table, seq);
		appendStringInfoString(b, ",\"transaction_annotations\":");
		append_jsonb(b, v[8], nulls[8]);
		appendStringInfoString(b, ",\"database_id\":");
		if (nulls[9])
			appendStringInfoString(b, "null");
		else
			appendStringInfo(b, "\"%s\"", dbid);
		appendStringInfo(b, ",\"sink\":{\"id\":" INT64_FORMAT ",\"name\":%s}}}",
						 cfg.id, cfg.name_json);

		if (i == 0)
			batch.first_seq = seq;
		batch.last_seq = seq;
	}
	appendStringInfoString(b, "]}");
	batch.nrows = (int) n;
	batch.start_cursor = cfg.cursor_seq;
	batch.valid = true;
}

/* ---- HTTP ---- */

static size_t
curl_write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	size_t		len = size * nmemb;
	size_t		keep = Min(len, SINK_RESPONSE_KEEP - response_len);

	memcpy(response_buf + response_len, data, keep);
	response_len += keep;
	response_buf[response_len] = '\0';
	return len;
}

/* Abort the transfer when the worker must stop or be cancelled. */
static int
curl_progress_cb(void *p, curl_off_t dltotal, curl_off_t dlnow,
				 curl_off_t ultotal, curl_off_t ulnow)
{
	if (ProcDiePending || QueryCancelPending || !PostmasterIsAlive())
		return 1;
	return 0;
}

static void
init_curl(void)
{
	CURL	   *h;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
		(h = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not initialize libcurl")));

	/* one handle for the worker's life: its connection is kept alive */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, SINK_USER_AGENT);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_write_cb);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, curl_progress_cb);
	curl_handle = h;
}

/* Keep printable ASCII of an error response, on one line. */
static void
clean_text(char *s)
{
	for (; *s; s++)
	{
		if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
			*s = ' ';
	}
}

/* POST the pending batch; no transaction is open. */
static void
post_batch(PostResult *r)
{
	struct curl_slist *h = NULL;
	struct curl_slist *next;
	char		line[128];
	bool		user_content_type = false;
	CURLcode	res;
	bool		oom = false;

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < cfg.nheaders; i++)
	{
		if (pg_strncasecmp(cfg.headers[i], "content-type:", 13) == 0)
			user_content_type = true;
	}

#define ADD_HEADER(s) \
	do { \
		next = curl_slist_append(h, (s)); \
		if (next == NULL) oom = true; else h = next; \
	} while (0)

	if (!user_content_type)
		ADD_HEADER("Content-Type: application/json");
	ADD_HEADER("Expect:");		/* no 100-continue round trip */
	snprintf(line, sizeof(line), "Idempotency-Key: " INT64_FORMAT "-%d-" INT64_FORMAT "-" INT64_FORMAT,
			 cfg.id, (int) cfg.epoch, batch.first_seq, batch.last_seq);
	ADD_HEADER(line);
	for (int i = 0; i < cfg.nheaders; i++)
		ADD_HEADER(cfg.headers[i]);
#undef ADD_HEADER
	if (oom)
	{
		curl_slist_free_all(h);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}

	curl_easy_setopt(curl_handle, CURLOPT_URL, cfg.url);
	curl_easy_setopt(curl_handle, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDS, batch.body.data);
	curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) batch.body.len);
	curl_easy_setopt(curl_handle, CURLOPT_TIMEOUT_MS, (long) cfg.timeout_ms);
	curl_easy_setopt(curl_handle, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) Min(cfg.timeout_ms, SINK_CONNECT_TIMEOUT_MS));
	curl_errbuf[0] = '\0';
	response_len = 0;
	response_buf[0] = '\0';

	pgstat_report_activity(STATE_RUNNING, "posting a batch");
	res = curl_easy_perform(curl_handle);
	curl_easy_setopt(curl_handle, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);

	if (!PostmasterIsAlive())
		proc_exit(1);
	CHECK_FOR_INTERRUPTS();

	if (res != CURLE_OK)
	{
		snprintf(r->error, sizeof(r->error), "%s%s%s", curl_easy_strerror(res),
				 curl_errbuf[0] ? ": " : "", curl_errbuf);
		clean_text(r->error);
		return;
	}
	r->http = true;
	curl_easy_getinfo(curl_handle, CURLINFO_RESPONSE_CODE, &r->status);
	r->ok = r->status >= 200 && r->status < 300;
	if (!r->ok)
	{
		clean_text(response_buf);
		snprintf(r->error, sizeof(r->error), "HTTP %ld%s%s%s", r->status,
				 r->status >= 300 && r->status < 400 ? " (redirects are not followed)" : "",
				 response_len > 0 ? ": " : "", response_buf);
	}
}

/* ---- bookkeeping transactions ---- */

/*
 * Run one of the sink row's UPDATEs in a short transaction of its own;
 * false if the sink's row is gone.
 */
static bool
update_sink_row(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
				Datum *args, const char *nulls, const char *what)
{
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (SPI_execute_plan(kept_plan(plan, sql, nargs, argtypes), args, nulls,
						 false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not %s of sink %lld", what, (long long) cfg.id);
	found = SPI_processed == 1;
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return found;
}

/*
 * After a 2xx: move the cursor past the batch, if it still is where the
 * batch started, and count.  False if the sink is gone.
 */
static bool
save_success(PostResult *r)
{
	Oid			argtypes[5] = {INT8OID, INT8OID, INT8OID, INT8OID, INT4OID};
	Datum		args[5];

	args[0] = Int64GetDatum(cfg.id);
	args[1] = Int64GetDatum(batch.start_cursor);
	args[2] = Int64GetDatum(batch.last_seq);
	args[3] = Int64GetDatum((int64) batch.nrows);
	args[4] = Int32GetDatum((int32) r->status);

	return update_sink_row(&success_plan,
						   "UPDATE sequin_cdc.sinks SET "
						   "cursor_seq = CASE WHEN cursor_seq = $2 THEN $3 ELSE cursor_seq END, "
						   "delivered = delivered + $4, requests = requests + 1, "
						   "consecutive_failures = 0, last_http_status = $5, "
						   "last_success_at = pg_catalog.now() "
						   "WHERE id = $1",
						   5, argtypes, args, NULL, "save the cursor");
}

/* Count a failed attempt and keep its error.  False if the sink is gone. */
static bool
save_failure(bool http, long status, const char *error)
{
	Oid			argtypes[4] = {INT8OID, BOOLOID, INT4OID, TEXTOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(cfg.id);
	args[1] = BoolGetDatum(http);
	args[2] = Int32GetDatum((int32) status);
	if (!http)
		nulls[2] = 'n';
	args[3] = CStringGetTextDatum(error);

	return update_sink_row(&failure_plan,
						   "UPDATE sequin_cdc.sinks SET "
						   "requests = requests + CASE WHEN $2 THEN 1 ELSE 0 END, "
						   "failed_attempts = failed_attempts + 1, "
						   "consecutive_failures = consecutive_failures + 1, "
						   "last_http_status = $3, last_error = $4, "
						   "last_failure_at = pg_catalog.now() "
						   "WHERE id = $1",
						   4, argtypes, args, nulls, "record a failure");
}

/* ---- the loop ---- */

static bool
sinks_table_exists_outside_xact(void)
{
	bool		exists;

	StartTransactionCommand();
	exists = sinks_table_exists();
	CommitTransactionCommand();
	return exists;
}

/*
 * One step: read (config and, if none is pending, a batch), post, save.
 */
static SinkStep
sink_step(void)
{
	bool		found = false;
	PostResult	r;

	pgstat_report_activity(STATE_RUNNING, "reading changes");
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (sinks_table_exists())
	{
		SPI_connect();
		found = load_config();
		if (found && cfg.active)
		{
			/* replay_sink (or anyone) moved the cursor: start from there */
			if (batch.valid && batch.start_cursor != cfg.cursor_seq)
				discard_batch();
			if (!batch.valid)
				read_batch();
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
	if (!batch.valid)
		return STEP_IDLE;

	post_batch(&r);
	if (r.ok)
	{
		if (!save_success(&r))
			return STEP_STOP;
		if (failures > 0)
			ereport(LOG,
					(errmsg("sequin_cdc sink \"%s\" delivers again after %d failed attempts",
							cfg.name, failures)));
		discard_batch();
		return STEP_DELIVERED;
	}
	if (failures == 0 || (failures + 1) % 20 == 0)
		ereport(LOG,
				(errmsg("sequin_cdc sink \"%s\" could not deliver seq " INT64_FORMAT " to " INT64_FORMAT ": %s",
						cfg.name, batch.first_seq, batch.last_seq, r.error),
				 errhint("The batch is retried with backoff until the endpoint accepts it; sequin_cdc.pg_stat_sinks shows the last error.")));
	if (!save_failure(r.http, r.status, r.error))
		return STEP_STOP;
	return STEP_FAILED;
}

/* Sleep until deadline; wake-ups by capture do not shorten a backoff. */
static void
sleep_until(TimestampTz deadline)
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
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/* 100 ms, 200 ms, ... 30 s; the second half of each delay is random */
static long
backoff_ms(int n)
{
	double		d = SINK_BACKOFF_BASE_MS * pow(2.0, Min(n, 20) - 1);

	d = Min(d, (double) SINK_BACKOFF_MAX_MS);
	return (long) (d / 2 + pg_prng_double(&pg_global_prng_state) * d / 2);
}

static void
sink_loop(void)
{
	for (;;)
	{
		volatile SinkStep step;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		PG_TRY();
		{
			step = sink_step();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* an error of ours (SQL, privileges, memory): record, retry */
			HOLD_INTERRUPTS();
			MemoryContextSwitchTo(worker_cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			RESUME_INTERRUPTS();
			discard_batch();
			if (read_plan != NULL)
			{
				SPI_freeplan(read_plan);
				read_plan = NULL;
			}
			ereport(LOG,
					(errmsg("sequin_cdc sink %lld: %s", (long long) cfg.id,
							edata->message ? edata->message : "unknown error"),
					 edata->hint ? errhint("%s", edata->hint) : 0));
			step = STEP_FAILED;
			PG_TRY();
			{
				if (!save_failure(false, 0, edata->message ? edata->message : "unknown error"))
					step = STEP_STOP;
			}
			PG_CATCH();
			{
				HOLD_INTERRUPTS();
				FlushErrorState();
				AbortOutOfAnyTransaction();
				RESUME_INTERRUPTS();
				if (!sinks_table_exists_outside_xact())
					step = STEP_STOP;
			}
			PG_END_TRY();
			FreeErrorData(edata);
		}
		PG_END_TRY();

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
				sleep_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														backoff_ms(failures)));
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
attach_sink(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   SINK_ATTACH_WAIT_MS);

	while (sequin_cdc_sink_attach(cfg.id) < 0)
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
			PG_TRY();
			{
				(void) save_failure(false, 0, msg);
			}
			PG_CATCH();
			{
				EmitErrorReport();
				FlushErrorState();
				AbortOutOfAnyTransaction();
			}
			PG_END_TRY();
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

void
sequin_cdc_sink_main(Datum arg)
{
	SinkWorkerArg a;
	ErrorContextCallback errcb;

	memcpy(&a, MyBgworkerEntry->bgw_extra, sizeof(a));
	memset(&cfg, 0, sizeof(cfg));
	memset(&batch, 0, sizeof(batch));
	cfg.id = a.sink_id;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* the bootstrap superuser: no LOGIN needed, sees every sink's row */
	BackgroundWorkerInitializeConnectionByOid(a.dboid, InvalidOid, 0);
	pgstat_report_appname("sequin_cdc sink");

	worker_cxt = AllocSetContextCreate(TopMemoryContext, "sequin_cdc sink",
									   ALLOCSET_DEFAULT_SIZES);
	config_cxt = AllocSetContextCreate(worker_cxt, "sequin_cdc sink config",
									   ALLOCSET_SMALL_SIZES);
	batch_cxt = AllocSetContextCreate(worker_cxt, "sequin_cdc sink batch",
									  ALLOCSET_DEFAULT_SIZES);

	errcb.callback = sink_error_context;
	errcb.arg = NULL;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	if (!attach_sink())
		proc_exit(0);

	/* our names are qualified; a lost cursor commit only means a re-send */
	SetConfigOption("search_path", "pg_catalog", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	init_curl();
	sink_loop();

	ereport(LOG,
			(errmsg("sequin_cdc sink %lld stopping: it is paused or dropped",
					(long long) cfg.id)));
	curl_easy_cleanup(curl_handle);
	curl_handle = NULL;
	error_context_stack = errcb.previous;
	proc_exit(0);
}
