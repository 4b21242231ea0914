/*-------------------------------------------------------------------------
 *
 * sink_api.h
 *		The C side of the sink SQL API, and starting sink workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_SINK_API_H
#define SEQUIN_CDC_SINK_API_H

#include "postgres.h"

/*
 * Start a worker for every active sink of this database that has none.
 * The capture worker calls it when it starts, inside a transaction with an
 * active snapshot, so that sinks deliver again after a server restart.
 */
extern void sequin_cdc_launch_sinks(void);

#endif							/* SEQUIN_CDC_SINK_API_H */
