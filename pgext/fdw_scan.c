/*-------------------------------------------------------------------------
 *
 * fdw_scan.c
 *		  Planning and scanning callbacks: quals handed to Python, sorted
 *		  paths, the batch and per-row scan loops, EXPLAIN.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/table.h"
#include "access/transam.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/explain.h"
#include "executor/executor.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/prep.h"
#include "optimizer/restrictinfo.h"
#include "optimizer/tlist.h"
#include "catalog/pg_aggregate.h"
#include "parser/parsetree.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "access/htup_details.h"
#include "commands/vacuum.h"
#include "catalog/pg_namespace.h"
#include "datatype/timestamp.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/pg_locale.h"
#include "utils/sampling.h"
#include "utils/selfuncs.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/*
 * Indexes of the items of ForeignScan.fdw_private.
 */
enum FdwScanPrivateIndex
{
	/* List of Integer: attribute numbers the query needs */
	FdwScanPrivateNeededAttrs,
	/* List of per-qual Lists: see QualMetaIndex; values are in fdw_exprs */
	FdwScanPrivateQuals,
	/* List of per-sortkey Lists: see SortKeyMetaIndex */
	FdwScanPrivateSortKeys,
	/* Integer: rows the query can need at most (LIMIT + OFFSET), or -1 */
	FdwScanPrivateLimit,
	/* only in a pushed-down join: see JoinPrivateIndex */
	FdwScanPrivateJoin,
	/* only in a join run by the engine: String, the plan Python made */
	FdwScanPrivateEngine
};

/* Items of a pushed-down join's FdwScanPrivateJoin list */
enum JoinPrivateIndex
{
	JoinPrivateOuterRti,		/* Integer: range table index of the outer rel */
	JoinPrivateInnerRti,		/* Integer: of the inner rel */
	JoinPrivateType,			/* String: inner, left, right or full */
	JoinPrivateClauses			/* List of (outer attno, inner attno, collation) */
};

enum QualMetaIndex
{
	QualMetaAttno,				/* Integer */
	QualMetaOperator,			/* String: operator name */
	QualMetaIsArray,			/* Integer: 1 for = ANY / <> ALL (value is a list) */
	QualMetaUseOr,				/* Integer: 1 for ANY, 0 for ALL */
	QualMetaNullTest,			/* Integer: 1 for IS [NOT] NULL */
	QualMetaCollation,			/* Integer: input collation oid */
	QualMetaExact,				/* Integer: 1 if Postgres does not recheck it */
	QualMetaSide				/* Integer, joins only: 0 outer rel, 1 inner rel */
};

/*
 * A sort key: a plain column, or an expression "f(column, value)" (or
 * "f(value, column)") whose value is fixed for the scan, such as a distance
 * "embedding <-> '[1,2,3]'".  In a path the value is the Expr; in a plan, the
 * index of the Expr in fdw_exprs (after the quals' values).
 */
enum SortKeyMetaIndex
{
	SortKeyAttno,				/* Integer */
	SortKeyReversed,			/* Integer: 1 for DESC */
	SortKeyNullsFirst,			/* Integer */
	SortKeyCollation,			/* Integer: collation oid */
	SortKeyFunction,			/* Integer: the expression's function oid (absent: a column) */
	SortKeyColumnFirst,			/* Integer: 1 if the column is the first argument */
	SortKeyValue				/* Expr (path) or Integer index into fdw_exprs (plan) */
};

/* One qual found in baserestrictinfo that Python may use */
typedef struct OrochiQual
{
	RestrictInfo *rinfo;
	AttrNumber	attno;
	char	   *opname;
	bool		is_array;
	bool		use_or;
	bool		is_nulltest;
	Oid			collation;
	Expr	   *value;			/* pseudo-constant: Const, Param or stable expression */
} OrochiQual;

/* Planner state kept in baserel->fdw_private */
typedef struct OrochiPlanState
{
	Bitmapset  *needed;			/* attnos offset by FirstLowInvalidHeapAttributeNumber */
	List	   *quals;			/* OrochiQual * */
	Cost		startup_cost;
	Cost		total_cost;
	/*
	 * What PostgreSQL's evaluation of the restrictions the scan does not
	 * take costs (in the costs above): those holding subqueries, run per
	 * row, and the others over the rows the scan hands over for them
	 */
	Cost		local_cost;
	Selectivity selectivity;	/* of baserestrictinfo, Postgres's estimate */
	PyObject   *engine_input;	/* engine_input_to_py's answer, once made */
} OrochiPlanState;

/* Planner state of a pushed-down aggregation, in output_rel->fdw_private */
typedef struct OrochiUpperState
{
	RelOptInfo *input_rel;		/* the orochi table */
	List	   *tlist;			/* fdw_scan_tlist: group keys g<i>, aggregates a<j> */
	List	   *having;			/* HAVING conditions, checked by the scan over its groups */
	char	   *engine_plan;	/* over a join the engine runs: the plan Python made */
	bool		ordered;		/* engine: the plan sorts its rows (ORDER BY pushed) */
} OrochiUpperState;

/* Executor state of one scan */
typedef struct OrochiScanState
{
	Relation	rel;
	TupleDesc	tupdesc;		/* of the rows produced: the table's, or g<i>/a<j> */
	TupleDesc	rel_tupdesc;	/* of the table (names of qual columns) */
	OrochiTypeConv *convs;
	PyObject  **attnames;		/* interned column names, by attribute index */
	PyObject   *instance;
	PyObject   *columns;		/* list of needed column names */
	PyObject   *sortkeys;		/* list of sort key tuples (see sortkeys_to_py) */
	List	   *sortkey_meta;	/* per sort key: see SortKeyMetaIndex */
	List	   *qual_meta;
	List	   *qual_exprs;		/* ExprState * per qual */
	OrochiTypeConv *qual_convs;
	PyObject   *iterator;
	PyObject   *quals;			/* the quals as last evaluated (EXPLAIN ANALYZE), or NULL */
	PyObject   *row;			/* per-row path: the row being converted */
	OrochiBatchReader batch;
	bool		done;
	bool		released;
	MemoryContext rowcxt;		/* the current row's Datums; reset per row */
	MemoryContext scancxt;		/* lives as long as the scan */
	bool		row_allocated;	/* the current row's Datums are in rowcxt */
	int			limit;			/* rows the query needs at most, or -1 */
	int64		rows_returned;
	TupleDesc	join_tupdescs[2];	/* a pushed-down join: its outer and inner rel */
	PyObject   *scan_cache;		/* kept by the wrapper across rescans, or NULL */
	bool		rowids;			/* the plan reads ctid (UPDATE, DELETE, SELECT ctid) */
} OrochiScanState;

/* Planner state of a join offered to the wrappers, in joinrel->fdw_private */
typedef struct OrochiJoinState
{
	bool		accepted;		/* the wrapper runs it */
	RelOptInfo *outerrel;
	RelOptInfo *innerrel;
	JoinType	jointype;
	List	   *clauses;		/* per equality: (outer attno, inner attno, collation) */
	List	   *tlist;			/* fdw_scan_tlist: Vars of either rel, named j<i> */
	bool		engine;			/* run by the join engine (orochi_fdw/query/engine.py) */
	List	   *joinclauses;	/* engine: the join's own conditions (ON) */
	List	   *otherclauses;	/* engine: conditions applied above an outer join */
	char	   *engine_plan;	/* engine: the plan Python made (a string) */
	PyObject   *engine_input;	/* engine: engine_input_to_py's answer, once made */
	Cost		engine_total;	/* engine: the total cost of that plan */
} OrochiJoinState;

/*
 * Planner state of a subquery (an RTE_SUBQUERY rel: GROUP BY and HAVING,
 * as PostgreSQL leaves IN (SELECT ... GROUP BY ...) in the join tree) whose
 * aggregation the engine runs, in rel->fdw_private: the rel then carries
 * the server of its tables, so that the joins above it are offered to the
 * engine with it as an input (orochi_subquery_rel_pathlist).
 */
typedef struct OrochiSubqueryState
{
	PyObject   *engine_input;	/* its description: engine_input_to_py's answer */
} OrochiSubqueryState;

static ForeignScan *join_plan(RelOptInfo *joinrel, List *tlist, Plan *outer_plan);
static bool engine_join_path(PlannerInfo *root, RelOptInfo *joinrel, RelOptInfo *outerrel,
							 RelOptInfo *innerrel, JoinType jointype, JoinPathExtraData *extra);
static List *engine_param_exprs(const char *plan);
static void engine_plan_subqueries(PlannerInfo *root, Relids relids);
static void jit_upper_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel,
						   void *extra);
/* groups (PostgreSQL's estimate) from which the join engine is asked before the pushdown */
#define ENGINE_MANY_GROUPS 10000.0

static void one_table_upper_paths(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel,
								  void *extra);
static void engine_upper_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel,
							  void *extra);
static void engine_order_path(PlannerInfo *root, UpperRelationKind stage, RelOptInfo *input_rel,
							  RelOptInfo *output_rel, void *extra);
static PyObject *join_request(const char *jointype, List *clauses, List *tlist, Index outer_rti,
							  TupleDesc outer, TupleDesc inner);

static const char *const pushable_operators[] = {
	"=", "<>", "<", "<=", ">", ">=", "~~", "~~*", "!~~", "!~~*", NULL
};

/*
 * The name a qual's operator reaches Python by, or NULL if it is not pushed.
 * Python gives the name Multicorn's (the built-in) meaning, so only built-in
 * operators qualify: those initdb made (OIDs below FirstNormalObjectId),
 * never a user's operator of the same name found first in the search path.
 */
static char *
pushable_operator_name(Oid opno)
{
	char	   *name;

	if (!OidIsValid(opno) || opno >= FirstNormalObjectId)
		return NULL;
	name = get_opname(opno);
	if (name == NULL)
		return NULL;
	for (int i = 0; pushable_operators[i]; i++)
		if (strcmp(pushable_operators[i], name) == 0)
			return name;
	return NULL;
}

static Node *
strip_relabel(Node *node)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node;
}

static bool
is_column_of(Node *node, Index relid)
{
	node = strip_relabel(node);
	return node && IsA(node, Var) && ((Var *) node)->varno == relid &&
		((Var *) node)->varlevelsup == 0 && ((Var *) node)->varattno > 0;
}

/*
 * Whether an expression can be the value side of a qual: fixed for the
 * scan (a pseudo-constant), or, in a parameterized scan, built of columns
 * of the outer relations it is parameterized by (they arrive as parameters
 * at each rescan).
 */
static bool
is_scan_value(PlannerInfo *root, Node *node, Relids outer)
{
	if (is_pseudo_constant_clause(node))
		return true;
	return outer != NULL && !contain_volatile_functions(node) &&
		!contain_subplans(node) && bms_is_subset(pull_varnos(root, node), outer);
}

/*
 * extract_qual
 *		If the clause is "column op value" (either way round, the value
 *		fixed for the scan: see is_scan_value), "column op ANY/ALL (array)",
 *		"column IS [NOT] NULL", "boolcol" or "NOT boolcol", describe it; else
 *		NULL.
 */
static OrochiQual *
extract_qual(PlannerInfo *root, RestrictInfo *rinfo, Index relid, Relids outer)
{
	Expr	   *clause = rinfo->clause;
	OrochiQual *q;

	if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
	{
		OpExpr	   *op = (OpExpr *) clause;
		Node	   *left = linitial(op->args);
		Node	   *right = lsecond(op->args);
		Oid			opno = op->opno;
		char	   *opname;

		if (opno >= FirstNormalObjectId)
			return NULL;		/* a user's operator, whatever its commutator */
		if (is_column_of(left, relid) && is_scan_value(root, right, outer))
			 /* column on the left: as written */ ;
		else if (is_column_of(right, relid) && is_scan_value(root, left, outer))
		{
			Node	   *tmp = left;

			opno = get_commutator(opno);
			if (!OidIsValid(opno))
				return NULL;
			left = right;
			right = tmp;
		}
		else
			return NULL;
		opname = pushable_operator_name(opno);
		if (opname == NULL)
			return NULL;
		q = palloc0(sizeof(OrochiQual));
		q->rinfo = rinfo;
		q->attno = ((Var *) strip_relabel(left))->varattno;
		q->opname = opname;
		q->collation = op->inputcollid;
		q->value = (Expr *) right;
		return q;
	}
	if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *saop = (ScalarArrayOpExpr *) clause;
		Node	   *left = linitial(saop->args);
		Node	   *right = lsecond(saop->args);
		char	   *opname;

		if (!is_column_of(left, relid) || !is_scan_value(root, right, outer))
			return NULL;
		opname = pushable_operator_name(saop->opno);
		if (opname == NULL)
			return NULL;
		q = palloc0(sizeof(OrochiQual));
		q->rinfo = rinfo;
		q->attno = ((Var *) strip_relabel(left))->varattno;
		q->opname = opname;
		q->is_array = true;
		q->use_or = saop->useOr;
		q->collation = saop->inputcollid;
		q->value = (Expr *) right;
		return q;
	}
	if (IsA(clause, NullTest))
	{
		NullTest   *nt = (NullTest *) clause;

		if (nt->argisrow || !is_column_of((Node *) nt->arg, relid))
			return NULL;
		q = palloc0(sizeof(OrochiQual));
		q->rinfo = rinfo;
		q->attno = ((Var *) strip_relabel((Node *) nt->arg))->varattno;
		q->opname = pstrdup(nt->nulltesttype == IS_NULL ? "=" : "<>");
		q->is_nulltest = true;
		q->value = (Expr *) makeNullConst(BOOLOID, -1, InvalidOid);
		return q;
	}
	if (is_column_of((Node *) clause, relid) && exprType((Node *) clause) == BOOLOID)
	{
		q = palloc0(sizeof(OrochiQual));
		q->rinfo = rinfo;
		q->attno = ((Var *) strip_relabel((Node *) clause))->varattno;
		q->opname = pstrdup("=");
		q->value = (Expr *) makeBoolConst(true, false);
		return q;
	}
	if (is_notclause((Node *) clause) &&
		is_column_of((Node *) get_notclausearg(clause), relid) &&
		exprType((Node *) get_notclausearg(clause)) == BOOLOID)
	{
		q = palloc0(sizeof(OrochiQual));
		q->rinfo = rinfo;
		q->attno = ((Var *) strip_relabel((Node *) get_notclausearg(clause)))->varattno;
		q->opname = pstrdup("=");
		q->value = (Expr *) makeBoolConst(false, false);
		return q;
	}
	return NULL;
}

/*
 * A collation as quals and sort keys name it: its name for the collations of
 * pg_catalog (the database's own), else its schema-qualified, quoted name, so
 * that a user's collation called "C" is never taken for the built-in one.
 */
static PyObject *
collation_name(Oid collation)
{
	HeapTuple	tuple;
	Form_pg_collation form;
	PyObject   *result;

	if (!OidIsValid(collation))
		Py_RETURN_NONE;
	tuple = SearchSysCache1(COLLOID, ObjectIdGetDatum(collation));
	if (!HeapTupleIsValid(tuple))
		Py_RETURN_NONE;
	form = (Form_pg_collation) GETSTRUCT(tuple);
	if (form->collnamespace == PG_CATALOG_NAMESPACE)
		result = orochi_cstring_to_py(NameStr(form->collname));
	else
	{
		char	   *nspname = get_namespace_name(form->collnamespace);

		result = orochi_cstring_to_py(quote_qualified_identifier(nspname ? nspname : "?",
																 NameStr(form->collname)));
	}
	ReleaseSysCache(tuple);
	return result;
}

/*
 * A qual as the runtime receives it:
 * (attname, operator, is_list, use_or, value, value_known, collation, exact)
 */
static PyObject *
qual_tuple(const char *attname, const char *opname, bool is_array, bool use_or,
		   PyObject *value, bool known, Oid collation, bool exact)
{
	PyObject   *coll = collation_name(collation);
	PyObject   *t = Py_BuildValue("(NsiiNiNi)", orochi_cstring_to_py(attname), opname, (int) is_array,
								  (int) use_or, value, (int) known, coll, (int) exact);

	if (t == NULL)
		orochi_py_raise("building a qual");
	return t;
}

/*
 * Plan-time quals: constants converted; in place of a value not known until
 * execution (a parameter, a stable expression), the name of its type
 */
static PyObject *
plan_quals_to_py(List *quals, Relation rel)
{
	PyObject   *list = PyList_New(0);
	ListCell   *lc;

	if (list == NULL)
		orochi_py_raise("building quals");
	foreach(lc, quals)
	{
		OrochiQual *q = (OrochiQual *) lfirst(lc);
		const char *attname = NameStr(TupleDescAttr(RelationGetDescr(rel), q->attno - 1)->attname);
		PyObject   *value;
		bool		known = false;
		PyObject   *t;

		if (IsA(q->value, Const))
		{
			Const	   *c = (Const *) q->value;
			OrochiTypeConv conv;

			orochi_type_conv_init(&conv, c->consttype, c->consttypmod, attname);
			value = orochi_datum_to_py(c->constvalue, c->constisnull, &conv);
			known = true;
		}
		else
			value = orochi_cstring_to_py(format_type_be(exprType((Node *) q->value)));
		t = qual_tuple(attname, q->opname, q->is_array, q->use_or, value, known, q->collation, false);
		PyList_Append(list, t);
		Py_DECREF(t);
	}
	return list;
}

static PyObject *
needed_columns_to_py(Bitmapset *needed, TupleDesc tupdesc)
{
	PyObject   *list = PyList_New(0);
	bool		whole_row = bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, needed);

	if (list == NULL)
		orochi_py_raise("building columns");
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		if (whole_row || bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, needed))
		{
			PyObject   *name = orochi_cstring_to_py(NameStr(att->attname));

			PyList_Append(list, name);
			Py_DECREF(name);
		}
	}
	return list;
}

/*
 * The value of an expression sort key as Python sees it: the constant, the
 * value of the expression at execution (exprs: the scan's ExprStates, NULL
 * at plan time), or, when it is not known yet, the name of its type.
 */
static PyObject *
sortkey_value_to_py(List *sk, List *exprs, ExprContext *econtext, bool *known)
{
	Node	   *value = (Node *) list_nth(sk, SortKeyValue);
	ExprState  *es = NULL;
	Expr	   *expr;
	OrochiTypeConv conv;
	Datum		datum;
	bool		isnull;

	if (exprs != NIL)
	{
		es = (ExprState *) list_nth(exprs, intVal(value));
		expr = es->expr;
	}
	else
		expr = (Expr *) value;
	*known = IsA(expr, Const) || (es != NULL && econtext != NULL);
	if (!*known)
		return orochi_cstring_to_py(format_type_be(exprType((Node *) expr)));
	if (IsA(expr, Const))
	{
		datum = ((Const *) expr)->constvalue;
		isnull = ((Const *) expr)->constisnull;
	}
	else
		datum = ExecEvalExpr(es, econtext, &isnull);
	orochi_type_conv_init(&conv, exprType((Node *) expr), exprTypmod((Node *) expr), NULL);
	return orochi_datum_to_py(datum, isnull, &conv);
}

/*
 * Sort keys as the runtime receives them: (attname, attnum, reversed,
 * nulls_first, collation) for a column; for an expression, the same and
 * (function, value, value_known, column_first), the function named
 * "schema.name".  exprs/econtext: see sortkey_value_to_py.
 */
static PyObject *
sortkeys_to_py(List *sortkeys, TupleDesc tupdesc, List *exprs, ExprContext *econtext)
{
	PyObject   *list = PyList_New(0);
	ListCell   *lc;

	foreach(lc, sortkeys)
	{
		List	   *sk = (List *) lfirst(lc);
		AttrNumber	attno = intVal(list_nth(sk, SortKeyAttno));
		const char *attname = NameStr(TupleDescAttr(tupdesc, attno - 1)->attname);
		PyObject   *t;

		if (list_length(sk) > SortKeyFunction)
		{
			Oid			funcoid = (Oid) intVal(list_nth(sk, SortKeyFunction));
			char	   *fname = psprintf("%s.%s", get_namespace_name(get_func_namespace(funcoid)),
										 get_func_name(funcoid));
			bool		known;
			PyObject   *value = sortkey_value_to_py(sk, exprs, econtext, &known);

			t = Py_BuildValue("(NiiiNNNii)", orochi_cstring_to_py(attname), (int) attno,
							  intVal(list_nth(sk, SortKeyReversed)), intVal(list_nth(sk, SortKeyNullsFirst)),
							  collation_name((Oid) intVal(list_nth(sk, SortKeyCollation))),
							  orochi_cstring_to_py(fname), value, (int) known,
							  intVal(list_nth(sk, SortKeyColumnFirst)));
		}
		else
			t = Py_BuildValue("(NiiiN)", orochi_cstring_to_py(attname), (int) attno,
							  intVal(list_nth(sk, SortKeyReversed)),
							  intVal(list_nth(sk, SortKeyNullsFirst)),
							  collation_name((Oid) intVal(list_nth(sk, SortKeyCollation))));
		if (t == NULL)
			orochi_py_raise("building sort keys");
		PyList_Append(list, t);
		Py_DECREF(t);
	}
	return list;
}

/*
 * orochiGetForeignRelSize
 *		Find the columns and quals of the scan and ask Python for the size.
 */
static void
orochiGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	OrochiPlanState *state = palloc0(sizeof(OrochiPlanState));
	Relation	rel = table_open(foreigntableid, NoLock);
	PyObject   *instance;
	PyObject   *args;
	PyObject   *res;
	ListCell   *lc;
	List	   *pushed = NIL;
	List	   *local = NIL;
	List	   *subplan_clauses = NIL;

	/*
	 * SELECT ... FOR UPDATE / SHARE: Postgres would mark the rows with a copy
	 * and lock nothing (foreign rows have no tuple locks), so say so instead
	 * of pretending.
	 */
	{
		PlanRowMark *rc = get_plan_rowmark(root->rowMarks, baserel->relid);

		if (rc != NULL && rc->strength != LCS_NONE)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("SELECT FOR UPDATE/SHARE is not supported on foreign table \"%s\"",
							RelationGetRelationName(rel)),
					 errdetail("Rows of orochi foreign tables have no row locks."),
					 errhint("UPDATE and DELETE detect conflicting writes themselves; to serialize "
							 "a read-modify-write, use an advisory lock (pg_advisory_xact_lock).")));
	}
	baserel->fdw_private = state;
	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &state->needed);
	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		bool		subplan = contain_subplans((Node *) rinfo->clause);
		OrochiQual *q;

		pull_varattnos((Node *) rinfo->clause, baserel->relid, &state->needed);
		q = extract_qual(root, rinfo, baserel->relid, NULL);
		if (subplan)
			subplan_clauses = lappend(subplan_clauses, rinfo);
		if (q)
		{
			state->quals = lappend(state->quals, q);
			pushed = lappend(pushed, rinfo);
		}
		else if (!subplan)
			local = lappend(local, rinfo);
	}

	/*
	 * The selectivity of all the quals, from Postgres's own estimators over
	 * the statistics ANALYZE gathered (as postgres_fdw without remote
	 * estimates); the wrapper decides what to make of it.
	 */
	state->selectivity = clauselist_selectivity(root, baserel->baserestrictinfo, 0,
												JOIN_INNER, NULL);
	instance = orochi_instance_for_relation(rel);
	args = Py_BuildValue("(NNNdd)", instance, plan_quals_to_py(state->quals, rel),
						 needed_columns_to_py(state->needed, RelationGetDescr(rel)),
						 state->selectivity, baserel->tuples);
	table_close(rel, NoLock);
	res = orochi_runtime_call("get_rel_size", args);
	{
		double		rows,
					width,
					startup,
					total,
					tuples;
		bool		ok = PyArg_ParseTuple(res, "ddddd", &rows, &width, &startup, &total, &tuples);

		Py_DECREF(res);
		if (!ok)
			orochi_py_raise("get_rel_size must return (rows, width, startup_cost, total_cost, tuples)");
		/* the rows in the table: parameterized paths estimate from them */
		if (tuples >= 0)
			baserel->tuples = tuples;
		baserel->rows = clamp_row_est(rows);
		baserel->reltarget->width = (int) Max(width, 1);
		state->startup_cost = startup;
		state->total_cost = Max(total, startup);
	}

	/*
	 * The restrictions the scan does not take (expressions: TPC-H Q22's
	 * substring(c_phone from 1 for 2) IN (...)) PostgreSQL evaluates over
	 * every row the scan hands over, the rows that pass the others: their
	 * evaluation, and the hand-over of the rows they then remove (the costs
	 * above count the rows that pass them all), as PostgreSQL's own scans
	 * count them.  The join engine, which evaluates them in DuckDB, takes
	 * this out (engine_input_to_py).
	 */
	if (local != NIL)
	{
		QualCost	qc;
		double		handed = baserel->tuples;

		if (pushed != NIL)
			handed *= clauselist_selectivity(root, pushed, 0, JOIN_INNER, NULL);
		handed = Max(handed, baserel->rows);
		cost_qual_eval(&qc, local, root);
		state->local_cost = qc.startup + qc.per_tuple * handed + (handed - baserel->rows) * cpu_tuple_cost;
		state->startup_cost += qc.startup;
		state->total_cost += state->local_cost;
	}

	/*
	 * A restriction holding a subquery (SubPlan) is evaluated by PostgreSQL
	 * row by row over the scan's rows, its subquery run each time (TPC-H
	 * Q20's partsupp): its cost as PostgreSQL's own scans count it.  The join
	 * engine, which runs such a subquery once for all rows, takes it out
	 * (engine_input_to_py).
	 */
	if (subplan_clauses != NIL)
	{
		QualCost	qc;
		Cost		cost;

		cost_qual_eval(&qc, subplan_clauses, root);
		cost = qc.startup + qc.per_tuple * Max(baserel->tuples, baserel->rows);
		state->local_cost += cost;
		state->startup_cost += qc.startup;
		state->total_cost += cost;
	}
}

/*
 * "f(column, value)" or "f(value, column)": a function (or an operator's)
 * of two arguments, one a column of this relation, the other fixed for the
 * scan.  Returns the column's Var and sets the rest, or NULL.
 */
static Var *
column_function_of(Node *expr, Index relid, Oid *funcoid, Node **value, bool *column_first)
{
	List	   *args;

	if (IsA(expr, OpExpr))
	{
		*funcoid = get_opcode(((OpExpr *) expr)->opno);
		args = ((OpExpr *) expr)->args;
	}
	else if (IsA(expr, FuncExpr) && ((FuncExpr *) expr)->funcretset == false)
	{
		*funcoid = ((FuncExpr *) expr)->funcid;
		args = ((FuncExpr *) expr)->args;
	}
	else
		return NULL;
	if (list_length(args) != 2 || !OidIsValid(*funcoid))
		return NULL;
	*column_first = is_column_of(linitial(args), relid);
	if (*column_first && is_pseudo_constant_clause(lsecond(args)))
		*value = lsecond(args);
	else if (is_column_of(lsecond(args), relid) && is_pseudo_constant_clause(linitial(args)))
		*value = linitial(args);
	else
		return NULL;
	return (Var *) strip_relabel(*column_first ? linitial(args) : lsecond(args));
}

/*
 * A pathkey as a sort key of this relation (see SortKeyMetaIndex): a plain
 * column, or a function of a column and a value fixed for the scan; NIL if
 * it is neither.
 */
static List *
pathkey_to_sortkey(PathKey *pathkey, RelOptInfo *baserel)
{
	EquivalenceClass *ec = pathkey->pk_eclass;
	ListCell   *lc;

	if (ec->ec_has_volatile)
		return NIL;
	foreach(lc, ec->ec_members)
	{
		EquivalenceMember *em = (EquivalenceMember *) lfirst(lc);
		Node	   *expr = strip_relabel((Node *) em->em_expr);
		List	   *sk;
		Oid			funcoid;
		Node	   *value;
		bool		column_first;
		Var		   *var;

		if (!bms_equal(em->em_relids, baserel->relids))
			continue;
		sk = list_make4(NULL,
						makeInteger(pathkey->pk_strategy == BTGreaterStrategyNumber),
						makeInteger(pathkey->pk_nulls_first),
						makeInteger((int) ec->ec_collation));
		if (is_column_of(expr, baserel->relid))
		{
			linitial(sk) = makeInteger(((Var *) expr)->varattno);
			return sk;
		}
		var = column_function_of(expr, baserel->relid, &funcoid, &value, &column_first);
		if (var != NULL)
		{
			linitial(sk) = makeInteger(var->varattno);
			return lappend(lappend(lappend(sk, makeInteger((int) funcoid)),
								   makeInteger(column_first)), copyObject(value));
		}
	}
	return NIL;
}

/* State of ec_member_matches_column: as postgres_fdw's ec_member_foreign_arg */
typedef struct EcMemberArg
{
	Expr	   *current;		/* the column whose equalities are wanted */
	List	   *already_used;	/* columns done already */
} EcMemberArg;

/*
 * Callback of generate_implied_equalities_for_column: each plain column of
 * the relation in turn, as in postgres_fdw.
 */
static bool
ec_member_matches_column(PlannerInfo *root, RelOptInfo *rel, EquivalenceClass *ec,
						 EquivalenceMember *em, void *arg)
{
	EcMemberArg *state = (EcMemberArg *) arg;
	Expr	   *expr = em->em_expr;

	if (state->current != NULL)
		return equal(expr, state->current);
	if (!is_column_of((Node *) expr, rel->relid) || list_member(state->already_used, expr))
		return false;
	state->current = expr;
	return true;
}

/*
 * The outer relations a join clause would parameterize a scan of baserel
 * by, if it can be a qual of that scan ("column op outer expression");
 * else NULL.
 */
static Relids
param_clause_outer(PlannerInfo *root, RelOptInfo *baserel, RestrictInfo *rinfo)
{
	Relids		required_outer;

	if (!join_clause_is_movable_to(rinfo, baserel))
		return NULL;
	required_outer = bms_union(rinfo->clause_relids, baserel->lateral_relids);
	required_outer = bms_del_member(required_outer, baserel->relid);
	if (bms_is_empty(required_outer) || bms_overlap(required_outer, baserel->relids))
		return NULL;
	if (extract_qual(root, rinfo, baserel->relid, required_outer) == NULL)
		return NULL;
	return required_outer;
}

/*
 * Parameterized paths: for each set of outer relations whose join clauses
 * can be quals of this scan (their values set at each rescan), ask the
 * wrapper what one such scan costs (param_scan_cost); it answers only when
 * the parameters let it read much less than the whole table (min/max
 * pruning on a clustered column).  The row estimate is Postgres's.
 */
static void
add_param_paths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	OrochiPlanState *state = (OrochiPlanState *) baserel->fdw_private;
	List	   *ppis = NIL;
	ListCell   *lc;

	foreach(lc, baserel->joininfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		Relids		required_outer = param_clause_outer(root, baserel, rinfo);

		if (required_outer != NULL)
			ppis = list_append_unique_ptr(ppis,
										  get_baserel_parampathinfo(root, baserel, required_outer));
	}
	if (baserel->has_eclass_joins)
	{
		EcMemberArg arg;

		arg.already_used = NIL;
		for (;;)
		{
			List	   *clauses;

			arg.current = NULL;
			clauses = generate_implied_equalities_for_column(root, baserel, ec_member_matches_column,
															 (void *) &arg,
															 baserel->lateral_referencers);
			if (arg.current == NULL)
				break;
			foreach(lc, clauses)
			{
				RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
				Relids		required_outer = param_clause_outer(root, baserel, rinfo);

				if (required_outer != NULL)
					ppis = list_append_unique_ptr(ppis,
												  get_baserel_parampathinfo(root, baserel, required_outer));
			}
			arg.already_used = lappend(arg.already_used, arg.current);
		}
	}
	if (ppis == NIL)
		return;

	foreach(lc, ppis)
	{
		ParamPathInfo *ppi = (ParamPathInfo *) lfirst(lc);
		List	   *quals = list_copy(state->quals);
		ListCell   *lc2;
		Relation	rel;
		PyObject   *args;
		PyObject   *res;
		double		startup,
					total;

		foreach(lc2, ppi->ppi_clauses)
		{
			OrochiQual *q = extract_qual(root, lfirst_node(RestrictInfo, lc2), baserel->relid,
										 ppi->ppi_req_outer);

			if (q)
				quals = lappend(quals, q);
		}
		rel = table_open(foreigntableid, NoLock);
		args = Py_BuildValue("(NNNd)", orochi_instance_for_relation(rel), plan_quals_to_py(quals, rel),
							 needed_columns_to_py(state->needed, RelationGetDescr(rel)), ppi->ppi_rows);
		table_close(rel, NoLock);
		res = orochi_runtime_call("param_scan_cost", args);
		if (res == Py_None)
		{
			Py_DECREF(res);
			continue;
		}
		if (!PyArg_ParseTuple(res, "dd", &startup, &total))
		{
			Py_DECREF(res);
			orochi_py_raise("param_scan_cost must return None or (startup_cost, total_cost)");
		}
		Py_DECREF(res);
		add_path(baserel, (Path *)
				 create_foreignscan_path(root, baserel, NULL, ppi->ppi_rows, startup, Max(total, startup),
										 NIL, ppi->ppi_req_outer, NULL, NIL));
	}
}

/*
 * orochiGetForeignPaths
 *		One unsorted path; parameterized paths where join clauses prune
 *		(add_param_paths); and, if the query wants an order that the wrapper
 *		says it can produce (can_sort), a sorted path with those pathkeys.
 */
static void
orochiGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	OrochiPlanState *state = (OrochiPlanState *) baserel->fdw_private;
	List	   *sortkeys = NIL;
	List	   *pathkeys = NIL;
	ListCell   *lc;

	/*
	 * A relation with lateral references (columns of other relations in its
	 * quals or target list, e.g. in LEFT JOIN LATERAL) can only be scanned
	 * once for each row of those relations: every path is parameterized by
	 * them.
	 */
	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, baserel->rows,
									 state->startup_cost, state->total_cost,
									 NIL, baserel->lateral_relids, NULL, NIL));
	add_param_paths(root, baserel, foreigntableid);

	foreach(lc, root->query_pathkeys)
	{
		List	   *sk = pathkey_to_sortkey((PathKey *) lfirst(lc), baserel);

		if (sk == NIL)
			break;
		sortkeys = lappend(sortkeys, sk);
		pathkeys = lappend(pathkeys, lfirst(lc));
	}
	if (sortkeys != NIL)
	{
		Relation	rel = table_open(foreigntableid, NoLock);
		PyObject   *args = Py_BuildValue("(NN)", orochi_instance_for_relation(rel),
										 sortkeys_to_py(sortkeys, RelationGetDescr(rel), NIL, NULL));
		PyObject   *res;
		long		n;
		double		startup = -1,
					total = -1;
		Cost		sorted_total;

		table_close(rel, NoLock);
		res = orochi_runtime_call("can_sort", args);
		/* the number of keys handled, or (number, startup_cost, total_cost) */
		if (PyTuple_Check(res))
		{
			if (!PyArg_ParseTuple(res, "ldd", &n, &startup, &total))
			{
				Py_DECREF(res);
				orochi_py_raise("can_sort must return n or (n, startup_cost, total_cost)");
			}
		}
		else
			n = PyLong_AsLong(res);
		Py_DECREF(res);
		if (n == -1 && PyErr_Occurred())
			orochi_py_raise("can_sort must return the number of sort keys handled");
		/*
		 * Text keys only for a top-N (a LIMIT): a whole sorted scan of text
		 * would be costed as cheaply as one of numbers, and win over a
		 * pushed-down aggregation whose groups Postgres sorts.
		 */
		if (n > 0 && !(root->limit_tuples > 0))
		{
			Relation	trel = table_open(foreigntableid, NoLock);
			int			k = 0;

			foreach(lc, sortkeys)
			{
				AttrNumber	attno = intVal(list_nth((List *) lfirst(lc), SortKeyAttno));
				Oid			typid = attno > 0 ? TupleDescAttr(RelationGetDescr(trel), attno - 1)->atttypid : InvalidOid;

				if (k >= n || typid == TEXTOID || typid == VARCHAROID)
					break;
				k++;
			}
			table_close(trel, NoLock);
			n = k;
		}
		if (n > 0 && n <= list_length(sortkeys))
		{
			sortkeys = list_truncate(sortkeys, n);
			pathkeys = list_truncate(list_copy(pathkeys), n);
			/*
			 * Rows come out only once all are read and ordered: the startup
			 * cost is the whole cost (else a LIMIT 1 above it, e.g. min/max
			 * rewritten as subqueries, looks nearly free).
			 */
			sorted_total = state->total_cost + baserel->rows * cpu_operator_cost;
			if (startup < 0)
				startup = total = sorted_total;
			add_path(baserel, (Path *)
					 create_foreignscan_path(root, baserel, NULL, baserel->rows,
											 startup, Max(total, startup),
											 pathkeys, baserel->lateral_relids, NULL,
											 list_make1(sortkeys)));
		}
	}
}

/*
 * orochiGetForeignPlan
 *		Keep every qual for Postgres to recheck, except those the wrapper
 *		says it handles exactly (exact_quals).
 */
static ForeignScan *
orochiGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
					 ForeignPath *best_path, List *tlist, List *scan_clauses, Plan *outer_plan)
{
	OrochiUpperState *upper = IS_UPPER_REL(baserel) ? (OrochiUpperState *) baserel->fdw_private : NULL;
	OrochiPlanState *state = upper ? (OrochiPlanState *) upper->input_rel->fdw_private :
	(OrochiPlanState *) baserel->fdw_private;
	List	   *local_clauses = NIL;
	List	   *exact = NIL;
	List	   *qual_meta = NIL;
	List	   *qual_exprs = NIL;
	List	   *needed = NIL;
	List	   *sortkeys = best_path->fdw_private ? linitial(best_path->fdw_private) : NIL;
	List	   *quals;
	ListCell   *lc;
	int			x;
	int			limit = -1;

	if (IS_JOIN_REL(baserel))
	{
		engine_plan_subqueries(root, baserel->relids);
		return join_plan(baserel, tlist, outer_plan);
	}
	if (upper && upper->engine_plan != NULL)
	{
		engine_plan_subqueries(root, upper->input_rel->relids);
		return make_foreignscan(tlist, (List *) copyObject(upper->having), 0,
								engine_param_exprs(upper->engine_plan),
								lappend(list_make5(NIL, NIL, NIL, makeInteger(-1), NIL),
										makeString(upper->engine_plan)),
								upper->tlist, NIL, outer_plan);
	}
	if (upper)
		foreigntableid = planner_rt_fetch(upper->input_rel->relid, root)->relid;

	/*
	 * A parameterized scan (lateral references) also gets the join clauses
	 * whose other side comes from the outer relations as quals: their values
	 * are parameters, set at each rescan.
	 */
	quals = state->quals;
	if (!upper && best_path->path.param_info != NULL)
	{
		Relids		outer = PATH_REQ_OUTER(&best_path->path);

		quals = list_copy(quals);
		foreach(lc, best_path->path.param_info->ppi_clauses)
		{
			OrochiQual *q = extract_qual(root, lfirst_node(RestrictInfo, lc), baserel->relid, outer);

			if (q)
				quals = lappend(quals, q);
		}
	}
	if (quals != NIL)
	{
		Relation	rel = table_open(foreigntableid, NoLock);
		PyObject   *args = Py_BuildValue("(NN)", orochi_instance_for_relation(rel),
										 plan_quals_to_py(quals, rel));
		PyObject   *res;
		int			i = 0;

		table_close(rel, NoLock);
		res = orochi_runtime_call("exact_quals", args);
		if (!PyList_Check(res) || PyList_GET_SIZE(res) != list_length(quals))
		{
			Py_DECREF(res);
			elog(ERROR, "orochi: exact_quals must return one bool per qual");
		}
		foreach(lc, quals)
		{
			OrochiQual *q = (OrochiQual *) lfirst(lc);

			/* above a pushed-down aggregation nothing is rechecked */
			bool		is_exact = upper != NULL || PyObject_IsTrue(PyList_GET_ITEM(res, i)) == 1;

			if (is_exact)
				exact = lappend(exact, q->rinfo);
			qual_meta = lappend(qual_meta,
								list_concat(list_make5(makeInteger(q->attno), makeString(q->opname),
													   makeInteger(q->is_array), makeInteger(q->use_or),
													   makeInteger(q->is_nulltest)),
											list_make2(makeInteger((int) q->collation),
													   makeInteger(is_exact))));
			qual_exprs = lappend(qual_exprs, q->value);
			i++;
		}
		Py_DECREF(res);
	}

	foreach(lc, scan_clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (rinfo->pseudoconstant)
			continue;
		if (list_member_ptr(exact, rinfo))
			continue;
		local_clauses = lappend(local_clauses, rinfo->clause);
	}

	x = -1;
	while ((x = bms_next_member(state->needed, x)) >= 0)
		needed = lappend(needed, makeInteger(x + FirstLowInvalidHeapAttributeNumber));

	/* the values of expression sort keys go to fdw_exprs, after the quals' */
	{
		List	   *planned = NIL;

		foreach(lc, sortkeys)
		{
			List	   *sk = list_copy((List *) lfirst(lc));

			if (list_length(sk) > SortKeyValue)
			{
				qual_exprs = lappend(qual_exprs, list_nth(sk, SortKeyValue));
				list_nth_cell(sk, SortKeyValue)->ptr_value = makeInteger(list_length(qual_exprs) - 1);
			}
			planned = lappend(planned, sk);
		}
		sortkeys = planned;
	}

	/*
	 * A LIMIT the wrapper may stop at: only if this scan is the whole query
	 * (one table, no grouping: the planner sets limit_tuples then), nothing
	 * is filtered above it, and no Sort above it needs every row.
	 */
	if (!upper && root->limit_tuples > 0 && root->limit_tuples < PG_INT32_MAX &&
		bms_membership(root->all_baserels) == BMS_SINGLETON && local_clauses == NIL &&
		pathkeys_contained_in(root->query_pathkeys, best_path->path.pathkeys))
		limit = (int) root->limit_tuples;

	if (upper)
	{
		/* the wrapper applies every qual (it accepted the aggregation) */
		/*
		 * fdw_scan_tlist names the outputs g<i> / a<i> (the rows Python
		 * yields); it must not be the plan's own tlist, whose names the
		 * planner overwrites with the query's.
		 */
		return make_foreignscan(tlist, (List *) copyObject(upper->having), 0, qual_exprs,
								list_make4(needed, qual_meta, NIL, makeInteger(-1)),
								copyObject(upper->tlist), NIL, outer_plan);
	}
	return make_foreignscan(tlist, local_clauses, baserel->relid, qual_exprs,
							list_make4(needed, qual_meta, sortkeys, makeInteger(limit)),
							NIL, NIL, outer_plan);
}

/* ---------------------------------------------------------------------
 * Aggregate pushdown (docs/aggregate-pushdown.md)
 * ---------------------------------------------------------------------
 */

/* The column a group key or aggregate argument names, or NULL */
static const char *
plain_column(Node *node, TupleDesc rel_tupdesc)
{
	node = strip_relabel(node);
	if (node == NULL || !IsA(node, Var) || ((Var *) node)->varlevelsup != 0 ||
		((Var *) node)->varattno <= 0 || ((Var *) node)->varattno > rel_tupdesc->natts)
		return NULL;
	return NameStr(TupleDescAttr(rel_tupdesc, ((Var *) node)->varattno - 1)->attname);
}

static PyObject *
const_to_py(Node *node)
{
	Const	   *c = (Const *) node;
	OrochiTypeConv conv;

	orochi_type_conv_init(&conv, c->consttype, c->consttypmod, NULL);
	return orochi_datum_to_py(c->constvalue, c->constisnull, &conv);
}

static PyObject *describe_group_key_expr(Expr *expr, TupleDesc rel_tupdesc);
static PyObject *describe_date_bin(Expr *expr, TupleDesc rel_tupdesc, Oid type);
static bool computable_walker(Node *node, void *context);

/*
 * A collation as aggregation cares about it: "C" when it sorts by bytes
 * (the database default included, when its locale is C or POSIX), else its
 * name; and whether equal means byte-equal (deterministic).
 */
static PyObject *
collation_info(Oid collid)
{
	PyObject   *name;

	if (!OidIsValid(collid))
		return Py_BuildValue("(OO)", Py_None, Py_True);
	/* schema-qualified unless it is one of pg_catalog's (collation_name) */
	name = lc_collate_is_c(collid) ? orochi_cstring_to_py("C") : collation_name(collid);
	if (name == Py_None)
	{
		Py_DECREF(name);
		name = orochi_cstring_to_py("");
	}
	return Py_BuildValue("(NO)", name,
						 (collid == DEFAULT_COLLATION_OID || get_collation_isdeterministic(collid)) ?
						 Py_True : Py_False);
}

static int
add_collation(PyObject *dict, Oid collid)
{
	PyObject   *info = collation_info(collid);
	int			rc;

	if (info == NULL)
		return -1;
	rc = PyDict_SetItemString(dict, "collation", PyTuple_GET_ITEM(info, 0));
	if (rc == 0)
		rc = PyDict_SetItemString(dict, "collation_deterministic", PyTuple_GET_ITEM(info, 1));
	Py_DECREF(info);
	return rc;
}

/* node as a call of pg_catalog.<fname> with nargs arguments, or NULL */
static FuncExpr *
catalog_call(Node *node, const char *fname, int nargs)
{
	FuncExpr   *f;
	char	   *name;

	node = strip_relabel(node);
	if (node == NULL || !IsA(node, FuncExpr))
		return NULL;
	f = (FuncExpr *) node;
	if (list_length(f->args) != nargs || get_func_namespace(f->funcid) != PG_CATALOG_NAMESPACE)
		return NULL;
	name = get_func_name(f->funcid);
	return (name && strcmp(name, fname) == 0) ? f : NULL;
}

static bool
is_utc_const(Node *node)
{
	Const	   *c = (Const *) strip_relabel(node);

	return c && IsA(c, Const) && !c->constisnull && c->consttype == TEXTOID &&
		pg_strcasecmp(TextDatumGetCString(c->constvalue), "UTC") == 0;
}

/*
 * date_bin(width, column, origin) with constant width and origin, also in the
 * form the planner inlines orochi.time_bucket(width, timestamptz) into:
 *     timezone('UTC', date_bin(width, timezone('UTC', column), origin))
 * which bins the absolute time from an origin read as UTC: the same
 * arithmetic on the stored microseconds.  Widths with months never reach
 * date_bin.
 */
static PyObject *
describe_date_bin(Expr *expr, TupleDesc rel_tupdesc, Oid type)
{
	Node	   *node = (Node *) expr;
	FuncExpr   *outer = catalog_call(node, "timezone", 2);
	FuncExpr   *bin;
	Const	   *width;
	Const	   *origin;
	Node	   *arg;
	const char *column;
	Interval   *iv;
	Timestamp	origin_us;

	if (outer && is_utc_const(linitial(outer->args)))
		node = lsecond(outer->args);
	else
		outer = NULL;
	bin = catalog_call(node, "date_bin", 3);
	if (bin == NULL)
		return NULL;
	width = (Const *) linitial(bin->args);
	origin = (Const *) lthird(bin->args);
	arg = lsecond(bin->args);
	if (!IsA(width, Const) || width->constisnull || !IsA(origin, Const) || origin->constisnull)
		return NULL;
	if (outer)
	{
		FuncExpr   *inner = catalog_call(arg, "timezone", 2);

		if (inner == NULL || !is_utc_const(linitial(inner->args)))
			return NULL;
		arg = lsecond(inner->args);
	}
	column = plain_column(arg, rel_tupdesc);
	if (column == NULL)
		return NULL;
	iv = DatumGetIntervalP(width->constvalue);
	origin_us = DatumGetTimestamp(origin->constvalue);
	if (iv->month != 0 || iv->day < 0 || iv->day > 100000 || TIMESTAMP_NOT_FINITE(origin_us))
		return NULL;
	if ((int64) iv->day * USECS_PER_DAY + iv->time <= 0)
		return NULL;
	return Py_BuildValue("{s:s,s:N,s:L,s:L,s:N,s:I}", "kind", "date_bin", "column", orochi_cstring_to_py(column),
						 "width_us", (long long) ((int64) iv->day * USECS_PER_DAY + iv->time),
						 "origin_us", (long long) origin_us,
						 "type", orochi_cstring_to_py(format_type_be(type)), "type_oid", (unsigned int) type);
}

static PyObject *
describe_group_key(Expr *expr, TupleDesc rel_tupdesc)
{
	PyObject   *d = describe_group_key_expr(expr, rel_tupdesc);

	if (d != NULL && add_collation(d, exprCollation((Node *) expr)) < 0)
	{
		Py_DECREF(d);
		orochi_py_raise("describing a group key");
	}
	return d;
}

static PyObject *
describe_group_key_expr(Expr *expr, TupleDesc rel_tupdesc)
{
	const char *column = plain_column((Node *) expr, rel_tupdesc);
	Oid			type = exprType((Node *) expr);

	if (column)
		return Py_BuildValue("{s:s,s:N,s:N,s:I}", "kind", "column", "column", orochi_cstring_to_py(column),
							 "type", orochi_cstring_to_py(format_type_be(type)), "type_oid", (unsigned int) type);
	if (IsA(expr, FuncExpr))
	{
		FuncExpr   *f = (FuncExpr *) expr;
		char	   *name = get_func_name(f->funcid);
		int			nargs = list_length(f->args);

		/* pg_catalog's date_trunc, by the namespace's OID, not a user's */
		if (name && get_func_namespace(f->funcid) == PG_CATALOG_NAMESPACE &&
			strcmp(name, "date_trunc") == 0 &&
			nargs == 2 && IsA(linitial(f->args), Const) && !((Const *) linitial(f->args))->constisnull &&
			(column = plain_column(lsecond(f->args), rel_tupdesc)) != NULL)
			return Py_BuildValue("{s:s,s:N,s:N,s:N,s:I,s:s}", "kind", "date_trunc",
								 "unit", const_to_py(linitial(f->args)), "column", orochi_cstring_to_py(column),
								 "type", orochi_cstring_to_py(format_type_be(type)), "type_oid", (unsigned int) type,
								 "time_zone", pg_get_timezone_name(session_timezone));
	}
	return describe_date_bin(expr, rel_tupdesc, type);
}

static PyObject *
describe_aggregate(Aggref *agg, TupleDesc rel_tupdesc)
{
	char	   *name = get_func_name(agg->aggfnoid);
	char	   *nsp = get_namespace_name(get_func_namespace(agg->aggfnoid));
	const char *column = NULL;
	Oid			argtype = InvalidOid;
	PyObject   *extra;
	ListCell   *lc;

	if (agg->aggorder != NIL || agg->aggfilter != NULL || agg->aggkind != AGGKIND_NORMAL ||
		agg->agglevelsup != 0 || agg->aggsplit != AGGSPLIT_SIMPLE || name == NULL || nsp == NULL)
		return NULL;
	extra = PyList_New(0);
	foreach(lc, agg->args)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (foreach_current_index(lc) == 0)
		{
			column = plain_column((Node *) tle->expr, rel_tupdesc);
			argtype = exprType((Node *) tle->expr);
			if (column == NULL)
			{
				Py_DECREF(extra);
				return NULL;
			}
		}
		else if (IsA(tle->expr, Const))
		{
			PyObject   *v = const_to_py((Node *) tle->expr);

			PyList_Append(extra, v);
			Py_DECREF(v);
		}
		else
		{
			Py_DECREF(extra);
			return NULL;
		}
	}
	{
		PyObject   *d = Py_BuildValue("{s:N,s:N,s:O,s:O,s:N,s:N,s:I,s:N,s:I,s:N}",
									  "func", orochi_cstring_to_py(name), "schema", orochi_cstring_to_py(nsp),
									  "star", agg->aggstar ? Py_True : Py_False,
									  "distinct", agg->aggdistinct != NIL ? Py_True : Py_False,
									  "column", orochi_cstring_to_py(column ? column : ""),
									  "arg_type", orochi_cstring_to_py(OidIsValid(argtype) ? format_type_be(argtype) : ""),
									  "arg_type_oid", (unsigned int) argtype,
									  "result_type", orochi_cstring_to_py(format_type_be(agg->aggtype)),
									  "result_type_oid", (unsigned int) agg->aggtype,
									  "args", extra);

		if (d != NULL && add_collation(d, agg->inputcollid) < 0)
		{
			Py_DECREF(d);
			orochi_py_raise("describing an aggregate");
		}
		return d;
	}
}

/*
 * agg_request
 *		Describe an aggregation over one table for Python: a target list of
 *		group keys (non-aggregates with a sort/group ref) and aggregates.
 *		Returns NULL if it is not of a shape the protocol carries.
 */
static PyObject *
agg_request(List *tlist, TupleDesc rel_tupdesc)
{
	PyObject   *group_by = PyList_New(0);
	PyObject   *aggregates = PyList_New(0);
	PyObject   *outputs = PyList_New(0);
	ListCell   *lc;

	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		PyObject   *item = NULL;
		PyObject   *out;
		bool		is_agg = IsA(tle->expr, Aggref);

		if (is_agg)
			item = describe_aggregate((Aggref *) tle->expr, rel_tupdesc);
		else if (tle->ressortgroupref > 0)
			item = describe_group_key(tle->expr, rel_tupdesc);
		if (item == NULL)
		{
			Py_DECREF(group_by);
			Py_DECREF(aggregates);
			Py_DECREF(outputs);
			return NULL;
		}
		PyList_Append(is_agg ? aggregates : group_by, item);
		Py_DECREF(item);
		out = Py_BuildValue("(sn)", is_agg ? "a" : "g",
							PyList_GET_SIZE(is_agg ? aggregates : group_by) - 1);
		PyList_Append(outputs, out);
		Py_DECREF(out);
	}
	return Py_BuildValue("{s:N,s:N,s:N}", "group_by", group_by, "aggregates", aggregates,
						 "outputs", outputs);
}

/*
 * Whether an expression can be computed from the entries of tlist alone:
 * it is one of them, or a constant, or built of such parts (a Var or an
 * aggregate that is not an entry cannot).
 */
static bool
computable_from(Node *node, List *tlist)
{
	if (node == NULL)
		return true;
	if (tlist_member((Expr *) node, tlist))
		return true;
	if (IsA(node, Var) || IsA(node, Aggref) || IsA(node, PlaceHolderVar) ||
		IsA(node, SubLink) || IsA(node, SubPlan) || IsA(node, WindowFunc))
		return false;
	return !expression_tree_walker(node, computable_walker, tlist);
}

static bool
computable_walker(Node *node, void *context)
{
	return !computable_from(node, (List *) context);
}

/*
 * The fdw_scan_tlist of a pushed-down aggregation: the group keys g<i> and
 * the aggregates a<j> of the target and of HAVING; false if some target
 * expression cannot be computed from them.
 */
static bool
upper_tlist(PlannerInfo *root, void *extra, List **tlist_out, List **having_out)
{
	Query	   *parse = root->parse;
	PathTarget *target = root->upper_targets[UPPERREL_GROUP_AGG];
	List	   *tlist = NIL;
	List	   *having;
	ListCell   *lc;
	int			i = 0;

	/*
	 * The scan produces the group keys and the aggregates (fdw_scan_tlist);
	 * other target expressions (e.g. a key cast to text, sum(x) / 2) are
	 * computed from them by the scan's projection.
	 */
	foreach(lc, target->exprs)
	{
		Expr	   *e = (Expr *) lfirst(lc);
		Index		sgref = get_pathtarget_sortgroupref(target, i++);

		if (sgref && !IsA(e, Aggref) && get_sortgroupref_clause_noerr(sgref, parse->groupClause))
		{
			TargetEntry *tle = makeTargetEntry(copyObject(e), list_length(tlist) + 1,
											   psprintf("g%d", list_length(tlist)), false);

			tle->ressortgroupref = sgref;
			tlist = lappend(tlist, tle);
		}
	}
	/*
	 * HAVING: its aggregates are computed with the others; the conditions
	 * themselves are checked by the scan over the groups it yields.
	 */
	having = extra ? (List *) ((GroupPathExtraData *) extra)->havingQual : NIL;
	foreach(lc, list_concat(list_copy(target->exprs), having))
	{
		List	   *found = pull_var_clause((Node *) lfirst(lc), PVC_INCLUDE_AGGREGATES);
		ListCell   *la;

		foreach(la, found)
		{
			Node	   *n = (Node *) lfirst(la);

			if (IsA(n, Aggref) && !tlist_member((Expr *) n, tlist))
				tlist = lappend(tlist, makeTargetEntry((Expr *) copyObject(n), list_length(tlist) + 1,
													   psprintf("a%d", list_length(tlist)), false));
		}
	}
	foreach(lc, list_concat(list_copy(target->exprs), having))
	{
		if (!computable_from(lfirst(lc), tlist))
			return false;
	}
	foreach(lc, parse->groupClause)
	{
		SortGroupClause *sgc = lfirst_node(SortGroupClause, lc);
		bool		found = false;
		ListCell   *lt;

		foreach(lt, tlist)
			if (((TargetEntry *) lfirst(lt))->ressortgroupref == sgc->tleSortGroupRef)
				found = true;
		if (!found)
			return false;
	}

	*tlist_out = tlist;
	*having_out = having;
	return true;
}

/*
 * orochiGetForeignUpperPaths
 *		Offer GROUP BY / aggregates over one orochi table to Python
 *		(can_aggregate); if it accepts, a scan of the groups replaces the Agg.
 */
static void
orochiGetForeignUpperPaths(PlannerInfo *root, UpperRelationKind stage, RelOptInfo *input_rel,
						   RelOptInfo *output_rel, void *extra)
{
	OrochiPlanState *istate = (OrochiPlanState *) input_rel->fdw_private;
	Query	   *parse = root->parse;
	PathTarget *target;
	List	   *tlist = NIL;
	Relation	rel;
	PyObject   *request;
	PyObject   *res;
	OrochiUpperState *upper;
	List	   *having;
	double		rows,
				startup,
				total;

	if ((stage == UPPERREL_ORDERED || stage == UPPERREL_FINAL) && output_rel->fdw_private == NULL)
	{
		engine_order_path(root, stage, input_rel, output_rel, extra);
		return;
	}
	if (stage != UPPERREL_GROUP_AGG || output_rel->fdw_private != NULL)
		return;
	if (IS_JOIN_REL(input_rel) && input_rel->fdw_private != NULL &&
		((OrochiJoinState *) input_rel->fdw_private)->engine)
	{
		engine_upper_path(root, input_rel, output_rel, extra);
		return;
	}
	if (input_rel->reloptkind != RELOPT_BASEREL || input_rel->rtekind != RTE_RELATION || istate == NULL ||
		input_rel->lateral_relids != NULL)
		return;
	if (parse->groupingSets != NIL || parse->hasWindowFuncs || parse->hasTargetSRFs)
		return;
	/* every WHERE clause must reach the wrapper */
	if (list_length(istate->quals) != list_length(input_rel->baserestrictinfo))
	{
		/* expressions in WHERE: the expression JIT may compute it */
		one_table_upper_paths(root, input_rel, output_rel, extra);
		return;
	}

	target = root->upper_targets[UPPERREL_GROUP_AGG];
	if (!upper_tlist(root, extra, &tlist, &having))
		return;

	/*
	 * Many groups: the join engine groups them faster than the pushdown's
	 * kernels and their hand-over of every group (TPC-H Q18's GROUP BY
	 * l_orderkey, 150,000 groups at SF 0.1: 1.0 s in the pushdown, 0.17 s
	 * in the engine with its HAVING), so it is asked first.
	 */
	if (parse->groupClause != NIL && orochi_duckdb_join_enabled &&
		estimate_num_groups(root, get_sortgrouplist_exprs(parse->groupClause, parse->targetList),
							input_rel->rows, NULL, NULL) >= ENGINE_MANY_GROUPS)
	{
		one_table_upper_paths(root, input_rel, output_rel, extra);
		if (output_rel->fdw_private != NULL)
			return;
	}

	rel = table_open(planner_rt_fetch(input_rel->relid, root)->relid, NoLock);
	request = agg_request(tlist, RelationGetDescr(rel));
	if (request == NULL)
	{
		table_close(rel, NoLock);
		/* expressions in aggregate arguments: the expression JIT may */
		one_table_upper_paths(root, input_rel, output_rel, extra);
		return;
	}
	{
		PyObject   *args = Py_BuildValue("(NNN)", orochi_instance_for_relation(rel), request,
										 plan_quals_to_py(istate->quals, rel));

		table_close(rel, NoLock);
		res = orochi_runtime_call("can_aggregate", args);
	}
	if (res == Py_None)
	{
		Py_DECREF(res);
		one_table_upper_paths(root, input_rel, output_rel, extra);
		return;
	}
	if (!PyArg_ParseTuple(res, "ddd", &rows, &startup, &total))
	{
		Py_DECREF(res);
		orochi_py_raise("can_aggregate must return None or (rows, startup_cost, total_cost)");
	}
	Py_DECREF(res);

	upper = palloc0(sizeof(OrochiUpperState));
	upper->input_rel = input_rel;
	upper->tlist = tlist;
	upper->having = having;
	output_rel->fdw_private = upper;
	add_path(output_rel, (Path *)
			 create_foreign_upper_path(root, output_rel, target, clamp_row_est(rows),
									   startup, Max(total, startup), NIL, NULL, NIL));
}

/*
 * one_table_upper_paths
 *		An aggregation over one orochi table that the aggregate pushdown does
 *		not take (expressions in its WHERE clauses or arguments): the
 *		expression JIT first (no GROUP BY, kernel types), else the join
 *		engine over the one table (numeric arithmetic, GROUP BY), as over a
 *		join.  Both answer from the same analysis (orochi_fdw.query.pushable).
 */
static void
one_table_upper_paths(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel, void *extra)
{
	ListCell   *lc;

	jit_upper_path(root, input_rel, output_rel, extra);
	if (output_rel->fdw_private != NULL || !orochi_duckdb_join_enabled)
		return;
	/* row-level security and constant conditions stay in PostgreSQL */
	foreach(lc, input_rel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (rinfo->pseudoconstant || rinfo->security_level > 0)
			return;
	}
	engine_upper_path(root, input_rel, output_rel, extra);
}

/* ---------------------------------------------------------------------
 * Expression JIT (docs/jit.md)
 * ---------------------------------------------------------------------
 */

/*
 * The restriction clauses of a base rel in the order the executor would
 * evaluate them (order_qual_clauses: by per-tuple cost, stable), so that a
 * compiled kernel raises exactly the errors PostgreSQL would.  NIL with
 * *ok false if some clause is not for the kernel (security barriers,
 * pseudoconstants).
 */
static List *
jit_ordered_clauses(PlannerInfo *root, RelOptInfo *rel, bool *ok)
{
	int			n = list_length(rel->baserestrictinfo);
	Expr	  **clauses;
	Cost	   *costs;
	List	   *result = NIL;
	ListCell   *lc;
	int			i = 0;

	*ok = true;
	if (n == 0)
		return NIL;
	clauses = palloc(sizeof(Expr *) * n);
	costs = palloc(sizeof(Cost) * n);
	foreach(lc, rel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		QualCost	qcost;
		int			j;

		if (rinfo->pseudoconstant || rinfo->security_level > 0)
		{
			*ok = false;
			return NIL;
		}
		cost_qual_eval_node(&qcost, (Node *) rinfo, root);
		/* insertion sort, stable: as order_qual_clauses */
		for (j = i; j > 0 && costs[j - 1] > qcost.per_tuple; j--)
		{
			clauses[j] = clauses[j - 1];
			costs[j] = costs[j - 1];
		}
		clauses[j] = rinfo->clause;
		costs[j] = qcost.per_tuple;
		i++;
	}
	for (i = 0; i < n; i++)
		result = lappend(result, clauses[i]);
	return result;
}

/*
 * add_planned_upper_path
 *		What a planning function of the runtime (func, for messages) returned
 *		for an upper rel (stage: an aggregation, an ordering, a limit): None,
 *		or (startup_cost, total_cost, plan, rows) with plan the text the scan
 *		hands back to Python when it starts (the join engine's or the JIT's).
 *		res is consumed.  Adds the ForeignUpperPath that runs the plan, with
 *		pathkeys when it returns its rows ordered; returns whether it did.
 */
static bool
add_planned_upper_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel,
					   PyObject *res, const char *func, List *tlist, List *having,
					   UpperRelationKind stage, List *pathkeys)
{
	double		startup,
				total,
				rows;
	char	   *plan;
	OrochiUpperState *upper;

	if (res == Py_None)
	{
		Py_DECREF(res);
		return false;
	}
	if (!PyArg_ParseTuple(res, "ddsd", &startup, &total, &plan, &rows))
	{
		Py_DECREF(res);
		orochi_py_raise(psprintf("%s must return None or (startup_cost, total_cost, plan, rows)", func));
	}
	plan = pstrdup(plan);
	Py_DECREF(res);
	upper = palloc0(sizeof(OrochiUpperState));
	upper->input_rel = input_rel;
	upper->tlist = tlist;
	upper->having = having;
	upper->engine_plan = plan;
	upper->ordered = (pathkeys != NIL);
	output_rel->fdw_private = upper;
	elog(DEBUG1, "orochi: %s offers upper stage %d at cost %.2f..%.2f, %.0f rows",
		 func, (int) stage, startup, total, rows);
	add_path(output_rel, (Path *)
			 create_foreign_upper_path(root, output_rel, root->upper_targets[stage], clamp_row_est(rows),
									   startup, Max(total, startup), pathkeys, NULL, NIL));
	return true;
}

/*
 * jit_upper_path
 *		Offer aggregates (without GROUP BY) over one orochi table whose WHERE
 *		clauses or aggregate arguments are expressions to the expression JIT
 *		(orochi_fdw.jit): if Python accepts, a scan that runs one compiled
 *		loop of filter and aggregates replaces the Agg.  The plan travels as
 *		the engine's does (FdwScanPrivateEngine), marked as the JIT's.
 */
static void
jit_upper_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel, void *extra)
{
	OrochiPlanState *istate = (OrochiPlanState *) input_rel->fdw_private;
	Query	   *parse = root->parse;
	List	   *tlist;
	List	   *having;
	List	   *clauses;
	PyObject   *outputs;
	PyObject   *res;
	ListCell   *lc;
	Relation	rel;
	bool		ok;

	if (!orochi_jit_enabled || output_rel->fdw_private != NULL)
		return;
	if (parse->groupClause != NIL || parse->groupingSets != NIL || parse->hasWindowFuncs ||
		parse->hasTargetSRFs || !bms_is_empty(input_rel->lateral_relids))
		return;
	if (!upper_tlist(root, extra, &tlist, &having))
		return;
	clauses = jit_ordered_clauses(root, input_rel, &ok);
	if (!ok)
		return;
	outputs = PyList_New(0);
	if (outputs == NULL)
		orochi_py_raise("describing an aggregation");
	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		PyObject   *o = orochi_expr_to_py(root, (Node *) tle->expr);

		PyList_Append(outputs, o);
		Py_DECREF(o);
	}
	rel = table_open(planner_rt_fetch(input_rel->relid, root)->relid, NoLock);
	res = orochi_runtime_call("jit_aggregate",
							  Py_BuildValue("(NiNNddd)", orochi_instance_for_relation(rel),
											(int) input_rel->relid, orochi_expr_list_to_py(root, clauses),
											outputs, input_rel->tuples, input_rel->rows,
											istate->total_cost));
	table_close(rel, NoLock);
	add_planned_upper_path(root, input_rel, output_rel, res, "jit_aggregate", tlist, having,
						   UPPERREL_GROUP_AGG, NIL);
}

/* ---------------------------------------------------------------------
 * Join pushdown
 * ---------------------------------------------------------------------
 */

static const char *
jointype_name(JoinType jointype)
{
	switch (jointype)
	{
		case JOIN_INNER:
			return "inner";
		case JOIN_LEFT:
			return "left";
		case JOIN_RIGHT:
			return "right";
		case JOIN_FULL:
			return "full";
		default:
			return NULL;
	}
}

/*
 * join_request
 *		Describe a join of two orochi tables for Python:
 *		{"jointype", "clauses": [{"outer", "inner", "collation"}],
 *		 "outputs": [{"name": "j<i>", "side": "outer"|"inner", "column", "type_oid"}]}
 */
static PyObject *
join_request(const char *jointype, List *clauses, List *tlist, Index outer_rti,
			 TupleDesc outer, TupleDesc inner)
{
	PyObject   *pyclauses = PyList_New(0);
	PyObject   *outputs = PyList_New(0);
	ListCell   *lc;

	if (pyclauses == NULL || outputs == NULL)
		orochi_py_raise("describing a join");
	foreach(lc, clauses)
	{
		List	   *c = (List *) lfirst(lc);
		PyObject   *d = Py_BuildValue("{s:s,s:s,s:N}",
									  "outer", NameStr(TupleDescAttr(outer, intVal(linitial(c)) - 1)->attname),
									  "inner", NameStr(TupleDescAttr(inner, intVal(lsecond(c)) - 1)->attname),
									  "collation", collation_name((Oid) intVal(lthird(c))));

		PyList_Append(pyclauses, d);
		Py_DECREF(d);
	}
	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		Var		   *var = (Var *) tle->expr;
		bool		is_outer = var->varno == outer_rti;
		TupleDesc	td = is_outer ? outer : inner;
		PyObject   *d = Py_BuildValue("{s:s,s:s,s:s,s:I}", "name", tle->resname,
									  "side", is_outer ? "outer" : "inner",
									  "column", NameStr(TupleDescAttr(td, var->varattno - 1)->attname),
									  "type_oid", (unsigned int) var->vartype);

		PyList_Append(outputs, d);
		Py_DECREF(d);
	}
	return Py_BuildValue("{s:s,s:N,s:N}", "jointype", jointype, "clauses", pyclauses, "outputs", outputs);
}

/* Whether every qual of a base rel reached the wrapper, as constants if the rel is nullable */
static bool
quals_all_described(RelOptInfo *rel, bool nullable)
{
	OrochiPlanState *state = (OrochiPlanState *) rel->fdw_private;
	ListCell   *lc;

	if (state == NULL || list_length(state->quals) != list_length(rel->baserestrictinfo))
		return false;
	/*
	 * A NULL value ends a scan before it starts (no row can match); for the
	 * nullable side of an outer join that would drop the other side's rows
	 * too, so only constants (never NULL here: the planner folds those) go.
	 */
	if (nullable)
		foreach(lc, state->quals)
			if (!IsA(((OrochiQual *) lfirst(lc))->value, Const))
				return false;
	return true;
}

/*
 * orochiGetForeignJoinPaths
 *		Offer a join of two orochi tables to Python (can_join): equality
 *		join clauses between plain columns, every other condition of each
 *		rel a qual the wrapper receives, plain columns out.  If it accepts,
 *		a scan of the joined rows replaces the join.
 */
static void
orochiGetForeignJoinPaths(PlannerInfo *root, RelOptInfo *joinrel, RelOptInfo *outerrel,
						  RelOptInfo *innerrel, JoinType jointype, JoinPathExtraData *extra)
{
	OrochiJoinState *js;
	const char *jtname = jointype_name(jointype);
	List	   *clauses = NIL;
	List	   *tlist = NIL;
	ListCell   *lc;
	Relation	orel,
				irel;
	PyObject   *args;
	PyObject   *res;
	double		rows,
				startup,
				total;

	/*
	 * The join engine first, for every pair of inputs: it keeps the pair
	 * whose tree it runs cheapest (the rows each of its joins takes in and
	 * produces, as PostgreSQL's own join search weighs its orders).
	 */
	if (engine_join_path(root, joinrel, outerrel, innerrel, jointype, extra))
		return;
	if (joinrel->fdw_private != NULL)
		return;					/* considered already */
	js = palloc0(sizeof(OrochiJoinState));
	joinrel->fdw_private = js;
	if (jtname == NULL || root->parse->commandType != CMD_SELECT || root->rowMarks != NIL)
		return;
	if (outerrel->reloptkind != RELOPT_BASEREL || innerrel->reloptkind != RELOPT_BASEREL ||
		outerrel->rtekind != RTE_RELATION || innerrel->rtekind != RTE_RELATION)
		return;
	if (!quals_all_described(outerrel, jointype == JOIN_RIGHT || jointype == JOIN_FULL) ||
		!quals_all_described(innerrel, jointype == JOIN_LEFT || jointype == JOIN_FULL))
		return;
	foreach(lc, extra->restrictlist)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		OpExpr	   *op;
		Node	   *l,
				   *r;
		Var		   *ov,
				   *iv;
		char	   *opname;

		if (IS_OUTER_JOIN(jointype) && RINFO_IS_PUSHED_DOWN(rinfo, joinrel->relids))
			return;
		if (!IsA(rinfo->clause, OpExpr) || list_length(((OpExpr *) rinfo->clause)->args) != 2)
			return;
		op = (OpExpr *) rinfo->clause;
		l = strip_relabel(linitial(op->args));
		r = strip_relabel(lsecond(op->args));
		if (is_column_of(l, outerrel->relid) && is_column_of(r, innerrel->relid))
		{
			ov = (Var *) l;
			iv = (Var *) r;
		}
		else if (is_column_of(r, outerrel->relid) && is_column_of(l, innerrel->relid))
		{
			ov = (Var *) r;
			iv = (Var *) l;
		}
		else
			return;
		opname = get_opname(op->opno);
		if (opname == NULL || strcmp(opname, "=") != 0 || ov->vartype != iv->vartype)
			return;
		clauses = lappend(clauses, list_make3(makeInteger(ov->varattno), makeInteger(iv->varattno),
											  makeInteger((int) op->inputcollid)));
	}
	/*
	 * An inner join's equalities the planner derived from the quals (a.k =
	 * b.k AND a.k = 5 leaves only a.k = 5 and b.k = 5): members of one
	 * equivalence class are equal in every joined row.
	 */
	if (jointype == JOIN_INNER)
	{
		foreach(lc, root->eq_classes)
		{
			EquivalenceClass *ec = (EquivalenceClass *) lfirst(lc);
			Var		   *ov = NULL,
					   *iv = NULL;
			ListCell   *lm;

			if (ec->ec_has_volatile || ec->ec_below_outer_join)
				continue;
			foreach(lm, ec->ec_members)
			{
				EquivalenceMember *em = (EquivalenceMember *) lfirst(lm);
				Node	   *e = strip_relabel((Node *) em->em_expr);

				if (ov == NULL && is_column_of(e, outerrel->relid))
					ov = (Var *) e;
				else if (iv == NULL && is_column_of(e, innerrel->relid))
					iv = (Var *) e;
			}
			if (ov != NULL && iv != NULL && ov->vartype == iv->vartype)
				clauses = lappend(clauses, list_make3(makeInteger(ov->varattno), makeInteger(iv->varattno),
													  makeInteger((int) ec->ec_collation)));
		}
	}
	if (clauses == NIL)
		return;
	foreach(lc, joinrel->reltarget->exprs)
	{
		Var		   *var = (Var *) lfirst(lc);

		if (!IsA(var, Var) || var->varlevelsup != 0 || var->varattno <= 0 ||
			(var->varno != outerrel->relid && var->varno != innerrel->relid))
			return;
		tlist = lappend(tlist, makeTargetEntry((Expr *) copyObject(var), list_length(tlist) + 1,
											   psprintf("j%d", list_length(tlist)), false));
	}
	/* an empty tlist (count(*) over the join) is fine: batches carry row counts */

	orel = table_open(planner_rt_fetch(outerrel->relid, root)->relid, NoLock);
	irel = table_open(planner_rt_fetch(innerrel->relid, root)->relid, NoLock);
	PG_TRY();
	{
		args = Py_BuildValue("(NNNNN)", orochi_instance_for_relation(orel), orochi_instance_for_relation(irel),
							 join_request(jtname, clauses, tlist, outerrel->relid,
										  RelationGetDescr(orel), RelationGetDescr(irel)),
							 plan_quals_to_py(((OrochiPlanState *) outerrel->fdw_private)->quals, orel),
							 plan_quals_to_py(((OrochiPlanState *) innerrel->fdw_private)->quals, irel));
	}
	PG_FINALLY();
	{
		table_close(orel, NoLock);
		table_close(irel, NoLock);
	}
	PG_END_TRY();
	res = orochi_runtime_call("can_join", args);
	if (res == Py_None)
	{
		Py_DECREF(res);
		return;
	}
	if (!PyArg_ParseTuple(res, "ddd", &rows, &startup, &total))
	{
		Py_DECREF(res);
		orochi_py_raise("can_join must return None or (rows, startup_cost, total_cost)");
	}
	Py_DECREF(res);
	js->accepted = true;
	js->outerrel = outerrel;
	js->innerrel = innerrel;
	js->jointype = jointype;
	js->clauses = clauses;
	js->tlist = tlist;
	add_path(joinrel, (Path *)
			 create_foreign_join_path(root, joinrel, NULL, clamp_row_est(rows), startup,
									  Max(total, startup), NIL, joinrel->lateral_relids, NULL, NIL));
}

/* ---------------------------------------------------------------------
 * The join engine: join trees of columnar tables run in DuckDB
 * ---------------------------------------------------------------------
 */

static const char *
engine_jointype_name(JoinType jointype)
{
	switch (jointype)
	{
		case JOIN_SEMI:
			return "semi";
		case JOIN_ANTI:
			return "anti";
		default:
			return jointype_name(jointype);
	}
}

static void
engine_input_release(void *arg)
{
	PyObject  **slot = (PyObject **) arg;

	if (*slot != NULL && orochi_python_cleanup_allowed())
		Py_CLEAR(*slot);
	*slot = NULL;
}

/*
 * Keep the description of a rel (in the planner state "owner", at "slot")
 * for the rest of the planning: every join relation above it is offered
 * with its inputs described again, and Python recognizes the same objects
 * (orochi_fdw/query/engine.py keeps their translation).  Released with the
 * memory of the planner state.  Returns obj (a new reference).
 */
static PyObject *
engine_input_keep(void *owner, PyObject **slot, PyObject *obj)
{
	MemoryContext cxt = GetMemoryChunkContext(owner);
	MemoryContextCallback *cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));

	cb->func = engine_input_release;
	cb->arg = slot;
	MemoryContextRegisterResetCallback(cxt, cb);
	Py_INCREF(obj);
	*slot = obj;
	return obj;
}

/*
 * One input of a join the engine may run, for Python:
 *   ("rel", rti, instance, [restriction clauses], rows, scan cost)
 *   ("join", jointype, outer, inner, [join clauses], [other clauses], rows)
 *   ("subquery", rti, (its input, [("group" | "aggregate", expr)], [HAVING],
 *    [(output position, index of its group key)]), [restriction clauses],
 *    rows, cost): see orochi_subquery_rel_pathlist
 * or NULL when the input is not one (a join the engine did not accept).
 */
static PyObject *
engine_input_to_py(PlannerInfo *root, RelOptInfo *rel)
{
	if (rel->reloptkind == RELOPT_BASEREL && rel->rtekind == RTE_SUBQUERY)
	{
		OrochiSubqueryState *ss = (OrochiSubqueryState *) rel->fdw_private;

		if (ss == NULL || rel->fdwroutine == NULL ||
			rel->fdwroutine->GetForeignRelSize != orochiGetForeignRelSize || ss->engine_input == NULL)
			return NULL;
		return Py_NewRef(ss->engine_input);
	}
	if (rel->reloptkind == RELOPT_BASEREL)
	{
		RangeTblEntry *rte = planner_rt_fetch(rel->relid, root);
		List	   *clauses = NIL;
		ListCell   *lc;
		Relation	r;
		PyObject   *instance;

		if (rte->rtekind != RTE_RELATION || rel->fdw_private == NULL || rel->cheapest_total_path == NULL)
			return NULL;
		if (((OrochiPlanState *) rel->fdw_private)->engine_input != NULL)
			return Py_NewRef(((OrochiPlanState *) rel->fdw_private)->engine_input);
		foreach(lc, rel->baserestrictinfo)
			clauses = lappend(clauses, lfirst_node(RestrictInfo, lc)->clause);
		r = table_open(rte->relid, NoLock);
		PG_TRY();
		{
			instance = orochi_instance_for_relation(r);
		}
		PG_FINALLY();
		{
			table_close(r, NoLock);
		}
		PG_END_TRY();
		{
			OrochiPlanState *ps = (OrochiPlanState *) rel->fdw_private;
			PyObject   *input = Py_BuildValue("(siNNdd)", "rel", (int) rel->relid, instance,
											  orochi_expr_list_to_py(root, clauses), rel->rows,
											  (double) Max(rel->cheapest_total_path->total_cost -
														   ps->local_cost, 0));

			if (input == NULL)
				orochi_py_raise("describing a join input");
			engine_input_keep(ps, &ps->engine_input, input);
			return input;
		}
	}
	if (IS_JOIN_REL(rel))
	{
		OrochiJoinState *js = (OrochiJoinState *) rel->fdw_private;
		PyObject   *outer,
				   *inner;

		if (js == NULL || !js->engine)
			return NULL;
		if (js->engine_input != NULL)
			return Py_NewRef(js->engine_input);
		outer = engine_input_to_py(root, js->outerrel);
		if (outer == NULL)
			return NULL;
		inner = engine_input_to_py(root, js->innerrel);
		if (inner == NULL)
		{
			Py_DECREF(outer);
			return NULL;
		}
		{
			PyObject   *input = Py_BuildValue("(ssNNNNd)", "join", engine_jointype_name(js->jointype), outer,
											  inner, orochi_expr_list_to_py(root, js->joinclauses),
											  orochi_expr_list_to_py(root, js->otherclauses), rel->rows);

			if (input == NULL)
				orochi_py_raise("describing a join input");
			engine_input_keep(js, &js->engine_input, input);
			return input;
		}
	}
	return NULL;
}

/*
 * engine_join_path
 *		Offer a join whose inputs are orochi tables, or joins the engine
 *		accepted, to Python (engine_join): it decides whether every
 *		condition and output can run in DuckDB exactly as in Postgres, and
 *		at what cost; Postgres's row estimate is the path's.  Every pair of
 *		inputs of the join relation is offered: the cheapest tree is kept
 *		(the description of the join relation from then on).  True if the
 *		engine runs the join (a path added now, or for a cheaper pair before).
 */
static bool
engine_join_path(PlannerInfo *root, RelOptInfo *joinrel, RelOptInfo *outerrel,
				 RelOptInfo *innerrel, JoinType jointype, JoinPathExtraData *extra)
{
	const char *jtname = engine_jointype_name(jointype);
	OrochiJoinState *js;
	List	   *joinclauses = NIL;
	List	   *otherclauses = NIL;
	List	   *tlist = NIL;
	PyObject   *targets;
	PyObject   *outer,
			   *inner;
	PyObject   *tree;
	PyObject   *res;
	ListCell   *lc;
	double		startup,
				total,
				rows;
	char	   *plan;

	if (!orochi_duckdb_join_enabled || jtname == NULL ||
		root->parse->commandType != CMD_SELECT || root->rowMarks != NIL ||
		!bms_is_empty(joinrel->lateral_relids))
		return false;
	foreach(lc, extra->restrictlist)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (IS_OUTER_JOIN(jointype) && RINFO_IS_PUSHED_DOWN(rinfo, joinrel->relids))
		{
			if (jointype == JOIN_ANTI)
				return false;
			otherclauses = lappend(otherclauses, rinfo->clause);
		}
		else
			joinclauses = lappend(joinclauses, rinfo->clause);
	}
	foreach(lc, joinrel->reltarget->exprs)
	{
		Var		   *var = (Var *) lfirst(lc);

		if (!IsA(var, Var) || var->varlevelsup != 0 || var->varattno <= 0 ||
			!bms_is_member(var->varno, joinrel->relids))
		{
			elog(DEBUG1, "orochi: the join engine declined a join: an output is not a column");
			return false;
		}
		tlist = lappend(tlist, makeTargetEntry((Expr *) copyObject(var), list_length(tlist) + 1,
											   psprintf("j%d", list_length(tlist)), false));
	}

	outer = engine_input_to_py(root, outerrel);
	if (outer == NULL)
	{
		elog(DEBUG1, "orochi: the join engine declined a join: its outer input is not a table or a join it runs");
		return false;
	}
	inner = engine_input_to_py(root, innerrel);
	if (inner == NULL)
	{
		elog(DEBUG1, "orochi: the join engine declined a join: its inner input is not a table or a join it runs");
		Py_DECREF(outer);
		return false;
	}
	targets = PyList_New(0);
	if (targets == NULL)
		orochi_py_raise("describing a join");
	foreach(lc, tlist)
	{
		PyObject   *e = orochi_expr_to_py(root, (Node *) lfirst_node(TargetEntry, lc)->expr);

		PyList_Append(targets, e);
		Py_DECREF(e);
	}
	tree = Py_BuildValue("(ssNNNNd)", "join", jtname, outer, inner, orochi_expr_list_to_py(root, joinclauses),
						 orochi_expr_list_to_py(root, otherclauses), joinrel->rows);
	if (tree == NULL)
	{
		Py_DECREF(targets);
		orochi_py_raise("describing a join");
	}
	Py_INCREF(tree);
	js = (OrochiJoinState *) joinrel->fdw_private;
	PG_TRY();
	{
		res = orochi_runtime_call("engine_join",
								  Py_BuildValue("(NNO)", tree, targets,
												js != NULL && js->engine ? js->engine_input : Py_None));
	}
	PG_CATCH();
	{
		/* the reference kept for js->engine_input */
		if (orochi_python_cleanup_allowed())
			Py_DECREF(tree);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (res == Py_None)
	{
		Py_DECREF(res);
		Py_DECREF(tree);
		/* declined, or no cheaper than the pair kept */
		return js != NULL && js->engine;
	}
	if (!PyArg_ParseTuple(res, "ddsd", &startup, &total, &plan, &rows))
	{
		Py_DECREF(res);
		Py_DECREF(tree);
		orochi_py_raise("engine_join must return None or (startup_cost, total_cost, plan, rows)");
	}
	if (js != NULL && js->engine && total >= js->engine_total)
	{
		/* another pair of the same inputs gave a cheaper tree: kept */
		Py_DECREF(res);
		Py_DECREF(tree);
		return true;
	}
	plan = pstrdup(plan);
	Py_DECREF(res);
	elog(DEBUG1, "orochi: the join engine offers a %s join at cost %.2f..%.2f, %.0f rows", jtname, startup,
		 total, rows);

	if (js == NULL)
		js = joinrel->fdw_private = palloc0(sizeof(OrochiJoinState));
	js->accepted = true;
	js->engine = true;
	js->outerrel = outerrel;
	js->innerrel = innerrel;
	js->jointype = jointype;
	js->joinclauses = joinclauses;
	js->otherclauses = otherclauses;
	js->tlist = tlist;
	js->engine_plan = plan;
	js->engine_total = Max(total, startup);
	/* the same description as engine_input_to_py's of this join, from now on */
	Py_CLEAR(js->engine_input);
	engine_input_keep(js, &js->engine_input, tree);
	Py_DECREF(tree);
	add_path(joinrel, (Path *)
			 create_foreign_join_path(root, joinrel, NULL, clamp_row_est(rows), startup,
									  Max(total, startup), NIL, NULL, NULL, NIL));
	return true;
}

/*
 * The group keys and aggregates of an aggregation (upper_tlist's) for the
 * engine: [("group" | "aggregate", expr)], in the tlist's order.
 */
static PyObject *
aggregation_outputs_to_py(PlannerInfo *root, List *tlist)
{
	PyObject   *outputs = PyList_New(0);
	ListCell   *lc;

	if (outputs == NULL)
		orochi_py_raise("describing an aggregation");
	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);
		PyObject   *o = Py_BuildValue("(sN)", tle->ressortgroupref ? "group" : "aggregate",
									  orochi_expr_to_py(root, (Node *) tle->expr));

		PyList_Append(outputs, o);
		Py_DECREF(o);
	}
	return outputs;
}

/*
 * engine_upper_path
 *		GROUP BY / aggregates over a join the engine runs, or over one table
 *		(one_table_upper_paths): the group keys and
 *		aggregates (upper_tlist) offered to Python (engine_aggregate); if it
 *		accepts, DuckDB groups and the Agg disappears.  HAVING is checked by
 *		the scan over the groups, as for one table.
 */
static void
engine_upper_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *output_rel, void *extra)
{
	Query	   *parse = root->parse;
	List	   *tlist;
	List	   *having;
	PyObject   *tree;
	PyObject   *outputs;
	PyObject   *res;
	double		rows;

	if (parse->groupingSets != NIL || parse->hasWindowFuncs || parse->hasTargetSRFs ||
		!bms_is_empty(input_rel->lateral_relids))
		return;
	if (!upper_tlist(root, extra, &tlist, &having))
	{
		elog(DEBUG1, "orochi: the join engine declined an aggregation: an output is not computable from group keys and aggregates");
		return;
	}
	tree = engine_input_to_py(root, input_rel);
	if (tree == NULL)
	{
		elog(DEBUG1, "orochi: the join engine declined an aggregation: its input is not a join the engine runs");
		return;
	}
	outputs = aggregation_outputs_to_py(root, tlist);
	if (parse->groupClause != NIL)
		rows = estimate_num_groups(root, get_sortgrouplist_exprs(parse->groupClause, parse->targetList),
								   input_rel->rows, NULL, NULL);
	else
		rows = 1;
	/* the groups HAVING keeps, as PostgreSQL's own Agg counts them (cost_agg) */
	if (having != NIL)
		rows = clamp_row_est(rows * clauselist_selectivity(root, having, 0, JOIN_INNER, NULL));
	res = orochi_runtime_call("engine_aggregate", Py_BuildValue("(NNdN)", tree, outputs, rows,
															   orochi_expr_list_to_py(root, having)));
	add_planned_upper_path(root, input_rel, output_rel, res, "engine_aggregate", tlist, having,
						   UPPERREL_GROUP_AGG, NIL);
}

/* ---------------------------------------------------------------------
 * Subqueries as inputs of the join engine
 * ---------------------------------------------------------------------
 */
static set_rel_pathlist_hook_type prev_set_rel_pathlist = NULL;

/*
 * The rel a subquery aggregates (its scan/join rel) when the engine may
 * take it as an input: an orochi table whose restrictions are its own (no
 * row-level security, no constant conditions: those stay in PostgreSQL, as
 * for an aggregation over one table), or a join the engine runs; else NULL.
 */
static RelOptInfo *
subquery_input_rel(PlannerInfo *subroot)
{
	RelOptInfo *rel;
	ListCell   *lc;

	if (bms_membership(subroot->all_baserels) == BMS_MULTIPLE)
	{
		rel = find_join_rel(subroot, subroot->all_baserels);
		if (rel == NULL || rel->fdw_private == NULL || !((OrochiJoinState *) rel->fdw_private)->engine)
			return NULL;
		return rel;
	}
	if (bms_membership(subroot->all_baserels) != BMS_SINGLETON)
		return NULL;
	rel = find_base_rel(subroot, bms_singleton_member(subroot->all_baserels));
	if (!orochi_rel_is_own(rel) || rel->reloptkind != RELOPT_BASEREL)
		return NULL;
	foreach(lc, rel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (rinfo->pseudoconstant || rinfo->security_level > 0)
			return NULL;
	}
	return rel;
}

/*
 * orochi_subquery_rel_pathlist
 *		A subquery of the join tree (an RTE_SUBQUERY rel) aggregating an
 *		orochi table or a join the engine runs (GROUP BY, HAVING: TPC-H
 *		Q18's IN (SELECT l_orderkey ... HAVING sum(l_quantity) > 300), read
 *		by the outer query through its group keys: described for Python
 *		(its input, group keys and aggregates as an aggregation over it is
 *		offered to the engine, its HAVING, the group key each output read
 *		is), and
 *		given the server and wrapper of its tables, so that PostgreSQL
 *		offers the joins above it to GetForeignJoinPaths: the engine then
 *		runs the subquery as a derived table of the join's SQL.  Anything
 *		else of the subquery (DISTINCT, LIMIT, window functions, sublinks,
 *		outer references, ORDER BY) leaves it to PostgreSQL.
 */
static void
orochi_subquery_rel_pathlist(PlannerInfo *root, RelOptInfo *rel, Index rti, RangeTblEntry *rte)
{
	PlannerInfo *subroot = rel->subroot;
	Query	   *sub;
	RelOptInfo *final;
	GroupPathExtraData extra;
	List	   *tlist;
	List	   *having;
	RelOptInfo *base;
	Bitmapset  *needed = NULL;
	PyObject   *tree;
	PyObject   *outputs;
	PyObject   *columns;
	PyObject   *input;
	List	   *clauses = NIL;
	ListCell   *lc;
	int			k;
	OrochiSubqueryState *ss;

	if (prev_set_rel_pathlist)
		prev_set_rel_pathlist(root, rel, rti, rte);
	/* (a security-barrier view's conditions run before any of the query's: PostgreSQL's) */
	if (rte->rtekind != RTE_SUBQUERY || rte->security_barrier || rel->reloptkind != RELOPT_BASEREL ||
		subroot == NULL ||
		!orochi_duckdb_join_enabled || root->parse->commandType != CMD_SELECT || root->rowMarks != NIL ||
		!bms_is_empty(rel->lateral_relids) || IS_DUMMY_REL(rel) || rel->fdw_private != NULL ||
		OidIsValid(rel->serverid) || bms_membership(root->all_baserels) != BMS_MULTIPLE)
		return;
	sub = subroot->parse;
	if (sub->commandType != CMD_SELECT || sub->groupClause == NIL || sub->groupingSets != NIL ||
		sub->hasSubLinks || sub->hasWindowFuncs || sub->hasTargetSRFs || sub->hasDistinctOn ||
		sub->distinctClause != NIL || sub->sortClause != NIL || sub->limitCount != NULL ||
		sub->limitOffset != NULL || sub->setOperations != NULL || sub->rowMarks != NIL ||
		sub->cteList != NIL || sub->hasRecursive || sub->hasModifyingCTE || subroot->init_plans != NIL ||
		subroot->plan_params != NIL || !bms_is_empty(subroot->outer_params))
		return;
	final = fetch_upper_rel(subroot, UPPERREL_FINAL, NULL);
	/* the rel whose server and wrapper it takes: its table, or their join */
	base = subquery_input_rel(subroot);
	memset(&extra, 0, sizeof(extra));
	extra.havingQual = (Node *) sub->havingQual;
	if (base == NULL || final->cheapest_total_path == NULL || !upper_tlist(subroot, &extra, &tlist, &having))
	{
		elog(DEBUG1, "orochi: a subquery is no join engine input: not an aggregation over orochi tables the engine reads");
		return;
	}
	if (!OidIsValid(base->serverid) || base->fdwroutine == NULL ||
		base->fdwroutine->GetForeignRelSize != orochiGetForeignRelSize)
		return;
	/* its outputs the query reads (and its restrictions): group keys only */
	pull_varattnos((Node *) rel->reltarget->exprs, rel->relid, &needed);
	foreach(lc, rel->baserestrictinfo)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (rinfo->pseudoconstant || rinfo->security_level > 0)
			return;
		pull_varattnos((Node *) rinfo->clause, rel->relid, &needed);
		clauses = lappend(clauses, rinfo->clause);
	}
	columns = PyList_New(0);
	if (columns == NULL)
		orochi_py_raise("describing a subquery");
	k = -1;
	while ((k = bms_next_member(needed, k)) >= 0)
	{
		AttrNumber	attno = k + FirstLowInvalidHeapAttributeNumber;
		TargetEntry *tle = attno > 0 ? get_tle_by_resno(sub->targetList, attno) : NULL;
		int			found = -1;
		PyObject   *c;

		if (tle != NULL && !tle->resjunk && tle->ressortgroupref != 0)
			foreach(lc, tlist)
				if (lfirst_node(TargetEntry, lc)->ressortgroupref == tle->ressortgroupref)
				{
					found = foreach_current_index(lc);
					break;
				}
		if (found < 0)
		{
			Py_DECREF(columns);
			elog(DEBUG1, "orochi: a subquery is no join engine input: an output it gives is not a group key");
			return;
		}
		c = Py_BuildValue("(ii)", (int) attno, found);
		PyList_Append(columns, c);
		Py_DECREF(c);
	}
	tree = engine_input_to_py(subroot, base);
	if (tree == NULL)
	{
		Py_DECREF(columns);
		return;
	}
	outputs = aggregation_outputs_to_py(subroot, tlist);
	input = Py_BuildValue("(si(NNNN)Ndd)", "subquery", (int) rti, tree, outputs,
						  orochi_expr_list_to_py(subroot, having), columns,
						  orochi_expr_list_to_py(root, clauses), rel->rows,
						  (double) final->cheapest_total_path->total_cost);
	if (input == NULL)
		orochi_py_raise("describing a subquery");
	ss = palloc0(sizeof(OrochiSubqueryState));
	engine_input_keep(ss, &ss->engine_input, input);
	Py_DECREF(input);
	rel->fdw_private = ss;
	rel->serverid = base->serverid;
	rel->fdwroutine = base->fdwroutine;
	elog(DEBUG1, "orochi: a subquery is a join engine input");
}

/*
 * The subqueries among a plan's relids that the engine runs (their plans
 * are not in the plan tree): marked unplanned, so that their tables enter
 * the plan's range table all the same (set_plan_references' dead
 * subqueries), checked for privileges and locked by the executor as every
 * table of a statement is.
 */
static void
engine_plan_subqueries(PlannerInfo *root, Relids relids)
{
	int			rti = -1;

	while ((rti = bms_next_member(relids, rti)) >= 0)
	{
		RelOptInfo *rel = rti < root->simple_rel_array_size ? root->simple_rel_array[rti] : NULL;

		if (rel != NULL && rel->rtekind == RTE_SUBQUERY && rel->reloptkind == RELOPT_BASEREL)
			rel->subroot = NULL;
	}
}

void
orochi_install_planner_hooks(void)
{
	prev_set_rel_pathlist = set_rel_pathlist_hook;
	set_rel_pathlist_hook = orochi_subquery_rel_pathlist;
}

/*
 * A LIMIT or OFFSET clause as a Python int, None when absent or NULL (no
 * limit, offset 0); false if it is not a constant or is negative.
 */
static bool
limit_value_to_py(Node *node, PyObject **out)
{
	Const	   *c = (Const *) node;
	int64		v;

	if (node == NULL || (IsA(node, Const) && c->constisnull))
	{
		Py_INCREF(Py_None);
		*out = Py_None;
		return true;
	}
	if (!IsA(node, Const) || c->consttype != INT8OID)
		return false;
	v = DatumGetInt64(c->constvalue);
	if (v < 0)
		return false;			/* an error in PostgreSQL's Limit node */
	*out = PyLong_FromLongLong(v);
	return *out != NULL;
}

/*
 * engine_order_path
 *		ORDER BY (UPPERREL_ORDERED) and LIMIT/OFFSET (UPPERREL_FINAL) over a
 *		join or aggregation the engine runs, or over its ordering: the sort
 *		keys (outputs of the input's plan, with direction, NULLS FIRST/LAST
 *		and collation) and limits offered to Python (engine_order), which
 *		checks that DuckDB orders those types exactly as PostgreSQL.
 */
static void
engine_order_path(PlannerInfo *root, UpperRelationKind stage, RelOptInfo *input_rel,
				  RelOptInfo *output_rel, void *extra)
{
	Query	   *parse = root->parse;
	OrochiUpperState *in_upper = NULL;
	RelOptInfo *base_input = input_rel;
	List	   *tlist;
	List	   *having = NIL;
	const char *plan;
	PyObject   *keys;
	PyObject   *count;
	PyObject   *offset;
	PyObject   *res;
	ListCell   *lc;
	List	   *pathkeys = NIL;
	Path	   *input_path = NULL;

	if (!orochi_duckdb_join_enabled || parse->hasTargetSRFs || parse->hasWindowFuncs ||
		parse->rowMarks != NIL || parse->distinctClause != NIL || parse->groupingSets != NIL ||
		parse->setOperations != NULL)
		return;
	if (IS_JOIN_REL(input_rel))
	{
		OrochiJoinState *js = (OrochiJoinState *) input_rel->fdw_private;

		if (js == NULL || !js->engine || parse->groupClause != NIL || parse->hasAggs)
		{
			elog(DEBUG1, "orochi: no ordering: not an engine join");
			return;
		}
		tlist = js->tlist;
		plan = js->engine_plan;
	}
	else if (IS_UPPER_REL(input_rel) && input_rel->fdw_private != NULL &&
			 ((OrochiUpperState *) input_rel->fdw_private)->engine_plan != NULL)
	{
		in_upper = (OrochiUpperState *) input_rel->fdw_private;
		tlist = in_upper->tlist;
		having = in_upper->having;
		plan = in_upper->engine_plan;
		base_input = in_upper->input_rel;
	}
	else
		return;
	if (stage == UPPERREL_FINAL && (in_upper == NULL || !in_upper->ordered) && root->sort_pathkeys != NIL)
		return;					/* the ORDER BY was not pushed: PostgreSQL sorts first */

	keys = PyList_New(0);
	if (keys == NULL)
		orochi_py_raise("describing an ordering");
	if (stage == UPPERREL_ORDERED)
	{
		foreach(lc, root->sort_pathkeys)
		{
			PathKey    *pk = (PathKey *) lfirst(lc);
			EquivalenceClass *ec = pk->pk_eclass;
			int			found = -1;
			ListCell   *lm;
			PyObject   *key;

			if (ec->ec_has_volatile)
				found = -1;
			else
				foreach(lm, ec->ec_members)
				{
					EquivalenceMember *em = (EquivalenceMember *) lfirst(lm);
					Expr	   *e = em->em_expr;
					ListCell   *lt;

					if (em->em_is_child)
						continue;
					/* x COLLATE "C", varchar as text: the ordering's collation is the class's */
					while (IsA(e, RelabelType))
						e = ((RelabelType *) e)->arg;
					foreach(lt, tlist)
					{
						if (equal(((TargetEntry *) lfirst(lt))->expr, e))
						{
							found = foreach_current_index(lt);
							break;
						}
					}
					if (found >= 0)
						break;
				}
			if (found < 0)
			{
				Py_DECREF(keys);
				elog(DEBUG1, "orochi: the join engine declined an ordering: a sort key is not one of its outputs");
				return;
			}
			key = Py_BuildValue("(iOOIN)", found, pk->pk_strategy == BTGreaterStrategyNumber ? Py_True : Py_False,
								pk->pk_nulls_first ? Py_True : Py_False, (unsigned int) pk->pk_opfamily,
								OidIsValid(ec->ec_collation) ?
								Py_BuildValue("(sOO)", "", lc_collate_is_c(ec->ec_collation) ? Py_True : Py_False,
											  get_collation_isdeterministic(ec->ec_collation) ? Py_True : Py_False) :
								(Py_INCREF(Py_None), Py_None));
			PyList_Append(keys, key);
			Py_DECREF(key);
		}
		pathkeys = root->sort_pathkeys;
		Py_INCREF(Py_None);
		count = Py_None;
		Py_INCREF(Py_None);
		offset = Py_None;
	}
	else
	{
		FinalPathExtraData *fextra = (FinalPathExtraData *) extra;

		if (!fextra->limit_needed || having != NIL || parse->limitOption == LIMIT_OPTION_WITH_TIES)
		{
			Py_DECREF(keys);
			return;
		}
		if (!limit_value_to_py(parse->limitCount, &count))
		{
			Py_DECREF(keys);
			return;
		}
		if (!limit_value_to_py(parse->limitOffset, &offset))
		{
			Py_DECREF(keys);
			Py_DECREF(count);
			return;
		}
		if (in_upper != NULL && in_upper->ordered)
			pathkeys = root->sort_pathkeys;
	}
	/*
	 * The input's own path of the engine (an ordered rel has no cheapest
	 * path yet), perhaps under the projection to the final target.
	 */
	foreach(lc, input_rel->pathlist)
	{
		Path	   *p = (Path *) lfirst(lc);

		if (IsA(p, ForeignPath) ||
			(IsA(p, ProjectionPath) && IsA(((ProjectionPath *) p)->subpath, ForeignPath)))
		{
			input_path = p;
			break;
		}
	}
	if (input_path == NULL)
	{
		Py_DECREF(keys);
		Py_DECREF(count);
		Py_DECREF(offset);
		return;
	}
	res = orochi_runtime_call("engine_order",
							  Py_BuildValue("(sNNNddd)", plan, keys, count, offset,
											input_path->rows, input_path->startup_cost, input_path->total_cost));
	add_planned_upper_path(root, base_input, output_rel, res, "engine_order", tlist, having, stage, pathkeys);
}

/*
 * engine_param_exprs
 *		The parameters ($1, an InitPlan's value) a plan of the join engine
 *		takes, as Param nodes for fdw_exprs: evaluated when the scan starts
 *		and handed to Python with it (engine_param_values).
 */
static List *
engine_param_exprs(const char *plan)
{
	PyObject   *res = orochi_runtime_call("engine_params", Py_BuildValue("(s)", plan));
	List	   *exprs = NIL;

	if (!PyList_Check(res))
	{
		Py_DECREF(res);
		elog(ERROR, "engine_params must return a list");
	}
	for (Py_ssize_t i = 0; i < PyList_GET_SIZE(res); i++)
	{
		int			kind,
					id,
					typmod;
		unsigned int type;
		Param	   *p;

		if (!PyArg_ParseTuple(PyList_GET_ITEM(res, i), "iiIi", &kind, &id, &type, &typmod))
		{
			Py_DECREF(res);
			orochi_py_raise("engine_params must return (kind, id, type, typmod) tuples");
		}
		p = makeNode(Param);
		p->paramkind = (ParamKind) kind;
		p->paramid = id;
		p->paramtype = (Oid) type;
		p->paramtypmod = typmod;
		p->paramcollid = get_typcollation((Oid) type);
		p->location = -1;
		exprs = lappend(exprs, p);
	}
	Py_DECREF(res);
	return exprs;
}

/*
 * join_plan
 *		The scan of a pushed-down join: no scan relation, the joined columns
 *		as fdw_scan_tlist, both rels' quals (each with its side) applied by
 *		the wrapper.
 */
static ForeignScan *
join_plan(RelOptInfo *joinrel, List *tlist, Plan *outer_plan)
{
	OrochiJoinState *js = (OrochiJoinState *) joinrel->fdw_private;
	RelOptInfo *sides[2] = {js->outerrel, js->innerrel};
	List	   *qual_meta = NIL;
	List	   *qual_exprs = NIL;
	List	   *join_info;

	if (js->engine)
		return make_foreignscan(tlist, NIL, 0, engine_param_exprs(js->engine_plan),
								lappend(list_make5(NIL, NIL, NIL, makeInteger(-1), NIL),
										makeString(js->engine_plan)),
								js->tlist, NIL, outer_plan);

	for (int side = 0; side < 2; side++)
	{
		ListCell   *lc;

		foreach(lc, ((OrochiPlanState *) sides[side]->fdw_private)->quals)
		{
			OrochiQual *q = (OrochiQual *) lfirst(lc);

			qual_meta = lappend(qual_meta,
								list_concat(list_make5(makeInteger(q->attno), makeString(q->opname),
													   makeInteger(q->is_array), makeInteger(q->use_or),
													   makeInteger(q->is_nulltest)),
											list_make3(makeInteger((int) q->collation), makeInteger(1),
													   makeInteger(side))));
			qual_exprs = lappend(qual_exprs, q->value);
		}
	}
	join_info = list_make4(makeInteger(js->outerrel->relid), makeInteger(js->innerrel->relid),
						   makeString(pstrdup(jointype_name(js->jointype))), js->clauses);
	return make_foreignscan(tlist, NIL, 0, qual_exprs,
							list_make5(NIL, qual_meta, NIL, makeInteger(-1), join_info),
							js->tlist, NIL, outer_plan);
}

/* ---------------------------------------------------------------------
 * Execution
 * ---------------------------------------------------------------------
 */
static void
scan_release(OrochiScanState *state)
{
	orochi_batch_close(&state->batch);
	Py_CLEAR(state->row);
	Py_CLEAR(state->iterator);
}

/* Memory-context reset callback: EndForeignScan is not called on abort */
static void
scan_state_reset_callback(void *arg)
{
	OrochiScanState *state = (OrochiScanState *) arg;

	if (state->released)
		return;
	state->released = true;
	if (!orochi_python_cleanup_allowed())
		return;					/* the objects may be executing, or Python is lost: leave them */
	scan_release(state);
	Py_CLEAR(state->quals);
	if (state->attnames)
	{
		for (int i = 0; i < state->tupdesc->natts; i++)
			Py_CLEAR(state->attnames[i]);
	}
	Py_CLEAR(state->instance);
	Py_CLEAR(state->columns);
	Py_CLEAR(state->sortkeys);
	Py_CLEAR(state->scan_cache);
}

/*
 * The next table among a scan's relids after rti (bms_next_member's
 * protocol): a join the engine runs may cover subqueries too, whose own
 * tables its plan names (engine_subquery_relids).
 */
static int
next_table_rti(EState *estate, Relids relids, int rti)
{
	while ((rti = bms_next_member(relids, rti)) >= 0)
		if (exec_rt_fetch(rti, estate)->rtekind == RTE_RELATION)
			break;
	return rti;
}

/*
 * Which statement a join run by the engine belongs to, for the tables the
 * engine reads once for several of its joins (Python decides which): its
 * executor state (alive while the statement runs, so no other statement
 * running has the same) and the snapshot every scan of it reads under;
 * None when the statement writes (the engine then reads each input on its
 * own) or is only explained.
 */
static PyObject *
engine_statement(ForeignScanState *node, int eflags)
{
	EState	   *estate = node->ss.ps.state;
	Snapshot	snap = estate->es_snapshot;

	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) || estate->es_plannedstmt == NULL ||
		estate->es_plannedstmt->commandType != CMD_SELECT || estate->es_plannedstmt->hasModifyingCTE ||
		estate->es_plannedstmt->rowMarks != NIL || snap == NULL || snap->snapshot_type != SNAPSHOT_MVCC)
		Py_RETURN_NONE;
	return Py_BuildValue("(KkkI)", (unsigned long long) (uintptr_t) estate, (unsigned long) snap->xmin,
						 (unsigned long) snap->xmax, (unsigned int) snap->curcid);
}

static void
orochiBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	OrochiScanState *state = palloc0(sizeof(OrochiScanState));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));
	List	   *needed_list = list_nth(plan->fdw_private, FdwScanPrivateNeededAttrs);
	Bitmapset  *needed = NULL;
	ListCell   *lc;
	int			natts;

	orochi_python_ensure();
	node->fdw_state = state;
	if (plan->scan.scanrelid > 0)
	{
		state->rel = node->ss.ss_currentRelation;
		state->tupdesc = RelationGetDescr(state->rel);
	}
	else if (list_length(plan->fdw_private) > FdwScanPrivateEngine)
	{
		/* a join run by the engine: rows are the join's, j<i> */
		state->rel = ExecGetRangeTableRelation(node->ss.ps.state, next_table_rti(node->ss.ps.state,
																				   plan->fs_relids, -1));
		state->tupdesc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;
	}
	else if (list_length(plan->fdw_private) > FdwScanPrivateJoin)
	{
		/* a pushed-down join: rows are the join's, j<i> */
		List	   *ji = list_nth(plan->fdw_private, FdwScanPrivateJoin);
		Relation	inner = ExecGetRangeTableRelation(node->ss.ps.state,
													  intVal(list_nth(ji, JoinPrivateInnerRti)));

		state->rel = ExecGetRangeTableRelation(node->ss.ps.state, intVal(list_nth(ji, JoinPrivateOuterRti)));
		state->tupdesc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;
		state->join_tupdescs[0] = RelationGetDescr(state->rel);
		state->join_tupdescs[1] = RelationGetDescr(inner);
	}
	else
	{
		/* a pushed-down aggregation: rows are the groups, g<i> and a<j> */
		Index		rtindex = bms_next_member(plan->fs_relids, -1);

		state->rel = ExecGetRangeTableRelation(node->ss.ps.state, rtindex);
		state->tupdesc = node->ss.ss_ScanTupleSlot->tts_tupleDescriptor;
	}
	state->rel_tupdesc = RelationGetDescr(state->rel);
	natts = state->tupdesc->natts;
	state->scancxt = CurrentMemoryContext;
	state->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "orochi scan row",
										  ALLOCSET_DEFAULT_SIZES);

	cb->func = scan_state_reset_callback;
	cb->arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);

	orochi_mark_xact_touched();
	state->convs = palloc0(sizeof(OrochiTypeConv) * natts);
	state->attnames = palloc0(sizeof(PyObject *) * natts);
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(state->tupdesc, i);

		if (att->attisdropped)
			continue;
		orochi_type_conv_init(&state->convs[i], att->atttypid, att->atttypmod,
							  NameStr(att->attname));
		state->attnames[i] = orochi_cstring_to_py(NameStr(att->attname));
		PyUnicode_InternInPlace(&state->attnames[i]);
	}
	state->instance = orochi_instance_for_relation(state->rel);
	if (list_length(plan->fdw_private) > FdwScanPrivateEngine)
	{
		PyObject   *instances = PyDict_New();
		int			rti = -1;

		if (instances == NULL)
			orochi_py_raise("starting a join");
		while ((rti = next_table_rti(node->ss.ps.state, plan->fs_relids, rti)) >= 0)
		{
			PyObject   *key = PyLong_FromLong(rti);
			PyObject   *inst = orochi_instance_for_relation(ExecGetRangeTableRelation(node->ss.ps.state, rti));

			PyDict_SetItem(instances, key, inst);
			Py_DECREF(key);
			Py_DECREF(inst);
		}
		Py_CLEAR(state->instance);
		if (strncmp(strVal(list_nth(plan->fdw_private, FdwScanPrivateEngine)), "{\"jit\"", 6) == 0)
			state->instance = orochi_runtime_call("jit_handle",
												  Py_BuildValue("(sN)", strVal(list_nth(plan->fdw_private,
																						FdwScanPrivateEngine)),
																instances));
		else
		{
			/*
			 * The tables of the subqueries it runs, which are no scans of the
			 * join (their subplans stay in the plan, so the executor has
			 * checked the privileges on them and locked them)
			 */
			const char *text = strVal(list_nth(plan->fdw_private, FdwScanPrivateEngine));
			PyObject   *relids = orochi_runtime_call("engine_subquery_relids", Py_BuildValue("(s)", text));
			PyObject   *subquery_tables = PyDict_New();

			if (subquery_tables == NULL || !PyList_Check(relids))
			{
				Py_XDECREF(subquery_tables);
				Py_DECREF(relids);
				Py_DECREF(instances);
				elog(ERROR, "engine_subquery_relids must return a list");
			}
			for (Py_ssize_t i = 0; i < PyList_GET_SIZE(relids); i++)
			{
				PyObject   *key = PyList_GET_ITEM(relids, i);
				unsigned long relid = PyLong_AsUnsignedLong(key);
				PyObject   *inst;

				if (PyErr_Occurred())
				{
					Py_DECREF(relids);
					Py_DECREF(subquery_tables);
					Py_DECREF(instances);
					orochi_py_raise("starting a join");
				}
				inst = orochi_instance_for_relid((Oid) relid);
				PyDict_SetItem(subquery_tables, key, inst);
				Py_DECREF(inst);
			}
			Py_DECREF(relids);
			state->instance = orochi_runtime_call("engine_join_handle",
												  Py_BuildValue("(sNNN)", text, instances, subquery_tables,
																engine_statement(node, eflags)));
		}
	}
	else if (state->join_tupdescs[0] != NULL)
	{
		List	   *ji = list_nth(plan->fdw_private, FdwScanPrivateJoin);
		Relation	inner = ExecGetRangeTableRelation(node->ss.ps.state,
													  intVal(list_nth(ji, JoinPrivateInnerRti)));
		PyObject   *sides = PyList_New(0);
		PyObject   *args;

		foreach(lc, (List *) list_nth(plan->fdw_private, FdwScanPrivateQuals))
		{
			PyObject   *side = PyLong_FromLong(intVal(list_nth((List *) lfirst(lc), QualMetaSide)));

			PyList_Append(sides, side);
			Py_DECREF(side);
		}
		args = Py_BuildValue("(NNNN)", state->instance, orochi_instance_for_relation(inner),
							 join_request(strVal(list_nth(ji, JoinPrivateType)),
										  list_nth(ji, JoinPrivateClauses), plan->fdw_scan_tlist,
										  intVal(list_nth(ji, JoinPrivateOuterRti)),
										  state->join_tupdescs[0], state->join_tupdescs[1]),
							 sides);
		state->instance = NULL;
		state->instance = orochi_runtime_call("join_handle", args);
	}
	else if (plan->scan.scanrelid == 0)
	{
		PyObject   *args = Py_BuildValue("(NN)", state->instance,
										 agg_request(plan->fdw_scan_tlist, state->rel_tupdesc));

		state->instance = NULL;
		state->instance = orochi_runtime_call("aggregate_handle", args);
	}

	foreach(lc, needed_list)
		needed = bms_add_member(needed, intVal(lfirst(lc)) - FirstLowInvalidHeapAttributeNumber);
	state->columns = needed_columns_to_py(needed, state->rel_tupdesc);
	state->rowids = bms_is_member(SelfItemPointerAttributeNumber - FirstLowInvalidHeapAttributeNumber, needed);
	state->sortkey_meta = list_nth(plan->fdw_private, FdwScanPrivateSortKeys);

	state->qual_meta = list_nth(plan->fdw_private, FdwScanPrivateQuals);
	state->limit = intVal(list_nth(plan->fdw_private, FdwScanPrivateLimit));
	state->qual_exprs = ExecInitExprList(plan->fdw_exprs, (PlanState *) node);
	/* without values (those come when the scan starts), for EXPLAIN */
	state->sortkeys = sortkeys_to_py(state->sortkey_meta, state->rel_tupdesc, state->qual_exprs, NULL);
	state->qual_convs = palloc0(sizeof(OrochiTypeConv) * Max(list_length(plan->fdw_exprs), 1));
	foreach(lc, plan->fdw_exprs)
	{
		Node	   *e = (Node *) lfirst(lc);

		orochi_type_conv_init(&state->qual_convs[foreach_current_index(lc)],
							  exprType(e), exprTypmod(e), NULL);
	}
}

/*
 * Evaluate the quals' values for this scan (parameters and stable
 * expressions are fixed for its duration).  *no_match is set if a strict
 * comparison got a NULL value: no row can then pass, so nothing is read.
 * With consts_only (EXPLAIN of a scan that has not started: its parameters
 * may never have been set), only constants are given values; the others
 * appear as the name of their type, as at plan time.
 */
/*
 * The values of a join engine plan's parameters (its fdw_exprs), in order;
 * None for each with consts_only (EXPLAIN: not evaluated).
 */
static PyObject *
engine_param_values(ForeignScanState *node, OrochiScanState *state, bool consts_only)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	PyObject   *list = PyList_New(0);
	ListCell   *le;

	if (list == NULL)
		orochi_py_raise("building parameter values");
	foreach(le, state->qual_exprs)
	{
		PyObject   *pyvalue;
		int			rc;

		if (consts_only)
		{
			Py_INCREF(Py_None);
			pyvalue = Py_None;
		}
		else
		{
			PG_TRY();
			{
				Datum		value;
				bool		isnull;

				value = ExecEvalExpr((ExprState *) lfirst(le), econtext, &isnull);
				pyvalue = orochi_datum_to_py(value, isnull, &state->qual_convs[foreach_current_index(le)]);
			}
			PG_CATCH();
			{
				OROCHI_RELEASE(list);
				PG_RE_THROW();
			}
			PG_END_TRY();
		}
		rc = PyList_Append(list, pyvalue);
		Py_DECREF(pyvalue);
		if (rc < 0)
		{
			Py_DECREF(list);
			orochi_py_raise("building parameter values");
		}
	}
	return list;
}

static PyObject *
scan_quals_to_py(ForeignScanState *node, OrochiScanState *state, bool consts_only,
				 bool *no_match)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	PyObject   *list;
	ListCell   *lm,
			   *le;
	int			i = 0;

	*no_match = false;
	if (list_length(((ForeignScan *) node->ss.ps.plan)->fdw_private) > FdwScanPrivateEngine)
		return engine_param_values(node, state, consts_only);
	list = PyList_New(0);
	if (list == NULL)
		orochi_py_raise("building quals");
	forboth(lm, state->qual_meta, le, state->qual_exprs)
	{
		List	   *meta = (List *) lfirst(lm);
		AttrNumber	attno = intVal(list_nth(meta, QualMetaAttno));
		bool		is_nulltest = intVal(list_nth(meta, QualMetaNullTest)) != 0;
		TupleDesc	qual_tupdesc = list_length(meta) > QualMetaSide ?
			state->join_tupdescs[intVal(list_nth(meta, QualMetaSide))] : state->rel_tupdesc;
		Datum		value;
		bool		isnull;
		PyObject   *pyvalue;
		PyObject   *t;

		if (consts_only && !IsA(((ExprState *) lfirst(le))->expr, Const))
		{
			/* EXPLAIN without ANALYZE: parameters have no values yet */
			Expr	   *expr = ((ExprState *) lfirst(le))->expr;

			t = qual_tuple(NameStr(TupleDescAttr(qual_tupdesc, attno - 1)->attname),
						   strVal(list_nth(meta, QualMetaOperator)),
						   intVal(list_nth(meta, QualMetaIsArray)) != 0,
						   intVal(list_nth(meta, QualMetaUseOr)) != 0,
						   orochi_cstring_to_py(format_type_be(exprType((Node *) expr))), false,
						   (Oid) intVal(list_nth(meta, QualMetaCollation)),
						   intVal(list_nth(meta, QualMetaExact)) != 0);
			PyList_Append(list, t);
			Py_DECREF(t);
			i++;
			continue;
		}
		PG_TRY();
		{
			value = ExecEvalExpr((ExprState *) lfirst(le), econtext, &isnull);
			if (isnull && !is_nulltest && state->join_tupdescs[0] == NULL)
				*no_match = true;
			pyvalue = orochi_datum_to_py(value, isnull, &state->qual_convs[i]);
		}
		PG_CATCH();
		{
			OROCHI_RELEASE(list);
			PG_RE_THROW();
		}
		PG_END_TRY();
		if (isnull && !is_nulltest && state->join_tupdescs[0] != NULL)
		{
			/*
			 * In a pushed-down join, a NULL empties its own side only (an outer
			 * join still yields the rows of the side it preserves): the qual
			 * becomes "column = ANY ('{}')", false for every row of that side.
			 */
			Py_DECREF(pyvalue);
			t = qual_tuple(NameStr(TupleDescAttr(qual_tupdesc, attno - 1)->attname), "=", true, true,
						   PyList_New(0), true, (Oid) intVal(list_nth(meta, QualMetaCollation)), true);
		}
		else
			t = qual_tuple(NameStr(TupleDescAttr(qual_tupdesc, attno - 1)->attname),
						   strVal(list_nth(meta, QualMetaOperator)),
						   intVal(list_nth(meta, QualMetaIsArray)) != 0,
						   intVal(list_nth(meta, QualMetaUseOr)) != 0,
						   pyvalue, true, (Oid) intVal(list_nth(meta, QualMetaCollation)),
						   intVal(list_nth(meta, QualMetaExact)) != 0);
		PyList_Append(list, t);
		Py_DECREF(t);
		i++;
	}
	return list;
}

/*
 * Start (or restart) the scan.  When a strict comparison got a NULL value no
 * row can pass: a scan of rows returns nothing without asking the wrapper,
 * but an aggregation is still computed, over no rows (None for the quals),
 * since without GROUP BY it yields exactly one row whatever the quals.
 */
static void
scan_start(ForeignScanState *node, OrochiScanState *state)
{
	bool		no_match;
	PyObject   *quals = scan_quals_to_py(node, state, false, &no_match);
	bool		aggregation = ((ForeignScan *) node->ss.ps.plan)->scan.scanrelid == 0;

	/* kept for EXPLAIN ANALYZE: the values this scan really ran with */
	Py_XSETREF(state->quals, quals);
	if (no_match && !aggregation)
	{
		state->done = true;
		return;
	}
	if (state->sortkey_meta != NIL)
	{
		PyObject   *sortkeys;

		sortkeys = sortkeys_to_py(state->sortkey_meta, state->rel_tupdesc, state->qual_exprs,
								  node->ss.ps.ps_ExprContext);
		Py_XSETREF(state->sortkeys, sortkeys);
	}
	if (no_match)
		quals = Py_NewRef(Py_None);		/* an aggregation over no rows */
	else
		Py_INCREF(quals);
	/* (an aggregation's too: a correlated subquery's is rescanned per outer row) */
	if (state->scan_cache == NULL && state->join_tupdescs[0] == NULL)
	{
		state->scan_cache = PyDict_New();
		if (state->scan_cache == NULL)
			orochi_py_raise("creating a scan's cache");
	}
	state->iterator = orochi_runtime_call("execute",
										  Py_BuildValue("(ONOOiOO)", state->instance, quals,
														state->columns, state->sortkeys, state->limit,
														state->scan_cache ? state->scan_cache : Py_None,
														state->rowids ? Py_True : Py_False));
}

/*
 * orochiIterateForeignScan
 *		Next row: from the current batch if one is open, else from the next
 *		item the wrapper yields (a batch, or one row).
 */
static TupleTableSlot *
orochiIterateForeignScan(ForeignScanState *node)
{
	OrochiScanState *state = (OrochiScanState *) node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	MemoryContext old;

	ExecClearTuple(slot);
	if (state->done)
		return slot;
	if (state->iterator == NULL)
	{
		scan_start(node, state);
		if (state->done)
			return slot;
	}

	if (state->row_allocated)
		MemoryContextReset(state->rowcxt);
	state->row_allocated = false;
	for (;;)
	{
		PyObject   *item;

		if (state->batch.owner != NULL && state->batch.next < state->batch.nrows)
		{
			state->row_allocated = state->batch.allocates;
			old = MemoryContextSwitchTo(state->rowcxt);
			orochi_batch_store_row(&state->batch, slot, state->convs);
			MemoryContextSwitchTo(old);
			ExecStoreVirtualTuple(slot);
			state->rows_returned++;
			return slot;
		}
		orochi_batch_close(&state->batch);

		CHECK_FOR_INTERRUPTS();
		item = orochi_py_next(state->iterator);
		orochi_check_pending(item);
		if (item == NULL)
		{
			if (PyErr_Occurred())
				orochi_py_raise("iterating a scan");
			state->done = true;
			return slot;
		}
		if (PyDict_Check(item) || PyTuple_Check(item) || PyList_Check(item))
		{
			state->row = item;
			state->row_allocated = true;
			old = MemoryContextSwitchTo(state->rowcxt);
			orochi_row_store(item, slot, state->convs, state->attnames);
			MemoryContextSwitchTo(old);
			Py_CLEAR(state->row);
			ExecStoreVirtualTuple(slot);
			state->rows_returned++;
			return slot;
		}
		else
		{
			PyObject   *wire = orochi_runtime_call("batch_to_wire",
														   Py_BuildValue("(ON)", state->instance, item));

			state->row = wire;
			old = MemoryContextSwitchTo(state->scancxt);
			orochi_batch_open(&state->batch, wire, state->tupdesc, state->convs);
			MemoryContextSwitchTo(old);
			Py_CLEAR(state->row);
		}
	}
}

static void
orochiReScanForeignScan(ForeignScanState *node)
{
	OrochiScanState *state = (OrochiScanState *) node->fdw_state;

	scan_release(state);
	state->done = false;
}

static void
orochiEndForeignScan(ForeignScanState *node)
{
	OrochiScanState *state = (OrochiScanState *) node->fdw_state;

	if (state)
		scan_state_reset_callback(state);
}

/*
 * orochiExplainForeignScan
 *		Lines from the wrapper's explain(); "Label: text" lines become
 *		properties of that label (so that every EXPLAIN format shows them).
 */
static void
orochiExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	OrochiScanState *state = (OrochiScanState *) node->fdw_state;
	PyObject   *res;
	PyObject   *quals = NULL;
	Py_ssize_t	n;

	if (state == NULL || state->instance == NULL)
		return;

	/*
	 * The values the scan ran with (EXPLAIN ANALYZE); without ANALYZE, or
	 * if the scan never started (a subplan that was never run), only
	 * constants have values: parameters may never have been set.
	 */
	if (es->analyze && state->quals != NULL)
	{
		quals = state->quals;
		Py_INCREF(quals);
	}
	else
	{
		bool		no_match;

		quals = scan_quals_to_py(node, state, true, &no_match);
	}
	res = orochi_runtime_call("explain",
							  Py_BuildValue("(ONOOiiOL)", state->instance, quals, state->columns,
											state->sortkeys, (int) es->verbose, (int) es->analyze,
											state->iterator ? state->iterator : Py_None,
											(long long) state->rows_returned));
	if (!PyList_Check(res))
	{
		Py_DECREF(res);
		elog(ERROR, "orochi: explain must return a list of strings");
	}
	n = PyList_GET_SIZE(res);
	for (Py_ssize_t i = 0; i < n; i++)
	{
		PyObject   *line = PyList_GET_ITEM(res, i);
		const char *s = PyUnicode_Check(line) ? PyUnicode_AsUTF8(line) : NULL;
		const char *colon;

		if (s == NULL)
		{
			PyErr_Clear();
			continue;
		}
		s = orochi_utf8_to_server_lossy(s);	/* EXPLAIN's text is in the server encoding */
		colon = strstr(s, ": ");
		if (colon && colon != s)
			ExplainPropertyText(pnstrdup(s, colon - s), colon + 2, es);
		else
			ExplainPropertyText("Orochi", s, es);
	}
	Py_DECREF(res);
}

/* ---------------------------------------------------------------------
 * ANALYZE
 * ---------------------------------------------------------------------
 */

/*
 * orochiAcquireSampleRows
 *		Rows for ANALYZE: the wrapper's analyze_sample(targrows) if it has one
 *		(it may yield a sample and say how many rows the table holds), else
 *		a full scan; a reservoir keeps targrows of what arrives.
 */
static int
orochiAcquireSampleRows(Relation relation, int elevel, HeapTuple *rows, int targrows,
						double *totalrows, double *totaldeadrows)
{
	TupleDesc	tupdesc = RelationGetDescr(relation);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(tupdesc, &TTSOpsVirtual);
	OrochiTypeConv *convs = palloc0(sizeof(OrochiTypeConv) * tupdesc->natts);
	PyObject  **attnames = palloc0(sizeof(PyObject *) * tupdesc->natts);
	PyObject   *instance = orochi_instance_for_relation(relation);	/* starts Python */
	PyObject   *volatile iterator = NULL;
	PyObject   *volatile item = NULL;
	OrochiBatchReader reader;
	ReservoirStateData rstate;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "orochi analyze row",
												 ALLOCSET_DEFAULT_SIZES);
	double		seen = 0;
	double		rowstoskip = -1;
	double		reported = -1;
	int			numrows = 0;

	memset(&reader, 0, sizeof(reader));
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		orochi_type_conv_init(&convs[i], att->atttypid, att->atttypmod, NameStr(att->attname));
		attnames[i] = orochi_cstring_to_py(NameStr(att->attname));
	}
	reservoir_init_selection_state(&rstate, targrows);

	PG_TRY();
	{
		PyObject   *res = orochi_runtime_call("analyze_sample", Py_BuildValue("(Oi)", instance, targrows));

		if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2)
		{
			Py_DECREF(res);
			elog(ERROR, "orochi: analyze_sample must return (rows, total_rows)");
		}
		iterator = PyObject_GetIter(PyTuple_GET_ITEM(res, 0));
		if (PyTuple_GET_ITEM(res, 1) != Py_None)
			reported = PyFloat_AsDouble(PyTuple_GET_ITEM(res, 1));
		Py_DECREF(res);
		if (iterator == NULL)
			orochi_py_raise("analyze_sample");

		for (;;)
		{
			bool		from_batch = reader.owner != NULL && reader.next < reader.nrows;

			if (!from_batch)
			{
				orochi_batch_close(&reader);
				Py_CLEAR(item);
				vacuum_delay_point();
				item = orochi_py_next(iterator);
				orochi_check_pending(item);
				if (item == NULL)
				{
					if (PyErr_Occurred())
						orochi_py_raise("analyze_sample");
					break;
				}
				if (!(PyDict_Check(item) || PyTuple_Check(item) || PyList_Check(item)))
				{
					PyObject   *wire = orochi_runtime_call("batch_to_wire",
													   Py_BuildValue("(OO)", instance, item));

					Py_CLEAR(item);
					item = wire;
					orochi_batch_open(&reader, wire, tupdesc, convs);
					continue;
				}
			}

			MemoryContextReset(rowcxt);
			ExecClearTuple(slot);
			{
				MemoryContext old = MemoryContextSwitchTo(rowcxt);

				if (from_batch)
					orochi_batch_store_row(&reader, slot, convs);
				else
					orochi_row_store(item, slot, convs, attnames);
				MemoryContextSwitchTo(old);
			}
			ExecStoreVirtualTuple(slot);
			seen += 1;

			if (numrows < targrows)
				rows[numrows++] = heap_form_tuple(tupdesc, slot->tts_values, slot->tts_isnull);
			else
			{
				if (rowstoskip < 0)
					rowstoskip = reservoir_get_next_S(&rstate, seen, targrows);
				if (rowstoskip <= 0)
				{
					int			k = (int) (targrows * sampler_random_fract(&rstate.randstate));

					heap_freetuple(rows[k]);
					rows[k] = heap_form_tuple(tupdesc, slot->tts_values, slot->tts_isnull);
				}
				rowstoskip -= 1;
			}
		}
	}
	PG_FINALLY();
	{
		orochi_unwinding++;
		orochi_batch_close(&reader);
		Py_XDECREF(item);
		Py_XDECREF(iterator);
		Py_DECREF(instance);
		for (int i = 0; i < tupdesc->natts; i++)
			Py_XDECREF(attnames[i]);
		orochi_unwinding--;
		ExecDropSingleTupleTableSlot(slot);
	}
	PG_END_TRY();
	MemoryContextDelete(rowcxt);

	*totalrows = reported >= 0 ? reported : seen;
	*totaldeadrows = 0;
	ereport(elevel,
			(errmsg("\"%s\": sampled %d of %.0f rows",
					RelationGetRelationName(relation), numrows, *totalrows)));
	return numrows;
}

static bool
orochiAnalyzeForeignTable(Relation relation, AcquireSampleRowsFunc *func, BlockNumber *totalpages)
{
	*func = orochiAcquireSampleRows;
	*totalpages = 1;
	return true;
}

bool
orochi_rel_is_own(RelOptInfo *rel)
{
	return rel->fdwroutine != NULL && rel->fdwroutine->GetForeignRelSize == orochiGetForeignRelSize &&
		rel->rtekind == RTE_RELATION && rel->fdw_private != NULL;
}

void
orochi_fill_scan_routine(FdwRoutine *routine)
{
	/* scanning */
	routine->GetForeignRelSize = orochiGetForeignRelSize;
	routine->GetForeignPaths = orochiGetForeignPaths;
	routine->GetForeignPlan = orochiGetForeignPlan;
	routine->BeginForeignScan = orochiBeginForeignScan;
	routine->IterateForeignScan = orochiIterateForeignScan;
	routine->ReScanForeignScan = orochiReScanForeignScan;
	routine->EndForeignScan = orochiEndForeignScan;

	/* EXPLAIN */
	routine->ExplainForeignScan = orochiExplainForeignScan;

	/* aggregate and join pushdown */
	routine->GetForeignUpperPaths = orochiGetForeignUpperPaths;
	routine->GetForeignJoinPaths = orochiGetForeignJoinPaths;

	/* ANALYZE */
	routine->AnalyzeForeignTable = orochiAnalyzeForeignTable;
}
