/*-------------------------------------------------------------------------
 *
 * executor_stats.c
 *		  Counters of the distributed executor in shared memory.
 *
 * The backends that run distributed statements (orochi_fdw.cluster.executor,
 * in Python) add to three counters of the server: executions, the shards
 * their tasks covered, and the executions that failed.  They live in a small
 * shared-memory segment, requested at start-up (orochi must be in
 * shared_preload_libraries), as pg_atomic_uint64: a backend adds without a
 * lock.  Python adds through the _orochi_stats module; SQL reads them with
 * orochi.executor_counters(), and the orochi-sidecar exports them on
 * /metrics.  They start at zero when the server starts (and after a crash
 * restart), like PostgreSQL's own cumulative statistics.
 *
 * Plumbing only: what counts as an execution is decided in Python.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

typedef struct ExecutorStatsShared
{
	pg_atomic_uint64 distributed_queries;
	pg_atomic_uint64 shards_accessed;
	pg_atomic_uint64 executor_failures;
	TimestampTz since;			/* when the counters started at zero */
} ExecutorStatsShared;

static ExecutorStatsShared *exec_stats = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
executor_stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(ExecutorStatsShared)));
}

static void
executor_stats_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	exec_stats = ShmemInitStruct("orochi executor counters", sizeof(ExecutorStatsShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&exec_stats->distributed_queries, 0);
		pg_atomic_init_u64(&exec_stats->shards_accessed, 0);
		pg_atomic_init_u64(&exec_stats->executor_failures, 0);
		exec_stats->since = GetCurrentTimestamp();
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * orochi_executor_stats_init
 *		From _PG_init: with shared_preload_libraries, ask for the segment.
 */
void
orochi_executor_stats_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = executor_stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = executor_stats_shmem_startup;
}

/* ---------------------------------------------------------------- Python */

/*
 * add(queries, shards, failures) -> bool
 *		Adds to the counters; False (and nothing counted) when the segment
 *		does not exist (orochi is not preloaded).  Nothing here can raise a
 *		PostgreSQL error.
 */
static PyObject *
stats_add(PyObject *self, PyObject *args)
{
	long long	queries;
	long long	shards;
	long long	failures;

	if (!PyArg_ParseTuple(args, "LLL", &queries, &shards, &failures))
		return NULL;
	if (queries < 0 || shards < 0 || failures < 0)
	{
		PyErr_SetString(PyExc_ValueError, "executor counters only go up");
		return NULL;
	}
	if (exec_stats == NULL)
		Py_RETURN_FALSE;
	if (queries)
		pg_atomic_fetch_add_u64(&exec_stats->distributed_queries, (int64) queries);
	if (shards)
		pg_atomic_fetch_add_u64(&exec_stats->shards_accessed, (int64) shards);
	if (failures)
		pg_atomic_fetch_add_u64(&exec_stats->executor_failures, (int64) failures);
	Py_RETURN_TRUE;
}

/* read() -> (distributed_queries, shards_accessed, executor_failures) or None */
static PyObject *
stats_read(PyObject *self, PyObject *noargs)
{
	if (exec_stats == NULL)
		Py_RETURN_NONE;
	return Py_BuildValue("(KKK)",
						 (unsigned long long) pg_atomic_read_u64(&exec_stats->distributed_queries),
						 (unsigned long long) pg_atomic_read_u64(&exec_stats->shards_accessed),
						 (unsigned long long) pg_atomic_read_u64(&exec_stats->executor_failures));
}

static PyMethodDef stats_methods[] = {
	{"add", stats_add, METH_VARARGS,
	"add(queries, shards, failures) -> bool: add to the server's executor counters"},
	{"read", stats_read, METH_NOARGS,
	"read() -> (distributed_queries, shards_accessed, executor_failures), None if not preloaded"},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef stats_module = {
	PyModuleDef_HEAD_INIT, "_orochi_stats",
	"Counters of the distributed executor, in shared memory.", -1, stats_methods
};

PyObject *
orochi_stats_module_init(void)
{
	return PyModule_Create(&stats_module);
}

/* ---------------------------------------------------------------- SQL */

PG_FUNCTION_INFO_V1(orochi_executor_counters);

/*
 * orochi.executor_counters(OUT distributed_queries bigint, OUT
 *		shards_accessed bigint, OUT executor_failures bigint, OUT since
 *		timestamptz): the counters as one row.
 */
Datum
orochi_executor_counters(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (exec_stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("orochi's executor counters need orochi in shared_preload_libraries")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "orochi.executor_counters must return a row");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int64GetDatum((int64) pg_atomic_read_u64(&exec_stats->distributed_queries));
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&exec_stats->shards_accessed));
	values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&exec_stats->executor_failures));
	values[3] = TimestampTzGetDatum(exec_stats->since);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
