/*-------------------------------------------------------------------------
 *
 * sequin_cdc.h
 *		What every part of sequin_cdc shares: the settings, the output
 *		plugin's name, the shared state (shmem.h) and the entry points of
 *		the worker processes.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_H
#define SEQUIN_CDC_H

#include "postgres.h"

#include "shmem.h"

#define SEQUIN_CDC_PLUGIN		"sequin_cdc"

/* Settings (sequin_cdc.*), defined in sequin_cdc.c */
extern int	sequin_cdc_poll_interval;	/* ms between WAL checks when idle */
extern int	sequin_cdc_batch_changes;	/* changes per write transaction */
extern int	sequin_cdc_batch_delay;	/* ms of decoding before a write */
extern int	sequin_cdc_buffer_memory;	/* kB of rows kept before spilling */
extern int	sequin_cdc_restart_delay;	/* ms before a failed worker restarts */
extern int	sequin_cdc_restart_delay_max;	/* ms, the longest backoff */
extern int	sequin_cdc_decoding_work_mem;	/* kB, logical_decoding_work_mem of
											 * capture workers, -1 = server's */

/* launcher.c */
extern PGDLLEXPORT void sequin_cdc_launcher_main(Datum arg);
extern int	sequin_cdc_restart_backoff(int failures);

/* capture.c */
extern PGDLLEXPORT void sequin_cdc_capture_main(Datum arg);

#endif							/* SEQUIN_CDC_H */
