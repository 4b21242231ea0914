/*-------------------------------------------------------------------------
 *
 * change_writer.h
 *		Inserting buffered change rows into change tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_CHANGE_WRITER_H
#define SEQUIN_CDC_CHANGE_WRITER_H

#include "postgres.h"

#include "utils/uuid.h"

#include "change_buffer.h"

typedef struct ChangeWriter ChangeWriter;

/* The batch's rows one by one, each failing one parked (change_writer.c) */
typedef struct ChangeWriterAlone
{
	const pg_uuid_t *database_id;
	const char *slot_name;
	uint64		rows;			/* change rows written */
} ChangeWriterAlone;

extern ChangeWriter *sequin_cdc_change_writer_begin(const pg_uuid_t *database_id,
													const char *slot_name);
extern void sequin_cdc_change_writer_put(BufferedChange *change, void *writer);
extern uint64 sequin_cdc_change_writer_end(ChangeWriter *w);
extern void sequin_cdc_change_writer_put_alone(BufferedChange *change, void *alone);
extern const char *sequin_cdc_action_name(char action);
extern char sequin_cdc_action_code(const char *name);

#endif							/* SEQUIN_CDC_CHANGE_WRITER_H */
