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

extern ChangeWriter *sequin_cdc_change_writer_begin(const pg_uuid_t *database_id);
extern void sequin_cdc_change_writer_put(BufferedChange *change, void *writer);
extern uint64 sequin_cdc_change_writer_end(ChangeWriter *w);

#endif							/* SEQUIN_CDC_CHANGE_WRITER_H */
