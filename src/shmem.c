/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		The shared state: one entry per capture slot, the registry of
 *		running sink workers, the launcher's latch, and the replication
 *		origins that mark our own writes.
 *
 * Everything here is sized at server start (one slot entry per
 * max_replication_slots, SEQUIN_CDC_MAX_SINKS sink entries) and protected
 * by one LWLock: it is touched when workers start, stop or are woken, never
 * per change, except sequin_cdc_is_own_origin, which reads without it.
 * The launcher decides which slot gets which entry (launcher.c); the
 * functions here are the small operations the other processes need.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "sequin_cdc.h"
#include "shmem.h"

#define SHMEM_NAME "sequin_cdc"

SequinCdcShared *sequin_cdc_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Bytes of the shared state: the fixed part and one entry per slot. */
static Size
shmem_size(void)
{
	return add_size(offsetof(SequinCdcShared, slots),
					mul_size(max_replication_slots, sizeof(CaptureSlotShared)));
}

/* Ask the postmaster for our memory and our LWLock. */
static void
shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
	RequestNamedLWLockTranche(SHMEM_NAME, 1);
}

/* Create (postmaster) or attach to (EXEC_BACKEND children) the state. */
static void
shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sequin_cdc_shared = ShmemInitStruct(SHMEM_NAME, shmem_size(), &found);
	if (!found)
	{
		memset(sequin_cdc_shared, 0, shmem_size());
		sequin_cdc_shared->lock = &(GetNamedLWLockTranche(SHMEM_NAME))->lock;
		sequin_cdc_shared->nslots = max_replication_slots;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared-memory hooks; _PG_init calls this at preload only. */
void
sequin_cdc_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shmem_startup;
}

/*
 * Every SQL entry point starts here: without the preload there is no shared
 * state and no launcher, and the user needs to know how to fix that.  The
 * state exists exactly when the library was in shared_preload_libraries,
 * since only then are the hooks above installed.
 */
void
sequin_cdc_require_preload(void)
{
	if (sequin_cdc_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequin_cdc must be loaded via shared_preload_libraries"),
				 errhint("Add sequin_cdc to shared_preload_libraries in postgresql.conf, set wal_level = logical, and restart the server.")));
}

/* ----------------------------------------------------------------
 * Slot entries
 * ----------------------------------------------------------------
 */

/* Index of the shared entry for a slot, or -1.  Caller holds the lock. */
int
sequin_cdc_find_slot_entry(const char *slot_name)
{
	for (int i = 0; i < sequin_cdc_shared->nslots; i++)
	{
		CaptureSlotShared *e = &sequin_cdc_shared->slots[i];

		if (e->in_use && strcmp(NameStr(e->slot_name), slot_name) == 0)
			return i;
	}
	return -1;
}

/*
 * retry_parked_changes() committed: tell the capture worker of entry idx
 * to retry its slot's parked changes in its next write transaction.
 */
void
sequin_cdc_request_parked_retry(int idx)
{
	CaptureSlotShared *e;

	if (idx < 0 || idx >= sequin_cdc_shared->nslots)
		return;
	e = &sequin_cdc_shared->slots[idx];
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (e->in_use)
	{
		e->retry_parked = true;
		if (e->latch)
			SetLatch(e->latch);
	}
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * drop_slot() is about to drop a slot: mark its entry so that the launcher
 * starts no worker for it, and wake the worker serving it so that it
 * releases the slot.  Returns the entry's index, or -1 if it has none.
 */
int
sequin_cdc_request_slot_drop(const char *slot_name)
{
	int			idx;

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	idx = sequin_cdc_find_slot_entry(slot_name);
	if (idx >= 0)
	{
		CaptureSlotShared *e = &sequin_cdc_shared->slots[idx];

		e->drop_requested = true;
		if (e->latch)
			SetLatch(e->latch);
	}
	LWLockRelease(sequin_cdc_shared->lock);
	return idx;
}

/* The drop failed: the launcher may serve the slot again. */
void
sequin_cdc_cancel_slot_drop(int idx)
{
	if (idx < 0)
		return;
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	sequin_cdc_shared->slots[idx].drop_requested = false;
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * The slot is dropped: free its entry, unless the launcher has already
 * given the entry to another slot meanwhile.
 */
void
sequin_cdc_release_slot_entry(int idx, const char *slot_name)
{
	if (idx < 0)
		return;
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (strcmp(NameStr(sequin_cdc_shared->slots[idx].slot_name), slot_name) == 0)
		memset(&sequin_cdc_shared->slots[idx], 0, sizeof(CaptureSlotShared));
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * A palloc'd copy of every slot entry (in use or not), taken under the
 * lock so that each entry is consistent; *nslots is set to their number.
 */
CaptureSlotShared *
sequin_cdc_copy_slot_entries(int *nslots)
{
	int			n = sequin_cdc_shared->nslots;
	CaptureSlotShared *copy = palloc(sizeof(CaptureSlotShared) * n);

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	memcpy(copy, sequin_cdc_shared->slots, sizeof(CaptureSlotShared) * n);
	LWLockRelease(sequin_cdc_shared->lock);
	*nslots = n;
	return copy;
}

/*
 * A capture worker's attempt failed: record its error in the worker's own
 * entry e (unless drop_slot has given the entry away meanwhile), count the
 * failure, and set when the launcher may start the next attempt
 * (sequin_cdc_restart_backoff).  *failures and *delay_ms say which attempt
 * this was and how long the launcher will wait.
 */
void
sequin_cdc_record_capture_failure(CaptureSlotShared *e, const char *message,
								  int sqlstate, int *failures, int *delay_ms)
{
	TimestampTz now = GetCurrentTimestamp();

	*failures = 0;
	*delay_ms = 0;
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (e->pid == MyProcPid)
	{
		e->errors++;
		e->failures++;
		e->last_error_time = now;
		e->last_sqlstate = sqlstate;
		strlcpy(e->last_error, message, SEQUIN_CDC_ERROR_LEN);
		*failures = e->failures;
		*delay_ms = sequin_cdc_restart_backoff(e->failures);
		e->next_start = TimestampTzPlusMilliseconds(now, *delay_ms);
	}
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * The worker of entry e made progress: the failures are over, the
 * backoff starts over.  Returns how many attempts had failed in a row.
 * Cheap when nothing failed: only the owning worker writes failures.
 */
int
sequin_cdc_record_capture_success(CaptureSlotShared *e)
{
	int			failures = e->failures;

	if (failures == 0)
		return 0;
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (e->pid == MyProcPid)
	{
		e->failures = 0;
		e->next_start = 0;
	}
	LWLockRelease(sequin_cdc_shared->lock);
	return failures;
}

/*
 * End the backoff of entry idx, if it still serves a slot of database
 * dboid whose worker failed: the launcher starts the next attempt at its
 * next pass.  Runs at commit (workers.c): it must not throw.
 */
void
sequin_cdc_retry_capture_now(Oid dboid, int idx)
{
	CaptureSlotShared *e;

	if (idx < 0 || idx >= sequin_cdc_shared->nslots)
		return;
	e = &sequin_cdc_shared->slots[idx];
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (e->in_use && e->dboid == dboid && e->failures > 0)
	{
		e->next_start = 0;
		e->last_start = 0;
	}
	LWLockRelease(sequin_cdc_shared->lock);
}

/* ----------------------------------------------------------------
 * The launcher
 * ----------------------------------------------------------------
 */

/* At launcher exit: nobody is left to wake. */
static void
shmem_launcher_detach(int code, Datum arg)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	sequin_cdc_shared->launcher_latch = NULL;
	sequin_cdc_shared->launcher_pid = 0;
	LWLockRelease(sequin_cdc_shared->lock);
}

/* Publish this process's latch as the launcher's, until it exits. */
void
sequin_cdc_launcher_attach(void)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	sequin_cdc_shared->launcher_latch = MyLatch;
	sequin_cdc_shared->launcher_pid = MyProcPid;
	LWLockRelease(sequin_cdc_shared->lock);
	before_shmem_exit(shmem_launcher_detach, (Datum) 0);
}

/* Make the launcher scan the slots now rather than at its next timeout. */
void
sequin_cdc_wake_launcher(void)
{
	Latch	   *latch;

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	latch = sequin_cdc_shared->launcher_latch;
	LWLockRelease(sequin_cdc_shared->lock);
	if (latch)
		SetLatch(latch);
}

/* ----------------------------------------------------------------
 * Replication origins
 * ----------------------------------------------------------------
 */

/*
 * Does a change come from one of our own capture workers?  Their writes
 * (change rows) carry the worker's replication origin; dropping them at
 * decode time keeps them out of every slot's reorder buffer.  Called for
 * every decoded record, so it reads without the lock: an origin id is a
 * single aligned 16-bit store.
 */
bool
sequin_cdc_is_own_origin(ReplOriginId origin)
{
	if (origin == InvalidReplOriginId || sequin_cdc_shared == NULL)
		return false;
	for (int i = 0; i < sequin_cdc_shared->nslots; i++)
	{
		if (sequin_cdc_shared->slots[i].origin == origin)
			return true;
	}
	return false;
}

/* The name of the replication origin of a slot's capture worker. */
void
sequin_cdc_origin_name(const char *slot_name, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", SEQUIN_CDC_ORIGIN_PREFIX, slot_name);
}

/* ----------------------------------------------------------------
 * Sink registry
 * ----------------------------------------------------------------
 */

/* At sink worker exit: give up its registry entry. */
static void
shmem_sink_detach_cb(int code, Datum arg)
{
	sequin_cdc_sink_detach(DatumGetInt32(arg));
}

/*
 * Register this process as the worker of a sink; -1 when another live
 * worker has it or the table is full.  Detached at process exit.
 */
int
sequin_cdc_sink_attach(int64 sink_id)
{
	int			idx = -1;

	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &sequin_cdc_shared->sinks[i];

		if (s->in_use && s->dboid == MyDatabaseId && s->sink_id == sink_id)
		{
			LWLockRelease(sequin_cdc_shared->lock);
			return -1;
		}
		if (!s->in_use && idx < 0)
			idx = i;
	}
	if (idx >= 0)
	{
		SinkShared *s = &sequin_cdc_shared->sinks[idx];

		s->in_use = true;
		s->dboid = MyDatabaseId;
		s->sink_id = sink_id;
		s->pid = MyProcPid;
		s->latch = MyLatch;
	}
	LWLockRelease(sequin_cdc_shared->lock);
	if (idx >= 0)
		before_shmem_exit(shmem_sink_detach_cb, Int32GetDatum(idx));
	return idx;
}

/* Free entry idx of the registry, if this process still holds it. */
void
sequin_cdc_sink_detach(int idx)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (sequin_cdc_shared->sinks[idx].pid == MyProcPid)
		memset(&sequin_cdc_shared->sinks[idx], 0, sizeof(SinkShared));
	LWLockRelease(sequin_cdc_shared->lock);
}

/*
 * Publish how many changes the batch being delivered holds (0 when the
 * delivery is over), for pg_stat_sinks.in_flight.
 */
void
sequin_cdc_sink_set_in_flight(int idx, int n)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_EXCLUSIVE);
	if (sequin_cdc_shared->sinks[idx].pid == MyProcPid)
		sequin_cdc_shared->sinks[idx].in_flight = n;
	LWLockRelease(sequin_cdc_shared->lock);
}

/* Does a worker run for this sink of that database? */
bool
sequin_cdc_sink_running(Oid dboid, int64 sink_id)
{
	bool		running = false;

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &sequin_cdc_shared->sinks[i];

		if (s->in_use && s->dboid == dboid && s->sink_id == sink_id)
			running = true;
	}
	LWLockRelease(sequin_cdc_shared->lock);
	return running;
}

/*
 * Stop the worker of a sink (SIGTERM), or wake it (its latch); false if
 * none runs.  Never throws: it runs at commit (workers.c).
 */
bool
sequin_cdc_signal_sink(Oid dboid, int64 sink_id, bool stop)
{
	pid_t		pid = 0;

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &sequin_cdc_shared->sinks[i];

		if (s->in_use && s->dboid == dboid && s->sink_id == sink_id)
		{
			pid = s->pid;
			if (!stop && s->latch)
				SetLatch(s->latch);
		}
	}
	LWLockRelease(sequin_cdc_shared->lock);
	if (pid != 0 && stop)
		(void) kill(pid, SIGTERM);
	return pid != 0;
}

/*
 * Copy the sink registry (all SEQUIN_CDC_MAX_SINKS entries, in use or not)
 * into copy, under the lock, for the list of running sink workers.
 */
void
sequin_cdc_copy_sink_entries(SinkShared *copy)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	memcpy(copy, sequin_cdc_shared->sinks,
		   sizeof(SinkShared) * SEQUIN_CDC_MAX_SINKS);
	LWLockRelease(sequin_cdc_shared->lock);
}

/* Wake the sink workers of a database: capture just committed rows. */
void
sequin_cdc_wake_sinks(Oid dboid)
{
	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &sequin_cdc_shared->sinks[i];

		if (s->in_use && s->dboid == dboid && s->latch)
			SetLatch(s->latch);
	}
	LWLockRelease(sequin_cdc_shared->lock);
}
