/*-------------------------------------------------------------------------
 *
 * orochi.c
 *		  Module start-up, settings, and the foreign-data wrapper's handler
 *		  and option validator.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include <float.h>

#include "access/reloptions.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_user_mapping.h"
#include "utils/builtins.h"
#include "miscadmin.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* settings Python reads (orochi_fdw.bridge.wrappers) */
bool		orochi_allow_test_wrappers = false;
bool		orochi_duckdb_join_enabled = true;
bool		orochi_insert_fast_path = true;
bool		orochi_fence_writes = false;
char	   *orochi_trusted_wrappers = NULL;

/* read by Python (orochi_fdw.query.engine) through current_setting() */
static bool orochi_duckdb_shared_reads = true;

/* read by Python (orochi_fdw.cluster) through current_setting() */
static int	orochi_node_connect_timeout = 5000;
static char *orochi_fault_points = NULL;

/* read by Python (orochi_fdw.tiering.objects) */
static int	orochi_tier_cache_size = 256 * 1024;	/* kB */
static int	orochi_tier_parallel_requests = 8;

/* the expression JIT (orochi_fdw.jit): the C planner reads jit_enabled,
 * Python the others through current_setting() */
bool		orochi_jit_enabled = true;
static double orochi_jit_min_cost = 50000;
static bool orochi_jit_cache_enabled = true;
static int	orochi_jit_optimization_level = 3;
static char *orochi_jit_cache_directory = NULL;

void
_PG_init(void)
{
	DefineCustomStringVariable("orochi.python_venv",
							   "Virtualenv whose Python the backends embed.",
							   "It must be made from the system python3.11 with the orochi "
							   "package installed. Takes effect in backends that have not "
							   "started Python yet.",
							   &orochi_python_venv,
							   OROCHI_DEFAULT_VENV,
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.node_connect_timeout",
							"Time allowed to open a connection to a worker node.",
							"A worker that does not answer within it fails the statement "
							"with an error naming the node.",
							&orochi_node_connect_timeout,
							5000, 1, 3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("orochi.fault_points",
							   "For tests only: protocol steps of distributed commits to pause at.",
							   "A list of step=file pairs: at that step the backend logs that it "
							   "waits and waits until the file exists.",
							   &orochi_fault_points,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.jit_enabled",
							 "Compiles expressions of single-table aggregations over orochi "
							 "tables into fused kernels (numba).",
							 "Only expressions computed exactly as PostgreSQL computes them "
							 "are compiled (docs/jit.md); others run as before.",
							 &orochi_jit_enabled,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomRealVariable("orochi.jit_min_cost",
							 "Estimated cost of evaluating the expressions in PostgreSQL above "
							 "which a kernel not yet compiled is compiled.",
							 "A kernel already compiled in this backend, or found in the "
							 "kernel cache on disk, is used whatever the cost.",
							 &orochi_jit_min_cost,
							 50000, 0, DBL_MAX,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.jit_cache_enabled",
							 "Caches compiled expression kernels per backend and on disk.",
							 "Kernels are keyed by the expression's shape (constants are "
							 "arguments), so a new backend loads them instead of compiling.",
							 &orochi_jit_cache_enabled,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.jit_optimization_level",
							"LLVM optimization level of compiled expression kernels (0-3).",
							NULL,
							&orochi_jit_optimization_level,
							3, 0, 3,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("orochi.jit_cache_directory",
							   "Directory of the on-disk cache of compiled expression kernels.",
							   "Empty: orochi_jit_cache under the data directory.",
							   &orochi_jit_cache_directory,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.duckdb_join_enabled",
							 "Runs joins of orochi columnar tables in the embedded DuckDB engine.",
							 "Only joins whose every condition and output DuckDB computes "
							 "exactly as PostgreSQL does are offered (docs/query.md).",
							 &orochi_duckdb_join_enabled,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.duckdb_shared_reads",
							 "Reads a table once for the join engine's inputs of a statement "
							 "that read it with the same conditions.",
							 "Within one join (a self-join, a correlated subquery over a table "
							 "of the join) and across a statement's joins (an InitPlan's and the "
							 "query's), within the inputs' work_mem (docs/query.md).",
							 &orochi_duckdb_shared_reads,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.insert_fast_path",
							 "Lets the bridge write one-row INSERTs into columnar tables "
							 "straight into their delta store.",
							 "Off, every INSERT goes through the table's Python wrapper.",
							 &orochi_insert_fast_path,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.fence_writes",
							 "Makes every transaction read-only, whatever it asks for.",
							 "The HA sidecar sets it on a primary that lost its lease; unlike "
							 "default_transaction_read_only, a client cannot opt out "
							 "(BEGIN READ WRITE, SET transaction_read_only).",
							 &orochi_fence_writes,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("orochi.allow_test_wrappers",
							 "Lets tables use the wrappers the orochi package ships for its tests.",
							 "They exercise the bridge (one writes to a file the table names); "
							 "a production server leaves this off.",
							 &orochi_allow_test_wrappers,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("orochi.trusted_wrappers",
							   "Wrappers that roles other than superusers may name in the wrapper "
							   "option of their servers and foreign tables.",
							   "A comma-separated list of declared wrapper names.",
							   &orochi_trusted_wrappers,
							   "columnar",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.tier_cache_size",
							"Size of each backend's cache of byte ranges read from object storage.",
							"Column chunks of tiered chunks are kept in it, least recently "
							"used dropped first.",
							&orochi_tier_cache_size,
							256 * 1024, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.tier_parallel_requests",
							"Range requests to object storage a scan keeps in flight.",
							NULL,
							&orochi_tier_parallel_requests,
							8, 1, 64,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);
	orochi_vector_define_settings();
	DefineCustomStringVariable("orochi.fault_injection",
							   "Named phases at which Orochi operations pause (tests only).",
							   "A comma-separated list of fault points (name or name@N for "
							   "the N-th time it is reached); an operation reaching one "
							   "waits for an advisory lock that the test holds. Empty: none.",
							   &orochi_fault_injection,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	orochi_wal_init();
	orochi_workload_init();
	orochi_executor_stats_init();
	MarkGUCPrefixReserved("orochi");
	orochi_register_callbacks();
	orochi_install_hooks();
	orochi_install_planner_hooks();
	if (process_shared_preload_libraries_in_progress)
		orochi_python_preload();
}

PG_FUNCTION_INFO_V1(orochi_fdw_handler);
PG_FUNCTION_INFO_V1(orochi_fdw_validator);

/*
 * orochi_fdw_handler
 *		The FdwRoutine; every callback hands over to Python.
 */
Datum
orochi_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	orochi_fill_scan_routine(routine);
	orochi_fill_modify_routine(routine);
	PG_RETURN_POINTER(routine);
}

/*
 * orochi_fdw_validator
 *		Options are checked by Python (runtime.validate_options), which knows
 *		what each wrapper accepts; an unknown option or a value of the wrong
 *		type is rejected at CREATE / ALTER time.
 */
Datum
orochi_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	const char *kind;
	PyObject   *res;

	orochi_python_ensure();

	switch (catalog)
	{
		case ForeignDataWrapperRelationId:
			kind = "wrapper";
			break;
		case ForeignServerRelationId:
			kind = "server";
			break;
		case ForeignTableRelationId:
			kind = "table";
			break;
		case AttributeRelationId:
			kind = "column";
			break;
		case UserMappingRelationId:
			kind = "user_mapping";
			break;
		default:
			kind = "unknown";
			break;
	}
	res = orochi_runtime_call("validate_options",
							  Py_BuildValue("(sN)", kind, orochi_options_to_dict(options)));
	Py_DECREF(res);
	PG_RETURN_VOID();
}
