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

/* Transactional logical messages written by a backfill worker */
#define SEQUIN_CDC_BACKFILL_LOW		"sequin_cdc:backfill.low"
#define SEQUIN_CDC_BACKFILL_HIGH	"sequin_cdc:backfill.high"
/* a backfill stopped between watermarks; content: its id as text */
#define SEQUIN_CDC_BACKFILL_END		"sequin_cdc:backfill.end"

/*
 * Both watermarks start with this header.  The high watermark carries the
 * chunk: nrows heap tuples of relid, each as a uint32 length followed by
 * the tuple bytes, both padded to MAXALIGN.
 */
typedef struct BackfillMessage
{
	int64		id;
	Oid			relid;
	Oid			change_table;	/* InvalidOid: every rule of relid */
	int32		nrows;
} BackfillMessage;

extern void sequin_cdc_backfill_end_message(int64 id);
extern bool sequin_cdc_launch_pending_backfills(const char *slot_name);
extern PGDLLEXPORT void sequin_cdc_backfill_main(Datum arg);

#endif							/* SEQUIN_CDC_BACKFILL_H */
