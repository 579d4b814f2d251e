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
 * No Postgres ERROR may longjmp through Python frames: every function here
 * that can raise one runs it under PG_TRY and hands Python an exception.
 * Where the error cannot be recovered from inside the statement (in
 * parallel mode, SQL runs without a sub-transaction to roll back; a query
 * cancel must not be swallowed), it becomes the *pending* error: Python gets
 * orochi_fdw.errors.StatementAborted (a BaseException, which "except
 * Exception" does not catch), every later call of this module raises it
 * again, and the moment control is back in C the original error is thrown
 * as Postgres reported it (orochi_check_pending, orochi_py_raise).
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xloginsert.h"
#include "catalog/pg_control.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_param.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

static int	internal_subxact_depth = 0;
static PyObject *spi_error_type = NULL;
static PyObject *aborted_type = NULL;

/*
 * The pending error (see the file's head), in its own memory context.
 * pending_unclean: nothing has cleaned up after it yet (no sub-transaction
 * was rolled back: parallel mode, a failure of the sub-transaction machinery)
 * -- the abort of an enclosing sub-transaction does.  A cancel that was
 * rolled back already stays pending until it is re-thrown.
 */
static ErrorData *pending_error = NULL;
static bool pending_unclean = false;
static MemoryContext pending_cxt = NULL;

/* the orochi.fault_injection setting (orochi.c defines it) */
char	   *orochi_fault_injection = NULL;

/* the SQL function call orochi_py_call is running, if any (innermost) */
static FunctionCallInfo current_call = NULL;

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

int
orochi_internal_subxact_depth(void)
{
	return internal_subxact_depth;
}

/* orochi_fdw.errors.<name>, looked up once; NULL with a Python error set */
static PyObject *
error_class(PyObject **cache, const char *name)
{
	if (*cache == NULL)
	{
		PyObject   *mod = PyImport_ImportModule("orochi_fdw.errors");

		if (mod == NULL)
			return NULL;
		*cache = PyObject_GetAttrString(mod, name);
		Py_DECREF(mod);
	}
	return *cache;
}

/* Raise cls(message, sqlstate, detail, hint, context) from a Postgres error; returns NULL */
static PyObject *
set_error_from(PyObject *cls, ErrorData *edata)
{
	PyObject   *exc;

	if (cls == NULL)
		return NULL;
	exc = PyObject_CallFunction(cls, "NsNNN",
								error_text_to_py(edata->message ? edata->message : ""),
								unpack_sql_state(edata->sqlerrcode),
								error_text_to_py(edata->detail), error_text_to_py(edata->hint),
								error_text_to_py(edata->context));
	if (exc != NULL)
	{
		PyErr_SetObject(cls, exc);
		Py_DECREF(exc);
	}
	return NULL;
}

/* Raise orochi_fdw.errors.SPIError from a Postgres error; returns NULL */
PyObject *
orochi_set_spi_error(ErrorData *edata)
{
	return set_error_from(error_class(&spi_error_type, "SPIError"), edata);
}

/* Raise SPIError with a SQLSTATE and message of our own; returns NULL */
static PyObject *
set_spi_error_text(int sqlerrcode, const char *message)
{
	ErrorData	edata;

	memset(&edata, 0, sizeof(edata));
	edata.sqlerrcode = sqlerrcode;
	edata.message = (char *) message;
	return orochi_set_spi_error(&edata);
}

/* ---------------------------------------------------------------------
 * The pending error
 * ---------------------------------------------------------------------
 */

/*
 * take_error
 *		In a PG_CATCH block (CurrentMemoryContext not ErrorContext): a copy of
 *		the error being handled, in pending_cxt; Postgres's error state is
 *		cleared.
 */
static ErrorData *
take_error(void)
{
	MemoryContext old;
	ErrorData  *edata;

	/* an older pending error was re-thrown, so this one is a copy of it */
	pending_error = NULL;
	if (pending_cxt == NULL)
		pending_cxt = AllocSetContextCreate(TopMemoryContext, "orochi pending error",
											ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(pending_cxt);
	old = MemoryContextSwitchTo(pending_cxt);
	edata = CopyErrorData();
	MemoryContextSwitchTo(old);
	FlushErrorState();
	return edata;
}

/* keep_pending_error: the error being handled becomes the pending one (unclean) */
static void
keep_pending_error(void)
{
	pending_error = take_error();
	pending_unclean = true;
}

/* Raise StatementAborted for the pending error; returns NULL */
static PyObject *
raise_pending(void)
{
	PyErr_Clear();
	return set_error_from(error_class(&aborted_type, "StatementAborted"), pending_error);
}

bool
orochi_error_pending(void)
{
	return pending_error != NULL;
}

/*
 * orochi_rethrow_pending
 *		Throw the pending error as Postgres reported it.  Called in C, with
 *		every Python reference of the caller released.
 */
void
orochi_rethrow_pending(void)
{
	ErrorData  *edata = pending_error;

	Assert(edata != NULL);
	pending_error = NULL;
	PyErr_Clear();
	ReThrowError(edata);
}

/*
 * orochi_check_pending
 *		After a call into Python returned (result may be NULL): if a pending
 *		error was raised during it, it wins, whatever Python did with it.
 *		Releases result in that case.
 */
void
orochi_check_pending(PyObject *result)
{
	if (pending_error == NULL)
		return;
	OROCHI_RELEASE(result);
	orochi_rethrow_pending();
}

/*
 * Transaction ends, a sub-transaction aborts: what was begun inside is gone
 * (called from the callbacks in py_runtime.c).
 */
static void drop_pysubxacts_from(SubTransactionId subid);

void
orochi_spi_at_subxact_abort(SubTransactionId subid, int internal_depth)
{
	/*
	 * An unclean pending error comes from parallel mode, which cannot start
	 * sub-transactions (or from the sub-transaction machinery itself): an
	 * aborting one holds it, and its rollback is the clean-up it needed.
	 */
	if (pending_unclean)
		pending_error = NULL;
	internal_subxact_depth = internal_depth;
	drop_pysubxacts_from(subid);
}

/*
 * postgres_usable
 *		Whether Python may call into Postgres now; if not, a Python exception
 *		is set.  Never from another thread than the backend's, nor while a
 *		pending error waits, nor from a finalizer that runs while Postgres
 *		unwinds an error (OROCHI_RELEASE), nor (for what needs one) outside a
 *		transaction in progress: during commit or abort processing Postgres
 *		cannot run SQL.
 */
static bool
postgres_usable(bool needs_transaction)
{
	if (!orochi_in_backend_thread())
	{
		PyErr_SetString(PyExc_RuntimeError,
						"Postgres can only be called from the thread that runs the backend, "
						"not from a Python thread");
		return false;
	}
	if (pending_error != NULL)
	{
		raise_pending();
		return false;
	}
	if (orochi_unwinding > 0)
	{
		set_spi_error_text(ERRCODE_INVALID_TRANSACTION_STATE,
						   "Postgres cannot be used while it handles an error (Python code "
						   "running in a finalizer)");
		return false;
	}
	if (needs_transaction && !IsTransactionState())
	{
		set_spi_error_text(ERRCODE_INVALID_TRANSACTION_STATE,
						   "Postgres cannot run SQL here: no transaction is in progress "
						   "(it is committing or aborting)");
		return false;
	}
	return true;
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
	MemoryContext old = CurrentMemoryContext;

	if (plan == NULL)
	{
		PyErr_Clear();
		return;
	}
	/*
	 * While Postgres unwinds or aborts, catching another error would lose
	 * the one being handled: keep the plan (a kept plan's memory is not the
	 * transaction's).
	 */
	if (orochi_unwinding > 0 || !IsTransactionState())
		return;
	PG_TRY();
	{
		SPI_freeplan(plan);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		FlushErrorState();
	}
	PG_END_TRY();
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
			OROCHI_RELEASE(v);
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
	{
		Py_XDECREF(rows);
		Py_XDECREF(names);
		orochi_py_raise("building a result");
	}
	PG_TRY();
	{
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
	}
	PG_CATCH();
	{
		OROCHI_RELEASE(rows);
		OROCHI_RELEASE(names);
		PG_RE_THROW();
	}
	PG_END_TRY();
	result = Py_BuildValue("(NKN)", rows, (unsigned long long) SPI_processed, names);
	return result;
}

/*
 * Roll back and release the current sub-transaction, in a PG_CATCH block
 * whose error was taken.  If that fails too, its error is the pending one
 * and false is returned.
 */
static bool
rollback_subxact(MemoryContext cxt)
{
	volatile bool ok = true;

	PG_TRY();
	{
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		keep_pending_error();
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/*
 * Run body with SPI connected, inside an internal sub-transaction: a Postgres
 * error rolls it back and becomes SPIError; Python objects made so far are
 * released.  A query cancel is rolled back the same way but becomes the
 * pending error (Python must not carry on after a cancel), and an error the
 * sub-transaction machinery itself raised too.
 */
typedef PyObject *(*spi_body) (void *arg);

static PyObject *
run_in_subxact(spi_body body, void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	PyObject   *volatile result = NULL;
	volatile SubTransactionId subid = InvalidSubTransactionId;
	volatile bool released = false;
	ErrorData  *edata = NULL;
	bool		unrecoverable = false;

	internal_subxact_depth++;
	PG_TRY();
	{
		BeginInternalSubTransaction(NULL);
		subid = GetCurrentSubTransactionId();
		MemoryContextSwitchTo(oldcontext);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "orochi: SPI_connect failed");
		result = body(arg);
		SPI_finish();
		ReleaseCurrentSubTransaction();
		released = true;
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		if (subid != InvalidSubTransactionId && !released &&
			GetCurrentSubTransactionId() == subid)
		{
			edata = take_error();
			if (!rollback_subxact(oldcontext))
				unrecoverable = true;
		}
		else
		{
			/* the sub-transaction did not start, or ended oddly: no clean state to return to */
			keep_pending_error();
			unrecoverable = true;
		}
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	internal_subxact_depth--;

	if (edata == NULL && !unrecoverable)
	{
		orochi_consume_python_interrupt();
		return result;
	}
	OROCHI_RELEASE(result);
	PyErr_Clear();
	orochi_consume_python_interrupt();
	if (!unrecoverable && edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
	{
		/* rolled back, but a cancel ends the statement: as the pending error */
		pending_error = edata;
		pending_unclean = false;
		unrecoverable = true;
	}
	if (unrecoverable)
		return raise_pending();
	return orochi_set_spi_error(edata);	/* edata stays in pending_cxt until the next error */
}

/*
 * Run body with SPI connected and no sub-transaction: in parallel mode
 * (the leader running a parallel plan, or a parallel worker) none can be
 * started.  The statement must be read-only (Postgres refuses writes in
 * parallel mode); any error is the pending error, since nothing can roll
 * back what the failed statement left behind before the whole statement
 * aborts.
 */
static PyObject *
run_without_subxact(spi_body body, void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	PyObject   *volatile result = NULL;
	volatile bool failed = false;

	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "orochi: SPI_connect failed");
		result = body(arg);
		SPI_finish();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		keep_pending_error();
		failed = true;
	}
	PG_END_TRY();
	orochi_consume_python_interrupt();
	if (!failed)
		return result;
	OROCHI_RELEASE(result);
	return raise_pending();
}

/* SQL from Python: the guard, then in a sub-transaction unless in parallel mode */
static PyObject *
run_sql(spi_body body, void *arg)
{
	if (!postgres_usable(true))
		return NULL;
	if (IsInParallelMode())
		return run_without_subxact(body, arg);
	return run_in_subxact(body, arg);
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
	bool		internal;		/* as the extension owner (py_security.c) */
} ExecuteArgs;

static PyObject *
execute_body(void *arg)
{
	ExecuteArgs *a = (ExecuteArgs *) arg;
	SPIPlanPtr	plan;
	OrochiSecuritySave save;
	PyObject   *result;

	/* an error before the end is undone by the sub-transaction's abort */
	if (a->internal)
		orochi_internal_begin(&save);
	if (a->plan_capsule)
	{
		plan = (SPIPlanPtr) PyCapsule_GetPointer(a->plan_capsule, PLAN_CAPSULE);
		if (plan == NULL)
			orochi_py_raise("reading a plan");
	}
	else
		plan = prepare_plan(orochi_py_to_cstring(a->sql_text), a->types, a->params);
	result = execute_plan(plan, a->params, a->limit, a->read_only);
	if (a->internal)
		orochi_internal_end(&save);
	return result;
}

/*
 * _orochi_pg.execute(sql_or_plan, params=None, limit=0, types=None, read_only=False,
 *					  internal=False) -> (rows, rowcount, names)
 *
 * read_only: SPI's read-only mode.  The statement runs under the snapshot of
 * the SQL statement being executed (a scan's, a function call's) instead of
 * a new one, and the command counter is not advanced: in READ COMMITTED,
 * several such queries made during one statement see the same data.  Only
 * plain SELECTs are allowed.
 *
 * internal: run as the extension owner with the search path pinned
 * (orochi_internal_begin); a plan must be used the way it was prepared.
 */
static PyObject *
pg_execute(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"query", "params", "limit", "types", "read_only", "internal", NULL};
	PyObject   *query;
	PyObject   *params = Py_None;
	PyObject   *types = Py_None;
	long		limit = 0;
	int			read_only = 0;
	int			internal = 0;
	ExecuteArgs a;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OlOpp", kwlist, &query, &params, &limit, &types,
									 &read_only, &internal))
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
	a.internal = internal;
	if (PyCapsule_CheckExact(query))
		a.plan_capsule = query;
	else if (PyUnicode_Check(query))
		a.sql_text = query;		/* UTF-8: converted to the server encoding by the body */
	else
	{
		PyErr_SetString(PyExc_TypeError, "query must be a str or a prepared plan");
		return NULL;
	}
	return run_sql(execute_body, &a);
}

static PyObject *
prepare_body(void *arg)
{
	ExecuteArgs *a = (ExecuteArgs *) arg;
	SPIPlanPtr	plan;
	OrochiSecuritySave save;

	if (a->internal)
		orochi_internal_begin(&save);
	plan = prepare_plan(orochi_py_to_cstring(a->sql_text), a->types, NULL);
	if (a->internal)
		orochi_internal_end(&save);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "orochi: SPI_keepplan failed");
	return PyCapsule_New(plan, PLAN_CAPSULE, plan_capsule_destructor);
}

/*
 * _orochi_pg.prepare(sql, types=None, internal=False) -> plan; unnamed types
 * are inferred; internal: parsed as execute(..., internal=True) runs it
 */
static PyObject *
pg_prepare(PyObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kwlist[] = {"query", "types", "internal", NULL};
	PyObject   *sql;
	PyObject   *types = Py_None;
	int			internal = 0;
	ExecuteArgs a;

	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "U|Op", kwlist, &sql, &types, &internal))
		return NULL;
	memset(&a, 0, sizeof(a));
	a.sql_text = sql;
	a.types = types;
	a.internal = internal;
	return run_sql(prepare_body, &a);
}

/*
 * Explicit sub-transactions for Python code (the context manager in
 * orochi_fdw.bridge.spi): begin, then commit or rollback.  The stack lives
 * in TopMemoryContext and is cut back when a sub-transaction aborts or the
 * transaction ends, so that an entry never outlives its sub-transaction.
 * In parallel mode none can be started: the block then runs without one
 * (its SQL is read-only there, and any error of it ends the statement).
 */
typedef struct PySubxact
{
	MemoryContext cxt;
	ResourceOwner owner;
	SubTransactionId id;		/* ours, or the enclosing one if !opened */
	bool		opened;			/* false: a block in parallel mode */
} PySubxact;

static PySubxact *pysubxacts = NULL;
static int	npysubxacts = 0;
static int	pysubxact_space = 0;

static void
drop_pysubxacts_from(SubTransactionId subid)
{
	while (npysubxacts > 0 && pysubxacts[npysubxacts - 1].id >= subid)
		npysubxacts--;
}

int
orochi_python_subxact_count(void)
{
	return npysubxacts;
}

/*
 * orochi_close_python_subxacts
 *		Roll back the sub-transactions Python opened beyond the first keep,
 *		innermost first; returns how many.  Called in C when a call into
 *		Python returns: a sub-transaction must not stay open across a return
 *		to Postgres (the executor would go on inside it, and a later rollback
 *		of it would silently undo the statement's own work).
 */
int
orochi_close_python_subxacts(int keep)
{
	int			closed = 0;

	while (npysubxacts > keep)
	{
		PySubxact	sx = pysubxacts[npysubxacts - 1];

		if (sx.opened)
		{
			if (sx.id != GetCurrentSubTransactionId())
				elog(ERROR, "orochi: a sub-transaction opened by Python is not the current one");
			npysubxacts--;
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(sx.cxt);
			CurrentResourceOwner = sx.owner;
		}
		else
			npysubxacts--;
		closed++;
	}
	return closed;
}

void
orochi_spi_at_xact_end(void)
{
	npysubxacts = 0;
	internal_subxact_depth = 0;
	pending_error = NULL;
	if (pending_cxt != NULL)
		MemoryContextReset(pending_cxt);
}

static PyObject *
pg_subxact_begin(PyObject *self, PyObject *noargs)
{
	PySubxact	sx;
	MemoryContext old = CurrentMemoryContext;
	volatile bool failed = false;

	if (!postgres_usable(true))
		return NULL;
	if (npysubxacts == pysubxact_space)
	{
		int			space = Max(8, pysubxact_space * 2);
		PySubxact  *grown = (PySubxact *) MemoryContextAllocExtended(TopMemoryContext,
																	 sizeof(PySubxact) * space,
																	 MCXT_ALLOC_NO_OOM);

		if (grown == NULL)
			return PyErr_NoMemory();
		if (npysubxacts > 0)
			memcpy(grown, pysubxacts, sizeof(PySubxact) * npysubxacts);
		if (pysubxacts)
			pfree(pysubxacts);
		pysubxacts = grown;
		pysubxact_space = space;
	}
	sx.cxt = CurrentMemoryContext;
	sx.owner = CurrentResourceOwner;
	if (IsInParallelMode())
	{
		sx.id = GetCurrentSubTransactionId();
		sx.opened = false;
		pysubxacts[npysubxacts++] = sx;
		return PyLong_FromLong(0);
	}
	PG_TRY();
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		/* not in a state to carry on from (parallel mode was checked above) */
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = sx.owner;
		keep_pending_error();
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return raise_pending();
	sx.id = GetCurrentSubTransactionId();
	sx.opened = true;
	pysubxacts[npysubxacts++] = sx;
	return PyLong_FromUnsignedLong(sx.id);
}

/*
 * A block ends while an error is pending (its exception is on its way out):
 * a block without a sub-transaction is just closed; a real sub-transaction is
 * rolled back if the error was cleaned up already (a cancel), else left to
 * the abort that will clean up both.  Raises the pending error again.
 */
static PyObject *
end_subxact_for_pending(void)
{
	PySubxact	sx;

	if (npysubxacts == 0)
		return raise_pending();
	sx = pysubxacts[npysubxacts - 1];
	if (!sx.opened)
		npysubxacts--;
	else if (!pending_unclean && sx.id == GetCurrentSubTransactionId() && IsTransactionState())
	{
		ErrorData  *saved = pending_error;

		npysubxacts--;
		pending_error = NULL;	/* the rollback's callbacks may run Python hooks */
		if (rollback_subxact(sx.cxt))
		{
			CurrentResourceOwner = sx.owner;
			pending_error = saved;
			pending_unclean = false;
		}
		/* else its error is the pending one now */
	}
	return raise_pending();
}

static PyObject *
pg_subxact_end(PyObject *self, PyObject *args)
{
	int			commit;
	PySubxact	sx;
	ErrorData  *edata = NULL;
	bool		unrecoverable = false;

	if (!PyArg_ParseTuple(args, "p", &commit))
		return NULL;
	if (pending_error != NULL && orochi_in_backend_thread())
		return end_subxact_for_pending();
	if (!postgres_usable(true))
		return NULL;
	if (npysubxacts == 0)
	{
		PyErr_SetString(PyExc_RuntimeError, "no sub-transaction is open");
		return NULL;
	}
	sx = pysubxacts[npysubxacts - 1];
	if (!sx.opened)
	{
		npysubxacts--;
		Py_RETURN_NONE;
	}
	if (sx.id != GetCurrentSubTransactionId())
	{
		PyErr_SetString(PyExc_RuntimeError, "sub-transactions must end in the order they began");
		return NULL;
	}
	npysubxacts--;
	PG_TRY();
	{
		if (commit)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sx.cxt);
		CurrentResourceOwner = sx.owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(sx.cxt);
		if (commit && GetCurrentSubTransactionId() == sx.id)
		{
			/* the commit failed (a pre-commit hook): roll the block back */
			edata = take_error();
			if (!rollback_subxact(sx.cxt))
				unrecoverable = true;
		}
		else
		{
			keep_pending_error();
			unrecoverable = true;
		}
		MemoryContextSwitchTo(sx.cxt);
		CurrentResourceOwner = sx.owner;
	}
	PG_END_TRY();
	orochi_consume_python_interrupt();
	if (unrecoverable)
		return raise_pending();
	if (edata != NULL)
		return orochi_set_spi_error(edata);
	Py_RETURN_NONE;
}

/* _orochi_pg.log(level, message): level is one of debug, log, info, notice, warning */
static PyObject *
pg_log(PyObject *self, PyObject *args)
{
	const char *level;
	PyObject   *msg;
	int			elevel;
	MemoryContext old = CurrentMemoryContext;
	volatile bool failed = false;
	ErrorData  *edata = NULL;

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
	/* logging works outside a transaction too (commit and rollback hooks) */
	if (!postgres_usable(false))
		return NULL;
	PG_TRY();
	{
		char	   *text = orochi_py_to_cstring(msg);

		ereport(elevel, (errmsg_internal("%s", text)));
		pfree(text);
	}
	PG_CATCH();
	{
		/* the error's data, copied out of ErrorContext before it is reset */
		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		failed = true;
	}
	PG_END_TRY();
	if (failed)
	{
		PyErr_Clear();
		orochi_set_spi_error(edata);
		FreeErrorData(edata);
		return NULL;
	}
	Py_RETURN_NONE;
}

static PyObject *
pg_quote_ident(PyObject *self, PyObject *arg)
{
	const char *s = PyUnicode_AsUTF8(arg);
	MemoryContext old = CurrentMemoryContext;
	const char *volatile quoted = NULL;
	volatile bool failed = false;
	PyObject   *result;

	if (s == NULL)
		return NULL;
	if (!postgres_usable(false))
		return NULL;
	PG_TRY();
	{
		quoted = quote_identifier(s);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		FlushErrorState();
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return PyErr_NoMemory();	/* palloc is all that can fail here */
	result = PyUnicode_FromString(quoted);
	if (quoted != s)
		pfree((void *) quoted);
	return result;
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

/*
 * xid_is_current(xid) -> bool: whether xid is this backend's transaction or
 * one of its (sub)transactions; a catalog row whose xmin it is was written
 * by this transaction.  Looks only at backend memory: cannot fail.
 */
static PyObject *
pg_xid_is_current(PyObject *self, PyObject *arg)
{
	unsigned long xid;

	if (!postgres_usable(true))
		return NULL;
	xid = PyLong_AsUnsignedLong(arg);
	if (PyErr_Occurred())
		return NULL;
	if (xid > PG_UINT32_MAX)
	{
		PyErr_SetString(PyExc_ValueError, "a transaction id is at most 4294967295");
		return NULL;
	}
	return PyBool_FromLong(TransactionIdIsCurrentTransactionId((TransactionId) xid));
}

/*
 * snapshot_key() -> bytes | None: what decides which row versions the active
 * snapshot sees (its xmin, xmax, in-progress transaction ids and flags), or
 * None when that is not all: no active MVCC snapshot, or this transaction
 * has a transaction id (its own changes are then seen too).  Two equal keys
 * see the same rows of every table.  Looks only at backend memory: cannot
 * fail but for lack of Python memory.
 */
static PyObject *
pg_snapshot_key(PyObject *self, PyObject *noargs)
{
	Snapshot	snap;
	PyObject   *out;
	char	   *p;
	Size		len;

	if (!postgres_usable(true))
		return NULL;
	if (!IsTransactionState() || !ActiveSnapshotSet() ||
		TransactionIdIsValid(GetTopTransactionIdIfAny()))
		Py_RETURN_NONE;
	snap = GetActiveSnapshot();
	if (snap->snapshot_type != SNAPSHOT_MVCC || snap->xcnt < 0 || snap->subxcnt < 0)
		Py_RETURN_NONE;
	len = 4 * sizeof(uint32) + 2 + ((Size) snap->xcnt + (Size) snap->subxcnt) * sizeof(TransactionId);
	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t) len);
	if (out == NULL)
		return NULL;
	p = PyBytes_AS_STRING(out);
	memcpy(p, &snap->xmin, sizeof(uint32));
	memcpy(p + 4, &snap->xmax, sizeof(uint32));
	memcpy(p + 8, &snap->xcnt, sizeof(uint32));
	memcpy(p + 12, &snap->subxcnt, sizeof(uint32));
	p[16] = snap->suboverflowed ? 1 : 0;
	p[17] = snap->takenDuringRecovery ? 1 : 0;
	p += 18;
	if (snap->xcnt > 0)
		memcpy(p, snap->xip, snap->xcnt * sizeof(TransactionId));
	p += snap->xcnt * sizeof(TransactionId);
	if (snap->subxcnt > 0)
		memcpy(p, snap->subxip, snap->subxcnt * sizeof(TransactionId));
	return out;
}

static PyObject *
pg_transaction_id(PyObject *self, PyObject *noargs)
{
	MemoryContext old = CurrentMemoryContext;
	volatile TransactionId xid = InvalidTransactionId;
	volatile bool failed = false;

	if (!postgres_usable(true))
		return NULL;
	xid = GetTopTransactionIdIfAny();
	if (TransactionIdIsValid(xid))
		return PyLong_FromUnsignedLong(xid);
	if (IsInParallelMode())
		return set_spi_error_text(ERRCODE_INVALID_TRANSACTION_STATE,
								  "cannot assign a transaction id during a parallel operation");

	/*
	 * Assigning one: an error there may leave locks held that only the
	 * transaction's abort releases, so it ends the statement.
	 */
	PG_TRY();
	{
		xid = GetTopTransactionId();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		keep_pending_error();
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return raise_pending();
	return PyLong_FromUnsignedLong(xid);
}

static PyObject *
pg_in_parallel_mode(PyObject *self, PyObject *noargs)
{
	/* the leader running a parallel plan, or a parallel worker: no writes, no sub-transactions */
	return PyBool_FromLong(IsInParallelMode());
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

/*
 * Making the transaction's id durable.
 *
 * Files are named after the id of the transaction that writes them, and a
 * file without a catalog row is an orphan once that transaction is over.
 * An id that appears in no WAL record that reached the disk is unknown after
 * a crash and is handed out again, to an unrelated transaction; a writer
 * calls durable_transaction_id() before it creates its first file, so that
 * its id is in the flushed WAL and is never reused.  The record is an
 * XLOG_NOOP (replay does nothing with it) written in an internal
 * sub-transaction that is given an id of its own: recovery moves the next
 * transaction id past the id in any record's header, and the
 * sub-transaction's id is above the top-level one.
 */
static PyObject *
durable_xid_body(void *arg)
{
	FullTransactionId top = GetTopFullTransactionId();
	XLogRecPtr	end;

	(void) GetCurrentTransactionId();	/* the id in the record's header */
	XLogBeginInsert();
	XLogRegisterData((char *) &top, sizeof(top));
	end = XLogInsert(RM_XLOG_ID, XLOG_NOOP);
	XLogFlush(end);
	return PyLong_FromUnsignedLongLong(U64FromFullTransactionId(top));
}

/* _orochi_pg.durable_transaction_id() -> the top-level full transaction id */
static PyObject *
pg_durable_transaction_id(PyObject *self, PyObject *noargs)
{
	return run_sql(durable_xid_body, NULL);
}

/*
 * Aggregate states kept in Python.
 *
 * An aggregate whose transition function is written in Python keeps its
 * state in the backend's Python and hands Postgres a token naming it.
 * agg_state_watch(id) ties the state to the memory context that holds the
 * aggregate's transition values (AggCheckCallContext): when that context is
 * reset or deleted (the group or window partition is done, a window frame
 * restarts, the query ends or fails), the id is noted, and
 * released_agg_states() hands the noted ids to Python, which drops those
 * states.  The callback only notes the id (no Python, no allocation that can
 * fail): it may run while an error is being cleaned up.
 */
typedef struct AggStateWatch
{
	MemoryContextCallback cb;
	uint64		id;
} AggStateWatch;

static uint64 *released_states = NULL;	/* in TopMemoryContext */
static int	n_released_states = 0;
static int	max_released_states = 0;

static void
agg_state_released(void *arg)
{
	AggStateWatch *watch = (AggStateWatch *) arg;

	if (n_released_states == max_released_states)
	{
		int			newmax = max_released_states ? max_released_states * 2 : 64;
		uint64	   *grown = MemoryContextAllocExtended(TopMemoryContext, sizeof(uint64) * newmax,
													   MCXT_ALLOC_NO_OOM);

		if (grown == NULL)
			return;				/* out of memory: that state stays until the backend exits */
		if (released_states != NULL)
		{
			memcpy(grown, released_states, sizeof(uint64) * n_released_states);
			pfree(released_states);
		}
		released_states = grown;
		max_released_states = newmax;
	}
	released_states[n_released_states++] = watch->id;
}

/* _orochi_pg.agg_state_watch(id) -> whether the call is an aggregate's */
static PyObject *
pg_agg_state_watch(PyObject *self, PyObject *arg)
{
	unsigned long long id = PyLong_AsUnsignedLongLong(arg);
	MemoryContext aggcontext;
	AggStateWatch *watch;

	if (PyErr_Occurred())
		return NULL;
	if (current_call == NULL || !AggCheckCallContext(current_call, &aggcontext))
		Py_RETURN_FALSE;
	watch = MemoryContextAllocExtended(aggcontext, sizeof(AggStateWatch), MCXT_ALLOC_NO_OOM);
	if (watch == NULL)
		return PyErr_NoMemory();
	watch->id = id;
	watch->cb.func = agg_state_released;
	watch->cb.arg = watch;
	MemoryContextRegisterResetCallback(aggcontext, &watch->cb);
	Py_RETURN_TRUE;
}

/* _orochi_pg.released_agg_states() -> ids whose context went, since the last call */
static PyObject *
pg_released_agg_states(PyObject *self, PyObject *noargs)
{
	PyObject   *ids = PyList_New(n_released_states);

	if (ids == NULL)
		return NULL;
	for (int i = 0; i < n_released_states; i++)
	{
		PyObject   *id = PyLong_FromUnsignedLongLong(released_states[i]);

		if (id == NULL)
		{
			Py_DECREF(ids);
			return NULL;
		}
		PyList_SET_ITEM(ids, i, id);
	}
	n_released_states = 0;
	return ids;
}

/*
 * _orochi_pg.invalidate_relcache(relid) -> None: every backend drops what it
 * keeps about the relation (0: about every relation) when this transaction
 * commits; the bridge's per-backend table facts (fdw_modify.c) go with it.
 */
static PyObject *
invalidate_relcache_body(void *arg)
{
	Oid			relid = *(Oid *) arg;

	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	else
		CacheInvalidateRelcacheAll();
	Py_RETURN_NONE;
}

static PyObject *
pg_invalidate_relcache(PyObject *self, PyObject *arg)
{
	Oid			relid = (Oid) PyLong_AsUnsignedLong(arg);

	if (PyErr_Occurred())
		return NULL;
	return run_sql(invalidate_relcache_body, &relid);
}

/* _orochi_pg.fault_injection() -> the orochi.fault_injection setting */
static PyObject *
pg_fault_injection(PyObject *self, PyObject *noargs)
{
	return PyUnicode_FromString(orochi_fault_injection ? orochi_fault_injection : "");
}

static PyMethodDef pg_methods[] = {
	{"execute", (PyCFunction) (void (*) (void)) pg_execute, METH_VARARGS | METH_KEYWORDS,
	"execute(query, params=None, limit=0, types=None, read_only=False, internal=False) -> (rows, rowcount, column_names)"},
	{"prepare", (PyCFunction) (void (*) (void)) pg_prepare, METH_VARARGS | METH_KEYWORDS,
	"prepare(query, types=None, internal=False) -> plan"},
	{"subxact_begin", pg_subxact_begin, METH_NOARGS, "begin a sub-transaction"},
	{"subxact_end", pg_subxact_end, METH_VARARGS, "subxact_end(commit: bool)"},
	{"log", pg_log, METH_VARARGS, "log(level, message)"},
	{"quote_ident", pg_quote_ident, METH_O, "quote an SQL identifier"},
	{"backend_info", pg_backend_info, METH_NOARGS, "facts about this backend"},
	{"in_transaction", pg_in_transaction, METH_NOARGS, "whether a transaction is open"},
	{"transaction_id", pg_transaction_id, METH_NOARGS, "the top-level transaction id"},
	{"snapshot_key", pg_snapshot_key, METH_NOARGS,
	"what decides the rows the active snapshot sees, or None"},
	{"xid_is_current", pg_xid_is_current, METH_O,
	 "whether an xid is this transaction's or one of its subtransactions'"},
	{"savepoint_depth", pg_savepoint_depth, METH_NOARGS,
	"how many of the user's savepoints are open"},
	{"uses_transaction_snapshot", pg_uses_transaction_snapshot, METH_NOARGS,
	"whether the isolation level keeps one snapshot for the transaction"},
	{"durable_transaction_id", pg_durable_transaction_id, METH_NOARGS,
	"the top-level transaction id, written to the WAL and flushed (never reused after a crash)"},
	{"agg_state_watch", pg_agg_state_watch, METH_O,
	"agg_state_watch(id): note id when the calling aggregate's state context goes"},
	{"released_agg_states", pg_released_agg_states, METH_NOARGS,
	"the ids of aggregate states whose context went since the last call"},
	{"invalidate_relcache", pg_invalidate_relcache, METH_O,
	"invalidate_relcache(relid): every backend forgets the relation's cached facts at commit (0: all)"},
	{"fault_injection", pg_fault_injection, METH_NOARGS, "the orochi.fault_injection setting"},
	{"in_parallel_mode", pg_in_parallel_mode, METH_NOARGS,
	"whether the backend is in parallel mode (no writes, no sub-transactions)"},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef pg_module = {
	PyModuleDef_HEAD_INIT, "_orochi_pg",
	"Postgres from inside a backend: SPI, sub-transactions, logging.", -1, pg_methods
};

#define INTERRUPT_CAPSULE "orochi._orochi_pg.interrupt_flag"

/*
 * The module, with interrupt_flag: a capsule of the address of a
 * sig_atomic_t that is nonzero once a cancel or termination was forwarded
 * to the running Python.  Kernels that run without the GIL poll it and stop
 * with KeyboardInterrupt (cython_kernels/_interrupt.pxd).
 */
PyObject *
orochi_pg_module_init(void)
{
	PyObject   *mod = PyModule_Create(&pg_module);
	PyObject   *flag;

	if (mod == NULL)
		return NULL;
	flag = PyCapsule_New((void *) orochi_interrupt_flag(), INTERRUPT_CAPSULE, NULL);
	if (flag == NULL || PyModule_AddObject(mod, "interrupt_flag", flag) < 0)
	{
		Py_XDECREF(flag);
		Py_DECREF(mod);
		return NULL;
	}
	if (PyModule_AddFunctions(mod, orochi_security_methods) < 0)
	{
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
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
		/* an internal argument is a bytea (the sketch aggregates' states) */
		if (t == INTERNALOID)
			t = BYTEAOID;
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
	else if (ci->rettype == INTERNALOID)
		orochi_type_conv_init(&ci->retconv, BYTEAOID, -1, NULL);
	else if (ci->rettype != VOIDOID && OidIsValid(ci->rettype))
		orochi_type_conv_init(&ci->retconv, getBaseType(ci->rettype) == BYTEAOID ?
							  BYTEAOID : ci->rettype, -1, NULL);
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
	PyObject   *volatile res = NULL;
	FunctionCallInfo saved_call;
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
		OROCHI_RELEASE(args);
		PG_RE_THROW();
	}
	PG_END_TRY();

	saved_call = current_call;
	current_call = fcinfo;
	PG_TRY();
	{
		res = orochi_runtime_call("call_sql_function", args);
	}
	PG_FINALLY();
	{
		current_call = saved_call;
	}
	PG_END_TRY();

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
					item = orochi_py_next(iter);
					orochi_check_pending(item);
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
						OROCHI_RELEASE(item);
					}
					PG_END_TRY();
					CHECK_FOR_INTERRUPTS();
				}
				if (PyErr_Occurred())
					orochi_py_raise(ci->name);
			}
			PG_FINALLY();
			{
				OROCHI_RELEASE(iter);
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
		OROCHI_RELEASE(res);
	}
	PG_END_TRY();
	return result;
}
