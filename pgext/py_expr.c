/*-------------------------------------------------------------------------
 *
 * py_expr.c
 *		  Planner expressions as plain Python tuples, for the engine that
 *		  runs joins of orochi tables (orochi_fdw/query/pushable.py decides
 *		  what of them can run there).  Plumbing only: every node the
 *		  translation does not know becomes ("unsupported", tag), which
 *		  Python refuses.
 *
 *		  ("var", rti, attname, type, typmod, collation)  (a subquery's
 *		   output: attname "c<its position>")
 *		  ("const", type, typmod, collation, value)
 *		  ("op", opno, opname, builtin, result type, input collation, [args])
 *		  ("bool", "and" | "or" | "not", [args])
 *		  ("nulltest", is_null, arg)
 *		  ("relabel", type, typmod, collation, arg)
 *		  ("saop", opno, opname, builtin, use_or, input collation, [args])
 *		  ("func", funcid, name, builtin, result type, [args])
 *		  ("agg", aggfnoid, name, builtin, result type, star, distinct, input collation, [args])
 *		  ("case", result type, collation, arg or None, [(when, then)], default or None)
 *		  ("casetest", type, typmod, collation)
 *		  ("coalesce", result type, collation, [args])
 *		  ("param", kind, id, type, typmod, collation)
 *		  ("subplan", "expr" | "any" | "exists", plan id, [(varno, instance,
 *		   rows, scan cost)], [quals], target, [(paramid, outer expression)],
 *		   ANY's comparison or None, [its paramids])
 *		  ("unsupported", node tag)
 *
 *		  A "subplan" is a scalar subquery (EXPR_SUBLINK: an ungrouped
 *		  aggregation), an ANY (IN) or EXISTS subquery PostgreSQL did not
 *		  pull up, whose Query reads only orochi tables: the tables by
 *		  their range table index in the subquery (its Vars carry that
 *		  index), the WHERE clause's conditions, the one output, and each
 *		  correlation parameter ($n of PARAM_EXEC in the subquery) with the
 *		  outer expression whose value it takes.
 *
 *		  A collation travels as (name, is_c, deterministic) or None.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/transam.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_class.h"
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

/* the depth of subqueries being described (a subquery in one is declined) */
static int	subplan_depth = 0;

/*
 * A subquery (see the header), or NULL with no Python error when it is
 * not one the engine may run: for a value only an ungrouped aggregation
 * (one row whatever its input), for ANY and EXISTS no aggregation, over
 * orochi tables joined in its FROM list, without security quals (row-level
 * security, a security_barrier view's), InitPlans or subqueries of its own.
 * Its tables stay in the plan's range table (the subplan is planned as
 * before), so the executor locks them and checks the privileges on them.
 */
static PyObject *
subplan_to_py(PlannerInfo *root, SubPlan *sp)
{
	PlannerInfo *subroot;
	Query	   *q;
	PyObject   *tables,
			   *params,
			   *quals,
			   *target,
			   *res;
	Node	   *qual_node;
	List	   *qual_list;
	TargetEntry *output = NULL;
	ListCell   *lc,
			   *la;
	const char *kind;
	PyObject   *test;
	PyObject   *test_params;

	switch (sp->subLinkType)
	{
		case EXPR_SUBLINK:
			kind = "expr";
			break;
		case ANY_SUBLINK:
			kind = "any";
			break;
		case EXISTS_SUBLINK:
			kind = "exists";
			break;
		default:
			return NULL;
	}
	if (subplan_depth > 0 || (sp->testexpr != NULL) != (sp->subLinkType == ANY_SUBLINK) ||
		root == NULL || root->glob == NULL || sp->plan_id < 1 ||
		sp->plan_id > list_length(root->glob->subroots))
		return NULL;
	subroot = (PlannerInfo *) list_nth(root->glob->subroots, sp->plan_id - 1);
	if (subroot == NULL || subroot->parse == NULL || subroot->init_plans != NIL)
		return NULL;
	q = subroot->parse;
	/* an ungrouped aggregation (one row) for a value; rows for ANY and EXISTS */
	if (q->commandType != CMD_SELECT || q->hasAggs != (sp->subLinkType == EXPR_SUBLINK) ||
		q->groupClause != NIL || q->groupingSets != NIL ||
		q->havingQual != NULL || q->distinctClause != NIL || q->sortClause != NIL ||
		q->limitCount != NULL || q->limitOffset != NULL || q->setOperations != NULL ||
		q->hasWindowFuncs || q->hasTargetSRFs || q->hasSubLinks || q->cteList != NIL ||
		q->rowMarks != NIL || q->hasRowSecurity || q->jointree == NULL)
		return NULL;
	foreach(lc, q->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->resjunk)
			continue;
		if (output != NULL)
			return NULL;
		output = tle;
	}
	if (output == NULL && sp->subLinkType != EXISTS_SUBLINK)
		return NULL;				/* (EXISTS's target list is emptied by the planner) */

	tables = PyList_New(0);
	if (tables == NULL)
		return NULL;
	foreach(lc, q->jointree->fromlist)
	{
		RangeTblRef *ref = (RangeTblRef *) lfirst(lc);
		RangeTblEntry *rte;
		RelOptInfo *rel;
		PyObject   *item;
		int			rc;

		if (!IsA(ref, RangeTblRef) || ref->rtindex >= subroot->simple_rel_array_size)
			goto declined;
		rte = rt_fetch(ref->rtindex, q->rtable);
		rel = subroot->simple_rel_array[ref->rtindex];
		if (rte->rtekind != RTE_RELATION || rte->relkind != RELKIND_FOREIGN_TABLE || rte->inh ||
			rte->securityQuals != NIL || rte->tablesample != NULL || rel == NULL ||
			!orochi_rel_is_own(rel) || rel->cheapest_total_path == NULL)
			goto declined;
		item = Py_BuildValue("(iNdd)", (int) ref->rtindex, orochi_instance_for_relid(rte->relid),
							 rel->rows, (double) rel->cheapest_total_path->total_cost);
		rc = item ? PyList_Append(tables, item) : -1;
		Py_XDECREF(item);
		if (rc < 0)
		{
			Py_DECREF(tables);
			return NULL;
		}
	}
	qual_node = q->jointree->quals;
	qual_list = qual_node == NULL ? NIL : IsA(qual_node, List) ? (List *) qual_node : list_make1(qual_node);

	params = PyList_New(0);
	if (params == NULL)
	{
		Py_DECREF(tables);
		return NULL;
	}
	forboth(lc, sp->parParam, la, sp->args)
	{
		PyObject   *item = Py_BuildValue("(iN)", lfirst_int(lc), orochi_expr_to_py(root, (Node *) lfirst(la)));
		int			rc = item ? PyList_Append(params, item) : -1;

		Py_XDECREF(item);
		if (rc < 0)
		{
			Py_DECREF(tables);
			Py_DECREF(params);
			return NULL;
		}
	}
	subplan_depth++;
	PG_TRY();
	{
		quals = orochi_expr_list_to_py(subroot, qual_list);
		target = output ? orochi_expr_to_py(subroot, (Node *) output->expr) : (Py_INCREF(Py_None), Py_None);
	}
	PG_FINALLY();
	{
		subplan_depth--;
	}
	PG_END_TRY();
	/* ANY's comparison (outer expression op $n, $n the subquery's output) */
	test = sp->testexpr ? orochi_expr_to_py(root, sp->testexpr) : (Py_INCREF(Py_None), Py_None);
	test_params = PyList_New(0);
	if (test_params == NULL)
		orochi_py_raise("describing a subquery");
	foreach(lc, sp->paramIds)
	{
		PyObject   *id = PyLong_FromLong(lfirst_int(lc));

		PyList_Append(test_params, id);
		Py_DECREF(id);
	}
	res = Py_BuildValue("(ssiNNNNNN)", "subplan", kind, sp->plan_id, tables, quals, target, params, test,
						test_params);
	return res;

declined:
	Py_DECREF(tables);
	return NULL;
}

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
				if (rte->rtekind == RTE_SUBQUERY)
				{
					/* a subquery's output, named by its position (a join engine input) */
					return Py_BuildValue("(siNIiN)", "var", (int) var->varno,
										 orochi_cstring_to_py(psprintf("c%d", var->varattno)),
										 (unsigned int) var->vartype, (int) var->vartypmod,
										 collation_to_py(var->varcollid));
				}
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
					int			rc = pair ? PyList_Append(whens, pair) : -1;

					Py_XDECREF(pair);
					if (rc < 0)
					{
						Py_DECREF(whens);
						return NULL;
					}
				}
				return Py_BuildValue("(sINNNN)", "case", (unsigned int) c->casetype,
									 collation_to_py(c->casecollid),
									 c->arg ? orochi_expr_to_py(root, (Node *) c->arg) : (Py_INCREF(Py_None), Py_None),
									 whens,
									 c->defresult ? orochi_expr_to_py(root, (Node *) c->defresult) : (Py_INCREF(Py_None), Py_None));
			}
		case T_CaseTestExpr:
			{
				CaseTestExpr *t = (CaseTestExpr *) node;

				return Py_BuildValue("(sIiN)", "casetest", (unsigned int) t->typeId, (int) t->typeMod,
									 collation_to_py(t->collation));
			}
		case T_CoalesceExpr:
			{
				CoalesceExpr *c = (CoalesceExpr *) node;

				return Py_BuildValue("(sINN)", "coalesce", (unsigned int) c->coalescetype,
									 collation_to_py(c->coalescecollid), orochi_expr_list_to_py(root, c->args));
			}
		case T_Param:
			{
				Param	   *p = (Param *) node;

				if (p->paramkind != PARAM_EXTERN && p->paramkind != PARAM_EXEC)
					break;
				return Py_BuildValue("(siiIiN)", "param", (int) p->paramkind, p->paramid,
									 (unsigned int) p->paramtype, (int) p->paramtypmod,
									 collation_to_py(p->paramcollid));
			}
		case T_SubPlan:
			{
				PyObject   *res = subplan_to_py(root, (SubPlan *) node);

				if (res != NULL || PyErr_Occurred())
					return res;
				break;
			}
		case T_AlternativeSubPlan:
			{
				/* the same answer either way (an EXISTS and its hashed ANY form): the first that describes */
				ListCell   *lc;

				foreach(lc, ((AlternativeSubPlan *) node)->subplans)
				{
					PyObject   *res = subplan_to_py(root, lfirst_node(SubPlan, lc));

					if (res != NULL || PyErr_Occurred())
						return res;
				}
				break;
			}
		default:
			break;
	}
	return Py_BuildValue("(si)", "unsupported", (int) nodeTag(node));
}
