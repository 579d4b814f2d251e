/*-------------------------------------------------------------------------
 *
 * py_spi.c
 *		  The _orochi_pg module: SQL from Python in the current transaction
 *		  (SPI), sub-transactions, logging, identifier quoting, and the one
 *		  SQL-callable entry point that dispatches orochi.<name>(...) to
 *		  Python.
 *
 * Every SPI call runs in an internal sub-transaction, so that a Postgres
 * error becomes a Python exception (orochi_fdw.errors.SPIError, carrying the
 * SQLSTATE, message, detail and hint) that Python may catch and carry on.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_param.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

static int	internal_subxact_depth = 0;
static PyObject *spi_error_type = NULL;

bool
orochi_in_internal_subxact(void)
{
	return internal_subxact_depth > 0;
}

/*
 * A text of an error report (in the server encoding) as a Python str, or
 * None.  Never raises a Postgres error (it runs while one is being turned
 * into a Python exception): what does not convert is replaced.
 */
static PyObject *
error_text_to_py(const char *s)
{
	char	   *volatile utf8 = NULL;
	PyObject   *r;

	if (s == NULL)
		Py_RETURN_NONE;
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
		return PyUnicode_DecodeUTF8(s, strlen(s), "replace");
	PG_TRY();
	{
		utf8 = pg_server_to_any(s, strlen(s), PG_UTF8);
	}
	PG_CATCH();
	{
		FlushErrorState();
		utf8 = NULL;
	}
	PG_END_TRY();
	if (utf8 == NULL)
		return PyUnicode_DecodeASCII(s, strlen(s), "replace");
	r = PyUnicode_DecodeUTF8(utf8, strlen(utf8), "replace");
	if (utf8 != s)
		pfree(utf8);
	return r;
}

/* Raise orochi_fdw.errors.SPIError from a Postgres error; returns NULL */
static PyObject *
set_spi_error(ErrorData *edata)
{
	PyObject   *exc;

	if (spi_error_type == NULL)
	{
		PyObject   *mod = PyImport_ImportModule("orochi_fdw.errors");

		if (mod == NULL)
			return NULL;
		spi_error_type = PyObject_GetAttrString(mod, "SPIError");
		Py_DECREF(mod);
		if (spi_error_type == NULL)
			return NULL;
	}
	/* the texts are in the server encoding */
	exc = PyObject_CallFunction(spi_error_type, "NsNNN",
								error_text_to_py(edata->message ? edata->message : ""),
								unpack_sql_state(edata->sqlerrcode),
								error_text_to_py(edata->detail), error_text_to_py(edata->hint),
								error_text_to_py(edata->context));
	if (exc != NULL)
	{
		PyErr_SetObject(spi_error_type, exc);
		Py_DECREF(exc);
	}
	return NULL;
}

typedef struct ParamSetup
{
	Oid		   *types;
	int			ntypes;
} ParamSetup;

static void
param_parser_setup(struct ParseState *pstate, void *arg)
{
	ParamSetup *ps = (ParamSetup *) arg;

	setup_parse_variable_parameters(pstate, &ps->types, &ps->ntypes);
}

/* A kept plan, owned by a capsule */
#define PLAN_CAPSULE "orochi.spi.plan"

static void
plan_capsule_destructor(PyObject *capsule)
{
	SPIPlanPtr	plan = (SPIPlanPtr) PyCapsule_GetPointer(capsule, PLAN_CAPSULE);

	if (plan)
		SPI_freeplan(plan);
}

/*
 * Prepare sql with parameter types: the ones named (type names, or None),
 * else guessed from sample values, else inferred by the parser.
 */
static SPIPlanPtr
prepare_plan(const char *sql, PyObject *types, PyObject *params)
{
	ParamSetup	ps;
	Py_ssize_t	n = 0;
	SPIPlanPtr	plan;

	bool		infer = false;

	if (types != NULL && types != Py_None)
		n = PySequence_Length(types);
	else if (params != NULL && params != Py_None)
		n = PySequence_Length(params);
	else
		infer = true;			/* prepare() without types: find them all */
	ps.ntypes = (int) n;
	ps.types = palloc0(sizeof(Oid) * Max(n, 1));
	for (Py_ssize_t i = 0; i < n; i++)
	{
		if (types != NULL && types != Py_None)
		{
			PyObject   *t = PySequence_GetItem(types, i);

			if (t != NULL && PyUnicode_Check(t))
			{
				Oid			typoid;
				int32		typmod;
				char	   *name;

				PG_TRY();
				{
					name = orochi_py_to_cstring(t);
				}
				PG_FINALLY();
				{
					Py_DECREF(t);
				}
				PG_END_TRY();
				parseTypeString(name, &typoid, &typmod, false);
				ps.types[i] = typoid;
				continue;
			}
			Py_XDECREF(t);
		}
		else
		{
			PyObject   *v = PySequence_GetItem(params, i);

			if (v != NULL)
				ps.types[i] = orochi_guess_param_type(v);
			Py_XDECREF(v);
		}
	}
	for (Py_ssize_t i = 0; i < n; i++)
		if (!OidIsValid(ps.types[i]))
			infer = true;
	if (infer)
	{
		/*
		 * Some types are unknown: let the parser infer them from the query,
		 * then plan with the types it found.  (A plan keeping the parser hook
		 * would need its state for every later re-plan.)
		 */
		plan = SPI_prepare_params(sql, param_parser_setup, &ps, 0);
		if (plan == NULL)
			elog(ERROR, "orochi: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_freeplan(plan);
	}
	plan = SPI_prepare(sql, ps.ntypes, ps.types);
	if (plan == NULL)
		elog(ERROR, "orochi: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	return plan;
}

static PyObject *
execute_plan(SPIPlanPtr plan, PyObject *params, long limit, bool read_only)
{
	int			nargs = SPI_getargcount(plan);
	Py_ssize_t	nparams = (params && params != Py_None) ? PySequence_Length(params) : 0;
	Datum	   *values = palloc0(sizeof(Datum) * Max(nargs, 1));
	char	   *nulls = palloc0(sizeof(char) * Max(nargs, 1));
	int			rc;
	PyObject   *rows = NULL;
	PyObject   *names = NULL;
	PyObject   *result;

	if (nparams != nargs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the statement takes %d parameters, %zd given", nargs, nparams)));
	for (int i = 0; i < nargs; i++)
	{
		OrochiTypeConv conv;
		PyObject   *v = PySequence_GetItem(params, i);
		bool		isnull;

		if (v == NULL)
			orochi_py_raise("reading parameters");
		orochi_type_conv_init(&conv, SPI_getargtypeid(plan, i), -1, NULL);
		PG_TRY();
		{
			values[i] = orochi_py_to_datum(v, &conv, &isnull);
		}
		PG_FINALLY();
		{
			Py_DECREF(v);
		}
		PG_END_TRY();
		nulls[i] = isnull ? 'n' : ' ';
	}

	rc = SPI_execute_plan(plan, values, nulls, read_only, limit);
	if (rc < 0)
		elog(ERROR, "orochi: SPI_execute_plan failed: %s", SPI_result_code_string(rc));

	rows = PyList_New(0);
	names = PyList_New(0);
	if (rows == NULL || names == NULL)
		orochi_py_raise("building a result");
	if (SPI_tuptable != NULL)
	{
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		OrochiTypeConv *convs = palloc0(sizeof(OrochiTypeConv) * tupdesc->natts);

		for (int c = 0; c < tupdesc->natts; c++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, c);
			PyObject   *name = orochi_cstring_to_py(NameStr(att->attname));

			PyList_Append(names, name);
			Py_DECREF(name);
			orochi_type_conv_init(&convs[c], att->atttypid, att->atttypmod, NameStr(att->attname));
		}
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[r];
			PyObject   *row = PyTuple_New(tupdesc->natts);

			if (row == NULL)
				orochi_py_raise("building a result");
			PyList_Append(rows, row);
			Py_DECREF(row);
			for (int c = 0; c < tupdesc->natts; c++)
			{
				bool		isnull;
				Datum		d = SPI_getbinval(tuple, tupdesc, c + 1, &isnull);

				PyTuple_SET_ITEM(row, c, orochi_datum_to_py(d, isnull, &convs[c]));
			}
		}
	}
	result = Py_BuildValue("(NKN)", rows, (unsigned long long) SPI_processed, names);
	return result;
}

/*
 * Run fn inside an internal sub-transaction with SPI connected.  A Postgres
 * error becomes SPIError; Python objects made so far are released.
 */
typedef PyObject *(*spi_body) (void *arg);

static PyObject *
run_in_subxact(spi_body body, void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	PyObject   *volatile result = NULL;

	internal_subxact_depth++;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "orochi: SPI_connect failed");
		result = body(arg);
		SPI_finish();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		Py_XDECREF(result);
		PyErr_Clear();
		result = set_spi_error(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	internal_subxact_depth--;
	return result;
}

typedef struct ExecuteArgs
{
	PyObject   *sql_text;		/* the query as a Python str, converted in the body */
	PyObject   *plan_capsule;
	PyObject   *params;
	PyObject   *types;
	long		limit;
	bool		keep;
	bool		read_only;
} ExecuteArgs;

static PyObject *
execute_body(void *arg)
{
	ExecuteArgs *a = (ExecuteArgs *) arg;
	SPIPlanPtr	plan;

	if (a->plan_capsule)
	{
		plan = (SPIPlanPtr) PyCapsule_GetPointer(a->plan_capsule, PLAN_CAPSULE);
		if (plan == NULL)
			orochi_py_raise("reading a plan");
	}
	else
		plan = prepare_plan(orochi_py_to_cstring(a->sql_text), a->types, a->params);
	return execute_plan(plan, a->params, a->limit, a->read_only);
}

/*
 * _orochi_pg.execute(sql_or_plan, params=None, limit=0, types=None, read_only=False)
 *		-> (rows, rowcount, names)
 *
 * read_only: SPI's read-only mode.  The statement runs under the snapshot of
 * the SQL statement being executed (a scan's, a function call's) instead of
 * a new one, and the command counter is not advanced: in READ COMMITTED,
 * several such queries made during one statement see the same data.  Only
 * plain SELECTs are allowed.
 */
static PyObject *
pg_execute(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"query", "params", "limit", "types", "read_only", NULL};
	PyObject   *query;
	PyObject   *params = Py_None;
	PyObject   *types = Py_None;
	long		limit = 0;
	int			read_only = 0;
	ExecuteArgs a;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OlOp", kwlist, &query, &params, &limit, &types,
									 &read_only))
		return NULL;
	if (params != Py_None && !PySequence_Check(params))
	{
		PyErr_SetString(PyExc_TypeError, "params must be a sequence");
		return NULL;
	}
	memset(&a, 0, sizeof(a));
	a.params = params;
	a.types = types;
	a.limit = limit;
	a.read_only = read_only && ActiveSnapshotSet();
	if (PyCapsule_CheckExact(query))
		a.plan_capsule = query;
	else if (PyUnicode_Check(query))
		a.sql_text = query;		/* UTF-8: converted to the server encoding by the body */
	else
	{
		PyErr_SetString(PyExc_TypeError, "query must be a str or a prepared plan");
		return NULL;
	}
	return run_in_subxact(execute_body, &a);
}

static PyObject *
prepare_body(void *arg)
{
	ExecuteArgs *a = (ExecuteArgs *) arg;
	SPIPlanPtr	plan = prepare_plan(orochi_py_to_cstring(a->sql_text), a->types, NULL);

	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "orochi: SPI_keepplan failed");
	return PyCapsule_New(plan, PLAN_CAPSULE, plan_capsule_destructor);
}

/* _orochi_pg.prepare(sql, types=None) -> plan; unnamed types are inferred */
static PyObject *
pg_prepare(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"query", "types", NULL};
	PyObject   *sql;
	PyObject   *types = Py_None;
	ExecuteArgs a;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|O", kwlist, &sql, &types))
		return NULL;
	memset(&a, 0, sizeof(a));
	a.sql_text = sql;
	a.types = types;
	return run_in_subxact(prepare_body, &a);
}

/*
 * Explicit sub-transactions for Python code (the context manager in
 * orochi_fdw.bridge.spi): begin, then commit or rollback.
 */
typedef struct PySubxact
{
	MemoryContext cxt;
	ResourceOwner owner;
	SubTransactionId id;
} PySubxact;

static List *subxact_stack = NIL;

static PyObject *
pg_subxact_begin(PyObject *self, PyObject *noargs)
{
	PySubxact  *sx;
	MemoryContext old = CurrentMemoryContext;
	volatile bool failed = false;

	PG_TRY();
	{
		sx = MemoryContextAlloc(TopTransactionContext, sizeof(PySubxact));
		sx->cxt = CurrentMemoryContext;
		sx->owner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		sx->id = GetCurrentSubTransactionId();
		MemoryContextSwitchTo(old);
		subxact_stack = lcons(sx, subxact_stack);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		set_spi_error(edata);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	return PyLong_FromUnsignedLong(sx->id);
}

static PyObject *
pg_subxact_end(PyObject *self, PyObject *args)
{
	int			commit;
	PySubxact  *sx;
	volatile bool failed = false;

	if (!PyArg_ParseTuple(args, "p", &commit))
		return NULL;
	if (subxact_stack == NIL)
	{
		PyErr_SetString(PyExc_RuntimeError, "no sub-transaction is open");
		return NULL;
	}
	sx = (PySubxact *) linitial(subxact_stack);
	if (sx->id != GetCurrentSubTransactionId())
	{
		PyErr_SetString(PyExc_RuntimeError, "sub-transactions must end in the order they began");
		return NULL;
	}
	subxact_stack = list_delete_first(subxact_stack);
	PG_TRY();
	{
		if (commit)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sx->cxt);
		CurrentResourceOwner = sx->owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(sx->cxt);
		CurrentResourceOwner = sx->owner;
		edata = CopyErrorData();
		FlushErrorState();
		set_spi_error(edata);
		failed = true;
	}
	PG_END_TRY();
	pfree(sx);
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

/* _orochi_pg.log(level, message): level is one of debug, log, info, notice, warning */
static PyObject *
pg_log(PyObject *self, PyObject *args)
{
	const char *level;
	PyObject   *msg;
	int			elevel;
	char	   *text;
	volatile bool failed = false;

	if (!PyArg_ParseTuple(args, "sU", &level, &msg))
		return NULL;
	if (strcmp(level, "debug") == 0)
		elevel = DEBUG1;
	else if (strcmp(level, "log") == 0)
		elevel = LOG;
	else if (strcmp(level, "info") == 0)
		elevel = INFO;
	else if (strcmp(level, "notice") == 0)
		elevel = NOTICE;
	else if (strcmp(level, "warning") == 0)
		elevel = WARNING;
	else
	{
		PyErr_Format(PyExc_ValueError, "unknown log level %s", level);
		return NULL;
	}
	PG_TRY();
	{
		text = orochi_py_to_cstring(msg);
		ereport(elevel, (errmsg_internal("%s", text)));
	}
	PG_CATCH();
	{
		ErrorData  *edata = CopyErrorData();

		FlushErrorState();
		set_spi_error(edata);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *
pg_quote_ident(PyObject *self, PyObject *arg)
{
	const char *s = PyUnicode_AsUTF8(arg);

	if (s == NULL)
		return NULL;
	return PyUnicode_FromString(quote_identifier(s));
}

/* Facts about this backend that Python needs without a query */
static PyObject *
pg_backend_info(PyObject *self, PyObject *noargs)
{
	return Py_BuildValue("{s:s,s:i,s:s,s:I,s:i}",
						 "data_directory", DataDir,
						 "pid", MyProcPid,
						 "database_encoding", GetDatabaseEncodingName(),
						 "database_oid", (unsigned int) MyDatabaseId,
						 "server_version_num", PG_VERSION_NUM);
}

static PyObject *
pg_in_transaction(PyObject *self, PyObject *noargs)
{
	return PyBool_FromLong(IsTransactionState());
}

static PyObject *
pg_transaction_id(PyObject *self, PyObject *noargs)
{
	/* the top-level transaction id, assigning one if need be */
	return PyLong_FromUnsignedLong(GetTopTransactionId());
}

static PyObject *
pg_uses_transaction_snapshot(PyObject *self, PyObject *noargs)
{
	/* REPEATABLE READ or SERIALIZABLE: one snapshot for the whole transaction */
	return PyBool_FromLong(IsolationUsesXactSnapshot());
}

static PyObject *
pg_savepoint_depth(PyObject *self, PyObject *noargs)
{
	return PyLong_FromLong(orochi_savepoint_depth());
}

static PyMethodDef pg_methods[] = {
	{"execute", (PyCFunction) (void (*) (void)) pg_execute, METH_VARARGS | METH_KEYWORDS,
	"execute(query, params=None, limit=0, types=None) -> (rows, rowcount, column_names)"},
	{"prepare", (PyCFunction) (void (*) (void)) pg_prepare, METH_VARARGS | METH_KEYWORDS,
	"prepare(query, types=None) -> plan"},
	{"subxact_begin", pg_subxact_begin, METH_NOARGS, "begin a sub-transaction"},
	{"subxact_end", pg_subxact_end, METH_VARARGS, "subxact_end(commit: bool)"},
	{"log", pg_log, METH_VARARGS, "log(level, message)"},
	{"quote_ident", pg_quote_ident, METH_O, "quote an SQL identifier"},
	{"backend_info", pg_backend_info, METH_NOARGS, "facts about this backend"},
	{"in_transaction", pg_in_transaction, METH_NOARGS, "whether a transaction is open"},
	{"transaction_id", pg_transaction_id, METH_NOARGS, "the top-level transaction id"},
	{"savepoint_depth", pg_savepoint_depth, METH_NOARGS,
	"how many of the user's savepoints are open"},
	{"uses_transaction_snapshot", pg_uses_transaction_snapshot, METH_NOARGS,
	"whether the isolation level keeps one snapshot for the transaction"},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef pg_module = {
	PyModuleDef_HEAD_INIT, "_orochi_pg",
	"Postgres from inside a backend: SPI, sub-transactions, logging.", -1, pg_methods
};

PyObject *
orochi_pg_module_init(void)
{
	return PyModule_Create(&pg_module);
}

/*
 * orochi_py_call
 *		The C entry point of every SQL function written in Python: the
 *		function's own name picks orochi_fdw.bridge.runtime's handler
 *		(registered with @sql_function).  Set-returning functions are
 *		materialized; composite results come from tuples or dicts.
 */
PG_FUNCTION_INFO_V1(orochi_py_call);

typedef struct CallInfo
{
	char	   *name;
	int			nargs;
	OrochiTypeConv *argconvs;
	TypeFuncClass resultclass;
	Oid			rettype;
	TupleDesc	tupdesc;
	OrochiTypeConv retconv;
	OrochiTypeConv *colconvs;
	PyObject  **colnames;
	bool		retset;
} CallInfo;

static CallInfo *
call_info(FunctionCallInfo fcinfo)
{
	CallInfo   *ci = (CallInfo *) fcinfo->flinfo->fn_extra;
	HeapTuple	proctup;
	Form_pg_proc proc;
	MemoryContext old;

	if (ci != NULL)
		return ci;
	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	ci = palloc0(sizeof(CallInfo));
	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(proctup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	ci->name = pstrdup(NameStr(proc->proname));
	ci->nargs = proc->pronargs;
	ci->retset = proc->proretset;
	ci->argconvs = palloc0(sizeof(OrochiTypeConv) * Max(ci->nargs, 1));
	for (int i = 0; i < ci->nargs; i++)
	{
		Oid			t = get_fn_expr_argtype(fcinfo->flinfo, i);

		if (!OidIsValid(t))
			t = proc->proargtypes.values[i];
		orochi_type_conv_init(&ci->argconvs[i], t, -1, NULL);
	}
	ReleaseSysCache(proctup);

	ci->resultclass = get_call_result_type(fcinfo, &ci->rettype, &ci->tupdesc);
	if (ci->resultclass == TYPEFUNC_COMPOSITE)
	{
		ci->tupdesc = CreateTupleDescCopy(ci->tupdesc);
		ci->colconvs = palloc0(sizeof(OrochiTypeConv) * ci->tupdesc->natts);
		ci->colnames = palloc0(sizeof(PyObject *) * ci->tupdesc->natts);
		for (int i = 0; i < ci->tupdesc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(ci->tupdesc, i);

			orochi_type_conv_init(&ci->colconvs[i], att->atttypid, att->atttypmod,
								  NameStr(att->attname));
			ci->colnames[i] = orochi_cstring_to_py(NameStr(att->attname));
		}
	}
	else if (ci->rettype != VOIDOID && OidIsValid(ci->rettype))
		orochi_type_conv_init(&ci->retconv, ci->rettype, -1, NULL);
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = ci;
	return ci;
}

/*
 * init_result_set
 *		Materialize mode for a set-returning function: InitMaterializedSRF for
 *		rows, a one-column tuple store for SETOF a scalar type (which
 *		InitMaterializedSRF refuses).
 */
static void
init_result_set(FunctionCallInfo fcinfo, CallInfo *ci)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	tupdesc;

	if (ci->resultclass == TYPEFUNC_COMPOSITE)
	{
		InitMaterializedSRF(fcinfo, 0);
		return;
	}
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(tupdesc, (AttrNumber) 1, ci->name, ci->rettype, -1, 0);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap((rsinfo->allowedModes & SFRM_Materialize_Random) != 0,
											  false, work_mem);
	rsinfo->setDesc = tupdesc;
	MemoryContextSwitchTo(old);
}

static Datum
composite_from_py(CallInfo *ci, PyObject *obj, bool *isnull)
{
	TupleTableSlot *slot;
	HeapTuple	tuple;

	if (obj == Py_None)
	{
		*isnull = true;
		return (Datum) 0;
	}
	slot = MakeSingleTupleTableSlot(ci->tupdesc, &TTSOpsVirtual);
	orochi_row_store(obj, slot, ci->colconvs, ci->colnames);
	ExecStoreVirtualTuple(slot);
	tuple = ExecCopySlotHeapTuple(slot);
	ExecDropSingleTupleTableSlot(slot);
	*isnull = false;
	return HeapTupleGetDatum(tuple);
}

Datum
orochi_py_call(PG_FUNCTION_ARGS)
{
	CallInfo   *ci;
	PyObject   *args;
	PyObject   *res;
	Datum		result = (Datum) 0;

	orochi_python_ensure();
	ci = call_info(fcinfo);
	orochi_mark_xact_touched();

	args = PyTuple_New(ci->nargs + 1);
	if (args == NULL)
		orochi_py_raise(ci->name);
	PyTuple_SET_ITEM(args, 0, orochi_cstring_to_py(ci->name));
	PG_TRY();
	{
		for (int i = 0; i < ci->nargs; i++)
			PyTuple_SET_ITEM(args, i + 1,
							 orochi_datum_to_py(PG_GETARG_DATUM(i), PG_ARGISNULL(i), &ci->argconvs[i]));
	}
	PG_CATCH();
	{
		Py_DECREF(args);
		PG_RE_THROW();
	}
	PG_END_TRY();

	res = orochi_runtime_call("call_sql_function", args);

	PG_TRY();
	{
		if (ci->retset)
		{
			ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
			PyObject   *iter = PyObject_GetIter(res);

			if (iter == NULL)
				orochi_py_raise("a set-returning function must return an iterable");
			init_result_set(fcinfo, ci);
			PG_TRY();
			{
				PyObject   *item;

				for (;;)
				{
					orochi_py_enter();
					item = PyIter_Next(iter);
					orochi_py_leave();
					if (item == NULL)
						break;
					PG_TRY();
					{
						if (ci->resultclass == TYPEFUNC_COMPOSITE)
						{
							TupleTableSlot *slot = MakeSingleTupleTableSlot(ci->tupdesc, &TTSOpsVirtual);

							orochi_row_store(item, slot, ci->colconvs, ci->colnames);
							ExecStoreVirtualTuple(slot);
							tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
												 slot->tts_values, slot->tts_isnull);
							ExecDropSingleTupleTableSlot(slot);
						}
						else
						{
							bool		isnull;
							Datum		d = orochi_py_to_datum(item, &ci->retconv, &isnull);

							tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &d, &isnull);
						}
					}
					PG_FINALLY();
					{
						Py_DECREF(item);
					}
					PG_END_TRY();
					CHECK_FOR_INTERRUPTS();
				}
				if (PyErr_Occurred())
					orochi_py_raise(ci->name);
			}
			PG_FINALLY();
			{
				Py_DECREF(iter);
			}
			PG_END_TRY();
			result = (Datum) 0;
		}
		else if (ci->resultclass == TYPEFUNC_COMPOSITE)
		{
			bool		isnull;

			result = composite_from_py(ci, res, &isnull);
			if (isnull)
				fcinfo->isnull = true;
		}
		else if (ci->rettype == VOIDOID)
			result = (Datum) 0;
		else
		{
			bool		isnull;

			result = orochi_py_to_datum(res, &ci->retconv, &isnull);
			if (isnull)
				fcinfo->isnull = true;
		}
	}
	PG_FINALLY();
	{
		Py_DECREF(res);
	}
	PG_END_TRY();
	return result;
}
