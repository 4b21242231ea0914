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
	Jsonb	   *record;			/* NULL: a parked row that could not be
								 * rendered */
	Jsonb	   *changes;		/* NULL when none */
	Jsonb	   *annotations;	/* NULL when none */
	/* a parked change (parked.h): park_stage is not PARK_NONE */
	char		park_stage;
	int64		rule_id;		/* the retention rule it was kept for */
	TransactionId xid;			/* the source transaction */
	int			sqlerrcode;
	const char *error;			/* the error's message */
	int			error_len;
	Jsonb	   *columns;		/* NULL, or each column's text, cut short */
} BufferedChange;

/*
 * The rows of one batch: in memory up to mem_limit, older ones spilled to
 * a temporary file.  Only rows: what the batch covers (its last commit,
 * its transactions) is the capture worker's to track.
 */
typedef struct ChangeBuffer
{
	MemoryContext cxt;
	StringInfoData mem;			/* rows not spilled yet */
	BufFile    *file;			/* rows spilled, older than mem's */
	Size		mem_limit;
	uint64		nrows;
	char	   *readbuf;		/* reused when reading spilled rows */
	Size		readbuf_size;
} ChangeBuffer;

/* Called for each row on replay, in the order the rows were appended */
typedef void (*ChangeBufferCallback) (BufferedChange *change, void *arg);

extern ChangeBuffer *sequin_cdc_buffer_create(MemoryContext parent, Size mem_limit);
extern void sequin_cdc_buffer_append(ChangeBuffer *buf, const BufferedChange *change);
extern void sequin_cdc_buffer_replay(ChangeBuffer *buf, ChangeBufferCallback cb, void *arg);
extern void sequin_cdc_buffer_reset(ChangeBuffer *buf);

#endif							/* SEQUIN_CDC_CHANGE_BUFFER_H */
