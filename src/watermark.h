/*-------------------------------------------------------------------------
 *
 * watermark.h
 *		The backfill watermark messages, as the backfill worker writes them
 *		to the WAL and the output plugin reads them, and the padded packing
 *		they share with the change buffer.
 *
 * A backfill chunk travels between two transactional logical messages
 * (pg_logical_emit_message, see backfill.c): the low watermark opens the
 * chunk's window, the high watermark carries its rows.  A third message
 * closes a window whose backfill stopped in between.
 *
 * Packed data (a watermark's rows, a change buffer record) is a sequence of
 * parts, each padded with zero bytes to MAXALIGN, so that a part can be
 * used in place (as a tuple header or a jsonb) once the whole is copied
 * into a palloc'd, hence maxaligned, buffer.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_WATERMARK_H
#define SEQUIN_CDC_WATERMARK_H

#include "postgres.h"

#include "access/htup.h"
#include "lib/stringinfo.h"
#include "storage/itemptr.h"

/* Every watermark message's prefix starts with this */
#define SEQUIN_CDC_BACKFILL_PREFIX	"sequin_cdc:backfill."
#define SEQUIN_CDC_BACKFILL_LOW		SEQUIN_CDC_BACKFILL_PREFIX "low"
#define SEQUIN_CDC_BACKFILL_HIGH	SEQUIN_CDC_BACKFILL_PREFIX "high"
/* a backfill stopped between watermarks; content: its id as text */
#define SEQUIN_CDC_BACKFILL_END		SEQUIN_CDC_BACKFILL_PREFIX "end"

/*
 * Both watermarks start with this header, padded.  The high watermark
 * carries the chunk after it: nrows heap tuples of relid, each a padded
 * uint32 length followed by the padded tuple bytes.
 */
typedef struct BackfillMessage
{
	int64		id;
	Oid			relid;
	Oid			change_table;	/* InvalidOid: every rule of relid */
	int32		nrows;
} BackfillMessage;

/* Is prefix one of the watermark messages? */
static inline bool
sequin_cdc_is_watermark(const char *prefix)
{
	return strncmp(prefix, SEQUIN_CDC_BACKFILL_PREFIX,
				   sizeof(SEQUIN_CDC_BACKFILL_PREFIX) - 1) == 0;
}

/* Bytes a part of len bytes takes packed; a negative len (NULL) takes none. */
static inline Size
sequin_cdc_padded_size(int len)
{
	return len < 0 ? 0 : MAXALIGN(len);
}

/* Append one part, padded with zero bytes to MAXALIGN; none if len <= 0. */
static inline void
sequin_cdc_append_padded(StringInfo s, const void *data, int len)
{
	if (len <= 0)
		return;
	appendBinaryStringInfo(s, data, len);
	while (s->len % MAXIMUM_ALIGNOF != 0)
		appendStringInfoCharMacro(s, '\0');
}

/* Append a chunk row to a high watermark being built. */
static inline void
sequin_cdc_watermark_append_tuple(StringInfo s, HeapTuple tup)
{
	uint32		len = tup->t_len;

	sequin_cdc_append_padded(s, &len, sizeof(len));
	sequin_cdc_append_padded(s, tup->t_data, len);
}

/*
 * Read the chunk row at *p (in a maxaligned copy of the message) into tup,
 * in place, and advance *p past it.
 */
static inline void
sequin_cdc_watermark_read_tuple(char **p, Oid relid, HeapTuple tup)
{
	uint32		len;

	memcpy(&len, *p, sizeof(len));
	*p += sequin_cdc_padded_size(sizeof(len));
	tup->t_len = len;
	tup->t_data = (HeapTupleHeader) *p;
	ItemPointerSetInvalid(&tup->t_self);
	tup->t_tableOid = relid;
	*p += sequin_cdc_padded_size(len);
}

#endif							/* SEQUIN_CDC_WATERMARK_H */
