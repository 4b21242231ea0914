/*-------------------------------------------------------------------------
 *
 * filter.c
 *		Parsing the conditions users give as text: retention-rule filters
 *		and backfill where clauses.
 *
 * Both are the text of one SQL boolean expression over the source table's
 * columns, like a publication row filter: `status <> 'draft' and amount >
 * 100`.  They are parsed as an expression, never pasted into a statement,
 * so no parenthesis trick (`true) OR (true`) can make them anything else.
 *
 * A filter is kept as text and parsed against the relation as it is when
 * it is needed (at add time, for validation, and in the decoder against the
 * historic catalog), so column renames and drops that happen later are
 * seen the way the data is.  Only immutable expressions are accepted: the
 * decoder evaluates them long after the fact, so now() or a table lookup
 * would give answers unrelated to the change.
 *
 * The decoder holds no lock on the relation (it must not wait for user
 * locks, and its historic relcache entry cannot change under it), so
 * there the column references are resolved against the relation's tuple
 * descriptor by a parser hook, without a range table entry: adding one
 * asserts that the caller holds a lock (addRangeTableEntryForRelation).
 *
 * A backfill condition is evaluated when the chunk is read, so stable
 * functions such as now() are fine there; volatile ones are not (a chunk
 * read may be repeated, and must not have side effects).
 *
 * Neither may call anything but built-in functions and operators (OID below
 * FirstNormalObjectId) or coerce to a user-defined domain (whose CHECK
 * constraints are user code).  Filters run in the capture worker, as the
 * bootstrap superuser: a user's function declared IMMUTABLE can still do
 * anything, so no user code may run there.  Backfill conditions run as the
 * role that called backfill(), restricted, where a user function would do
 * no more than that role may; they are held to the same rule anyway, so
 * that what sequin_cdc stores in its tables is never someone's code.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "filter.h"

/* Why a filter that names the whole row or a system column is refused */
#define FILTER_ROW_OR_SYSTEM_COLUMN \
	"It refers to the whole row or to a system column; a filter may use the table's own columns only."

/* What the condition is, for the messages */
typedef enum ConditionKind
{
	CONDITION_FILTER,			/* retention-rule filter */
	CONDITION_BACKFILL			/* backfill where clause */
} ConditionKind;

/* Raise the error for a condition that is refused, with the reason why. */
static void
bad_condition(ConditionKind kind, const char *text, const char *why)
{
	if (kind == CONDITION_FILTER)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid retention filter \"%s\"", text),
				 errdetail("%s", why),
				 errhint("A filter is one boolean SQL expression over the source table's columns, such as status <> 'draft' and amount > 100.")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid backfill condition \"%s\"", text),
				 errdetail("%s", why),
				 errhint("Give one boolean SQL expression over the table's columns, such as updated_at > now() - interval '3 days', using built-in functions and operators only.")));
}

/* check_functions_in_node callback: a function that is not built in. */
static bool
user_function(Oid funcid, void *context)
{
	if (funcid >= FirstNormalObjectId)
	{
		*(Oid *) context = funcid;
		return true;
	}
	return false;
}

/* What find_user_code found: the detail message to give */
typedef struct UserCodeContext
{
	char	   *detail;
} UserCodeContext;

/*
 * Find user-defined code an expression would run: a function or operator
 * (incl. casts and I/O coercions), a domain's CHECK constraints, or a
 * comparison function of GREATEST/LEAST.  Returns true, with the detail
 * message to give in cxt, if there is some.
 */
static bool
find_user_code(Node *node, UserCodeContext *cxt)
{
	Oid			funcid = InvalidOid;

	if (node == NULL)
		return false;
	if (check_functions_in_node(node, user_function, &funcid))
	{
		cxt->detail = psprintf("It calls %s, which is not built in.",
							   format_procedure(funcid));
		return true;
	}
	if (IsA(node, CoerceToDomain) &&
		((CoerceToDomain *) node)->resulttype >= FirstNormalObjectId)
	{
		cxt->detail = psprintf("It converts a value to the domain %s, whose constraints are not built in.",
							   format_type_be(((CoerceToDomain *) node)->resulttype));
		return true;
	}
	if (IsA(node, MinMaxExpr))
	{
		TypeCacheEntry *tc = lookup_type_cache(((MinMaxExpr *) node)->minmaxtype,
											   TYPECACHE_CMP_PROC);

		if (tc->cmp_proc >= FirstNormalObjectId)
		{
			cxt->detail = psprintf("It compares with %s, which is not built in.",
								   format_procedure(tc->cmp_proc));
			return true;
		}
	}
	return expression_tree_walker(node, find_user_code, (void *) cxt);
}

/*
 * expression_tree_walker callback: a whole-row reference or a system
 * column.  A filter may not use them: the decoder resolves columns without
 * a range table entry (see the header comment), and the decoded tuple has
 * no meaningful system columns.
 */
static bool
uses_row_or_system_column(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) && ((Var *) node)->varattno <= 0)
		return true;
	return expression_tree_walker(node, uses_row_or_system_column, context);
}

/* Point syntax errors into the filter text, not the calling statement. */
static void
filter_error_callback(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
}

/* What filter_column_ref needs: the relation, and the text for messages */
typedef struct FilterRefState
{
	Relation	rel;
	const char *text;
} FilterRefState;

/*
 * p_pre_columnref_hook of a condition parsed without a range table entry
 * (see the header comment): a column of rel, written bare or qualified by
 * the table's name ([[database.]schema.]table.column), becomes a Var of
 * varno 1, as the range table entry would make it.  A whole-row reference
 * (the table's name alone, or table.*) or a system column is refused here,
 * with the same error as at add time: the parser would look for their
 * range table entry.  Anything else is left to the parser, which reports
 * it missing (as any name inside a subquery, refused anyway).
 */
static Node *
filter_column_ref(ParseState *pstate, ColumnRef *cref)
{
	FilterRefState *state = (FilterRefState *) pstate->p_ref_hook_state;
	Relation	rel = state->rel;
	TupleDesc	desc = RelationGetDescr(rel);
	int			nfields = list_length(cref->fields);
	Node	   *last = llast(cref->fields);
	const char *colname;

	if (pstate->parentParseState != NULL || nfields > 4)
		return NULL;
	if (IsA(last, A_Star) ||
		(nfields == 1 && strcmp(strVal(last), RelationGetRelationName(rel)) == 0 &&
		 attnameAttNum(rel, strVal(last), false) == InvalidAttrNumber) ||
		(IsA(last, String) && attnameAttNum(rel, strVal(last), true) < 0))
		bad_condition(CONDITION_FILTER, state->text, FILTER_ROW_OR_SYSTEM_COLUMN);
	if (!IsA(last, String))
		return NULL;
	/* the qualifiers, from the nearest out: table, schema, database */
	for (int i = nfields - 2, level = 0; i >= 0; i--, level++)
	{
		const char *name = strVal(list_nth(cref->fields, i));
		const char *expected;

		if (level == 0)
			expected = RelationGetRelationName(rel);
		else if (level == 1)
			expected = get_namespace_name(RelationGetNamespace(rel));
		else
			expected = get_database_name(MyDatabaseId);
		if (expected == NULL || strcmp(name, expected) != 0)
			return NULL;
	}

	colname = strVal(last);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
		{
			Var		   *var = makeVar(1, att->attnum, att->atttypid,
									  att->atttypmod, att->attcollation, 0);

			var->location = cref->location;
			return (Node *) var;
		}
	}
	return NULL;
}

/*
 * Parse and analyze a condition for rel; returns a boolean expression
 * whose Vars have varno 1.  Raises an error for anything that is not a
 * single boolean expression of the kind's volatility, calling built-in
 * code only.  With locked, the caller holds a lock on rel and the columns
 * are resolved through a range table entry, as for any query; without,
 * through filter_column_ref.
 */
static Expr *
parse_condition(Relation rel, const char *text, ConditionKind kind, bool locked)
{
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *sel;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	ErrorContextCallback errcb;
	UserCodeContext ucxt = {NULL};
	FilterRefState ref_state;

	errcb.callback = filter_error_callback;
	errcb.arg = (void *) text;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raw = raw_parser(text, RAW_PARSE_PLPGSQL_EXPR);
	if (list_length(raw) != 1)
		bad_condition(kind, text, "It is not a single expression.");
	rs = linitial_node(RawStmt, raw);
	if (!IsA(rs->stmt, SelectStmt))
		bad_condition(kind, text, "It is not a single expression.");
	sel = (SelectStmt *) rs->stmt;
	if (sel->op != SETOP_NONE || list_length(sel->targetList) != 1 ||
		sel->fromClause || sel->whereClause ||
		sel->groupClause || sel->havingClause || sel->windowClause ||
		sel->sortClause || sel->limitCount || sel->limitOffset ||
		sel->lockingClause || sel->distinctClause || sel->withClause ||
		sel->intoClause || sel->valuesLists)
		bad_condition(kind, text, "It is not a single expression.");
	target = linitial_node(ResTarget, sel->targetList);
	if (target->name != NULL)
		bad_condition(kind, text, "It is not a single expression.");

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = text;
	if (locked)
	{
		nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
											   NULL, false, false);
		addNSItemToQuery(pstate, nsitem, false, true, true);
	}
	else
	{
		ref_state.rel = rel;
		ref_state.text = text;
		pstate->p_pre_columnref_hook = filter_column_ref;
		pstate->p_ref_hook_state = (void *) &ref_state;
	}

	expr = transformExpr(pstate, target->val, EXPR_KIND_WHERE);
	expr = coerce_to_boolean(pstate, expr,
							 kind == CONDITION_FILTER ? "retention filter" : "backfill condition");
	assign_expr_collations(pstate, expr);

	if (pstate->p_hasSubLinks)
		bad_condition(kind, text, "Subqueries are not allowed.");
	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs || pstate->p_hasTargetSRFs)
		bad_condition(kind, text, "Aggregates, window functions and set-returning functions are not allowed.");
	if (find_user_code(expr, &ucxt))
		bad_condition(kind, text, ucxt.detail);
	if (kind == CONDITION_FILTER && uses_row_or_system_column(expr, NULL))
		bad_condition(kind, text, FILTER_ROW_OR_SYSTEM_COLUMN);
	if (kind == CONDITION_FILTER && contain_mutable_functions(expr))
		bad_condition(kind, text, "It calls a function or operator that is not immutable (such as now() or random()); the filter is evaluated when the change is decoded, so it must depend only on the row.");
	if (kind == CONDITION_BACKFILL && contain_volatile_functions(expr))
		bad_condition(kind, text, "It calls a volatile function or operator (such as random()); the condition is evaluated for every chunk, so it must have no side effects and give the same answer within a chunk's read.");

	free_parsestate(pstate);
	error_context_stack = errcb.previous;
	return (Expr *) expr;
}

/*
 * A retention-rule filter for rel, which the caller has locked (at least
 * AccessShareLock): immutable, built-in code only.
 */
Expr *
sequin_cdc_parse_filter(Relation rel, const char *filter)
{
	Expr	   *expr = parse_condition(rel, filter, CONDITION_FILTER, true);

	/*
	 * The decoder parses it again without a range table entry: make sure it
	 * can ((t).col, which the range table entry turns into a plain column,
	 * is a whole-row reference there).
	 */
	(void) parse_condition(rel, filter, CONDITION_FILTER, false);
	return expr;
}

/*
 * The same for a relation nobody locked: the decoder's historic relcache
 * entry (plugin_relcache.c).  Takes no lock and opens nothing.
 */
Expr *
sequin_cdc_parse_filter_unlocked(Relation rel, const char *filter)
{
	return parse_condition(rel, filter, CONDITION_FILTER, false);
}

/* A backfill where clause for rel (locked): stable at most, built-in code only. */
Expr *
sequin_cdc_parse_backfill_where(Relation rel, const char *where)
{
	return parse_condition(rel, where, CONDITION_BACKFILL, true);
}
