/*-------------------------------------------------------------------------
 *
 * change_buffer.c
 *		Holds decoded change rows between decoding and writing.
 *
 * Output-plugin callbacks cannot write tables, so the rows the decoder
 * builds wait here until the capture worker writes them in its own
 * transaction.  Rows are appended as flat records; when the in-memory part
 * passes sequin_cdc.buffer_memory it is moved to a temporary file, so a
 * transaction of any size is held with bounded memory.  Replay returns the
 * rows in the order they were appended: the file first, then memory.
 *
 * A record is a fixed header followed by its variable parts, each padded to
 * MAXALIGN (watermark.h's packing) so that the jsonb values can be used in
 * place after a read into a palloc'd (maxaligned) buffer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/buffile.h"
#include "utils/memutils.h"

#include "change_buffer.h"
#include "watermark.h"

typedef struct RecordHeader
{
	uint32		total_len;		/* whole record, header included */
	Oid			change_table;
	Oid			source_oid;
	char		action;
	int32		schema_len;
	int32		table_len;
	int32		pk_len;
	int32		record_len;
	int32		changes_len;	/* -1 = NULL */
	int32		annotations_len;	/* -1 = NULL */
	TimestampTz committed_at;
	XLogRecPtr	commit_lsn;
	/* a parked change's (see BufferedChange) */
	char		park_stage;
	int64		rule_id;
	TransactionId xid;
	int32		sqlerrcode;
	int32		error_len;
	int32		columns_len;	/* -1 = NULL */
} RecordHeader;

/* A buffer under parent that spills beyond mem_limit bytes of rows. */
ChangeBuffer *
sequin_cdc_buffer_create(MemoryContext parent, Size mem_limit)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "sequin_cdc change buffer",
											  ALLOCSET_DEFAULT_SIZES);
	ChangeBuffer *buf = MemoryContextAllocZero(cxt, sizeof(ChangeBuffer));

	buf->cxt = cxt;
	buf->mem_limit = mem_limit;
	buf->readbuf_size = 8192;
	buf->readbuf = MemoryContextAlloc(cxt, buf->readbuf_size);
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		initStringInfo(&buf->mem);
		MemoryContextSwitchTo(old);
	}
	return buf;
}

/* Move the in-memory rows to the spill file. */
static void
spill(ChangeBuffer *buf)
{
	if (buf->file == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(buf->cxt);

		/*
		 * interXact: the decoder appends from inside the reorder buffer's
		 * transaction, which is aborted after every decoded transaction.
		 * The file must outlive it; it is deleted at process exit at the
		 * latest.
		 */
		buf->file = BufFileCreateTemp(true);
		MemoryContextSwitchTo(old);
	}
	BufFileWrite(buf->file, buf->mem.data, buf->mem.len);
	resetStringInfo(&buf->mem);
}

/*
 * Append one row (copied), spilling the rows in memory first when it would
 * take them past the limit.
 */
void
sequin_cdc_buffer_append(ChangeBuffer *buf, const BufferedChange *c)
{
	RecordHeader h;
	StringInfo	s = &buf->mem;
	int			start;

	memset(&h, 0, sizeof(h));	/* no stray padding bytes in spill files */
	h.change_table = c->change_table;
	h.source_oid = c->source_oid;
	h.action = c->action;
	h.schema_len = c->schema_len;
	h.table_len = c->table_len;
	h.pk_len = c->pk_len;
	h.record_len = c->record ? (int32) VARSIZE(c->record) : -1;
	h.changes_len = c->changes ? (int32) VARSIZE(c->changes) : -1;
	h.annotations_len = c->annotations ? (int32) VARSIZE(c->annotations) : -1;
	h.committed_at = c->committed_at;
	h.commit_lsn = c->commit_lsn;
	h.park_stage = c->park_stage;
	h.rule_id = c->rule_id;
	h.xid = c->xid;
	h.sqlerrcode = c->sqlerrcode;
	h.error_len = c->park_stage ? c->error_len : 0;
	h.columns_len = c->columns ? (int32) VARSIZE(c->columns) : -1;
	h.total_len = MAXALIGN(sizeof(RecordHeader)) +
		sequin_cdc_padded_size(h.schema_len) + sequin_cdc_padded_size(h.table_len) +
		sequin_cdc_padded_size(h.pk_len) + sequin_cdc_padded_size(h.record_len) +
		sequin_cdc_padded_size(h.changes_len) + sequin_cdc_padded_size(h.annotations_len) +
		sequin_cdc_padded_size(h.error_len) + sequin_cdc_padded_size(h.columns_len);

	if (s->len > 0 && (Size) s->len + h.total_len > buf->mem_limit)
		spill(buf);

	start = s->len;
	sequin_cdc_append_padded(s, &h, sizeof(h));
	sequin_cdc_append_padded(s, c->schema_name, c->schema_len);
	sequin_cdc_append_padded(s, c->table_name, c->table_len);
	sequin_cdc_append_padded(s, c->record_pk, c->pk_len);
	if (c->record)
		sequin_cdc_append_padded(s, c->record, h.record_len);
	if (c->changes)
		sequin_cdc_append_padded(s, c->changes, h.changes_len);
	if (c->annotations)
		sequin_cdc_append_padded(s, c->annotations, h.annotations_len);
	if (h.error_len > 0)
		sequin_cdc_append_padded(s, c->error, h.error_len);
	if (c->columns)
		sequin_cdc_append_padded(s, c->columns, h.columns_len);
	Assert(s->len - start == (int) h.total_len);
	(void) start;
	buf->nrows++;
}

/* Point a BufferedChange at the parts of a record in memory. */
static void
unpack(const char *p, BufferedChange *c)
{
	RecordHeader h;
	const char *q;

	memcpy(&h, p, sizeof(h));
	q = p + MAXALIGN(sizeof(RecordHeader));
	c->change_table = h.change_table;
	c->source_oid = h.source_oid;
	c->action = h.action;
	c->committed_at = h.committed_at;
	c->commit_lsn = h.commit_lsn;
	c->schema_name = q;
	c->schema_len = h.schema_len;
	q += sequin_cdc_padded_size(h.schema_len);
	c->table_name = q;
	c->table_len = h.table_len;
	q += sequin_cdc_padded_size(h.table_len);
	c->record_pk = q;
	c->pk_len = h.pk_len;
	q += sequin_cdc_padded_size(h.pk_len);
	c->record = h.record_len >= 0 ? (Jsonb *) q : NULL;
	q += sequin_cdc_padded_size(h.record_len);
	c->changes = h.changes_len >= 0 ? (Jsonb *) q : NULL;
	q += sequin_cdc_padded_size(h.changes_len);
	c->annotations = h.annotations_len >= 0 ? (Jsonb *) q : NULL;
	q += sequin_cdc_padded_size(h.annotations_len);
	c->park_stage = h.park_stage;
	c->rule_id = h.rule_id;
	c->xid = h.xid;
	c->sqlerrcode = h.sqlerrcode;
	c->error = q;
	c->error_len = h.error_len;
	q += sequin_cdc_padded_size(h.error_len);
	c->columns = h.columns_len >= 0 ? (Jsonb *) q : NULL;
}

/* Hand every row to cb, oldest first: the spill file, then memory. */
void
sequin_cdc_buffer_replay(ChangeBuffer *buf, ChangeBufferCallback cb, void *arg)
{
	BufferedChange c;

	if (buf->file)
	{
		if (BufFileSeek(buf->file, 0, 0, SEEK_SET) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not rewind the capture spill file: %m")));
		for (;;)
		{
			uint32		len;
			size_t		got = BufFileRead(buf->file, &len, sizeof(len));

			if (got == 0)
				break;
			if (got != sizeof(len))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("capture spill file is truncated")));
			if (len > buf->readbuf_size)
			{
				buf->readbuf_size = Max(len, buf->readbuf_size * 2);
				buf->readbuf = repalloc(buf->readbuf, buf->readbuf_size);
			}
			memcpy(buf->readbuf, &len, sizeof(len));
			if (BufFileRead(buf->file, buf->readbuf + sizeof(len),
							len - sizeof(len)) != len - sizeof(len))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("capture spill file is truncated")));
			unpack(buf->readbuf, &c);
			cb(&c, arg);
		}
	}

	for (int off = 0; off < buf->mem.len;)
	{
		uint32		len;

		memcpy(&len, buf->mem.data + off, sizeof(len));
		unpack(buf->mem.data + off, &c);
		cb(&c, arg);
		off += len;
	}
}

/* Forget every row, for the next batch. */
void
sequin_cdc_buffer_reset(ChangeBuffer *buf)
{
	if (buf->file)
	{
		BufFileClose(buf->file);
		buf->file = NULL;
	}
	/* give back memory a huge batch may have taken */
	if (buf->mem.maxlen > (int) (buf->mem_limit + 1024 * 1024))
	{
		pfree(buf->mem.data);
		buf->mem.data = MemoryContextAlloc(buf->cxt, 1024);
		buf->mem.maxlen = 1024;
	}
	resetStringInfo(&buf->mem);
	buf->nrows = 0;
}
