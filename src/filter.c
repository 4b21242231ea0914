/*-------------------------------------------------------------------------
 *
 * filter.c
 *		Parsing retention-rule filters.
 *
 * A filter is the text of a SQL boolean expression over the source table's
 * columns, like a publication row filter: `status <> 'draft' and amount >
 * 100`.  It is kept as text and parsed against the relation as it is when
 * it is needed (at add time, for validation, and in the decoder against the
 * historic catalog), so column renames and drops that happen later are
 * seen the way the data is.  Only immutable expressions are accepted: the
 * decoder evaluates them long after the fact, so now() or a table lookup
 * would give answers unrelated to the change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"

#include "filter.h"

static void
bad_filter(const char *filter, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid retention filter \"%s\"", filter),
			 errdetail("%s", why),
			 errhint("A filter is one boolean SQL expression over the source table's columns, such as status <> 'draft' and amount > 100.")));
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

/*
 * Parse and analyze a filter for rel; returns a boolean expression whose
 * Vars have varno 1.  Raises an error for anything that is not a single
 * immutable boolean expression.
 */
Expr *
sequin_cdc_parse_filter(Relation rel, const char *filter)
{
	List	   *raw;
	RawStmt    *rs;
	SelectStmt *sel;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	ErrorContextCallback errcb;

	errcb.callback = filter_error_callback;
	errcb.arg = (void *) filter;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raw = raw_parser(filter, RAW_PARSE_PLPGSQL_EXPR);
	if (list_length(raw) != 1)
		bad_filter(filter, "It is not a single expression.");
	rs = linitial_node(RawStmt, raw);
	if (!IsA(rs->stmt, SelectStmt))
		bad_filter(filter, "It is not a single expression.");
	sel = (SelectStmt *) rs->stmt;
	if (list_length(sel->targetList) != 1 || sel->fromClause || sel->whereClause ||
		sel->groupClause || sel->havingClause || sel->windowClause ||
		sel->sortClause || sel->limitCount || sel->limitOffset ||
		sel->lockingClause || sel->distinctClause || sel->withClause)
		bad_filter(filter, "It is not a single expression.");
	target = linitial_node(ResTarget, sel->targetList);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = filter;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   NULL, false, false);
	addNSItemToQuery(pstate, nsitem, false, true, true);

	expr = transformExpr(pstate, target->val, EXPR_KIND_WHERE);
	expr = coerce_to_boolean(pstate, expr, "retention filter");
	assign_expr_collations(pstate, expr);

	if (pstate->p_hasSubLinks)
		bad_filter(filter, "Subqueries are not allowed.");
	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs || pstate->p_hasTargetSRFs)
		bad_filter(filter, "Aggregates, window functions and set-returning functions are not allowed.");
	if (contain_mutable_functions(expr))
		bad_filter(filter, "It calls a function or operator that is not immutable (such as now() or random()); the filter is evaluated when the change is decoded, so it must depend only on the row.");

	free_parsestate(pstate);
	error_context_stack = errcb.previous;
	return (Expr *) expr;
}
