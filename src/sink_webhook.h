/*-------------------------------------------------------------------------
 *
 * sink_webhook.h
 *		Webhook sinks: one background worker per sink POSTs the rows of a
 *		change table, in seq order, to an HTTP endpoint with libcurl.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_SINK_WEBHOOK_H
#define SEQUIN_CDC_SINK_WEBHOOK_H

#include "postgres.h"

/*
 * Start a worker for every active sink of this database that has none.
 * The capture worker calls it when it starts, inside a transaction with an
 * active snapshot, so that sinks deliver again after a server restart.
 */
extern void sequin_cdc_launch_sinks(void);

extern void sequin_cdc_launch_sink(int64 sink_id, Oid dboid);
extern PGDLLEXPORT void sequin_cdc_sink_main(Datum arg);

#endif							/* SEQUIN_CDC_SINK_WEBHOOK_H */
