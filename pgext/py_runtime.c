/*-------------------------------------------------------------------------
 *
 * py_runtime.c
 *		  The embedded interpreter: start-up, calls into Python, error
 *		  translation, query cancel while Python runs, transaction hooks.
 *
 * Rules kept everywhere in this file:
 *	- Python is started lazily, the first time a backend needs it, with the
 *	  interpreter's own signal handlers off.  Postgres keeps its handlers;
 *	  ours wrap them so that a cancel or terminate also interrupts Python.
 *	- Nothing longjmps through Python frames: a Python error is copied into
 *	  palloc'd strings and every Python reference released before ereport.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include <dlfcn.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

char	   *orochi_python_venv = NULL;
int			orochi_python_depth = 0;

static bool python_started = false;
static pid_t python_pid = 0;	/* the process that started or last adopted Python */
static bool signals_ready = false;	/* this backend's signal wrappers are in place */
static PyObject *runtime_module = NULL;
static bool xact_touched = false;

/* the user's open savepoints, innermost last (see orochi_subxact_callback) */
static SubTransactionId *savepoints = NULL;
static int	savepoint_count = 0;
static int	savepoint_space = 0;

/* set by our signal wrappers; consumed when the outermost Python call returns */
static volatile sig_atomic_t interrupt_sent = false;
static pqsigfunc pg_sigint_handler = NULL;
static pqsigfunc pg_sigterm_handler = NULL;

/*
 * Signal wrappers: run Postgres's own handler, then, if Python is running,
 * ask the interpreter to raise KeyboardInterrupt at its next check.  That
 * exception comes back to C, which lets CHECK_FOR_INTERRUPTS() report the
 * real reason (cancel, statement_timeout, terminate).
 * PyErr_SetInterruptEx is async-signal-safe.
 */
static void
orochi_sigint_wrapper(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (pg_sigint_handler)
		pg_sigint_handler(postgres_signal_arg);
	if (orochi_python_depth > 0)
	{
		interrupt_sent = true;
		PyErr_SetInterruptEx(SIGINT);
	}
	errno = save_errno;
}

static void
orochi_sigterm_wrapper(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (pg_sigterm_handler)
		pg_sigterm_handler(postgres_signal_arg);
	if (orochi_python_depth > 0)
	{
		interrupt_sent = true;
		PyErr_SetInterruptEx(SIGINT);
	}
	errno = save_errno;
}

void
orochi_install_signal_wrappers(void)
{
	pqsigfunc	old;

	old = pqsignal(SIGINT, orochi_sigint_wrapper);
	if (old != orochi_sigint_wrapper && old != SIG_IGN && old != SIG_DFL && old != SIG_ERR)
		pg_sigint_handler = old;
	old = pqsignal(SIGTERM, orochi_sigterm_wrapper);
	if (old != orochi_sigterm_wrapper && old != SIG_IGN && old != SIG_DFL && old != SIG_ERR)
		pg_sigterm_handler = old;
}

/*
 * start_interpreter
 *		Py_InitializeFromConfig with the interpreter's own signal handlers off
 *		and the virtualenv's python as executable (so sys.prefix is the venv).
 */
static void
start_interpreter(void)
{
	PyConfig	config;
	PyStatus	status;
	char	   *executable;

	/* make libpython's symbols visible to the extension modules it loads */
	(void) dlopen("libpython3.11.so.1.0", RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);

	executable = psprintf("%s/bin/python3",
						  orochi_python_venv ? orochi_python_venv : OROCHI_DEFAULT_VENV);
	if (access(executable, X_OK) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("orochi cannot start Python: \"%s\" is not an executable this server can run: %m",
						executable),
				 errhint("Set orochi.python_venv to a virtualenv made from the system python3.11 "
						 "with orochi installed, readable by the server's user.")));

	if (PyImport_AppendInittab("_orochi_pg", orochi_pg_module_init) < 0)
		elog(ERROR, "orochi: could not register the _orochi_pg module");

	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 0;
	config.use_environment = 0;
	config.user_site_directory = 0;
	config.site_import = 1;
	config.parse_argv = 0;
	config.buffered_stdio = 0;
	status = PyConfig_SetBytesString(&config, &config.executable, executable);
	if (PyStatus_Exception(status))
	{
		PyConfig_Clear(&config);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not configure the Python interpreter: %s",
						status.err_msg ? status.err_msg : "unknown error")));
	}
	status = Py_InitializeFromConfig(&config);
	PyConfig_Clear(&config);
	if (PyStatus_Exception(status))
		ereport(FATAL,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not start the Python interpreter: %s",
						status.err_msg ? status.err_msg : "unknown error"),
				 errhint("Check orochi.python_venv (now \"%s\"): it must name a virtualenv "
						 "made from the system python3.11 with orochi installed.",
						 orochi_python_venv ? orochi_python_venv : OROCHI_DEFAULT_VENV)));
	python_started = true;
	python_pid = MyProcPid;
	orochi_convert_init();
}

/*
 * setup_backend_signals
 *		Give Python a SIGINT handler in its own table (default_int_handler,
 *		which raises KeyboardInterrupt) so that PyErr_SetInterruptEx has
 *		something to call, then put Postgres's handler, wrapped, back in
 *		charge of the real signal.  Done in each backend, never in the
 *		postmaster.
 */
static void
setup_backend_signals(void)
{
	pqsigfunc	saved_sigint = pqsignal(SIGINT, SIG_IGN);

	pqsignal(SIGINT, saved_sigint);
	if (PyRun_SimpleString("import signal as _s; _s.signal(_s.SIGINT, _s.default_int_handler); del _s") != 0)
		elog(WARNING, "orochi: could not set Python's interrupt handler");
	pqsignal(SIGINT, saved_sigint);
	orochi_install_signal_wrappers();
	signals_ready = true;
}

static void
import_runtime(void)
{
	PyObject   *mod;

	orochi_python_depth++;
	mod = PyImport_ImportModule("orochi_fdw.bridge.runtime");
	orochi_python_depth--;
	if (mod == NULL)
		orochi_py_raise("importing orochi_fdw.bridge.runtime");
	runtime_module = mod;
}

/*
 * orochi_python_ensure
 *		Have the interpreter running in this backend, with the runtime module
 *		imported.  An interpreter started in the postmaster (preloading) is
 *		inherited through fork: the child tells Python so first.
 */
void
orochi_python_ensure(void)
{
	if (python_started && python_pid != MyProcPid)
	{
		PyOS_AfterFork_Child();
		python_pid = MyProcPid;
		signals_ready = false;
	}
	if (runtime_module != NULL && signals_ready)
		return;
	if (!python_started)
		start_interpreter();
	if (!signals_ready)
		setup_backend_signals();
	if (runtime_module == NULL)
		import_runtime();
}

/*
 * orochi_python_preload
 *		In the postmaster, with shared_preload_libraries: start Python and
 *		import the runtime (and numpy) once, so that backends inherit them and
 *		their first query skips ~0.1 s of start-up.  Failure only warns:
 *		backends then start Python themselves.
 */
void
orochi_python_preload(void)
{
	MemoryContext old = CurrentMemoryContext;

	/* threads do not survive fork: no BLAS thread pools in the postmaster */
	setenv("OPENBLAS_NUM_THREADS", "1", 0);
	setenv("OMP_NUM_THREADS", "1", 0);
	PG_TRY();
	{
		if (!python_started)
			start_interpreter();
		import_runtime();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
				(errmsg("orochi could not preload Python: %s", edata->message),
				 errdetail("Backends will start Python when they first need it.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * orochi_runtime_func
 *		A new reference to a callable of orochi_fdw.bridge.runtime.
 */
PyObject *
orochi_runtime_func(const char *name)
{
	PyObject   *f;

	orochi_python_ensure();
	f = PyObject_GetAttrString(runtime_module, name);
	if (f == NULL)
		orochi_py_raise(name);
	return f;
}

/*
 * orochi_runtime_call
 *		runtime.<name>(*args), args a new reference that is consumed; the
 *		result is a new reference.  A Python error becomes an ERROR after
 *		every reference taken here is released.
 */
PyObject *
orochi_runtime_call(const char *name, PyObject *args)
{
	PyObject   *func;
	PyObject   *res;

	if (args == NULL)
		orochi_py_raise(name);
	func = orochi_runtime_func(name);
	orochi_py_enter();
	res = PyObject_Call(func, args, NULL);
	orochi_py_leave();
	Py_DECREF(func);
	Py_DECREF(args);
	if (res == NULL)
		orochi_py_raise(name);
	CHECK_FOR_INTERRUPTS();
	return res;
}

void
orochi_py_enter(void)
{
	orochi_python_depth++;
}

/*
 * orochi_py_leave
 *		Leave Python.  When the outermost call returns, an interrupt that was
 *		sent but not yet seen by the interpreter is consumed here, so that it
 *		cannot fire later in an unrelated call; CHECK_FOR_INTERRUPTS() then
 *		acts on it the Postgres way.
 */
void
orochi_py_leave(void)
{
	if (orochi_python_depth > 0)
		orochi_python_depth--;
	if (orochi_python_depth == 0 && interrupt_sent)
	{
		PyObject   *t,
				   *v,
				   *tb;

		interrupt_sent = false;
		PyErr_Fetch(&t, &v, &tb);
		if (PyErr_CheckSignals() < 0)
			PyErr_Clear();
		PyErr_Restore(t, v, tb);
	}
}

/*
 * orochi_call
 *		Call a Python callable; on a Python error, raise it as a Postgres
 *		ERROR.  Returns a new reference.  The caller must not hold Python
 *		references it needs to release across this call (they would leak on
 *		error); pass them in args or release them first.
 */
PyObject *
orochi_call(PyObject *callable, PyObject *args, PyObject *kwargs)
{
	PyObject   *result;

	orochi_py_enter();
	result = PyObject_Call(callable, args, kwargs);
	orochi_py_leave();
	if (result == NULL)
		orochi_py_raise(NULL);
	CHECK_FOR_INTERRUPTS();
	return result;
}

/*
 * Describe the pending Python exception through runtime.describe_exception,
 * which returns (sqlstate, message, detail, hint, is_interrupt).  Strings come
 * back palloc'd; every Python reference is released.  Returns false if even
 * that failed (the fallback text is then filled in).
 */
static bool
describe_pending_exception(char **sqlstate, char **message, char **detail, char **hint,
						   bool *is_interrupt)
{
	PyObject   *type,
			   *value,
			   *tb;
	PyObject   *describe = NULL;
	PyObject   *res = NULL;
	bool		ok = false;

	*sqlstate = NULL;
	*message = NULL;
	*detail = NULL;
	*hint = NULL;
	*is_interrupt = false;

	PyErr_Fetch(&type, &value, &tb);
	if (type == NULL)
	{
		*message = pstrdup("Python call failed without setting an exception");
		return false;
	}
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb != NULL && value != NULL)
		PyException_SetTraceback(value, tb);

	if (PyErr_GivenExceptionMatches(type, PyExc_KeyboardInterrupt))
		*is_interrupt = true;

	if (runtime_module != NULL)
		describe = PyObject_GetAttrString(runtime_module, "describe_exception");
	if (describe != NULL)
	{
		orochi_python_depth++;
		res = PyObject_CallOneArg(describe, value ? value : Py_None);
		orochi_python_depth--;
	}
	if (res != NULL && PyTuple_Check(res) && PyTuple_GET_SIZE(res) == 4)
	{
		char	  **slots[4] = {sqlstate, message, detail, hint};

		ok = true;
		for (int i = 0; i < 4; i++)
		{
			PyObject   *item = PyTuple_GET_ITEM(res, i);

			if (item != Py_None)
			{
				const char *s = PyUnicode_Check(item) ? PyUnicode_AsUTF8(item) : NULL;

				if (s == NULL)
				{
					PyErr_Clear();
					continue;
				}
				*slots[i] = orochi_utf8_to_server_lossy(s);
			}
		}
	}
	if (!ok)
	{
		PyObject   *s;

		PyErr_Clear();
		s = value ? PyObject_Str(value) : NULL;
		if (s != NULL && PyUnicode_AsUTF8(s) != NULL)
			*message = psprintf("%s: %s", ((PyTypeObject *) type)->tp_name,
								orochi_utf8_to_server_lossy(PyUnicode_AsUTF8(s)));
		else
			*message = psprintf("%s", ((PyTypeObject *) type)->tp_name);
		PyErr_Clear();
		Py_XDECREF(s);
	}
	Py_XDECREF(res);
	Py_XDECREF(describe);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	PyErr_Clear();
	return ok;
}

static int
sqlstate_to_errcode(const char *sqlstate, int fallback)
{
	if (sqlstate == NULL || strlen(sqlstate) != 5)
		return fallback;
	return MAKE_SQLSTATE(sqlstate[0], sqlstate[1], sqlstate[2], sqlstate[3], sqlstate[4]);
}

/*
 * orochi_py_raise
 *		Turn the pending Python exception into a Postgres ERROR.
 */
void
orochi_py_raise(const char *context)
{
	char	   *sqlstate,
			   *message,
			   *detail,
			   *hint;
	bool		is_interrupt;

	describe_pending_exception(&sqlstate, &message, &detail, &hint, &is_interrupt);
	if (is_interrupt)
	{
		/* the real reason is pending in Postgres: let it report itself */
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("canceling statement due to an interrupt in Python")));
	}
	ereport(ERROR,
			(errcode(sqlstate_to_errcode(sqlstate, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION)),
			 errmsg_internal("%s", message ? message : "Python error"),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0,
			 context ? errcontext("orochi: %s", context) : 0));
	pg_unreachable();
}

/* Report the pending Python exception as a WARNING (where ERROR is not allowed) */
static void
orochi_py_warn(const char *context)
{
	char	   *sqlstate,
			   *message,
			   *detail,
			   *hint;
	bool		is_interrupt;

	describe_pending_exception(&sqlstate, &message, &detail, &hint, &is_interrupt);
	ereport(WARNING,
			(errcode(sqlstate_to_errcode(sqlstate, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION)),
			 errmsg_internal("%s", message ? message : "Python error"),
			 detail ? errdetail_internal("%s", detail) : 0,
			 context ? errcontext("orochi: %s", context) : 0));
}

/*
 * Transaction hooks.  Python hears about a transaction only if an orochi
 * foreign table or function was used in it; the runtime then calls begin,
 * pre_commit, commit, rollback and the sub-transaction hooks of the wrapper
 * instances that took part.
 */
void
orochi_mark_xact_touched(void)
{
	xact_touched = true;
}

static void
call_xact_hook(const char *func, PyObject *args, bool may_error)
{
	PyObject   *f;
	PyObject   *res;

	if (runtime_module == NULL)
	{
		Py_XDECREF(args);
		return;
	}
	f = PyObject_GetAttrString(runtime_module, func);
	if (f == NULL)
	{
		Py_XDECREF(args);
		if (may_error)
			orochi_py_raise(func);
		orochi_py_warn(func);
		return;
	}
	orochi_py_enter();
	res = PyObject_Call(f, args, NULL);
	orochi_py_leave();
	Py_DECREF(f);
	Py_XDECREF(args);
	if (res == NULL)
	{
		if (may_error)
			orochi_py_raise(func);
		orochi_py_warn(func);
		return;
	}
	Py_DECREF(res);
}

static void
orochi_xact_callback(XactEvent event, void *arg)
{
	const char *name = NULL;
	bool		may_error = false;
	bool		ends = false;

	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		orochi_python_depth = 0;	/* an ERROR unwound past a call: start afresh */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		savepoint_count = 0;
	if (!xact_touched)
		return;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
			name = "pre_commit";
			may_error = true;
			break;
		case XACT_EVENT_PRE_PREPARE:
			name = "pre_prepare";
			may_error = true;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			name = "commit";
			ends = true;
			break;
		case XACT_EVENT_PREPARE:
			name = "prepare";
			ends = true;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			name = "rollback";
			ends = true;
			break;
	}
	if (ends)
		xact_touched = false;
	if (name == NULL)
		return;
	if (may_error && !ActiveSnapshotSet())
	{
		/*
		 * Portals are gone by pre-commit: give SPI in pre_commit hooks a
		 * snapshot of its own (an error aborts the transaction, which pops it).
		 */
		PushActiveSnapshot(GetTransactionSnapshot());
		call_xact_hook("xact_event", Py_BuildValue("(s)", name), may_error);
		PopActiveSnapshot();
	}
	else
		call_xact_hook("xact_event", Py_BuildValue("(s)", name), may_error);
}

/*
 * The user's open savepoints (sub-transactions other than the bridge's own),
 * innermost last, kept whether or not Orochi was used yet: a wrapper that
 * joins the transaction inside savepoints is told they are open
 * (runtime.Transaction.join), so its later sub_rollback / sub_commit match.
 */

int
orochi_savepoint_depth(void)
{
	return savepoint_count;
}

static int
savepoint_level(SubTransactionId subid)
{
	for (int i = savepoint_count - 1; i >= 0; i--)
		if (savepoints[i] == subid)
			return i + 1;
	return 0;
}

static void
orochi_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	const char *name = NULL;
	bool		may_error = false;
	int			level;

	if (orochi_in_internal_subxact())
		return;
	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			if (savepoint_count == savepoint_space)
			{
				savepoint_space = Max(16, savepoint_space * 2);
				savepoints = savepoints ?
					repalloc(savepoints, sizeof(SubTransactionId) * savepoint_space) :
					MemoryContextAlloc(TopMemoryContext, sizeof(SubTransactionId) * savepoint_space);
			}
			savepoints[savepoint_count++] = mySubid;
			name = "sub_begin";
			may_error = true;
			level = savepoint_count;
			break;
		case SUBXACT_EVENT_PRE_COMMIT_SUB:
			name = "sub_pre_commit";
			may_error = true;
			level = savepoint_level(mySubid);
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
		case SUBXACT_EVENT_ABORT_SUB:
			name = event == SUBXACT_EVENT_COMMIT_SUB ? "sub_commit" : "sub_rollback";
			level = savepoint_level(mySubid);
			if (level > 0)
				savepoint_count = level - 1;
			break;
		default:
			return;
	}
	if (!xact_touched || level == 0)
		return;
	call_xact_hook("subxact_event", Py_BuildValue("(si)", name, level), may_error);
}

void
orochi_register_callbacks(void)
{
	RegisterXactCallback(orochi_xact_callback, NULL);
	RegisterSubXactCallback(orochi_subxact_callback, NULL);
}
