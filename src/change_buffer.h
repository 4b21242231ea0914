/*-------------------------------------------------------------------------
 *
 * change_buffer.h
 *		Decoded change rows waiting to be written, in stream order.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_CHANGE_BUFFER_H
#define SEQUIN_CDC_CHANGE_BUFFER_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "storage/buffile.h"
#include "utils/jsonb.h"

/*
 * One change row as the decoder produced it.  Everything but id/seq and
 * inserted_at, which the writer assigns.  Pointers are into buffer memory
 * and valid until the next row is read.
 */
typedef struct BufferedChange
{
	Oid			change_table;
	Oid			source_oid;
	char		action;			/* 'i', 'u', 'd', 't', 'r' */
	TimestampTz committed_at;
	XLogRecPtr	commit_lsn;
	const char *schema_name;
	int			schema_len;
	const char *table_name;
	int			table_len;
	const char *record_pk;
	int			pk_len;
	Jsonb	   *record;
	Jsonb	   *changes;		/* NULL when none */
	Jsonb	   *annotations;	/* NULL when none */
} BufferedChange;

typedef struct ChangeBuffer
{
	MemoryContext cxt;
	StringInfoData mem;			/* rows not spilled yet */
	BufFile    *file;			/* rows spilled, older than mem's */
	Size		mem_limit;
	uint64		nrows;
	uint64		ntxns;			/* committed transactions with rows */
	XLogRecPtr	last_commit_end;	/* end of the last transaction buffered */
	XLogRecPtr	skip_upto;		/* transactions ending here or before are
								 * written already: decode, but keep no rows */
	XLogRecPtr	hold_lsn;		/* an open backfill window started here: do
								 * not confirm the slot past it */
	bool		backfill_seen;	/* a backfill watermark was decoded */
	TimestampTz last_commit_time;
	char	   *readbuf;		/* reused when reading spilled rows */
	Size		readbuf_size;
} ChangeBuffer;

typedef void (*ChangeBufferCallback) (BufferedChange *change, void *arg);

extern ChangeBuffer *change_buffer_create(MemoryContext parent, Size mem_limit);
extern void change_buffer_append(ChangeBuffer *buf, const BufferedChange *change);
extern void change_buffer_replay(ChangeBuffer *buf, ChangeBufferCallback cb, void *arg);
extern void change_buffer_reset(ChangeBuffer *buf);

#endif							/* SEQUIN_CDC_CHANGE_BUFFER_H */
