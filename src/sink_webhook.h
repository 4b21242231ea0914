/*-------------------------------------------------------------------------
 *
 * sink_webhook.h
 *		Webhook sinks: the sink type that POSTs a batch of changes to an
 *		HTTP endpoint with libcurl (sequin_cdc_webhook_sink_type, declared
 *		with the other types in sink_worker.h), and its URL checks.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_SINK_WEBHOOK_H
#define SEQUIN_CDC_SINK_WEBHOOK_H

#include "postgres.h"

extern const char *sequin_cdc_webhook_url_problem(const char *url);
extern char *sequin_cdc_webhook_endpoint(const char *url);

#endif							/* SEQUIN_CDC_SINK_WEBHOOK_H */
