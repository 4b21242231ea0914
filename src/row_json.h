/*-------------------------------------------------------------------------
 *
 * row_json.h
 *		Rendering a decoded row as jsonb, the way to_jsonb(row) does.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_ROW_JSON_H
#define SEQUIN_CDC_ROW_JSON_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

typedef enum ColumnKind
{
	COLUMN_OMITTED,				/* dropped, or virtual generated: not rendered */
	COLUMN_BOOL,
	COLUMN_INT,					/* int2, int4, int8 */
	COLUMN_NUMERIC,
	COLUMN_FLOAT,				/* float4, float8: via their text form */
	COLUMN_TEXT,				/* text, varchar, bpchar: bytes as they are */
	COLUMN_DATETIME,			/* date, timestamp, timestamptz */
	COLUMN_JSONB,
	COLUMN_OTHER,				/* output function, as a string */
	COLUMN_TO_JSONB,			/* arrays, composites, json, casts: to_jsonb */
} ColumnKind;

typedef struct ColumnEncoder
{
	ColumnKind	kind;
	Oid			base_type;
	int16		typlen;
	bool		typbyval;
	JsonbValue	key;
	FmgrInfo	func;			/* to_jsonb, for COLUMN_TO_JSONB */
	FmgrInfo	out;			/* the type's output function */
} ColumnEncoder;

typedef struct RowEncoder
{
	int			natts;
	ColumnEncoder *cols;		/* indexed by attnum - 1 */
} RowEncoder;

extern RowEncoder *sequin_cdc_row_encoder_create(TupleDesc desc, MemoryContext cxt);
extern Jsonb *sequin_cdc_row_encoder_object(RowEncoder *enc, Datum *values, bool *nulls,
								 const bool *include);
/* Rows whose values add up to more are rendered in a subtransaction */
#define SEQUIN_CDC_RENDER_GUARD_BYTES	((Size) 16 * 1024 * 1024)

/* May rendering a row fail (sequin_cdc_row_encoder_risk)? */
typedef enum RowRenderRisk
{
	RENDER_SAFE,
	RENDER_GUARDED,				/* render in a subtransaction */
	RENDER_TOO_LARGE,			/* its values alone pass jsonb's limit */
} RowRenderRisk;

extern RowRenderRisk sequin_cdc_row_encoder_risk(RowEncoder *enc, Datum *values,
												 bool *nulls, Size *size);
extern Jsonb *sequin_cdc_row_encoder_texts(RowEncoder *enc, Datum *values, bool *nulls,
										   const bool *include, int maxlen);
extern int	sequin_cdc_primary_key(Relation rel, AttrNumber **keys);
extern char *sequin_cdc_row_encoder_key_text(RowEncoder *enc, int nkeys,
								  const AttrNumber *keys, Datum *values,
								  bool *nulls, int *len);

#endif							/* SEQUIN_CDC_ROW_JSON_H */
