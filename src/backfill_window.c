/*-------------------------------------------------------------------------
 *
 * backfill_window.c
 *		The set of open backfill windows of a decoding session: which keys
 *		of a backfilled table changed between a chunk's watermarks.
 *
 * The output plugin opens a window at a chunk's low watermark, notes the
 * key of every change of the table while it is open, and at the high
 * watermark drops the chunk rows whose key it noted (their change rows are
 * newer than the chunk) before closing it.  See backfill.c for the
 * algorithm (DBLog's watermarks) and watermark.h for the messages.  This
 * file only keeps the set; it knows nothing of rows or the buffer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "backfill_window.h"

struct BackfillWindowSet
{
	MemoryContext cxt;			/* the list; each window has its own */
	List	   *windows;		/* BackfillWindow *, open ones */
};

/* An entry of a window's keys: the key texts that have this hash */
typedef struct WindowKey
{
	uint64		hash;
	List	   *texts;
} WindowKey;

/* An empty set under parent. */
BackfillWindowSet *
sequin_cdc_windows_create(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "sequin_cdc backfill windows",
											  ALLOCSET_SMALL_SIZES);
	BackfillWindowSet *set = MemoryContextAllocZero(cxt, sizeof(BackfillWindowSet));

	set->cxt = cxt;
	return set;
}

/* The open window of backfill id, or NULL. */
BackfillWindow *
sequin_cdc_windows_find(BackfillWindowSet *set, int64 id)
{
	ListCell   *lc;

	foreach(lc, set->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (w->id == id)
			return w;
	}
	return NULL;
}

/*
 * Open the window of backfill id on relid, at low_lsn.  Returns false if
 * it is open already (a low watermark decoded again).
 */
bool
sequin_cdc_windows_open(BackfillWindowSet *set, int64 id, Oid relid,
						XLogRecPtr low_lsn)
{
	BackfillWindow *w;
	MemoryContext cxt;
	MemoryContext old;
	HASHCTL		hctl;

	if (sequin_cdc_windows_find(set, id))
		return false;
	cxt = AllocSetContextCreate(set->cxt, "sequin_cdc backfill window",
								ALLOCSET_SMALL_SIZES);
	w = MemoryContextAllocZero(cxt, sizeof(BackfillWindow));
	w->id = id;
	w->relid = relid;
	w->low_lsn = low_lsn;
	w->cxt = cxt;
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(uint64);
	hctl.entrysize = sizeof(WindowKey);
	hctl.hcxt = cxt;
	w->keys = hash_create("sequin_cdc backfill window keys", 256, &hctl,
						  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	old = MemoryContextSwitchTo(set->cxt);
	set->windows = lappend(set->windows, w);
	MemoryContextSwitchTo(old);
	return true;
}

/* Close window w and forget its keys. */
void
sequin_cdc_windows_close(BackfillWindowSet *set, BackfillWindow *w)
{
	MemoryContext old = MemoryContextSwitchTo(set->cxt);

	set->windows = list_delete_ptr(set->windows, w);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(w->cxt);
}

/*
 * Where the oldest open window starts, InvalidXLogRecPtr if none: the
 * slot must not be confirmed past it, so that a restart decodes the
 * window's changes again.
 */
XLogRecPtr
sequin_cdc_windows_oldest(BackfillWindowSet *set)
{
	XLogRecPtr	oldest = InvalidXLogRecPtr;
	ListCell   *lc;

	foreach(lc, set->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (XLogRecPtrIsInvalid(oldest) || w->low_lsn < oldest)
			oldest = w->low_lsn;
	}
	return oldest;
}

/* Is a window open on relid? */
bool
sequin_cdc_windows_on(BackfillWindowSet *set, Oid relid)
{
	ListCell   *lc;

	foreach(lc, set->windows)
	{
		if (((BackfillWindow *) lfirst(lc))->relid == relid)
			return true;
	}
	return false;
}

/*
 * Did key (len bytes) change in window w?  With add, it is noted as
 * changed (and false returned if it was not yet).
 */
static bool
windows_lookup_key(BackfillWindow *w, const char *key, int len, bool add)
{
	uint64		h = hash_bytes_extended((const unsigned char *) key, len, 0);
	bool		found;
	WindowKey  *wk;
	ListCell   *lc;

	wk = hash_search(w->keys, &h, add ? HASH_ENTER : HASH_FIND, &found);
	if (wk == NULL)
		return false;
	if (!found)
		wk->texts = NIL;
	foreach(lc, wk->texts)
	{
		if (strcmp(lfirst(lc), key) == 0)
			return true;
	}
	if (add)
	{
		MemoryContext old = MemoryContextSwitchTo(w->cxt);

		wk->texts = lappend(wk->texts, pnstrdup(key, len));
		MemoryContextSwitchTo(old);
	}
	return false;
}

/* Did key change in window w? */
bool
sequin_cdc_window_has_key(BackfillWindow *w, const char *key, int len)
{
	return windows_lookup_key(w, key, len, false);
}

/* Note a changed key of relid in every window open on it. */
void
sequin_cdc_windows_note_key(BackfillWindowSet *set, Oid relid,
							const char *key, int len)
{
	ListCell   *lc;

	foreach(lc, set->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (w->relid == relid)
			(void) windows_lookup_key(w, key, len, true);
	}
}

/* Note that relid was truncated, in every window open on it. */
void
sequin_cdc_windows_note_truncate(BackfillWindowSet *set, Oid relid)
{
	ListCell   *lc;

	foreach(lc, set->windows)
	{
		BackfillWindow *w = lfirst(lc);

		if (w->relid == relid)
			w->truncated = true;
	}
}
