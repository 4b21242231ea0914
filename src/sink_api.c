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

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "sequin_cdc.h"
#include "sink_api.h"
#include "sink_webhook.h"
#include "sink_worker.h"
#include "workers.h"

PG_FUNCTION_INFO_V1(sequin_cdc_sink_check_url);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_endpoint);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_start);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_wake);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_stop);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_workers);
PG_FUNCTION_INFO_V1(sequin_cdc_sink_in_flight);

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
 * Starting and stopping workers at commit (workers.c runs the actions)
 * ----------------------------------------------------------------
 */

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
 * Act on the sink when the transaction commits (sequin_cdc_at_commit), if
 * the caller may see it.
 */
static void
sapi_at_commit(int64 sink_id, SequinCommitAction action)
{
	sequin_cdc_require_preload();
	sapi_require_visible_sink(sink_id);
	sequin_cdc_at_commit(action, sink_id);
}

/*
 * _start_sink(id): start a worker for the sink when this transaction
 * commits.  If one still runs (a pause and a resume in a row, where it may
 * not have exited yet), the new one waits for it and leaves if it stays.
 */
Datum
sequin_cdc_sink_start(PG_FUNCTION_ARGS)
{
	sapi_at_commit(PG_GETARG_INT64(0), SEQUIN_AT_COMMIT_START_SINK);
	PG_RETURN_VOID();
}

/* _wake_sink(id): at commit, wake the sink's worker, or start one */
Datum
sequin_cdc_sink_wake(PG_FUNCTION_ARGS)
{
	sapi_at_commit(PG_GETARG_INT64(0), SEQUIN_AT_COMMIT_WAKE_SINK);
	PG_RETURN_VOID();
}

/* _stop_sink(id): terminate the sink's worker when this transaction commits */
Datum
sequin_cdc_sink_stop(PG_FUNCTION_ARGS)
{
	sapi_at_commit(PG_GETARG_INT64(0), SEQUIN_AT_COMMIT_STOP_SINK);
	PG_RETURN_VOID();
}

/*
 * One row per running sink worker of this database: (sink_id, pid), or
 * (sink_id, in_flight) when in_flight.
 */
static Datum
sapi_sink_entries(FunctionCallInfo fcinfo, bool in_flight)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SinkShared	copy[SEQUIN_CDC_MAX_SINKS];

	sequin_cdc_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	sequin_cdc_copy_sink_entries(copy);

	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		if (!copy[i].in_use || copy[i].dboid != MyDatabaseId)
			continue;
		values[0] = Int64GetDatum(copy[i].sink_id);
		values[1] = Int32GetDatum(in_flight ? copy[i].in_flight : copy[i].pid);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* _sink_workers(): (sink_id, pid) of the running sink workers of this database */
Datum
sequin_cdc_sink_workers(PG_FUNCTION_ARGS)
{
	return sapi_sink_entries(fcinfo, false);
}

/*
 * _sink_in_flight(): (sink_id, in_flight) of the running sink workers of
 * this database: how many changes the batch being delivered holds.
 */
Datum
sequin_cdc_sink_in_flight(PG_FUNCTION_ARGS)
{
	return sapi_sink_entries(fcinfo, true);
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
				(void) sequin_cdc_start_worker(SEQUIN_WORKER_SINK, id, MyDatabaseId,
											   NULL, NULL);
		}
	}
	SPI_finish();
}
