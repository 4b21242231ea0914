/*-------------------------------------------------------------------------
 *
 * sequin_cdc.c
 *		Module load: settings, shared memory, and the launcher registration.
 *
 * The library must be in shared_preload_libraries: the launcher and the
 * capture workers are background workers, and the shared state they share
 * with the SQL functions is sized at server start.  The same library is
 * also the logical decoding output plugin of the slots it creates (see
 * decode.c), which is why loading it late is refused with a hint instead
 * of half-working.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "sequin_cdc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			sequin_cdc_poll_interval = 50;
int			sequin_cdc_batch_changes = 20000;
int			sequin_cdc_batch_delay = 200;
int			sequin_cdc_buffer_memory = 8192;
int			sequin_cdc_restart_delay = 1000;
int			sequin_cdc_decoding_work_mem = 32768;
static int	sequin_cdc_max_lag = 1024 * 1024;

SequinCdcShared *SequinCdcShared_state = NULL;

static bool loaded_at_startup = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
shared_size(void)
{
	return add_size(offsetof(SequinCdcShared, slots),
					mul_size(max_replication_slots, sizeof(CaptureSlotShared)));
}

static void
sequin_cdc_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("sequin_cdc", 1);
}

static void
sequin_cdc_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	SequinCdcShared_state = ShmemInitStruct("sequin_cdc", shared_size(), &found);
	if (!found)
	{
		memset(SequinCdcShared_state, 0, shared_size());
		SequinCdcShared_state->lock = &(GetNamedLWLockTranche("sequin_cdc"))->lock;
		SequinCdcShared_state->nslots = max_replication_slots;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
	{
		/*
		 * Loaded by CREATE EXTENSION or a function call in a server that was
		 * not started with the library: nothing can work, say so.
		 */
		return;
	}
	loaded_at_startup = true;

	DefineCustomIntVariable("sequin_cdc.poll_interval",
							"Time between checks for new WAL when a capture worker is idle.",
							NULL, &sequin_cdc_poll_interval, 50, 1, 10000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.batch_changes",
							"Most change rows a capture worker writes in one transaction, counted at transaction boundaries.",
							NULL, &sequin_cdc_batch_changes, 20000, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.batch_delay",
							"Longest time a capture worker decodes before it writes what it has.",
							NULL, &sequin_cdc_batch_delay, 200, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.buffer_memory",
							"Memory a capture worker uses for decoded rows before it spills them to a temporary file.",
							NULL, &sequin_cdc_buffer_memory, 8192, 64, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.decoding_work_mem",
							"Upper limit on logical_decoding_work_mem for capture workers; -1 means no limit of its own.",
							"Transactions whose decoded changes pass it spill to disk.  Takes effect when a worker starts.",
							&sequin_cdc_decoding_work_mem, 32768, -1, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.restart_delay",
							"Time the launcher waits before restarting a capture worker that stopped on an error.",
							NULL, &sequin_cdc_restart_delay, 1000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.max_lag",
							"Slot lag above which health() reports a problem.",
							NULL, &sequin_cdc_max_lag, 1024 * 1024, 1, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	MarkGUCPrefixReserved("sequin_cdc");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = sequin_cdc_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = sequin_cdc_shmem_startup;

	sequin_cdc_register_launcher();
}

/*
 * Every SQL entry point starts here: without the preload there is no shared
 * state and no launcher, and the user needs to know how to fix that.
 */
void
sequin_cdc_require_preload(void)
{
	if (!loaded_at_startup || SequinCdcShared_state == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sequin_cdc must be loaded via shared_preload_libraries"),
				 errhint("Add sequin_cdc to shared_preload_libraries in postgresql.conf, set wal_level = logical, and restart the server.")));
}

/* Index of the shared entry for a slot, or -1.  Caller holds the lock. */
int
sequin_cdc_find_slot_entry(const char *slot_name)
{
	for (int i = 0; i < SequinCdcShared_state->nslots; i++)
	{
		CaptureSlotShared *e = &SequinCdcShared_state->slots[i];

		if (e->in_use && strcmp(NameStr(e->slot_name), slot_name) == 0)
			return i;
	}
	return -1;
}

void
sequin_cdc_wake_launcher(void)
{
	Latch	   *latch;

	LWLockAcquire(SequinCdcShared_state->lock, LW_SHARED);
	latch = SequinCdcShared_state->launcher_latch;
	LWLockRelease(SequinCdcShared_state->lock);
	if (latch)
		SetLatch(latch);
}

/*
 * Does a change come from one of our own capture workers?  Their writes
 * (change rows) carry the worker's replication origin; dropping them at
 * decode time keeps them out of every slot's reorder buffer.  Called for
 * every decoded record, so it reads without the lock: an origin id is a
 * single aligned 16-bit store.
 */
bool
sequin_cdc_is_own_origin(RepOriginId origin)
{
	if (origin == InvalidRepOriginId || SequinCdcShared_state == NULL)
		return false;
	for (int i = 0; i < SequinCdcShared_state->nslots; i++)
	{
		if (SequinCdcShared_state->slots[i].origin == origin)
			return true;
	}
	return false;
}

void
sequin_cdc_origin_name(const char *slot_name, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s", SEQUIN_CDC_ORIGIN_PREFIX, slot_name);
}

/*
 * Register this process as the worker of a sink; -1 when another live
 * worker has it or the table is full.  Detached at process exit.
 */
static void
sink_detach_cb(int code, Datum arg)
{
	sequin_cdc_sink_detach(DatumGetInt32(arg));
}

int
sequin_cdc_sink_attach(int64 sink_id)
{
	int			idx = -1;

	LWLockAcquire(SequinCdcShared_state->lock, LW_EXCLUSIVE);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &SequinCdcShared_state->sinks[i];

		if (s->in_use && s->dboid == MyDatabaseId && s->sink_id == sink_id)
		{
			LWLockRelease(SequinCdcShared_state->lock);
			return -1;
		}
		if (!s->in_use && idx < 0)
			idx = i;
	}
	if (idx >= 0)
	{
		SinkShared *s = &SequinCdcShared_state->sinks[idx];

		s->in_use = true;
		s->dboid = MyDatabaseId;
		s->sink_id = sink_id;
		s->pid = MyProcPid;
		s->latch = MyLatch;
	}
	LWLockRelease(SequinCdcShared_state->lock);
	if (idx >= 0)
		before_shmem_exit(sink_detach_cb, Int32GetDatum(idx));
	return idx;
}

void
sequin_cdc_sink_detach(int idx)
{
	LWLockAcquire(SequinCdcShared_state->lock, LW_EXCLUSIVE);
	if (SequinCdcShared_state->sinks[idx].pid == MyProcPid)
		memset(&SequinCdcShared_state->sinks[idx], 0, sizeof(SinkShared));
	LWLockRelease(SequinCdcShared_state->lock);
}

bool
sequin_cdc_sink_running(Oid dboid, int64 sink_id)
{
	bool		running = false;

	LWLockAcquire(SequinCdcShared_state->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &SequinCdcShared_state->sinks[i];

		if (s->in_use && s->dboid == dboid && s->sink_id == sink_id)
			running = true;
	}
	LWLockRelease(SequinCdcShared_state->lock);
	return running;
}

/* Wake the sink workers of a database: capture just committed rows. */
void
sequin_cdc_wake_sinks(Oid dboid)
{
	LWLockAcquire(SequinCdcShared_state->lock, LW_SHARED);
	for (int i = 0; i < SEQUIN_CDC_MAX_SINKS; i++)
	{
		SinkShared *s = &SequinCdcShared_state->sinks[i];

		if (s->in_use && s->dboid == dboid && s->latch)
			SetLatch(s->latch);
	}
	LWLockRelease(SequinCdcShared_state->lock);
}
