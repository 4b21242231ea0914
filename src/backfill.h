/*-------------------------------------------------------------------------
 *
 * backfill.h
 *		Backfills: existing rows into the change stream between WAL
 *		watermarks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_BACKFILL_H
#define SEQUIN_CDC_BACKFILL_H

#include "postgres.h"

/* The watermark messages a backfill writes are in watermark.h. */
extern void sequin_cdc_backfill_end_message(int64 id);
extern bool sequin_cdc_launch_pending_backfills(const char *slot_name);
extern PGDLLEXPORT void sequin_cdc_backfill_main(Datum arg);

#endif							/* SEQUIN_CDC_BACKFILL_H */
