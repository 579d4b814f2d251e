/*-------------------------------------------------------------------------
 *
 * hooks.c
 *		  Where the bridge steps into Postgres beyond the FDW callbacks, so
 *		  that an orochi table behaves like a table:
 *
 *		  - COPY t TO ...: Postgres refuses COPY TO on foreign tables; the
 *			utility hook runs it as COPY (SELECT ... FROM ONLY t) TO ...
 *		  - ALTER TABLE ... ADD COLUMN ... DEFAULT: the default evaluated
 *			once for the rows already stored (orochi.column_default).
 *		  - functions that may read tables (trigger functions, volatile
 *			functions in SQL or a procedural language) see the rows the
 *			running statements wrote before they were called: the function
 *			manager hook flushes buffered writes before such a call.
 *		  - orochi.fence_writes: every statement runs in a read-only
 *			transaction (the executor and utility hooks make it read-only
 *			first, so PostgreSQL's own checks refuse the writes).
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static needs_fmgr_hook_type prev_needs_fmgr_hook = NULL;
static fmgr_hook_type prev_fmgr_hook = NULL;

/*
 * orochi_is_orochi_table
 *		Whether relid is a foreign table served by this bridge (its wrapper's
 *		handler is orochi_fdw_handler).
 */
bool
orochi_is_orochi_table(Oid relid)
{
	ForeignTable *table;
	ForeignServer *server;
	ForeignDataWrapper *fdw;
	FmgrInfo	finfo;

	if (get_rel_relkind(relid) != RELKIND_FOREIGN_TABLE)
		return false;
	table = GetForeignTable(relid);
	server = GetForeignServer(table->serverid);
	fdw = GetForeignDataWrapper(server->fdwid);
	if (!OidIsValid(fdw->fdwhandler))
		return false;
	fmgr_info(fdw->fdwhandler, &finfo);
	return finfo.fn_addr == orochi_fdw_handler;
}

/* ---------------------------------------------------------------------
 * COPY TO
 * ---------------------------------------------------------------------
 */

static ResTarget *
column_target(Node *field)
{
	ColumnRef  *ref = makeNode(ColumnRef);
	ResTarget  *target = makeNode(ResTarget);

	ref->fields = list_make1(field);
	ref->location = -1;
	target->val = (Node *) ref;
	target->location = -1;
	return target;
}

/*
 * COPY t [(columns)] TO ... WITH (options) as
 * COPY (SELECT columns | * FROM ONLY t) TO ... WITH (options): the same rows
 * and columns in the same order (so HEADER and FORCE_QUOTE name the same
 * columns), read by the executor, which checks the SELECT privilege on the
 * table or the columns and applies row security, as COPY TO does.
 */
static CopyStmt *
copy_to_as_query(CopyStmt *copy)
{
	CopyStmt   *n = makeNode(CopyStmt);
	SelectStmt *select = makeNode(SelectStmt);
	RangeVar   *from = copyObject(copy->relation);
	ListCell   *lc;

	from->inh = false;			/* COPY TO reads the table alone, not its children */
	if (copy->attlist == NIL)
		select->targetList = list_make1(column_target((Node *) makeNode(A_Star)));
	foreach(lc, copy->attlist)
		select->targetList = lappend(select->targetList,
									 column_target((Node *) makeString(pstrdup(strVal(lfirst(lc))))));
	select->fromClause = list_make1(from);
	n->query = (Node *) select;
	n->is_from = false;
	n->is_program = copy->is_program;
	n->filename = copy->filename;
	n->options = copy->options;
	return n;
}

/*
 * The privilege check COPY TO makes, with its errors: SELECT on the table, or
 * on the columns copied (a COPY to a file or program first needs the right to
 * write files or run programs, which DoCopy checks before anything else).
 */
static void
check_copy_to_privileges(CopyStmt *copy, Oid relid)
{
	RangeTblEntry *rte;
	Relation	rel;
	List	   *attnums;
	ListCell   *lc;

	if (copy->filename != NULL &&
		!has_privs_of_role(GetUserId(), copy->is_program ? ROLE_PG_EXECUTE_SERVER_PROGRAM :
						   ROLE_PG_WRITE_SERVER_FILES))
		return;
	rel = table_open(relid, AccessShareLock);
	attnums = CopyGetAttnums(RelationGetDescr(rel), rel, copy->attlist);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = AccessShareLock;
	rte->requiredPerms = ACL_SELECT;
	foreach(lc, attnums)
		rte->selectedCols = bms_add_member(rte->selectedCols,
										   lfirst_int(lc) - FirstLowInvalidHeapAttributeNumber);
	table_close(rel, NoLock);
	ExecCheckRTPerms(list_make1(rte), true);
}

/*
 * fence_transaction
 *		Under orochi.fence_writes, make the running transaction read-only, as
 *		SET TRANSACTION READ ONLY would: PostgreSQL then refuses every write
 *		(25006) with its own checks, in this statement and the next ones.
 */
static void
fence_transaction(void)
{
	if (orochi_fence_writes && !XactReadOnly && IsTransactionState())
		XactReadOnly = true;
}

static void
orochi_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	fence_transaction();
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
orochi_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	fence_transaction();

	if (IsA(parsetree, CopyStmt) && !((CopyStmt *) parsetree)->is_from &&
		((CopyStmt *) parsetree)->relation != NULL)
	{
		Oid			relid = RangeVarGetRelid(((CopyStmt *) parsetree)->relation, NoLock, true);

		if (OidIsValid(relid) && orochi_is_orochi_table(relid))
		{
			PlannedStmt *copy = makeNode(PlannedStmt);

			check_copy_to_privileges((CopyStmt *) parsetree, relid);

			memcpy(copy, pstmt, sizeof(PlannedStmt));
			copy->utilityStmt = (Node *) copy_to_as_query((CopyStmt *) parsetree);
			pstmt = copy;
			readOnlyTree = false;
		}
	}
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

/* ---------------------------------------------------------------------
 * Functions that may read what the running statement wrote
 * ---------------------------------------------------------------------
 */

/*
 * orochi_function_sees_writes
 *		Whether a call of the function must see the rows the running
 *		statements wrote before it: a trigger function, or a volatile
 *		function written in SQL or a procedural language (it takes a new
 *		snapshot for each of its queries and sees a heap table's rows as the
 *		statement writes them).  Built-in and C functions do not read tables
 *		(random(), nextval() ...), stable and immutable ones see the
 *		statement's own snapshot, and set-returning ones are read to the end
 *		before a row is written.
 */
bool
orochi_function_sees_writes(Oid funcid)
{
	HeapTuple	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	Form_pg_proc proc;
	bool		result;

	if (!HeapTupleIsValid(tuple))
		return false;
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	result = proc->prorettype == TRIGGEROID ||
		(proc->provolatile == PROVOLATILE_VOLATILE && !proc->proretset &&
		 proc->prolang != INTERNALlanguageId && proc->prolang != ClanguageId);
	ReleaseSysCache(tuple);
	return result;
}

static bool
orochi_needs_fmgr_hook(Oid functionId)
{
	if (prev_needs_fmgr_hook && (*prev_needs_fmgr_hook) (functionId))
		return true;
	return orochi_function_sees_writes(functionId);
}

static void
orochi_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *private)
{
	if (prev_fmgr_hook)
		(*prev_fmgr_hook) (event, flinfo, private);
	/* with another module's hook, functions of every kind arrive here */
	if (event == FHET_START && orochi_has_pending_writes() &&
		(prev_needs_fmgr_hook == NULL || orochi_function_sees_writes(flinfo->fn_oid)))
		orochi_flush_pending_writes();
}

void
orochi_install_hooks(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = orochi_ProcessUtility;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = orochi_ExecutorStart;
	prev_needs_fmgr_hook = needs_fmgr_hook;
	needs_fmgr_hook = orochi_needs_fmgr_hook;
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = orochi_fmgr_hook;
	RegisterXactCallback(orochi_modify_xact_callback, NULL);
	RegisterSubXactCallback(orochi_modify_subxact_callback, NULL);
}

/* ---------------------------------------------------------------------
 * ADD COLUMN ... DEFAULT
 * ---------------------------------------------------------------------
 */

PG_FUNCTION_INFO_V1(orochi_column_default);

/*
 * orochi_column_default
 *		orochi.column_default(table, attnum) -> (kind, value): the column's
 *		default as ALTER TABLE ... ADD COLUMN evaluates it for the rows a heap
 *		table holds (StoreAttrDefault's "missing value"): once, unless it is
 *		volatile.  Python decides what to do with it (columnar/missing.py).
 *		For the table's owner; never called in an internal statement (the
 *		default may call a user's functions: docs/SECURITY.md).
 */
Datum
orochi_column_default(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	AttrNumber	attnum = PG_GETARG_INT16(1);
	Relation	rel;
	Form_pg_attribute att;
	TupleDesc	tupdesc;
	Node	   *expr;
	const char *kind = "none";
	char	   *text = NULL;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "orochi: column_default must return a record");
	rel = table_open(relid, AccessShareLock);

	/*
	 * The default runs with the caller's rights, as ALTER TABLE ... ADD
	 * COLUMN runs it: for the table's owner, who may alter it.
	 */
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(rel->rd_rel->relkind),
					   RelationGetRelationName(rel));
	if (attnum < 1 || attnum > RelationGetNumberOfAttributes(rel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column %d of relation \"%s\" does not exist", attnum,
						RelationGetRelationName(rel))));
	att = TupleDescAttr(RelationGetDescr(rel), attnum - 1);
	if (att->attgenerated)
		kind = "generated";
	else if ((expr = build_column_default(rel, attnum)) != NULL)
	{
		expr = (Node *) expression_planner((Expr *) expr);
		if (contain_volatile_functions(expr))
			kind = "volatile";
		else
		{
			EState	   *estate = CreateExecutorState();
			ExprState  *state = ExecPrepareExpr((Expr *) expr, estate);
			bool		isnull;
			Datum		d = ExecEvalExprSwitchContext(state, GetPerTupleExprContext(estate), &isnull);

			kind = "constant";
			if (!isnull)
			{
				Oid			typoutput;
				bool		isvarlena;

				getTypeOutputInfo(att->atttypid, &typoutput, &isvarlena);
				text = OidOutputFunctionCall(typoutput, d);
			}
			FreeExecutorState(estate);
		}
	}
	table_close(rel, AccessShareLock);
	values[0] = CStringGetTextDatum(kind);
	if (text != NULL)
		values[1] = CStringGetTextDatum(text);
	else
		nulls[1] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
