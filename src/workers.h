/*-------------------------------------------------------------------------
 *
 * workers.h
 *		Starting sequin_cdc's background workers, and the actions a
 *		transaction queues for its commit (start, wake or stop a worker).
 *
 * Every kind of worker is started by sequin_cdc_start_worker(), which
 * switches on the kind the way PostgreSQL's logicalrep_worker_launch
 * does.  SQL functions that change what should run (a backfill row, a
 * sink's state) never start or stop a worker directly: they queue the
 * action with sequin_cdc_at_commit(), and it runs after the commit that
 * makes the change visible, or not at all.
 *
 * Users: launcher.c (capture workers), api.c (create_slot wakes the
 * launcher), backfill.c (backfill workers), sink_api.c (sink workers).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_WORKERS_H
#define SEQUIN_CDC_WORKERS_H

#include "postgres.h"

#include "postmaster/bgworker.h"

/* The kinds of worker, and what "id" and "name" mean for each */
typedef enum SequinWorkerKind
{
	SEQUIN_WORKER_LAUNCHER,		/* static, registered by _PG_init; id 0 */
	SEQUIN_WORKER_CAPTURE,		/* id: slot entry index; name: slot name */
	SEQUIN_WORKER_BACKFILL,		/* id: backfill id */
	SEQUIN_WORKER_SINK,			/* id: sink id */
} SequinWorkerKind;

/*
 * What a backfill or sink worker finds in its bgw_extra.  (A capture
 * worker finds its slot name there, and its entry index in the main
 * argument.)
 */
typedef struct SequinWorkerArg
{
	int64		id;
	Oid			dboid;
} SequinWorkerArg;

/*
 * Start a worker of kind "kind" for "id" in database "dboid" (ignored for
 * the launcher and capture, which find their database elsewhere).  When
 * "handle" is not NULL the handle of the new worker is stored there (NULL
 * when it could not be started), and the caller is notified when it
 * exits (bgw_notify_pid).  Returns false, with a WARNING saying which
 * setting to raise, when no worker slot was free; never throws otherwise,
 * so that it may run at commit.
 */
extern bool sequin_cdc_start_worker(SequinWorkerKind kind, int64 id, Oid dboid,
									const char *name,
									BackgroundWorkerHandle **handle);

/*
 * First call of a backfill or sink worker's main function: signal handlers
 * (SIGHUP reloads, SIGTERM dies), connection to its database as the
 * bootstrap superuser, its type as application_name.  Returns its arguments.
 */
extern SequinWorkerArg sequin_cdc_worker_init(void);

/* What a transaction can ask to happen at its commit */
typedef enum SequinCommitAction
{
	SEQUIN_AT_COMMIT_WAKE_LAUNCHER, /* id: 0 */
	SEQUIN_AT_COMMIT_RETRY_CAPTURE, /* end the backoff of a failing capture
									 * worker; id: its slot entry index */
	SEQUIN_AT_COMMIT_START_BACKFILL,	/* id: backfill id */
	SEQUIN_AT_COMMIT_START_SINK,	/* start a worker; if one still runs, the
									 * new one waits for it to exit */
	SEQUIN_AT_COMMIT_WAKE_SINK, /* wake the worker, or start one if none */
	SEQUIN_AT_COMMIT_STOP_SINK, /* terminate the worker */
	SEQUIN_AT_COMMIT_RETRY_PARKED,	/* id: capture slot entry index; its
									 * worker retries parked changes */
} SequinCommitAction;

/*
 * Queue an action for the commit of the current transaction, in this
 * database.  The rules, those of PostgreSQL's own commit-time work:
 *   - at commit, the actions run in the order they were queued, after the
 *     commit record, where nothing may fail: starting only warns;
 *   - for each target (the launcher, one backfill, one sink) only the last
 *     start or stop queued runs: a pause then a resume of a sink in one
 *     transaction starts a worker, a resume then a drop stops it; a wake
 *     runs only when no start or stop of that sink is queued;
 *   - the actions of a subtransaction that rolls back are forgotten, those
 *     of one that commits pass to its parent;
 *   - a rollback forgets them all;
 *   - PREPARE TRANSACTION is refused with an error: the commit may come
 *     from another session, or after a restart, and nothing would run the
 *     actions then.
 */
extern void sequin_cdc_at_commit(SequinCommitAction action, int64 id);

#endif							/* SEQUIN_CDC_WORKERS_H */
