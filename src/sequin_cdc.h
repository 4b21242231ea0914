/*-------------------------------------------------------------------------
 *
 * sequin_cdc.h
 *		Shared declarations: settings, the shared-memory state that the
 *		launcher, the capture workers and the SQL functions meet in, and
 *		the entry points of the worker processes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_H
#define SEQUIN_CDC_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "replication/origin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#define SEQUIN_CDC_PLUGIN		"sequin_cdc"
#define SEQUIN_CDC_ORIGIN_PREFIX "sequin_cdc_"
#define SEQUIN_CDC_ERROR_LEN	512

/* Settings (sequin_cdc.*) */
extern int	sequin_cdc_poll_interval;	/* ms between WAL checks when idle */
extern int	sequin_cdc_batch_changes;	/* changes per write transaction */
extern int	sequin_cdc_batch_delay;	/* ms of decoding before a write */
extern int	sequin_cdc_buffer_memory;	/* kB of rows kept before spilling */
extern int	sequin_cdc_restart_delay;	/* ms before a failed worker restarts */
extern int	sequin_cdc_decoding_work_mem;	/* kB, logical_decoding_work_mem of
											 * capture workers, -1 = server's */

/* What a capture worker is doing, as pg_stat_capture shows it */
typedef enum CaptureState
{
	CAPTURE_STOPPED = 0,
	CAPTURE_STARTING,
	CAPTURE_STREAMING,
	CAPTURE_WAITING,			/* extension or slot configuration missing */
} CaptureState;

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
	RepOriginId origin;
	TimestampTz last_start;
	uint64		changes_captured;
	uint64		transactions_captured;
	uint64		errors;
	XLogRecPtr	last_decoded_lsn;
	XLogRecPtr	confirmed_lsn;
	TimestampTz last_commit_time;
	TimestampTz last_error_time;
	char		last_error[SEQUIN_CDC_ERROR_LEN];
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

extern SequinCdcShared *SequinCdcShared_state;

/* sequin_cdc.c */
extern void sequin_cdc_require_preload(void);
extern int	sequin_cdc_find_slot_entry(const char *slot_name);
extern void sequin_cdc_wake_launcher(void);
extern bool sequin_cdc_is_own_origin(RepOriginId origin);
extern void sequin_cdc_origin_name(const char *slot_name, char *buf, size_t len);
extern int	sequin_cdc_sink_attach(int64 sink_id);
extern void sequin_cdc_sink_detach(int idx);
extern bool sequin_cdc_sink_running(Oid dboid, int64 sink_id);
extern void sequin_cdc_wake_sinks(Oid dboid);

/* launcher.c */
extern void sequin_cdc_register_launcher(void);
extern PGDLLEXPORT void sequin_cdc_launcher_main(Datum arg);

/* capture.c */
extern PGDLLEXPORT void sequin_cdc_capture_main(Datum arg);

#endif							/* SEQUIN_CDC_H */
