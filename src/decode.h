/*-------------------------------------------------------------------------
 *
 * decode.h
 *		The sequin_cdc output plugin.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_DECODE_H
#define SEQUIN_CDC_DECODE_H

#include "postgres.h"

#include "change_buffer.h"

/*
 * The capture worker points this at its buffer before it creates the
 * decoding context.  A slot of ours consumed anywhere else (for instance
 * with pg_logical_slot_get_changes) finds it NULL and refuses.
 */
extern ChangeBuffer *sequin_cdc_decode_target;

/* Where the decoder is, for error context lines. */
typedef struct DecodePosition
{
	TransactionId xid;
	const char *relname;
} DecodePosition;

extern DecodePosition sequin_cdc_decode_position;

#define SEQUIN_CDC_ANNOTATIONS_SET "sequin:transaction_annotations.set"
#define SEQUIN_CDC_ANNOTATIONS_CLEAR "sequin:transaction_annotations.clear"

#endif							/* SEQUIN_CDC_DECODE_H */
