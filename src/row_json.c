/*-------------------------------------------------------------------------
 *
 * row_json.c
 *		Rendering a decoded row as jsonb, equal to what to_jsonb(row) gives
 *		(virtual generated columns aside: they are not stored).
 *
 * Every column is sorted once into a kind when the relation's encoder is
 * built, with the same rules to_jsonb follows (domains look through to
 * their base type; numbers become JSON numbers unless they are NaN or
 * infinite; date and timestamp types use the JSON date format; arrays,
 * composites, json and types with a cast to json go through to_jsonb
 * itself).  The common scalar kinds are then converted straight from the
 * datum: integers and numerics without a text round trip, text without a
 * copy.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/transam.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "compat.h"
#include "row_json.h"

/* How a column of type typid is rendered; *base_out gets its base type. */
static ColumnKind
column_kind(Oid typid, Oid *base_out)
{
	Oid			base = getBaseType(typid);

	*base_out = base;
	switch (base)
	{
		case BOOLOID:
			return COLUMN_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return COLUMN_INT;
		case NUMERICOID:
			return COLUMN_NUMERIC;
		case FLOAT4OID:
		case FLOAT8OID:
			return COLUMN_FLOAT;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			return COLUMN_TEXT;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return COLUMN_DATETIME;
		case JSONBOID:
			return COLUMN_JSONB;
		case JSONOID:
			return COLUMN_TO_JSONB;
		default:
			break;
	}
	if (OidIsValid(get_element_type(base)) || type_is_rowtype(base))
		return COLUMN_TO_JSONB;
	if (base >= FirstNormalObjectId)
	{
		Oid			castfunc;

		if (find_coercion_pathway(JSONOID, base, COERCION_EXPLICIT, &castfunc) ==
			COERCION_PATH_FUNC && OidIsValid(castfunc))
			return COLUMN_TO_JSONB;
	}
	return COLUMN_OTHER;
}

/*
 * An encoder for rows of desc, in cxt: per column, its jsonb key and how
 * its values are rendered, looked up once rather than per row.
 */
RowEncoder *
sequin_cdc_row_encoder_create(TupleDesc desc, MemoryContext cxt)
{
	RowEncoder *enc = MemoryContextAllocZero(cxt, sizeof(RowEncoder));

	enc->natts = desc->natts;
	enc->cols = MemoryContextAllocZero(cxt, sizeof(ColumnEncoder) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		ColumnEncoder *col = &enc->cols[i];

		/*
		 * A virtual generated column (18) is not stored: the WAL holds no
		 * value of it.  Left out of the row, as pgoutput leaves it out.
		 */
		if (att->attisdropped || sequin_cdc_attr_is_virtual(att))
		{
			col->kind = COLUMN_OMITTED;
			continue;
		}
		col->kind = column_kind(att->atttypid, &col->base_type);
		col->typlen = att->attlen;
		col->typbyval = att->attbyval;
		col->key.type = jbvString;
		col->key.val.string.val = MemoryContextStrdup(cxt, NameStr(att->attname));
		col->key.val.string.len = strlen(col->key.val.string.val);

		if (col->kind == COLUMN_TO_JSONB)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			/* to_jsonb learns its argument type from the call expression */
			fmgr_info_cxt(F_TO_JSONB, &col->func, cxt);
			col->func.fn_expr = (Node *)
				makeFuncExpr(F_TO_JSONB, JSONBOID,
							 list_make1(makeNullConst(att->atttypid,
													  att->atttypmod,
													  att->attcollation)),
							 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
			MemoryContextSwitchTo(old);
		}
		{
			Oid			outfunc;
			bool		isvarlena;

			getTypeOutputInfo(col->base_type, &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &col->out, cxt);
		}
	}
	return enc;
}

/* v becomes the jsonb string s (len bytes, not copied). */
static void
set_string(JsonbValue *v, char *s, int len)
{
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = len;
}

/* A whole jsonb value as one JsonbValue: scalars unwrapped, containers binary. */
static void
jsonb_as_value(Jsonb *j, JsonbValue *v)
{
	if (JB_ROOT_IS_SCALAR(j))
		JsonbExtractScalar(&j->root, v);
	else
	{
		v->type = jbvBinary;
		v->val.binary.data = &j->root;
		v->val.binary.len = VARSIZE(j) - VARHDRSZ;
	}
}

/* Convert one non-null column value. */
static void
column_value(ColumnEncoder *col, Datum d, JsonbValue *v)
{
	switch (col->kind)
	{
		case COLUMN_BOOL:
			v->type = jbvBool;
			v->val.boolean = DatumGetBool(d);
			break;
		case COLUMN_INT:
			{
				int64		i;

				if (col->base_type == INT2OID)
					i = DatumGetInt16(d);
				else if (col->base_type == INT4OID)
					i = DatumGetInt32(d);
				else
					i = DatumGetInt64(d);
				v->type = jbvNumeric;
				v->val.numeric = int64_to_numeric(i);
				break;
			}
		case COLUMN_NUMERIC:
			{
				Numeric		n = DatumGetNumeric(d);

				if (numeric_is_nan(n) || numeric_is_inf(n))
				{
					char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));

					set_string(v, s, strlen(s));
				}
				else
				{
					v->type = jbvNumeric;
					v->val.numeric = n;
				}
				break;
			}
		case COLUMN_FLOAT:
			{
				char	   *s = OutputFunctionCall(&col->out, d);
				int			len = strlen(s);

				if (IsValidJsonNumber(s, len))
				{
					v->type = jbvNumeric;
					v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																		 CStringGetDatum(s),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1)));
				}
				else
					set_string(v, s, len);
				break;
			}
		case COLUMN_TEXT:
			{
				text	   *t = (text *) PG_DETOAST_DATUM_PACKED(d);

				set_string(v, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				break;
			}
		case COLUMN_DATETIME:
			{
				char	   *s = JsonEncodeDateTime(NULL, d, col->base_type, NULL);

				set_string(v, s, strlen(s));
				break;
			}
		case COLUMN_JSONB:
			jsonb_as_value(DatumGetJsonbP(d), v);
			break;
		case COLUMN_TO_JSONB:
			jsonb_as_value(DatumGetJsonbP(FunctionCall1(&col->func, d)), v);
			break;
		case COLUMN_OTHER:
			{
				char	   *s = OutputFunctionCall(&col->out, d);

				set_string(v, s, strlen(s));
				break;
			}
		case COLUMN_OMITTED:
			Assert(false);
			break;
	}
}

/*
 * The row as a jsonb object: every live column, or those with include[i]
 * set when include is given.  Allocates in the current memory context.
 */
Jsonb *
sequin_cdc_row_encoder_object(RowEncoder *enc, Datum *values, bool *nulls,
				   const bool *include)
{
	SequinCdcJsonbBuilder b = {0};

	sequin_cdc_jsonb_push(&b, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < enc->natts; i++)
	{
		ColumnEncoder *col = &enc->cols[i];
		JsonbValue	v;

		if (col->kind == COLUMN_OMITTED || (include && !include[i]))
			continue;
		sequin_cdc_jsonb_push(&b, WJB_KEY, &col->key);
		if (nulls[i])
			v.type = jbvNull;
		else
			column_value(col, values[i], &v);
		sequin_cdc_jsonb_push(&b, WJB_VALUE, &v);
	}
	sequin_cdc_jsonb_push(&b, WJB_END_OBJECT, NULL);
	return sequin_cdc_jsonb_result(&b);
}

/*
 * May rendering this row fail?  RENDER_GUARDED when a column's value goes
 * through code that is not built in (a user type's output function or
 * cast to json, a composite or an array of one), or the row is large
 * enough to come near jsonb's 256 MB limit; RENDER_TOO_LARGE when its
 * values alone pass that limit (a jsonb record would be larger still: do
 * not try); else RENDER_SAFE.  The decoder renders guarded rows in a
 * subtransaction, so that an error parks the change (parked.c); the
 * others, nearly all, are rendered without that cost.  *size gets the
 * values' size as far as it was summed.
 */
RowRenderRisk
sequin_cdc_row_encoder_risk(RowEncoder *enc, Datum *values, bool *nulls, Size *size)
{
	RowRenderRisk risk = RENDER_SAFE;
	Size		total = 0;

	for (int i = 0; i < enc->natts; i++)
	{
		ColumnEncoder *col = &enc->cols[i];

		if (col->kind == COLUMN_OMITTED || nulls[i])
			continue;
		if ((col->kind == COLUMN_TO_JSONB || col->kind == COLUMN_OTHER) &&
			col->base_type >= FirstNormalObjectId)
			risk = RENDER_GUARDED;
		if (col->typlen == -1)
			total += toast_raw_datum_size(values[i]);
		else
			total += 32;
		if (total > SEQUIN_CDC_RENDER_GUARD_BYTES)
			risk = RENDER_GUARDED;
	}
	*size = total;
	return total > JENTRY_OFFLENMASK ? RENDER_TOO_LARGE : risk;
}

/*
 * For a row that cannot be rendered as jsonb: each column's text (the
 * type's output), cut to maxlen bytes with "..." when longer, as a jsonb
 * object (include as for sequin_cdc_row_encoder_object).  Text values
 * are sliced before they are detoasted, so a huge value costs maxlen; a
 * huge value of another type is only measured.
 */
Jsonb *
sequin_cdc_row_encoder_texts(RowEncoder *enc, Datum *values, bool *nulls,
							 const bool *include, int maxlen)
{
	SequinCdcJsonbBuilder b = {0};

	sequin_cdc_jsonb_push(&b, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < enc->natts; i++)
	{
		ColumnEncoder *col = &enc->cols[i];
		JsonbValue	v;
		char	   *s;
		int			len;
		bool		cut;

		if (col->kind == COLUMN_OMITTED || (include && !include[i]))
			continue;
		sequin_cdc_jsonb_push(&b, WJB_KEY, &col->key);
		if (nulls[i])
		{
			v.type = jbvNull;
			sequin_cdc_jsonb_push(&b, WJB_VALUE, &v);
			continue;
		}
		if (col->kind == COLUMN_TEXT)
		{
			text	   *t = (text *) PG_DETOAST_DATUM_SLICE(values[i], 0, maxlen + 1);

			s = text_to_cstring(t);
		}
		else if (col->typlen == -1 &&
				 toast_raw_datum_size(values[i]) > SEQUIN_CDC_RENDER_GUARD_BYTES)
			s = psprintf("(%zu bytes, not shown)", toast_raw_datum_size(values[i]));
		else
			s = OutputFunctionCall(&col->out, values[i]);
		len = strlen(s);
		cut = len > maxlen;
		if (cut)
		{
			len = pg_mbcliplen(s, len, maxlen);
			s = psprintf("%.*s...", len, s);
			len = strlen(s);
		}
		set_string(&v, s, len);
		sequin_cdc_jsonb_push(&b, WJB_VALUE, &v);
	}
	sequin_cdc_jsonb_push(&b, WJB_END_OBJECT, NULL);
	return sequin_cdc_jsonb_result(&b);
}

/*
 * The primary key columns of rel, in key order, as attnums into *keys
 * (palloc'd); returns their number, 0 (and *keys NULL) for a table without
 * a primary key.  record_pk is rendered from them, and backfills page by
 * them.
 */
int
sequin_cdc_primary_key(Relation rel, AttrNumber **keys)
{
	HeapTuple	itup;
	Form_pg_index idx;
	int			n;

	*keys = NULL;
	(void) RelationGetIndexList(rel);
	if (!OidIsValid(rel->rd_pkindex))
		return 0;
	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(rel->rd_pkindex));
	if (!HeapTupleIsValid(itup))
		elog(ERROR, "cache lookup failed for index %u", rel->rd_pkindex);
	idx = (Form_pg_index) GETSTRUCT(itup);
	n = idx->indnkeyatts;
	*keys = palloc(sizeof(AttrNumber) * Max(n, 1));
	for (int i = 0; i < n; i++)
		(*keys)[i] = idx->indkey.values[i];
	ReleaseSysCache(itup);
	return n;
}

/*
 * The primary key as text.  One column: its text form, as Sequin writes it
 * (`9`, `abc`).  Several columns: a JSON array of the values as they appear
 * in record (`[1, "abc"]`), which cannot be ambiguous the way a plain
 * comma-join is.
 */
char *
sequin_cdc_row_encoder_key_text(RowEncoder *enc, int nkeys, const AttrNumber *keys,
					 Datum *values, bool *nulls, int *len)
{
	char	   *s;

	if (nkeys == 1)
	{
		int			i = keys[0] - 1;

		if (nulls[i] || enc->cols[i].kind == COLUMN_OMITTED)
			s = pstrdup("");
		else
			s = OutputFunctionCall(&enc->cols[i].out, values[i]);
	}
	else
	{
		SequinCdcJsonbBuilder b = {0};

		sequin_cdc_jsonb_push(&b, WJB_BEGIN_ARRAY, NULL);
		for (int k = 0; k < nkeys; k++)
		{
			int			i = keys[k] - 1;
			JsonbValue	v;

			if (nulls[i])
				v.type = jbvNull;
			else
				column_value(&enc->cols[i], values[i], &v);
			sequin_cdc_jsonb_push(&b, WJB_ELEM, &v);
		}
		sequin_cdc_jsonb_push(&b, WJB_END_ARRAY, NULL);
		s = JsonbToCString(NULL, &sequin_cdc_jsonb_result(&b)->root, 0);
	}
	*len = strlen(s);
	return s;
}
