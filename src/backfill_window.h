/*-------------------------------------------------------------------------
 *
 * backfill_window.h
 *		The open backfill windows of a decoding session and the keys that
 *		changed inside them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_BACKFILL_WINDOW_H
#define SEQUIN_CDC_BACKFILL_WINDOW_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "utils/hsearch.h"

/*
 * A backfill window: from a chunk's low watermark to its high watermark,
 * the keys of the table that changed.  Keys are hashed, with the key text
 * kept for an exact comparison.
 */
typedef struct BackfillWindow
{
	int64		id;				/* the backfill's */
	Oid			relid;			/* the table read (the rule source) */
	XLogRecPtr	low_lsn;		/* commit of the low watermark */
	bool		truncated;		/* the table was truncated in the window */
	MemoryContext cxt;
	HTAB	   *keys;			/* uint64 hash -> key texts */
} BackfillWindow;

typedef struct BackfillWindowSet BackfillWindowSet;

extern BackfillWindowSet *sequin_cdc_windows_create(MemoryContext parent);
extern bool sequin_cdc_windows_open(BackfillWindowSet *set, int64 id, Oid relid,
									XLogRecPtr low_lsn);
extern BackfillWindow *sequin_cdc_windows_find(BackfillWindowSet *set, int64 id);
extern void sequin_cdc_windows_close(BackfillWindowSet *set, BackfillWindow *w);
extern XLogRecPtr sequin_cdc_windows_oldest(BackfillWindowSet *set);
extern bool sequin_cdc_windows_on(BackfillWindowSet *set, Oid relid);
extern void sequin_cdc_windows_note_key(BackfillWindowSet *set, Oid relid,
										const char *key, int len);
extern void sequin_cdc_windows_note_truncate(BackfillWindowSet *set, Oid relid);
extern bool sequin_cdc_window_has_key(BackfillWindow *w, const char *key, int len);

#endif							/* SEQUIN_CDC_BACKFILL_WINDOW_H */
