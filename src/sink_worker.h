/*-------------------------------------------------------------------------
 *
 * sink_worker.h
 *		The sink worker, and the interface a sink type implements for it.
 *
 * The worker (sink_worker.c) does everything every sink does: it reads
 * the sink's row, reads the next batch after the cursor as the sink's
 * owner, renders each change as its JSON element, moves the cursor after
 * a delivery, records failures and retries with backoff.  A sink type
 * (sink_webhook.c, sink_kafka.c) only sends a batch somewhere: it is a
 * SinkType, listed in the worker's table of types.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_SINK_WORKER_H
#define SEQUIN_CDC_SINK_WORKER_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/stringinfo.h"

#include "sequin_cdc.h"

/* The columns of the sink's row every sink type has, read at every step */
typedef struct SinkConfig
{
	int64		id;
	char	   *name;
	char	   *name_json;		/* name as a JSON string, quoted */
	char	   *kind;			/* the sink type's name */
	Oid			change_table;
	int			batch_size;
	int			max_batch_bytes;	/* a batch stops before passing this */
	bool		active;
	int64		cursor_seq;		/* last seq delivered */
	int32		epoch;			/* bumped by each replay */
	Oid			owner;
} SinkConfig;

/*
 * One change of a batch.  The element is what every sink type sends for a
 * change: {"record", "changes", "action", "metadata": {table_schema,
 * table_name, commit_timestamp, seq, record_pk, idempotency_key,
 * transaction_annotations, database_id, sink: {id, name}}}.  The other
 * fields repeat what a type may need besides (message keys, headers,
 * topic names); they are NULL where the change row has a null.
 */
typedef struct SinkChange
{
	int64		seq;
	const char *schema;			/* source_table_schema */
	const char *table;			/* source_table_name */
	const char *record_pk;
	const char *action;			/* insert | update | delete | read */
	const char *idempotency_key;	/* database_id:change_table_oid:seq */
	int			element_offset; /* the element: elements.data + offset */
	int			element_len;
} SinkChange;

/*
 * The batch to deliver: nchanges changes in seq order, kept unchanged
 * until they are delivered, so a retry sends the same changes.
 */
typedef struct SinkBatch
{
	int64		first_seq;
	int64		last_seq;
	int			nchanges;
	SinkChange *changes;
	StringInfoData elements;	/* the elements joined by ',': the inside of
								 * a JSON array */
} SinkBatch;

/* How a delivery attempt ended */
typedef enum SinkOutcome
{
	SINK_DELIVERED,				/* every change was acknowledged: the cursor
								 * moves to last_seq */
	SINK_RETRY,					/* not (all) acknowledged: the same batch is
								 * sent again after a backoff */
	SINK_FATAL,					/* the sink cannot go on: the error is
								 * recorded and the sink paused */
} SinkOutcome;

typedef struct SinkResult
{
	SinkOutcome outcome;
	bool		responded;		/* the endpoint answered: status is set */
	long		status;			/* its status (last_http_status) */
	char		error[SEQUIN_CDC_ERROR_LEN];	/* unless delivered: last_error */
} SinkResult;

/*
 * A sink type.  The worker calls, in its own process:
 *
 * create: once, at the first step that finds the sink; returns the type's
 *		state (connections, buffers, its configuration), allocated in cxt,
 *		which lives as long as the worker.  It may throw.
 * load_config: at every step, inside a transaction with SPI connected:
 *		the worker reads the sink's row, the common columns (sink) followed
 *		by the type's config_columns, starting at column first_column of
 *		row; the type reads and checks its columns into its state,
 *		allocating in CurrentMemoryContext, which is reset before the next
 *		call.  An error is recorded in the sink's row and the step retried.
 * deliver: sends the batch once, with no transaction open, and fills
 *		result (zeroed before).  CurrentMemoryContext is reset before each
 *		attempt.  It reports delivery failures in result rather than
 *		throwing; it should give up early when the worker is asked to stop
 *		(ProcDiePending, QueryCancelPending, postmaster gone): the worker
 *		checks for interrupts as soon as it returns.
 * destroy: when the worker stops because the sink is paused or gone.
 */
typedef struct SinkType
{
	const char *name;			/* the sink's kind, e.g. "webhook" */
	const char *config_columns; /* SQL select list over sequin_cdc.sinks s */
	void	   *(*create) (const SinkConfig *sink, MemoryContext cxt);
	void		(*load_config) (void *state, const SinkConfig *sink,
								HeapTuple row, TupleDesc desc, int first_column);
	void		(*deliver) (void *state, const SinkConfig *sink,
							const SinkBatch *batch, SinkResult *result);
	void		(*destroy) (void *state);
} SinkType;

/* The sink types (one file each), listed in sink_worker.c */
extern const SinkType sequin_cdc_webhook_sink_type;
extern const SinkType sequin_cdc_kafka_sink_type;

extern PGDLLEXPORT void sequin_cdc_sink_main(Datum arg);
extern bool sequin_cdc_sinks_table_exists(void);

#endif							/* SEQUIN_CDC_SINK_WORKER_H */
