/*-------------------------------------------------------------------------
 *
 * py_expr.c
 *		  Planner expressions as plain Python tuples, for the engine that
 *		  runs joins of orochi tables (orochi_fdw/query/pushable.py decides
 *		  what of them can run there).  Plumbing only: every node the
 *		  translation does not know becomes ("unsupported", tag), which
 *		  Python refuses.
 *
 *		  ("var", rti, attname, type, typmod, collation)
 *		  ("const", type, typmod, collation, value)
 *		  ("op", opno, opname, builtin, result type, input collation, [args])
 *		  ("bool", "and" | "or" | "not", [args])
 *		  ("nulltest", is_null, arg)
 *		  ("relabel", type, typmod, collation, arg)
 *		  ("saop", opno, opname, builtin, use_or, input collation, [args])
 *		  ("func", funcid, name, builtin, result type, [args])
 *		  ("agg", aggfnoid, name, builtin, result type, star, distinct, input collation, [args])
 *		  ("case", result type, arg or None, [(when, then)], default or None)
 *		  ("casetest", type)	(CASE arg WHEN ...: the arg, in each when)
 *		  ("coalesce", result type, [args])
 *		  ("unsupported", node tag)
 *
 *		  A collation travels as (name, is_c, deterministic) or None.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/transam.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_collation.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pathnodes.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"

static PyObject *
collation_to_py(Oid collation)
{
	char	   *name;

	if (!OidIsValid(collation))
		Py_RETURN_NONE;
	name = get_collation_name(collation);
	return Py_BuildValue("(NOO)", orochi_cstring_to_py(name ? name : "?"),
						 lc_collate_is_c(collation) ? Py_True : Py_False,
						 get_collation_isdeterministic(collation) ? Py_True : Py_False);
}

/*
 * orochi_expr_list_to_py
 *		A list of expressions (arguments, clauses) as a Python list of
 *		orochi_expr_to_py's tuples.
 */
PyObject *
orochi_expr_list_to_py(PlannerInfo *root, List *exprs)
{
	PyObject   *list = PyList_New(0);
	ListCell   *lc;

	if (list == NULL)
		orochi_py_raise("describing an expression");
	foreach(lc, exprs)
	{
		PyObject   *item = orochi_expr_to_py(root, (Node *) lfirst(lc));
		int			rc = PyList_Append(list, item);

		Py_DECREF(item);
		if (rc < 0)
		{
			Py_DECREF(list);
			orochi_py_raise("describing an expression");
		}
	}
	return list;
}

static PyObject *
name_or_none(char *name)
{
	if (name == NULL)
		Py_RETURN_NONE;
	return orochi_cstring_to_py(name);
}

static PyObject *expr_to_py(PlannerInfo *root, Node *node);

PyObject *
orochi_expr_to_py(PlannerInfo *root, Node *node)
{
	PyObject   *res = expr_to_py(root, node);

	if (res == NULL)
		orochi_py_raise("describing an expression");
	return res;
}

static PyObject *
expr_to_py(PlannerInfo *root, Node *node)
{
	if (node == NULL)
		return Py_BuildValue("(si)", "unsupported", 0);
	switch (nodeTag(node))
	{
		case T_Var:
			{
				Var		   *var = (Var *) node;
				RangeTblEntry *rte;
				char	   *attname;

				if (var->varlevelsup != 0 || var->varattno <= 0 || IS_SPECIAL_VARNO(var->varno) ||
					var->varno > root->simple_rel_array_size)
					break;
				rte = planner_rt_fetch(var->varno, root);
				if (rte->rtekind != RTE_RELATION)
					break;
				attname = get_attname(rte->relid, var->varattno, false);
				return Py_BuildValue("(siNIiN)", "var", (int) var->varno, orochi_cstring_to_py(attname),
									 (unsigned int) var->vartype, (int) var->vartypmod,
									 collation_to_py(var->varcollid));
			}
		case T_Const:
			{
				Const	   *c = (Const *) node;
				OrochiTypeConv conv;

				memset(&conv, 0, sizeof(conv));
				orochi_type_conv_init(&conv, c->consttype, c->consttypmod, NULL);
				return Py_BuildValue("(sIiNN)", "const", (unsigned int) c->consttype, (int) c->consttypmod,
									 collation_to_py(c->constcollid),
									 orochi_datum_to_py(c->constvalue, c->constisnull, &conv));
			}
		case T_OpExpr:
			{
				OpExpr	   *op = (OpExpr *) node;

				return Py_BuildValue("(sINOINN)", "op", (unsigned int) op->opno,
									 name_or_none(get_opname(op->opno)),
									 op->opno < FirstNormalObjectId ? Py_True : Py_False,
									 (unsigned int) op->opresulttype, collation_to_py(op->inputcollid),
									 orochi_expr_list_to_py(root, op->args));
			}
		case T_BoolExpr:
			{
				BoolExpr   *b = (BoolExpr *) node;

				return Py_BuildValue("(ssN)", "bool",
									 b->boolop == AND_EXPR ? "and" : b->boolop == OR_EXPR ? "or" : "not",
									 orochi_expr_list_to_py(root, b->args));
			}
		case T_NullTest:
			{
				NullTest   *n = (NullTest *) node;

				if (n->argisrow)
					break;
				return Py_BuildValue("(sON)", "nulltest", n->nulltesttype == IS_NULL ? Py_True : Py_False,
									 orochi_expr_to_py(root, (Node *) n->arg));
			}
		case T_RelabelType:
			{
				RelabelType *r = (RelabelType *) node;

				return Py_BuildValue("(sIiNN)", "relabel", (unsigned int) r->resulttype, (int) r->resulttypmod,
									 collation_to_py(r->resultcollid), orochi_expr_to_py(root, (Node *) r->arg));
			}
		case T_ScalarArrayOpExpr:
			{
				ScalarArrayOpExpr *s = (ScalarArrayOpExpr *) node;

				return Py_BuildValue("(sINOONN)", "saop", (unsigned int) s->opno,
									 name_or_none(get_opname(s->opno)),
									 s->opno < FirstNormalObjectId ? Py_True : Py_False,
									 s->useOr ? Py_True : Py_False, collation_to_py(s->inputcollid),
									 orochi_expr_list_to_py(root, s->args));
			}
		case T_FuncExpr:
			{
				FuncExpr   *f = (FuncExpr *) node;

				return Py_BuildValue("(sINOIN)", "func", (unsigned int) f->funcid,
									 name_or_none(get_func_name(f->funcid)),
									 f->funcid < FirstNormalObjectId ? Py_True : Py_False,
									 (unsigned int) f->funcresulttype, orochi_expr_list_to_py(root, f->args));
			}
		case T_Aggref:
			{
				Aggref	   *a = (Aggref *) node;
				List	   *args = NIL;
				ListCell   *lc;

				if (a->aggorder != NIL || a->aggfilter != NULL || a->aggkind != AGGKIND_NORMAL ||
					a->aggsplit != AGGSPLIT_SIMPLE || a->agglevelsup != 0)
					break;
				foreach(lc, a->args)
					args = lappend(args, lfirst_node(TargetEntry, lc)->expr);
				return Py_BuildValue("(sINOIOONN)", "agg", (unsigned int) a->aggfnoid,
									 name_or_none(get_func_name(a->aggfnoid)),
									 a->aggfnoid < FirstNormalObjectId ? Py_True : Py_False,
									 (unsigned int) a->aggtype, a->aggstar ? Py_True : Py_False,
									 a->aggdistinct != NIL ? Py_True : Py_False,
									 collation_to_py(a->inputcollid), orochi_expr_list_to_py(root, args));
			}
		case T_CaseExpr:
			{
				CaseExpr   *c = (CaseExpr *) node;
				PyObject   *whens = PyList_New(0);
				ListCell   *lc;

				if (whens == NULL)
					return NULL;
				foreach(lc, c->args)
				{
					CaseWhen   *w = lfirst_node(CaseWhen, lc);
					PyObject   *pair = Py_BuildValue("(NN)", orochi_expr_to_py(root, (Node *) w->expr),
													 orochi_expr_to_py(root, (Node *) w->result));

					PyList_Append(whens, pair);
					Py_DECREF(pair);
				}
				return Py_BuildValue("(sINNN)", "case", (unsigned int) c->casetype,
									 c->arg ? orochi_expr_to_py(root, (Node *) c->arg) : Py_NewRef(Py_None),
									 whens,
									 c->defresult ? orochi_expr_to_py(root, (Node *) c->defresult) :
									 Py_NewRef(Py_None));
			}
		case T_CaseTestExpr:
			return Py_BuildValue("(sI)", "casetest", (unsigned int) ((CaseTestExpr *) node)->typeId);
		case T_CoalesceExpr:
			{
				CoalesceExpr *c = (CoalesceExpr *) node;

				return Py_BuildValue("(sIN)", "coalesce", (unsigned int) c->coalescetype,
									 orochi_expr_list_to_py(root, c->args));
			}
		default:
			break;
	}
	return Py_BuildValue("(si)", "unsupported", (int) nodeTag(node));
}
