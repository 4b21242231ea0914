/*-------------------------------------------------------------------------
 *
 * sequin_cdc.c
 *		Module load: the settings, and what must be set up at server start.
 *
 * The library must be in shared_preload_libraries: the launcher and the
 * capture workers are background workers, and the shared state they share
 * with the SQL functions (shmem.c) is sized at server start.  The same
 * library is also the logical decoding output plugin of the slots it
 * creates (see output_plugin.c), which is why loading it late is refused with a
 * hint (sequin_cdc_require_preload) instead of half-working.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "ddl_guard.h"
#include "sequin_cdc.h"
#include "workers.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			sequin_cdc_poll_interval = 50;
int			sequin_cdc_batch_changes = 20000;
int			sequin_cdc_batch_delay = 200;
int			sequin_cdc_buffer_memory = 8192;
int			sequin_cdc_restart_delay = 1000;
int			sequin_cdc_restart_delay_max = 300000;
int			sequin_cdc_decoding_work_mem = 32768;
static int	sequin_cdc_max_lag = 1024 * 1024;

/*
 * Define the settings, install the shared-memory hooks and the DDL guard
 * (ddl_guard.c), and register the launcher.  Loaded any other way (CREATE EXTENSION or a function call in
 * a server started without the library) it does nothing: every SQL entry
 * point then says how to fix it.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

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
							"After each further failure in a row the wait doubles, up to sequin_cdc.restart_delay_max.",
							&sequin_cdc_restart_delay, 1000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.restart_delay_max",
							"Longest time the launcher waits before restarting a capture worker that keeps failing.",
							"The wait starts at sequin_cdc.restart_delay and starts over once the worker makes progress.",
							&sequin_cdc_restart_delay_max, 300000, 0, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("sequin_cdc.max_lag",
							"Slot lag above which health() reports a problem.",
							NULL, &sequin_cdc_max_lag, 1024 * 1024, 1, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	MarkGUCPrefixReserved("sequin_cdc");

	sequin_cdc_shmem_init();
	sequin_cdc_ddl_guard_init();
	(void) sequin_cdc_start_worker(SEQUIN_WORKER_LAUNCHER, 0, InvalidOid, NULL, NULL);
}
