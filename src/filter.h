/*-------------------------------------------------------------------------
 *
 * filter.h
 *		Retention-rule filters and backfill conditions: SQL boolean
 *		expressions over a table's row.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_FILTER_H
#define SEQUIN_CDC_FILTER_H

#include "postgres.h"

#include "nodes/execnodes.h"
#include "utils/rel.h"

extern Expr *sequin_cdc_parse_filter(Relation rel, const char *filter);
extern Expr *sequin_cdc_parse_filter_unlocked(Relation rel, const char *filter);
extern Expr *sequin_cdc_parse_backfill_where(Relation rel, const char *where);

#endif							/* SEQUIN_CDC_FILTER_H */
