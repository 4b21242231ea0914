/*-------------------------------------------------------------------------
 *
 * output_plugin.h
 *		What the sequin_cdc output plugin hands to its consumer, the
 *		capture worker.
 *
 * The hand-off is the decoding context's writer, as for any output plugin
 * (test_decoding writes text through it, pgoutput protocol messages): the
 * plugin calls OutputPluginPrepareWrite, puts one PluginRecord into
 * ctx->out and calls OutputPluginWrite; the capture worker's write
 * callback (capture.c), given to CreateDecodingContext, reads it and keeps
 * its own state in ctx->output_writer_private.  Nothing else is shared:
 * the plugin never sees the worker's buffer or counters, and the worker
 * sees only these records.
 *
 * The records, in stream order:
 *   ROW            a change row for the buffer (row points to plugin memory,
 *                  valid during the write callback only)
 *   PARK           a change that could not be filtered or rendered, with
 *                  its error (row->park_stage, parked.h): parked in the
 *                  write transaction of the batch, in stream order
 *   COMMIT         a decoded source transaction ended at lsn, committed at
 *                  commit_time; had_rows: it produced rows
 *   HOLD           the oldest open backfill window now starts at lsn
 *                  (InvalidXLogRecPtr: none open): do not confirm past it
 *   BACKFILL_SEEN  a backfill low watermark was decoded: backfills of the
 *                  slot may need their worker looked after
 *
 * The worker tells the plugin one thing, at startup, as a decoding option:
 * skip_upto, the end of the last source transaction already written;
 * transactions ending there or before are decoded but produce no rows.
 *
 * A slot of ours consumed by anyone else (pg_logical_slot_get_changes, a
 * walsender) has another writer; the plugin refuses it at startup.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_OUTPUT_PLUGIN_H
#define SEQUIN_CDC_OUTPUT_PLUGIN_H

#include "postgres.h"

#include "replication/logical.h"

#include "change_buffer.h"

/* Decoding options the capture worker passes */
#define SEQUIN_CDC_OPTION_PUBLICATION	"publication"
#define SEQUIN_CDC_OPTION_SKIP_UPTO		"skip_upto"
#define SEQUIN_CDC_OPTION_PUBLISHED_UPTO	"published_upto"	/* the worker saw
																 * the publication
																 * cover every
																 * retained table
																 * after this LSN */

typedef enum PluginRecordKind
{
	PLUGIN_RECORD_ROW,
	PLUGIN_RECORD_PARK,
	PLUGIN_RECORD_COMMIT,
	PLUGIN_RECORD_HOLD,
	PLUGIN_RECORD_BACKFILL_SEEN,
} PluginRecordKind;

/* One record handed from the plugin to the writer (see above) */
typedef struct PluginRecord
{
	PluginRecordKind kind;
	const BufferedChange *row;	/* ROW, PARK */
	XLogRecPtr	lsn;			/* COMMIT: end of the transaction; HOLD */
	TimestampTz commit_time;	/* COMMIT */
	bool		had_rows;		/* COMMIT */
} PluginRecord;

/* output_plugin.c: where the decoder is, for error context lines */
extern void sequin_cdc_plugin_position(LogicalDecodingContext *ctx,
									   TransactionId *xid,
									   const char **relname);

/* capture.c: the one writer the plugin accepts */
extern void sequin_cdc_capture_prepare_write(LogicalDecodingContext *ctx,
											 XLogRecPtr lsn, TransactionId xid,
											 bool last_write);
extern void sequin_cdc_capture_write(LogicalDecodingContext *ctx,
									 XLogRecPtr lsn, TransactionId xid,
									 bool last_write);

#endif							/* SEQUIN_CDC_OUTPUT_PLUGIN_H */
