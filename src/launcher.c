/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: keeps one capture worker running per sequin_cdc slot.
 *
 * The launcher needs no database connection.  Replication slots live in
 * shared memory, so it reads them directly: every logical slot whose output
 * plugin is sequin_cdc gets a capture worker in the slot's database.  A
 * worker that exits is restarted after sequin_cdc.restart_delay; a slot that
 * disappears frees its entry; a slot being dropped by drop_slot() is left
 * alone.  Crashes of any process restart the whole server, and this
 * launcher (a static worker) with it, which restarts every capture worker.
 *
 * The launcher sleeps on its latch; create_slot() and worker exits (through
 * bgw_notify_pid) wake it, and a one-second timeout catches the rest.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "sequin_cdc.h"

/* Launcher-local: the handle of the worker serving each shared entry */
static BackgroundWorkerHandle **worker_handles = NULL;

void
sequin_cdc_register_launcher(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "sequin_cdc");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sequin_cdc_launcher_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "sequin_cdc launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "sequin_cdc launcher");
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_detach(int code, Datum arg)
{
	LWLockAcquire(SequinCdcShared_state->lock, LW_EXCLUSIVE);
	SequinCdcShared_state->launcher_latch = NULL;
	SequinCdcShared_state->launcher_pid = 0;
	LWLockRelease(SequinCdcShared_state->lock);
}

static bool
worker_alive(int idx)
{
	pid_t		pid;

	if (worker_handles[idx] == NULL)
		return false;
	return GetBackgroundWorkerPid(worker_handles[idx], &pid) != BGWH_STOPPED;
}

static void
start_worker(int idx, const char *slot_name, Oid dboid)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "sequin_cdc");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "sequin_cdc_capture_main");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "sequin_cdc capture %s", slot_name);
	snprintf(bgw.bgw_type, BGW_MAXLEN, "sequin_cdc capture");
	bgw.bgw_main_arg = Int32GetDatum(idx);
	bgw.bgw_notify_pid = MyProcPid;
	strlcpy(bgw.bgw_extra, slot_name, BGW_EXTRALEN);

	if (worker_handles[idx])
		pfree(worker_handles[idx]);
	worker_handles[idx] = NULL;
	if (!RegisterDynamicBackgroundWorker(&bgw, &worker_handles[idx]))
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the capture worker for replication slot \"%s\"", slot_name),
				 errhint("Raise max_worker_processes: sequin_cdc needs one worker per slot plus its launcher.")));
}

/*
 * One pass: match the sequin_cdc slots in shared memory with worker
 * entries, start what is missing, forget what is gone.
 */
static void
launcher_scan(void)
{
	SequinCdcShared *sh = SequinCdcShared_state;
	TimestampTz now = GetCurrentTimestamp();
	bool	   *seen = palloc0(sizeof(bool) * sh->nslots);

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	LWLockAcquire(sh->lock, LW_EXCLUSIVE);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
		char		name[NAMEDATALEN];
		Oid			dboid;
		int			idx;
		CaptureSlotShared *e;

		if (!s->in_use || !OidIsValid(s->data.database) ||
			strcmp(NameStr(s->data.plugin), SEQUIN_CDC_PLUGIN) != 0 ||
			s->data.persistency != RS_PERSISTENT)
			continue;
		/* an invalidated slot cannot be decoded; health() reports it */
		if (XLogRecPtrIsInvalid(s->data.restart_lsn) &&
			!XLogRecPtrIsInvalid(s->data.invalidated_at))
			continue;
		strlcpy(name, NameStr(s->data.name), NAMEDATALEN);
		dboid = s->data.database;

		idx = sequin_cdc_find_slot_entry(name);
		if (idx >= 0 && sh->slots[idx].dboid != dboid)
		{
			/* same name, new slot in another database: start over */
			memset(&sh->slots[idx], 0, sizeof(CaptureSlotShared));
			idx = -1;
		}
		if (idx < 0)
		{
			for (int j = 0; j < sh->nslots; j++)
			{
				if (!sh->slots[j].in_use)
				{
					idx = j;
					break;
				}
			}
			if (idx < 0)
				continue;		/* cannot happen: as many entries as slots */
			memset(&sh->slots[idx], 0, sizeof(CaptureSlotShared));
			sh->slots[idx].in_use = true;
			namestrcpy(&sh->slots[idx].slot_name, name);
			sh->slots[idx].dboid = dboid;
		}
		seen[idx] = true;
		e = &sh->slots[idx];

		/*
		 * A live pid means served, even by a worker an earlier launcher
		 * started (our handles die with the launcher that held them).
		 */
		if (e->pid != 0 && e->state == CAPTURE_WAITING && e->latch)
			SetLatch(e->latch); /* its configuration may have arrived */
		if (e->drop_requested || e->pid != 0 || worker_alive(idx))
			continue;
		if (e->last_start != 0 &&
			!TimestampDifferenceExceeds(e->last_start, now, sequin_cdc_restart_delay))
			continue;
		e->last_start = now;
		start_worker(idx, name, dboid);
	}

	/* entries whose slot is gone */
	for (int i = 0; i < sh->nslots; i++)
	{
		if (sh->slots[i].in_use && !seen[i])
		{
			if (worker_alive(i))
				TerminateBackgroundWorker(worker_handles[i]);
			else if (!sh->slots[i].drop_requested)
				memset(&sh->slots[i], 0, sizeof(CaptureSlotShared));
		}
	}
	LWLockRelease(sh->lock);
	LWLockRelease(ReplicationSlotControlLock);
	pfree(seen);
}

void
sequin_cdc_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	worker_handles = MemoryContextAllocZero(TopMemoryContext,
											sizeof(BackgroundWorkerHandle *) *
											SequinCdcShared_state->nslots);

	LWLockAcquire(SequinCdcShared_state->lock, LW_EXCLUSIVE);
	SequinCdcShared_state->launcher_latch = MyLatch;
	SequinCdcShared_state->launcher_pid = MyProcPid;
	LWLockRelease(SequinCdcShared_state->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	pgstat_report_appname("sequin_cdc launcher");
	ereport(LOG, (errmsg("sequin_cdc launcher started")));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		launcher_scan();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(1000, Max(sequin_cdc_restart_delay, 10)),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
