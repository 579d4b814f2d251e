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
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

char	   *orochi_python_venv = NULL;
int			orochi_python_depth = 0;
int			orochi_unwinding = 0;

static bool python_started = false;
static pid_t python_pid = 0;	/* the process that started or last adopted Python */
static pthread_t backend_thread;	/* the thread of that process that runs Postgres */
static bool signals_ready = false;	/* this backend's signal wrappers are in place */
static bool convert_ready = false;	/* orochi_convert_init has succeeded */
static PyObject *runtime_module = NULL;
static bool xact_touched = false;

/*
 * Why Python cannot be used in this process, if it cannot: the interpreter
 * failed to initialise (start_failure, kept for every later use: it cannot
 * be initialised twice), or a Postgres ERROR went through Python frames
 * (python_poisoned: the interpreter's own stack is gone; the session ends).
 */
static char *start_failure = NULL;
static bool python_poisoned = false;

/* the user's open savepoints, innermost last (see orochi_subxact_callback) */
static SubTransactionId *savepoints = NULL;
static int	savepoint_count = 0;
static int	savepoint_space = 0;

/*
 * Every open sub-transaction (the user's and the bridge's own), innermost
 * last, with the bridge's state when it began: restored when it aborts.
 */
typedef struct SubxactRecord
{
	SubTransactionId id;
	int			python_depth;
	int			internal_depth;
} SubxactRecord;

static SubxactRecord *subxact_records = NULL;
static int	subxact_record_count = 0;
static int	subxact_record_space = 0;

/*
 * Set by our signal wrappers when they interrupt Python; consumed when the
 * outermost Python call returns, or when Postgres has acted on the interrupt
 * itself.  The kernels poll it (orochi_interrupt_flag).
 */
static volatile sig_atomic_t interrupt_sent = false;
static pqsigfunc pg_sigint_handler = NULL;
static pqsigfunc pg_sigterm_handler = NULL;
static pqsigfunc pg_sigusr1_handler = NULL;

/*
 * Python hooks that run where Postgres holds interrupts off and no ERROR is
 * possible any more (commit, rollback): an interrupt must not cut them short.
 */
static int	uninterruptible_depth = 0;

/*
 * forward_interrupt
 *		After Postgres's own handler ran: if it left a query cancel or a
 *		termination pending, and Python is running, ask the interpreter to
 *		raise KeyboardInterrupt at its next check.  That exception comes back
 *		to C, which lets CHECK_FOR_INTERRUPTS() report the real reason.
 *		(Interrupt holdoff is not looked at: statement_timeout sends its
 *		SIGINT from inside the SIGALRM handler, which holds interrupts.)
 *		PyErr_SetInterruptEx is async-signal-safe.
 */
static void
forward_interrupt(void)
{
	if (orochi_python_depth <= 0 || python_poisoned || uninterruptible_depth > 0)
		return;
	if (ProcDiePending || QueryCancelPending)
	{
		interrupt_sent = true;
		PyErr_SetInterruptEx(SIGINT);
	}
}

/*
 * Signal wrappers: run Postgres's own handler, then forward_interrupt.
 * SIGINT is a cancel (pg_cancel_backend, statement_timeout, lock_timeout),
 * SIGTERM a termination, SIGUSR1 a ProcSignal, among them the recovery
 * conflicts of a standby, which cancel a query or end the session.
 */
static void
orochi_sigint_wrapper(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (pg_sigint_handler)
		pg_sigint_handler(postgres_signal_arg);
	forward_interrupt();
	errno = save_errno;
}

static void
orochi_sigterm_wrapper(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (pg_sigterm_handler)
		pg_sigterm_handler(postgres_signal_arg);
	forward_interrupt();
	errno = save_errno;
}

static void
orochi_sigusr1_wrapper(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (pg_sigusr1_handler)
		pg_sigusr1_handler(postgres_signal_arg);
	forward_interrupt();
	errno = save_errno;
}

static void
wrap_signal(int signo, pqsigfunc wrapper, pqsigfunc *saved)
{
	pqsigfunc	old = pqsignal(signo, wrapper);

	if (old != wrapper && old != SIG_IGN && old != SIG_DFL && old != SIG_ERR)
		*saved = old;
	else if (old == SIG_IGN || old == SIG_DFL)
		pqsignal(signo, old);	/* nothing of Postgres's to wrap */
}

void
orochi_install_signal_wrappers(void)
{
	wrap_signal(SIGINT, orochi_sigint_wrapper, &pg_sigint_handler);
	wrap_signal(SIGTERM, orochi_sigterm_wrapper, &pg_sigterm_handler);
	wrap_signal(SIGUSR1, orochi_sigusr1_wrapper, &pg_sigusr1_handler);
}

/*
 * The flag the kernels poll (through a capsule of _orochi_pg): nonzero once
 * an interrupt was forwarded to the running Python.
 */
volatile sig_atomic_t *
orochi_interrupt_flag(void)
{
	return &interrupt_sent;
}

/*
 * orochi_consume_python_interrupt
 *		Postgres has acted on the interrupt that was forwarded to Python (a
 *		cancel became an ERROR inside SQL that Python ran, reported with its
 *		real reason): Python must not raise KeyboardInterrupt for it as well.
 *		Nothing happens while a cancel or termination is still pending.
 */
void
orochi_consume_python_interrupt(void)
{
	PyObject   *t,
			   *v,
			   *tb;

	if (!interrupt_sent || QueryCancelPending || ProcDiePending)
		return;
	interrupt_sent = false;
	PyErr_Fetch(&t, &v, &tb);
	if (PyErr_CheckSignals() < 0)
		PyErr_Clear();
	PyErr_Restore(t, v, tb);
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

	if (start_failure != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("orochi cannot use Python in this process: %s", start_failure),
				 errhint("Fix orochi.python_venv, then start a new session (or restart the server "
						 "when orochi is in shared_preload_libraries).")));
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
	if (PyImport_AppendInittab("_orochi_wal", orochi_wal_module_init) < 0)
		elog(ERROR, "orochi: could not register the _orochi_wal module");
	if (PyImport_AppendInittab("_orochi_stats", orochi_stats_module_init) < 0)
		elog(ERROR, "orochi: could not register the _orochi_stats module");

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
	{
		/*
		 * An interpreter cannot be initialised twice: remember why, and fail
		 * every later use with that reason.  An ERROR, not FATAL: in the
		 * postmaster (preloading) FATAL would stop the server.
		 */
		start_failure = MemoryContextStrdup(TopMemoryContext,
											psprintf("the interpreter did not start: %s",
													 status.err_msg ? status.err_msg : "unknown error"));
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not start the Python interpreter: %s",
						status.err_msg ? status.err_msg : "unknown error"),
				 errhint("Check orochi.python_venv (now \"%s\"): it must name a virtualenv "
						 "made from the system python3.11 with orochi installed.",
						 orochi_python_venv ? orochi_python_venv : OROCHI_DEFAULT_VENV)));
	}
	python_started = true;
	python_pid = MyProcPid;
	backend_thread = pthread_self();
}

/*
 * Whether the caller runs in the backend's own thread: Postgres is not
 * thread-safe, and a Python thread (threading, an executor) must not call
 * into it.
 */
bool
orochi_in_backend_thread(void)
{
	return python_started && pthread_equal(pthread_self(), backend_thread);
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
	if (python_poisoned)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("terminating connection because a Postgres error went through Python code"),
				 errdetail("The embedded Python interpreter of this session cannot be used any more.")));
	if (python_started && python_pid != MyProcPid)
	{
		PyOS_AfterFork_Child();
		python_pid = MyProcPid;
		backend_thread = pthread_self();
		signals_ready = false;
	}
	if (runtime_module != NULL && signals_ready && convert_ready)
		return;
	if (!python_started)
		start_interpreter();
	if (!signals_ready)
		setup_backend_signals();
	if (!convert_ready)
	{
		orochi_convert_init();
		convert_ready = true;
	}
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
		if (!convert_ready)
		{
			orochi_convert_init();
			convert_ready = true;
		}
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
	res = orochi_py_invoke(func, args, NULL);
	Py_DECREF(func);
	Py_DECREF(args);
	orochi_check_pending(res);
	if (res == NULL)
		orochi_py_raise(name);
	CHECK_FOR_INTERRUPTS();
	return res;
}

/*
 * python_unwound
 *		A Postgres ERROR is unwinding through a call into Python: C code
 *		called by Python raised it without catching it (a bug of the bridge:
 *		every such call is meant to turn errors into Python exceptions).  The
 *		interpreter's frames of that call are gone with the C stack, so
 *		Python cannot run again in this process: end the session, with the
 *		error's own message, before anything touches the interpreter.
 */
static void
python_unwound(void)
{
	ErrorData  *edata;

	python_poisoned = true;
	orochi_python_depth = 0;
	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	FlushErrorState();
	ereport(FATAL,
			(errcode(edata->sqlerrcode),
			 errmsg("terminating connection because a Postgres error went through Python code: %s",
					edata->message),
			 errdetail("The embedded Python interpreter of this session cannot be used any more.")));
}

/*
 * orochi_py_invoke
 *		callable(*args, **kwargs) with the interpreter marked as running (for
 *		cancel) and a guard: an ERROR longjmping out of the Python call ends
 *		the session (python_unwound) instead of corrupting the interpreter.
 *		Returns a new reference, or NULL with the Python error set.
 */
/*
 * python_returned
 *		After a call into Python: sub-transactions it opened and left open are
 *		rolled back, and the call then counts as failed (a Python error is
 *		set, the result released).
 */
static PyObject *
python_returned(PyObject *res, int subxacts)
{
	int			closed;

	PyObject   *t,
			   *v,
			   *tb;

	if (orochi_python_subxact_count() <= subxacts)
		return res;
	/* the rollbacks' callbacks may call Python hooks: keep Python's error aside */
	PyErr_Fetch(&t, &v, &tb);
	closed = orochi_close_python_subxacts(subxacts);
	PyErr_Restore(t, v, tb);
	if (res == NULL)
		return NULL;			/* Python's own error says more */
	Py_DECREF(res);
	PyErr_Format(PyExc_RuntimeError,
				 "%d sub-transaction(s) opened by Python (spi.subtransaction) were still open when "
				 "Python returned to Postgres and were rolled back; a sub-transaction must end "
				 "before Python returns (a generator must not yield inside one)", closed);
	return NULL;
}

PyObject *
orochi_py_invoke(PyObject *callable, PyObject *args, PyObject *kwargs)
{
	PyObject   *volatile res = NULL;
	int			subxacts = orochi_python_subxact_count();

	orochi_py_enter();
	PG_TRY();
	{
		res = PyObject_Call(callable, args, kwargs);
	}
	PG_CATCH();
	{
		python_unwound();
	}
	PG_END_TRY();
	orochi_py_leave();
	return python_returned(res, subxacts);
}

/* PyIter_Next, guarded like orochi_py_invoke */
PyObject *
orochi_py_next(PyObject *iterator)
{
	PyObject   *volatile res = NULL;
	int			subxacts = orochi_python_subxact_count();

	orochi_py_enter();
	PG_TRY();
	{
		res = PyIter_Next(iterator);
	}
	PG_CATCH();
	{
		python_unwound();
	}
	PG_END_TRY();
	orochi_py_leave();
	return python_returned(res, subxacts);
}

/*
 * orochi_python_cleanup_allowed
 *		Whether releasing Python objects (memory-context reset callbacks,
 *		transaction hooks) is safe now: not once the interpreter is lost, and
 *		not while the process exits from inside a Python call (a termination
 *		reported by SQL that Python ran): the objects may be executing.
 */
bool
orochi_python_cleanup_allowed(void)
{
	if (!python_started || python_poisoned)
		return false;
	if (proc_exit_inprogress && orochi_python_depth > 0)
		return false;
	return true;
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

	result = orochi_py_invoke(callable, args, kwargs);
	orochi_check_pending(result);
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

	/* a Postgres error Python could not recover from wins over its exception */
	if (orochi_error_pending())
		orochi_rethrow_pending();
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

static void call_xact_hook_body(const char *func, PyObject *args, bool may_error);

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
	PyObject   *t,
			   *v,
			   *tb;

	/*
	 * A hook may run while C handles a Python error of its own (a
	 * sub-transaction rolled back after a failed call): keep it aside.
	 */
	PyErr_Fetch(&t, &v, &tb);
	call_xact_hook_body(func, args, may_error);
	PyErr_Restore(t, v, tb);
}

static void
call_xact_hook_body(const char *func, PyObject *args, bool may_error)
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
	if (!may_error)
		uninterruptible_depth++;
	res = orochi_py_invoke(f, args, NULL);
	if (!may_error)
		uninterruptible_depth--;
	Py_DECREF(f);
	Py_XDECREF(args);
	if (may_error)
		orochi_check_pending(res);
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

	if ((event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) &&
		orochi_python_depth > 0 && !proc_exit_inprogress)
	{
		/*
		 * An ERROR unwound past a call into Python that no guard saw: the
		 * interpreter cannot be trusted any more (see python_unwound).  When
		 * the process is exiting from inside Python (a termination), the
		 * frames are still live and are simply left alone.
		 */
		python_poisoned = true;
		orochi_python_depth = 0;
	}
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PARALLEL_PRE_COMMIT ||
		event == XACT_EVENT_PRE_PREPARE)
	{
		/* a Postgres error Python ran into must not be committed past */
		if (orochi_error_pending())
			orochi_rethrow_pending();
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		savepoint_count = 0;
		subxact_record_count = 0;
		orochi_spi_at_xact_end();
	}
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
	if (name == NULL || !orochi_python_cleanup_allowed())
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

/*
 * track_subxact
 *		Keep subxact_records in step with every sub-transaction.  When one
 *		aborts, the bridge's state goes back to what it was when it began:
 *		"Python is running" depth, internal sub-transaction depth, the
 *		sub-transactions Python opened inside it, a pending error.
 */
static void
track_subxact(SubXactEvent event, SubTransactionId mySubid)
{
	int			i;

	if (event == SUBXACT_EVENT_START_SUB)
	{
		if (subxact_record_count == subxact_record_space)
		{
			subxact_record_space = Max(16, subxact_record_space * 2);
			subxact_records = subxact_records ?
				repalloc(subxact_records, sizeof(SubxactRecord) * subxact_record_space) :
				MemoryContextAlloc(TopMemoryContext, sizeof(SubxactRecord) * subxact_record_space);
		}
		subxact_records[subxact_record_count].id = mySubid;
		subxact_records[subxact_record_count].python_depth = orochi_python_depth;
		subxact_records[subxact_record_count].internal_depth = orochi_internal_subxact_depth();
		subxact_record_count++;
		return;
	}
	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (i = subxact_record_count - 1; i >= 0; i--)
		if (subxact_records[i].id == mySubid)
			break;
	if (i < 0)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		SubxactRecord *rec = &subxact_records[i];

		/*
		 * Deeper in Python than when it began: an ERROR unwound past a call
		 * into Python (see orochi_xact_callback).  (Shallower is fine: C
		 * rolls back what Python left open once the call has returned.)
		 */
		if (orochi_python_depth > rec->python_depth)
		{
			if (!proc_exit_inprogress)
				python_poisoned = true;
			orochi_python_depth = rec->python_depth;
		}
		orochi_spi_at_subxact_abort(mySubid, rec->internal_depth);
	}
	subxact_record_count = i;
}

static void
orochi_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	const char *name = NULL;
	bool		may_error = false;
	int			level;

	track_subxact(event, mySubid);
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
	if (!xact_touched || level == 0 || !orochi_python_cleanup_allowed())
		return;
	call_xact_hook("subxact_event", Py_BuildValue("(si)", name, level), may_error);
}

void
orochi_register_callbacks(void)
{
	RegisterXactCallback(orochi_xact_callback, NULL);
	RegisterSubXactCallback(orochi_subxact_callback, NULL);
}
