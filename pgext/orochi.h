/*-------------------------------------------------------------------------
 *
 * orochi.h
 *		  Private header of the Orochi bridge: a PostgreSQL foreign-data
 *		  wrapper that embeds CPython and hands every callback to Python.
 *
 * The C side is plumbing only.  Every decision (what a qual means, how rows
 * are stored, which options are valid) is taken by the Python package
 * orochi_fdw; this code moves values across the boundary, keeps Python's
 * errors and Postgres's errors apart, and makes query cancel work while
 * Python runs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef OROCHI_H
#define OROCHI_H

/* postgres.h must come first; plpython_system.h then tidies macros for Python.h */
#include "postgres.h"
#include <signal.h>
#define PY_SSIZE_T_CLEAN
#include "plpython_system.h"
#include "mb/pg_wchar.h"

#include "access/tupdesc.h"
#include "access/xact.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "foreign/fdwapi.h"
#include "lib/stringinfo.h"
#include "storage/itemptr.h"
#include "utils/rel.h"
#include "nodes/pg_list.h"
#include "utils/palloc.h"

#ifndef OROCHI_DEFAULT_VENV
#define OROCHI_DEFAULT_VENV "/opt/orochi/venv"
#endif

/*
 * Wire kinds: how one column of a batch is laid out in memory when it
 * crosses the bridge.  The Python side (orochi_fdw/bridge/wire.py) keeps the
 * same numbering; a batch column is the tuple (kind, values, validity,
 * offsets), each buffer a read-only buffer-protocol object.
 */
typedef enum OrochiWireKind
{
	WIRE_NONE = 0,
	WIRE_BOOL = 1,				/* uint8, 0 or 1 */
	WIRE_INT16 = 2,
	WIRE_INT32 = 3,
	WIRE_INT64 = 4,
	WIRE_FLOAT32 = 5,
	WIRE_FLOAT64 = 6,
	WIRE_DATE = 7,				/* int32 days since 2000-01-01 */
	WIRE_TIMESTAMP = 8,			/* int64 microseconds since 2000-01-01 */
	WIRE_TIME = 9,				/* int64 microseconds since midnight */
	WIRE_INTERVAL = 10,			/* 16 bytes: int64 us, int32 days, int32 months */
	WIRE_UUID = 11,				/* 16 bytes */
	WIRE_TEXT = 12,				/* offsets int64[n+1] + UTF-8 bytes */
	WIRE_BYTEA = 13,			/* offsets int64[n+1] + raw bytes */
	WIRE_CSTRING = 14,			/* offsets + bytes, each through the type's input function */
	WIRE_DECIMAL64 = 64			/* numeric as int64 scaled by 10^s, sent as kind 64 + s
								 * (s 0..18); int64 max is NaN */
} OrochiWireKind;

#define WIRE_DECIMAL64_MAX_SCALE 18

/* How to move values of one column (or parameter) between Postgres and Python */
typedef struct OrochiTypeConv
{
	Oid			typoid;
	int32		typmod;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	OrochiWireKind wire;		/* direct wire kind, or WIRE_CSTRING */
	Oid			elemtype;		/* for arrays, the element type; else InvalidOid */
	FmgrInfo	infunc;			/* text input function */
	Oid			inioparam;
	FmgrInfo	outfunc;		/* text output function */
	const char *attname;		/* for error context, may be NULL */
	bool		has_typmodfunc; /* typmod >= 0 and the type has a length coercion */
	FmgrInfo	typmodfunc;		/* varchar(n), numeric(p,s), timestamp(p) ... */
} OrochiTypeConv;

/* in py_runtime.c */
extern char *orochi_python_venv;
extern int	orochi_python_depth;
extern int	orochi_unwinding;
extern void orochi_python_ensure(void);
extern void orochi_python_preload(void);
extern PyObject *orochi_runtime_func(const char *name);
extern PyObject *orochi_runtime_call(const char *name, PyObject *args);
extern void orochi_py_raise(const char *context) pg_attribute_noreturn();
extern void orochi_py_enter(void);
extern void orochi_py_leave(void);
extern PyObject *orochi_py_invoke(PyObject *callable, PyObject *args, PyObject *kwargs);
extern PyObject *orochi_py_next(PyObject *iterator);
extern bool orochi_python_cleanup_allowed(void);
extern bool orochi_in_backend_thread(void);
extern PyObject *orochi_call(PyObject *callable, PyObject *args, PyObject *kwargs);
extern void orochi_mark_xact_touched(void);
extern int	orochi_savepoint_depth(void);
extern void orochi_register_callbacks(void);
extern void orochi_install_signal_wrappers(void);
extern volatile sig_atomic_t *orochi_interrupt_flag(void);
extern void orochi_consume_python_interrupt(void);

/*
 * Releasing a Python reference in a PG_CATCH or PG_FINALLY block, where
 * Postgres may be unwinding an error: a finalizer that runs there (a
 * generator's finally block, a __del__) finds _orochi_pg refusing to touch
 * Postgres (orochi_unwinding > 0) instead of running SQL mid-error.
 */
#define OROCHI_RELEASE(obj) \
	do { \
		orochi_unwinding++; \
		Py_XDECREF(obj); \
		orochi_unwinding--; \
	} while (0)

/* in py_convert.c */
extern void orochi_type_conv_init(OrochiTypeConv *conv, Oid typoid, int32 typmod, const char *attname);
extern OrochiWireKind orochi_wire_kind_for_type(Oid typoid, int32 typmod);
extern PyObject *orochi_datum_to_py(Datum value, bool isnull, OrochiTypeConv *conv);
extern Datum orochi_py_to_datum(PyObject *obj, OrochiTypeConv *conv, bool *isnull);
extern PyObject *orochi_cstring_to_py(const char *s);
extern Oid	orochi_guess_param_type(PyObject *obj);
extern char *orochi_py_to_cstring(PyObject *obj);
extern char *orochi_utf8_to_server_lossy(const char *utf8);
extern PyObject *orochi_options_to_dict(List *options);
extern PyObject *orochi_tupdesc_columns(TupleDesc tupdesc, Oid relid);
extern void orochi_convert_init(void);

/* A batch received from Python and the position of the next row in it */
typedef struct OrochiBatchReader
{
	PyObject   *owner;			/* keeps the buffers alive */
	int64		nrows;
	int64		next;
	int			ncols;			/* attributes of the tuple descriptor */
	/* per attribute (0-based), NULL buffers for columns not delivered */
	OrochiWireKind *kinds;
	Py_buffer  *values;
	Py_buffer  *validity;
	Py_buffer  *offsets;
	bool	   *present;
	int		   *scales;			/* WIRE_DECIMAL64: the values' scale */
	/* variable-width columns built as varlenas once per batch (or NULL) */
	Datum	  **datums;
	char	  **varlenas;
	/* whether storing a row allocates (the caller then resets per row) */
	bool		allocates;
	/* row ids (int64 per row) if the wrapper delivered them */
	Py_buffer	rowids;
	bool		has_rowids;
} OrochiBatchReader;

extern void orochi_batch_open(OrochiBatchReader *reader, PyObject *wire, TupleDesc tupdesc,
							  OrochiTypeConv *convs);
extern void orochi_batch_close(OrochiBatchReader *reader);
extern void orochi_batch_store_row(OrochiBatchReader *reader, TupleTableSlot *slot,
								   OrochiTypeConv *convs);
extern void orochi_row_store(PyObject *row, TupleTableSlot *slot, OrochiTypeConv *convs,
							 PyObject **attnames);
extern void orochi_rowid_to_tid(int64 rowid, ItemPointer tid);
extern int64 orochi_tid_to_rowid(ItemPointer tid);

/* A growing column buffer filled from slots, handed to Python as one batch */
typedef struct OrochiBatchWriter
{
	int			ncols;
	int64		nrows;
	OrochiWireKind *kinds;
	StringInfoData *values;
	StringInfoData *validity;
	StringInfoData *offsets;
	MemoryContext cxt;
} OrochiBatchWriter;

extern void orochi_batch_writer_init(OrochiBatchWriter *writer, TupleDesc tupdesc,
									 OrochiTypeConv *convs, MemoryContext cxt);
extern void orochi_batch_writer_add(OrochiBatchWriter *writer, TupleTableSlot *slot,
									OrochiTypeConv *convs);
extern PyObject *orochi_batch_writer_take(OrochiBatchWriter *writer, TupleDesc tupdesc);

/* in fdw_scan.c */
extern void orochi_fill_scan_routine(FdwRoutine *routine);

/* in fdw_modify.c */
extern void orochi_fill_modify_routine(FdwRoutine *routine);
extern PyObject *orochi_instance_for_relation(Relation rel);

/* in py_expr.c */
struct PlannerInfo;
extern PyObject *orochi_expr_to_py(struct PlannerInfo *root, Node *node);
extern PyObject *orochi_expr_list_to_py(struct PlannerInfo *root, List *exprs);
/* in fdw_scan.c: whether a planner rel is a table of this wrapper */
extern bool orochi_rel_is_own(struct RelOptInfo *rel);

/* in orochi.c */
extern bool orochi_duckdb_join_enabled;
extern bool orochi_jit_enabled;
extern PyObject *orochi_instance_for_relid(Oid relid);
extern void orochi_flush_pending_writes(void);
extern bool orochi_has_pending_writes(void);
extern void orochi_modify_xact_callback(XactEvent event, void *arg);
extern void orochi_modify_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
										   SubTransactionId parentSubid, void *arg);

/* in hooks.c */
extern void orochi_install_hooks(void);
extern void orochi_install_planner_hooks(void);
extern bool orochi_function_sees_writes(Oid funcid);
extern bool orochi_is_orochi_table(Oid relid);

/* in orochi.c */
extern Datum orochi_fdw_handler(PG_FUNCTION_ARGS);

/* in vector.c */
extern void orochi_vector_define_settings(void);
extern bool orochi_is_vector_type(Oid typoid);
extern void orochi_vector_check_payload(const char *data, int64 len, int32 typmod);
extern Datum orochi_vector_from_bytes(const char *data, int64 len, int32 typmod);

/* in wal.c */
#ifndef OROCHI_WAL_RMGR_ID
#define OROCHI_WAL_RMGR_ID 157	/* in the custom range 128..255; see docs/STORAGE.md */
#endif
extern void orochi_wal_init(void);
extern PyObject *orochi_wal_module_init(void);

/* in workload.c */
extern void orochi_workload_init(void);

/* in executor_stats.c */
extern void orochi_executor_stats_init(void);
extern PyObject *orochi_stats_module_init(void);

/* in py_spi.c */
extern char *orochi_fault_injection;
extern bool orochi_insert_fast_path;
extern bool orochi_fence_writes;
extern PyObject *orochi_pg_module_init(void);
extern bool orochi_in_internal_subxact(void);
extern PyObject *orochi_set_spi_error(ErrorData *edata);
extern int	orochi_internal_subxact_depth(void);
extern void orochi_spi_at_subxact_abort(SubTransactionId subid, int internal_depth);
extern void orochi_spi_at_xact_end(void);
extern bool orochi_error_pending(void);
extern void orochi_rethrow_pending(void) pg_attribute_noreturn();
extern void orochi_check_pending(PyObject *result);
extern int	orochi_python_subxact_count(void);
extern int	orochi_close_python_subxacts(int keep);

/* in py_security.c */
typedef struct OrochiSecuritySave
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} OrochiSecuritySave;

extern Oid	orochi_extension_owner(void);
extern void orochi_internal_begin(OrochiSecuritySave *save);
extern void orochi_internal_end(OrochiSecuritySave *save);
extern PyMethodDef orochi_security_methods[];

/* in orochi.c */
extern bool orochi_allow_test_wrappers;
extern char *orochi_trusted_wrappers;

#endif							/* OROCHI_H */
