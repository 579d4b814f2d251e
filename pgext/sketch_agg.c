/*-------------------------------------------------------------------------
 *
 * sketch_agg.c
 *		  Buffered transition function of the sketch aggregates
 *		  (orochi.approx_count_distinct, hll_agg, tdigest_agg,
 *		  approx_percentile) over rows that Postgres feeds one at a time.
 *
 * The sketches are built in Python (orochi_fdw/sketches/sqlapi.py), which
 * keeps a builder per aggregate state and hands Postgres a token naming it.
 * Calling Python for every row costs far more than the sketch itself, so
 * this transition function keeps the values of a group in the state, packed
 * as 8 bytes each, and hands them to the builder in batches of
 * SKETCH_BATCH_MAX values; a builder that keeps every value anyway (a
 * t-digest's) answers the first batch so, and the state then keeps the
 * values (up to SKETCH_KEEP_MAX), in the aggregate's memory context where
 * Postgres accounts for them.  The serialization, combine and final
 * functions hand the values still buffered to the builder (a memoryview)
 * before calling Python with the token.  The first row of a group goes
 * through Python as before: it creates the builder, checks the parameters
 * (precision, compression, quantiles) and ties the builder to the
 * aggregate's memory context.
 *
 * Plumbing only: a value is packed as the 8 bytes Postgres already holds (an
 * integer widened to int64, a float as float8 bits, a date, time or
 * timestamp as its int64 count), and Python decides what the bytes mean for
 * the sketch (canonical forms, hashing).  Values of other types, and values
 * Python converts specially (infinite dates and timestamps, 24:00:00, years
 * outside 1..9999), take the per-row Python path.
 *
 * The aggregates' state is internal: a bytea (the token, or a SketchBuf:
 * magic, header, token and values) allocated in the aggregate's memory
 * context and changed in place; when it grows a new one replaces it.  The
 * plain aggregates are never used as window functions (their
 * FINALFUNC_MODIFY is READ_WRITE and their moving forms, with a bytea state,
 * are READ_ONLY, so Postgres always takes the moving forms there).  Being
 * internal, the state has serialization functions and the aggregates a
 * combine function: Postgres runs them in parallel workers (Partial
 * Aggregate), each worker's state is serialized by Python (the HLL sketch,
 * or a t-digest's values) and the leader folds them together (Finalize
 * Aggregate).  Every support function checks that it runs in an aggregate
 * and that a state it is given has the header of one of ours.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "catalog/pg_type_d.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "utils/date.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(orochi_sketch_trans);
PG_FUNCTION_INFO_V1(orochi_sketch_final);
PG_FUNCTION_INFO_V1(orochi_sketch_serialize);
PG_FUNCTION_INFO_V1(orochi_sketch_deserialize);
PG_FUNCTION_INFO_V1(orochi_sketch_combine);
extern Datum orochi_py_call(PG_FUNCTION_ARGS);

#define SKETCH_BUF_MAGIC "OSB\x01"
#define SKETCH_TOKEN_LEN 16		/* sqlapi._token: magic, pid, state id */
#define SKETCH_TOKEN_MAGIC "OSK\x01"
#define SKETCH_BATCH_MIN 64
#define SKETCH_BATCH_MAX 65536
/* most values a state keeps when its builder keeps them all (512 MB) */
#define SKETCH_KEEP_MAX (1 << 26)

/* what the packed values are; sqlapi.py keeps the same numbers */
#define SKETCH_KIND_INT64 1
#define SKETCH_KIND_FLOAT64 2
/*
 * Set in kind once the builder answered a batch with true (a t-digest
 * builder, which keeps every value until the end): the state then keeps its
 * values, in the aggregate's memory context (so that Postgres accounts for
 * them), up to SKETCH_KEEP_MAX, and hands them over when serialized,
 * combined or finished.
 */
#define SKETCH_KIND_KEEP 0x100

/*
 * The bytes of a buffered state, after the varlena header (little-endian,
 * read by sqlapi._BUF_HEADER): magic, kind, count, capacity, value type,
 * the builder's token, then capacity values of which count are used.
 */
typedef struct SketchBuf
{
	int32		vl_len_;
	char		magic[4];
	int32		kind;
	int32		count;
	int32		capacity;
	Oid			valtype;
	char		token[SKETCH_TOKEN_LEN];
	int64		values[FLEXIBLE_ARRAY_MEMBER];
} SketchBuf;

/* days from 2000-01-01 of 0001-01-01 and 9999-12-31: Python's date range */
#define PY_MIN_DAY (-730119)
#define PY_MAX_DAY 2921939

static bool
sketch_type_packable(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
		case TIMEOID:
			return true;
		default:
			return false;
	}
}

/*
 * sketch_pack
 *		The 8 bytes of one value of a packable type, or false when the value
 *		must take the per-row path (Python converts it specially).
 */
static inline bool
sketch_pack(Oid typid, Datum d, int64 *out)
{
	switch (typid)
	{
		case BOOLOID:
			*out = DatumGetBool(d) ? 1 : 0;
			return true;
		case INT2OID:
			*out = DatumGetInt16(d);
			return true;
		case INT4OID:
			*out = DatumGetInt32(d);
			return true;
		case INT8OID:
			*out = DatumGetInt64(d);
			return true;
		case OIDOID:
			*out = (int64) DatumGetObjectId(d);
			return true;
		case FLOAT4OID:
			{
				float8		f = (float8) DatumGetFloat4(d);

				memcpy(out, &f, sizeof(int64));
				return true;
			}
		case FLOAT8OID:
			{
				float8		f = DatumGetFloat8(d);

				memcpy(out, &f, sizeof(int64));
				return true;
			}
		case DATEOID:
			{
				DateADT		v = DatumGetDateADT(d);

				if (v < PY_MIN_DAY || v > PY_MAX_DAY)
					return false;
				*out = v;
				return true;
			}
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			{
				int64		v = DatumGetInt64(d);

				if (v < (int64) PY_MIN_DAY * USECS_PER_DAY ||
					v >= ((int64) PY_MAX_DAY + 1) * USECS_PER_DAY)
					return false;
				*out = v;
				return true;
			}
		case TIMEOID:
			{
				TimeADT		v = DatumGetTimeADT(d);

				if (v < 0 || v >= USECS_PER_DAY)
					return false;
				*out = v;
				return true;
			}
		default:
			return false;
	}
}

/*
 * is_sketch_buf
 *		Whether the state is a buffered one.  Its header is checked against
 *		its size before any value is written: a state can come from another
 *		aggregate built on the same transition function (a user's initial
 *		condition), not only from sketch_buf_new.
 */
static inline bool
is_sketch_buf(struct varlena *state)
{
	SketchBuf  *buf = (SketchBuf *) state;

	if (!VARATT_IS_4B_U(state) ||
		VARSIZE(state) < offsetof(SketchBuf, values) ||
		memcmp(buf->magic, SKETCH_BUF_MAGIC, 4) != 0)
		return false;
	if (buf->capacity < SKETCH_BATCH_MIN ||
		buf->capacity > ((buf->kind & SKETCH_KIND_KEEP) ? SKETCH_KEEP_MAX : SKETCH_BATCH_MAX) ||
		buf->count < 0 || buf->count > buf->capacity ||
		VARSIZE(state) != offsetof(SketchBuf, values) + sizeof(int64) * (Size) buf->capacity)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid sketch aggregate state"),
				 errdetail("The state's header does not match its %u bytes.",
						   (unsigned int) VARSIZE(state))));
	return true;
}

/* An empty state of capacity values (in the current memory context) */
static SketchBuf *
sketch_buf_new(int capacity, int kind, Oid valtype, const char *token)
{
	Size		size = offsetof(SketchBuf, values) + sizeof(int64) * capacity;
	SketchBuf  *buf = palloc(size);

	SET_VARSIZE(buf, size);
	memcpy(buf->magic, SKETCH_BUF_MAGIC, 4);
	buf->kind = kind;
	buf->count = 0;
	buf->capacity = capacity;
	buf->valtype = valtype;
	memcpy(buf->token, token, SKETCH_TOKEN_LEN);
	return buf;
}

/*
 * sketch_release_view
 *		Release the memoryview over a state's values once Python returned:
 *		whatever Python still holds of it can then no longer reach memory the
 *		aggregate moves (repalloc) or frees.  False when something still
 *		exports its buffer (an array over the values kept past the call).
 *		Raises nothing: it runs while an ERROR unwinds too.
 */
static bool
sketch_release_view(PyObject *view)
{
	PyObject   *res = PyObject_CallMethod(view, "release", NULL);
	bool		released = (res != NULL);

	Py_XDECREF(res);
	if (!released)
		PyErr_Clear();
	Py_DECREF(view);
	return released;
}

/*
 * sketch_flush
 *		Hand the buffered values to the state's builder
 *		(sqlapi.buffer_add).  The memoryview lives only for the call: it is
 *		released once Python returned, on an error too (after the exception,
 *		and the frames of its traceback that may hold arrays over the values,
 *		are gone), and Python copies what it keeps.  A Python error, or a
 *		Postgres error that Python caught, becomes an ERROR once every
 *		reference is released.  A builder that answers true keeps every
 *		value: the state keeps them from then on.  The state is updated
 *		before the interrupts are checked, so that it never hands the same
 *		values over twice.
 */
static void
sketch_flush(SketchBuf *buf)
{
	PyObject   *func;
	PyObject   *view;
	PyObject   *args;
	PyObject   *res = NULL;

	if (buf->count == 0)
		return;
	func = orochi_runtime_func("call_sql_function");
	view = PyMemoryView_FromMemory((char *) buf->values, (Py_ssize_t) sizeof(int64) * buf->count,
								   PyBUF_READ);
	if (view == NULL)
	{
		Py_DECREF(func);
		orochi_py_raise("sketch aggregate");
	}
	args = Py_BuildValue("(sy#iO)", "sketch_buffer_add", buf->token, (Py_ssize_t) SKETCH_TOKEN_LEN,
						 buf->kind & ~SKETCH_KIND_KEEP, view);
	if (args != NULL)
	{
		res = orochi_py_invoke(func, args, NULL);
		Py_DECREF(args);
	}
	Py_DECREF(func);
	if (res == NULL || orochi_error_pending())
	{
		Py_XDECREF(res);
		PG_TRY();
		{
			orochi_py_raise("sketch aggregate");
		}
		PG_CATCH();
		{
			(void) sketch_release_view(view);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	if (res == Py_True)
		buf->kind |= SKETCH_KIND_KEEP;
	Py_DECREF(res);
	buf->count = 0;
	if (!sketch_release_view(view))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("sketch aggregate builder kept a reference to the buffered values")));
	CHECK_FOR_INTERRUPTS();
}

/*
 * sketch_state_arg
 *		An internal state argument: NULL, a buffered state, or a token; any
 *		other bytes are refused (a user's aggregate could pair these
 *		functions with another transition function).
 */
static struct varlena *
sketch_state_arg(FunctionCallInfo fcinfo, int argno)
{
	struct varlena *state;

	if (PG_ARGISNULL(argno))
		return NULL;
	state = (struct varlena *) PG_GETARG_POINTER(argno);
	if (state == NULL)
		return NULL;
	if (is_sketch_buf(state))
		return state;
	if (!VARATT_IS_4B_U(state) || VARSIZE(state) != VARHDRSZ + SKETCH_TOKEN_LEN ||
		memcmp(VARDATA(state), SKETCH_TOKEN_MAGIC, 4) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid sketch aggregate state")));
	return state;
}

/*
 * sketch_call_with_tokens
 *		orochi_py_call with each buffered state among the first nstates
 *		arguments flushed to its builder and replaced, for the call, by its
 *		token: Python gets the values through a memoryview (no copy of a
 *		state that may hold millions of them) and the same builder.
 */
static Datum
sketch_call_with_tokens(FunctionCallInfo fcinfo, int nstates)
{
	Datum		saved[2] = {0, 0};
	Datum		result;

	Assert(nstates <= 2);
	for (int i = 0; i < nstates; i++)
		saved[i] = fcinfo->args[i].value;
	/* the flushes too: an ERROR in one leaves the arguments as they were */
	PG_TRY();
	{
		for (int i = 0; i < nstates; i++)
		{
			struct varlena *state = sketch_state_arg(fcinfo, i);

			if (state != NULL && is_sketch_buf(state))
			{
				SketchBuf  *buf = (SketchBuf *) state;
				struct varlena *token = palloc(VARHDRSZ + SKETCH_TOKEN_LEN);

				sketch_flush(buf);
				SET_VARSIZE(token, VARHDRSZ + SKETCH_TOKEN_LEN);
				memcpy(VARDATA(token), buf->token, SKETCH_TOKEN_LEN);
				fcinfo->args[i].value = PointerGetDatum(token);
			}
		}
		result = orochi_py_call(fcinfo);
	}
	PG_FINALLY();
	{
		for (int i = 0; i < nstates; i++)
			fcinfo->args[i].value = saved[i];
	}
	PG_END_TRY();
	return result;
}

/* The aggregate's memory context, or an error outside an aggregate */
static MemoryContext
sketch_agg_context(FunctionCallInfo fcinfo)
{
	MemoryContext aggcontext;

	if (AggCheckCallContext(fcinfo, &aggcontext) != AGG_CONTEXT_AGGREGATE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("sketch aggregate support function called outside an aggregate")));
	return aggcontext;
}

/* A copy of a varlena in the aggregate's memory context */
static struct varlena *
sketch_state_copy(MemoryContext aggcontext, struct varlena *v)
{
	struct varlena *copy = MemoryContextAlloc(aggcontext, VARSIZE_ANY(v));

	memcpy(copy, v, VARSIZE_ANY(v));
	if (!VARATT_IS_4B_U(v))
	{
		/* a short header (a Python result): made a plain 4-byte one */
		pfree(copy);
		copy = MemoryContextAlloc(aggcontext, VARSIZE_ANY_EXHDR(v) + VARHDRSZ);
		SET_VARSIZE(copy, VARSIZE_ANY_EXHDR(v) + VARHDRSZ);
		memcpy(VARDATA(copy), VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	}
	return copy;
}

/*
 * orochi_sketch_trans
 *		sketch_hll_trans, sketch_tdigest_trans, sketch_percentile_trans:
 *		(state internal, value, parameters...) -> state.  The state is a
 *		bytea in the aggregate's memory context, NULL before the group's
 *		first row; a row with a NULL value or parameter is skipped (the
 *		function is not strict: an internal state starts as NULL).
 */
Datum
orochi_sketch_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = sketch_agg_context(fcinfo);
	struct varlena *state;
	SketchBuf  *buf;
	int64		packed;

	for (int i = 1; i < PG_NARGS(); i++)
		if (PG_ARGISNULL(i))
		{
			if (PG_ARGISNULL(0))
				PG_RETURN_NULL();
			PG_RETURN_DATUM(PG_GETARG_DATUM(0));
		}
	state = sketch_state_arg(fcinfo, 0);

	if (state != NULL && is_sketch_buf(state))
	{
		buf = (SketchBuf *) state;
		if (!sketch_pack(buf->valtype, PG_GETARG_DATUM(1), &packed))
		{
			/* a value Python converts specially: the per-row path, same builder */
			(void) orochi_py_call(fcinfo);
			fcinfo->isnull = false;
			PG_RETURN_POINTER(buf);
		}
		if (buf->count == buf->capacity)
		{
			int			max = (buf->kind & SKETCH_KIND_KEEP) ? SKETCH_KEEP_MAX : SKETCH_BATCH_MAX;

			if (buf->capacity < max)
			{
				/* in place when it can (repalloc keeps the chunk's context) */
				int			capacity = Min(buf->capacity * 2, max);
				Size		size = offsetof(SketchBuf, values) + sizeof(int64) * capacity;

				buf = repalloc(buf, size);
				SET_VARSIZE(buf, size);
				buf->capacity = capacity;
			}
			else
				sketch_flush(buf);
		}
		buf->values[buf->count++] = packed;
		PG_RETURN_POINTER(buf);
	}

	if (state == NULL)
	{
		/* a group's first row: Python creates the builder and takes the value */
		Oid			valtype = get_fn_expr_argtype(fcinfo->flinfo, 1);
		Datum		token;
		struct varlena *t;
		MemoryContext old;

		token = orochi_py_call(fcinfo);
		if (fcinfo->isnull)
			PG_RETURN_NULL();
		t = (struct varlena *) DatumGetPointer(token);
		if (!sketch_type_packable(valtype) || VARSIZE_ANY_EXHDR(t) != SKETCH_TOKEN_LEN)
			PG_RETURN_POINTER(sketch_state_copy(aggcontext, t));
		old = MemoryContextSwitchTo(aggcontext);
		buf = sketch_buf_new(SKETCH_BATCH_MIN,
							 (valtype == FLOAT4OID || valtype == FLOAT8OID) ?
							 SKETCH_KIND_FLOAT64 : SKETCH_KIND_INT64,
							 valtype, VARDATA_ANY(t));
		MemoryContextSwitchTo(old);
		PG_RETURN_POINTER(buf);
	}

	/* a state kept by Python alone (values of other types) */
	(void) orochi_py_call(fcinfo);
	fcinfo->isnull = false;
	PG_RETURN_POINTER(state);
}

/*
 * orochi_sketch_final
 *		The final functions of the internal-state aggregates (Python,
 *		sqlapi.py: they take the values still buffered and drop the builder).
 */
Datum
orochi_sketch_final(PG_FUNCTION_ARGS)
{
	(void) sketch_agg_context(fcinfo);
	return sketch_call_with_tokens(fcinfo, 1);
}

/*
 * orochi_sketch_serialize
 *		sketch_serialize(internal) -> bytea: a partial aggregate's state as
 *		the bytes Python makes of its builder (sqlapi.serialize).
 */
Datum
orochi_sketch_serialize(PG_FUNCTION_ARGS)
{
	(void) sketch_agg_context(fcinfo);
	return sketch_call_with_tokens(fcinfo, 1);
}

/*
 * orochi_sketch_deserialize
 *		sketch_deserialize(bytea, internal) -> internal: a new builder from
 *		serialized bytes, as its token (in the current memory context:
 *		sketch_combine copies what it keeps).  The second argument is a
 *		dummy Postgres passes as a NULL pointer: Python does not see it.
 */
Datum
orochi_sketch_deserialize(PG_FUNCTION_ARGS)
{
	bool		dummy_isnull = fcinfo->args[1].isnull;
	Datum		result;

	(void) sketch_agg_context(fcinfo);
	fcinfo->args[1].isnull = true;
	PG_TRY();
	{
		result = orochi_py_call(fcinfo);
	}
	PG_FINALLY();
	{
		fcinfo->args[1].isnull = dummy_isnull;
	}
	PG_END_TRY();
	return result;
}

/*
 * orochi_sketch_combine
 *		sketch_combine(internal, internal) -> internal: the second state's
 *		builder folded into the first's (sqlapi.combine).
 */
Datum
orochi_sketch_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = sketch_agg_context(fcinfo);
	struct varlena *state = sketch_state_arg(fcinfo, 0);
	struct varlena *other = sketch_state_arg(fcinfo, 1);

	if (other == NULL)
	{
		if (state == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(state);
	}
	if (state == NULL)
		PG_RETURN_POINTER(sketch_state_copy(aggcontext, other));
	(void) sketch_call_with_tokens(fcinfo, 2);
	fcinfo->isnull = false;
	PG_RETURN_POINTER(state);
}
