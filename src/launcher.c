/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: keeps one capture worker running per sequin_cdc slot.
 *
 * The launcher needs no database connection.  Replication slots live in
 * shared memory, so it reads them directly: every logical slot whose output
 * plugin is sequin_cdc gets a capture worker in the slot's database.  A
 * worker that exits is restarted after sequin_cdc.restart_delay; one that
 * failed (it records its error in its entry, capture.c) after a backoff
 * that doubles with each failure in a row, up to
 * sequin_cdc.restart_delay_max, and starts over once a worker makes
 * progress; restart_capture() (at commit) cuts it short.  A slot that
 * disappears frees its entry; a slot being dropped by drop_slot() is left
 * alone.  Crashes of any process restart the whole server, and this
 * launcher (a static worker) with it, which restarts every capture worker.
 *
 * The launcher sleeps on its latch; create_slot() (at commit) and worker
 * exits (through bgw_notify_pid) wake it, and a one-second timeout catches
 * the rest.  It starts workers with sequin_cdc_start_worker (workers.c) and
 * keeps their handles; the slot entries themselves are in shmem.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/slot.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "sequin_cdc.h"
#include "workers.h"

/*
 * How long to wait before the next attempt of a slot whose last `failures`
 * attempts failed in a row: restart_delay, doubled after each further
 * failure, at most restart_delay_max (but never less than restart_delay).
 * Called by a failing worker (shmem.c) with its entry locked: no throw.
 */
int
sequin_cdc_restart_backoff(int failures)
{
	int64		delay = sequin_cdc_restart_delay;
	int64		cap = Max(sequin_cdc_restart_delay_max, sequin_cdc_restart_delay);

	/* from 1 ms when restart_delay is 0: a worker that keeps failing backs off */
	for (int i = 1; i < failures && delay < cap; i++)
		delay = Max(delay, 1) * 2;
	return (int) Min(delay, cap);
}

/* Launcher-local: the handle of the worker serving each shared entry */
static BackgroundWorkerHandle **launcher_handles = NULL;

/* Does the worker this launcher started for entry idx still run? */
static bool
launcher_worker_alive(int idx)
{
	pid_t		pid;

	if (launcher_handles[idx] == NULL)
		return false;
	return GetBackgroundWorkerPid(launcher_handles[idx], &pid) != BGWH_STOPPED;
}

/* Start the capture worker of entry idx, keeping its handle. */
static void
launcher_start_capture(int idx, const char *slot_name, Oid dboid)
{
	if (launcher_handles[idx])
		pfree(launcher_handles[idx]);
	launcher_handles[idx] = NULL;
	(void) sequin_cdc_start_worker(SEQUIN_WORKER_CAPTURE, idx, dboid, slot_name,
								   &launcher_handles[idx]);
}

/*
 * The shared entry of slot "name" of database dboid, assigned now if it
 * has none yet; -1 if every entry is taken.  Caller holds the lock.
 */
static int
launcher_entry_for(const char *name, Oid dboid)
{
	SequinCdcShared *sh = sequin_cdc_shared;
	int			idx = sequin_cdc_find_slot_entry(name);

	if (idx >= 0 && sh->slots[idx].dboid != dboid)
	{
		/* same name, new slot in another database: start over */
		memset(&sh->slots[idx], 0, sizeof(CaptureSlotShared));
		idx = -1;
	}
	if (idx >= 0)
		return idx;
	for (int j = 0; j < sh->nslots; j++)
	{
		if (!sh->slots[j].in_use)
		{
			memset(&sh->slots[j], 0, sizeof(CaptureSlotShared));
			sh->slots[j].in_use = true;
			namestrcpy(&sh->slots[j].slot_name, name);
			sh->slots[j].dboid = dboid;
			return j;
		}
	}
	return -1;
}

/*
 * One pass: match the sequin_cdc slots in shared memory with worker
 * entries, start what is missing (at most once per restart_delay per
 * slot, and not before the backoff of a failing one ends), forget what is
 * gone.
 */
static void
launcher_scan(void)
{
	SequinCdcShared *sh = sequin_cdc_shared;
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
		if (sequin_cdc_slot_is_invalidated(s))
			continue;
		strlcpy(name, NameStr(s->data.name), NAMEDATALEN);
		dboid = s->data.database;

		idx = launcher_entry_for(name, dboid);
		if (idx < 0)
			continue;			/* cannot happen: as many entries as slots */
		seen[idx] = true;
		e = &sh->slots[idx];

		/*
		 * A live pid means served, even by a worker an earlier launcher
		 * started (our handles die with the launcher that held them).
		 */
		if (e->pid != 0 && e->state == CAPTURE_WAITING && e->latch)
			SetLatch(e->latch); /* its configuration may have arrived */
		if (e->drop_requested || e->pid != 0 || launcher_worker_alive(idx))
			continue;
		if (e->last_start != 0 &&
			!TimestampDifferenceExceeds(e->last_start, now, sequin_cdc_restart_delay))
			continue;
		if (e->failures > 0 && now < e->next_start)
			continue;			/* backing off */
		e->last_start = now;
		launcher_start_capture(idx, name, dboid);
	}

	/* entries whose slot is gone */
	for (int i = 0; i < sh->nslots; i++)
	{
		if (sh->slots[i].in_use && !seen[i])
		{
			if (launcher_worker_alive(i))
				TerminateBackgroundWorker(launcher_handles[i]);
			else if (!sh->slots[i].drop_requested)
				memset(&sh->slots[i], 0, sizeof(CaptureSlotShared));
		}
	}
	LWLockRelease(sh->lock);
	LWLockRelease(ReplicationSlotControlLock);
	pfree(seen);
}

/*
 * The launcher's main loop: scan, then sleep until woken or a second has
 * passed (less when restart_delay is shorter).
 */
void
sequin_cdc_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	launcher_handles = MemoryContextAllocZero(TopMemoryContext,
											  sizeof(BackgroundWorkerHandle *) *
											  sequin_cdc_shared->nslots);
	sequin_cdc_launcher_attach();

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
