/*-------------------------------------------------------------------------
 *
 * parked.h
 *		Parked changes: a change that cannot be filtered, rendered or
 *		written is set aside in sequin_cdc.parked_changes, and capture goes
 *		on.
 *
 * Which errors park a change and which stop the worker is decided in one
 * place, sequin_cdc_error_is_systemic(); sequin_cdc_try() runs one step
 * about one change in a subtransaction and hands back an error that is
 * about that change.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_PARKED_H
#define SEQUIN_CDC_PARKED_H

#include "postgres.h"

#include "utils/uuid.h"

#include "change_buffer.h"

/* BufferedChange.park_stage: where a parked change failed */
#define PARK_NONE		'\0'		/* a change row, not parked */
#define PARK_FILTER		'f'
#define PARK_RENDER		'r'
#define PARK_WRITE		'w'

/* Length a column's text is cut to when a row cannot be rendered whole */
#define SEQUIN_CDC_PARK_COLUMN_TEXT	1024

extern bool sequin_cdc_error_is_systemic(int sqlerrcode);

/* A step about one change, run by sequin_cdc_try() */
typedef void (*SequinTryStep) (void *arg);
extern bool sequin_cdc_try(SequinTryStep step, void *arg, ErrorData **error);
extern bool sequin_cdc_try_decoding(SequinTryStep step, void *arg, ErrorData **error);

extern void sequin_cdc_park(const char *slot_name, const BufferedChange *c,
							char stage, int sqlerrcode, const char *message);
extern void sequin_cdc_park_decoded(const char *slot_name, const BufferedChange *c);
extern void sequin_cdc_park_error(const char *slot_name, const BufferedChange *c,
								  char stage, const ErrorData *error);
extern uint64 sequin_cdc_parked_retry(const char *slot_name,
									  const pg_uuid_t *database_id);

#endif							/* SEQUIN_CDC_PARKED_H */
