/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		The shared-memory state that the launcher, the capture and sink
 *		workers and the SQL functions meet in: one entry per capture slot,
 *		the registry of running sink workers, and the launcher's latch.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_SHMEM_H
#define SEQUIN_CDC_SHMEM_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "compat.h"

/* Replication origin of a slot's capture worker: this prefix + slot name */
#define SEQUIN_CDC_ORIGIN_PREFIX "sequin_cdc_"
/* Longest error message kept in shared memory or a catalog row */
#define SEQUIN_CDC_ERROR_LEN	512

/* What a capture worker is doing, as pg_stat_capture shows it */
typedef enum CaptureState
{
	CAPTURE_STOPPED = 0,
	CAPTURE_STARTING,
	CAPTURE_STREAMING,
	CAPTURE_WAITING,			/* extension or slot configuration missing */
} CaptureState;

/*
 * How pg_stat_capture names a slot whose last attempt failed and has not
 * succeeded since (CaptureSlotShared.failures > 0), whatever its worker
 * is doing: the launcher is backing off, or a retry runs.
 */
#define SEQUIN_CDC_STATE_ERROR "error"


/*
 * One entry per replication slot that the launcher serves.  The launcher
 * assigns entries; the worker owning an entry updates its counters.  All
 * fields are protected by SequinCdcShared->lock, except the counters the
 * owning worker writes, which readers may see slightly stale.
 */
typedef struct CaptureSlotShared
{
	bool		in_use;
	bool		drop_requested; /* drop_slot() is waiting for the slot */
	NameData	slot_name;
	Oid			dboid;
	pid_t		pid;
	Latch	   *latch;
	CaptureState state;
	ReplOriginId origin;
	TimestampTz last_start;
	uint64		changes_captured;
	uint64		transactions_captured;
	uint64		errors;
	XLogRecPtr	last_decoded_lsn;
	XLogRecPtr	confirmed_lsn;
	TimestampTz last_commit_time;
	TimestampTz last_error_time;
	char		last_error[SEQUIN_CDC_ERROR_LEN];
	bool		retry_parked;	/* retry_parked_changes() was called */
	int			last_sqlstate;	/* of last_error, as in ErrorData */
	int			failures;		/* failed attempts since the last success:
								 * the launcher backs off while > 0 */
	TimestampTz next_start;		/* no worker is started before (0: now) */
} CaptureSlotShared;

/*
 * A running sink worker, so that capture can wake it when it commits rows
 * (sink workers sleep on their latch, they do not poll).
 */
#define SEQUIN_CDC_MAX_SINKS 64

typedef struct SinkShared
{
	bool		in_use;
	Oid			dboid;
	int64		sink_id;
	pid_t		pid;
	Latch	   *latch;
	int			in_flight;		/* changes of the batch being delivered
								 * (0 between deliveries) */
} SinkShared;

typedef struct SequinCdcShared
{
	LWLock	   *lock;
	SinkShared	sinks[SEQUIN_CDC_MAX_SINKS];
	Latch	   *launcher_latch;
	pid_t		launcher_pid;
	int			nslots;
	CaptureSlotShared slots[FLEXIBLE_ARRAY_MEMBER];
} SequinCdcShared;

extern SequinCdcShared *sequin_cdc_shared;

/* Set-up, from _PG_init */
extern void sequin_cdc_shmem_init(void);
extern void sequin_cdc_require_preload(void);

/* Slot entries */
extern int	sequin_cdc_find_slot_entry(const char *slot_name);
extern void sequin_cdc_request_parked_retry(int idx);
extern int	sequin_cdc_request_slot_drop(const char *slot_name);
extern void sequin_cdc_cancel_slot_drop(int idx);
extern void sequin_cdc_release_slot_entry(int idx, const char *slot_name);
extern CaptureSlotShared *sequin_cdc_copy_slot_entries(int *nslots);
extern void sequin_cdc_record_capture_failure(CaptureSlotShared *e, const char *message,
											  int sqlstate, int *failures, int *delay_ms);
extern int	sequin_cdc_record_capture_success(CaptureSlotShared *e);
extern void sequin_cdc_retry_capture_now(Oid dboid, int idx);

/* The launcher */
extern void sequin_cdc_launcher_attach(void);
extern void sequin_cdc_wake_launcher(void);

/* Replication origins of the capture workers */
extern bool sequin_cdc_is_own_origin(ReplOriginId origin);
extern void sequin_cdc_origin_name(const char *slot_name, char *buf, size_t len);

/* Sink registry */
extern int	sequin_cdc_sink_attach(int64 sink_id);
extern void sequin_cdc_sink_detach(int idx);
extern void sequin_cdc_sink_set_in_flight(int idx, int n);
extern bool sequin_cdc_sink_running(Oid dboid, int64 sink_id);
extern bool sequin_cdc_signal_sink(Oid dboid, int64 sink_id, bool stop);
extern void sequin_cdc_copy_sink_entries(SinkShared *copy);
extern void sequin_cdc_wake_sinks(Oid dboid);

#endif							/* SEQUIN_CDC_SHMEM_H */
