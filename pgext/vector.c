/*-------------------------------------------------------------------------
 *
 * vector.c
 *		  The orochi.vector type: text and binary I/O, its type modifier
 *		  (the dimension), casts from and to arrays, and the distances.
 *
 * A vector is a varlena holding nothing but its float4 elements, so that its
 * payload is exactly the little-endian float32 row a columnar stripe stores
 * and a batch carries (wire kind BYTEA): the bridge moves vectors without
 * looking into them.  The dimension is the payload's size / 4.
 *
 * The distances accumulate in double precision over eight lanes (element i
 * goes to lane i % 8; the lanes are added pairwise, then the tail), the same
 * order as the vector kernels of cython_kernels/vector.pyx, so that the
 * distance a scan sorts by and the one this operator returns are the same
 * float8, bit for bit.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include <float.h>
#include <math.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/* as pgvector */
#define VECTOR_MAX_DIM 16000

/* settings of the searches (read by Python through current_setting) */
static int	orochi_hnsw_ef_search = 0;
static int	orochi_ivfflat_probes = 0;

#define VECTOR_DIM(v)		((int) ((VARSIZE(v) - VARHDRSZ) / sizeof(float4)))
#define VECTOR_DATA(v)		((float4 *) VARDATA(v))
#define PG_GETARG_VECTOR_P(n)	((struct varlena *) PG_DETOAST_DATUM(PG_GETARG_DATUM(n)))

PG_FUNCTION_INFO_V1(orochi_vector_in);
PG_FUNCTION_INFO_V1(orochi_vector_out);
PG_FUNCTION_INFO_V1(orochi_vector_typmod_in);
PG_FUNCTION_INFO_V1(orochi_vector_recv);
PG_FUNCTION_INFO_V1(orochi_vector_send);
PG_FUNCTION_INFO_V1(orochi_vector_coerce);
PG_FUNCTION_INFO_V1(orochi_array_to_vector);
PG_FUNCTION_INFO_V1(orochi_vector_to_float4);
PG_FUNCTION_INFO_V1(orochi_vector_l2_distance);
PG_FUNCTION_INFO_V1(orochi_vector_inner_product);
PG_FUNCTION_INFO_V1(orochi_vector_negative_inner_product);
PG_FUNCTION_INFO_V1(orochi_vector_cosine_distance);
PG_FUNCTION_INFO_V1(orochi_vector_dims);
PG_FUNCTION_INFO_V1(orochi_vector_norm);
PG_FUNCTION_INFO_V1(orochi_vector_l2_normalize);

/*
 * orochi_vector_define_settings
 *		orochi.hnsw_ef_search and orochi.ivfflat_probes.  Their meaning is
 *		Python's (orochi_fdw/vector/search.py); they are defined here because
 *		the orochi prefix is reserved.
 */
void
orochi_vector_define_settings(void)
{
	DefineCustomIntVariable("orochi.hnsw_ef_search",
							"Candidates an HNSW index search keeps (ef); 0: each stripe's own, "
							"measured when its index was built.",
							"Higher finds more of the true nearest neighbours, more slowly.",
							&orochi_hnsw_ef_search,
							0, 0, 100000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.ivfflat_probes",
							"Lists an IVFFlat index search reads; 0: each stripe's own, "
							"measured when its index was built.",
							"Higher finds more of the true nearest neighbours, more slowly.",
							&orochi_ivfflat_probes,
							0, 0, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

/*
 * orochi_is_vector_type
 *		Whether typoid is orochi.vector (the bridge carries it as bytea).
 */
bool
orochi_is_vector_type(Oid typoid)
{
	HeapTuple	tup;
	bool		result = false;

	if (typoid < FirstNormalObjectId)
		return false;
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typoid));
	if (HeapTupleIsValid(tup))
	{
		Form_pg_type typ = (Form_pg_type) GETSTRUCT(tup);

		if (strcmp(NameStr(typ->typname), "vector") == 0)
		{
			char	   *nsp = get_namespace_name(typ->typnamespace);

			result = nsp != NULL && strcmp(nsp, "orochi") == 0;
		}
		ReleaseSysCache(tup);
	}
	return result;
}

static struct varlena *
new_vector(int dim)
{
	struct varlena *v = (struct varlena *) palloc0(VARHDRSZ + sizeof(float4) * dim);

	SET_VARSIZE(v, VARHDRSZ + sizeof(float4) * dim);
	return v;
}

static void
check_dim(int dim)
{
	if (dim < 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("vector must have at least 1 dimension")));
	if (dim > VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("vector cannot have more than %d dimensions", VECTOR_MAX_DIM)));
}

static void
check_expected_dim(int32 typmod, int dim)
{
	if (typmod != -1 && typmod != dim)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("expected %d dimensions, not %d", typmod, dim)));
}

static void
check_element(float4 value)
{
	if (isnan(value))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("NaN not allowed in vector")));
	if (isinf(value))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("infinite value not allowed in vector")));
}

static void
check_same_dims(struct varlena *a, struct varlena *b)
{
	if (VECTOR_DIM(a) != VECTOR_DIM(b))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("different vector dimensions %d and %d", VECTOR_DIM(a), VECTOR_DIM(b))));
}

/* ---------------------------------------------------------------------
 * Text and binary I/O
 * ---------------------------------------------------------------------
 */

/*
 * orochi_vector_in
 *		'[1, 2.5, -3e2]': finite float4 values, blanks allowed around them.
 */
Datum
orochi_vector_in(PG_FUNCTION_ARGS)
{
	char	   *lit = PG_GETARG_CSTRING(0);
	int32		typmod = PG_GETARG_INT32(2);
	char	   *p = lit;
	float4	   *values;
	int			dim = 0;
	int			cap = 16;
	struct varlena *v;

	while (isspace((unsigned char) *p))
		p++;
	if (*p != '[')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type vector: \"%s\"", lit),
				 errdetail("Vector contents must start with \"[\".")));
	p++;
	values = palloc(sizeof(float4) * cap);
	while (isspace((unsigned char) *p))
		p++;
	if (*p == ']')
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("vector must have at least 1 dimension")));
	for (;;)
	{
		char	   *end;
		float4		value;

		while (isspace((unsigned char) *p))
			p++;
		if (*p == '\0' || *p == ',' || *p == ']')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type vector: \"%s\"", lit)));
		errno = 0;
		value = strtof(p, &end);
		if (end == p)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type vector: \"%s\"", lit)));
		if (errno == ERANGE && isinf(value))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("\"%.*s\" is out of range for type real", (int) (end - p), p)));
		check_element(value);
		if (dim == VECTOR_MAX_DIM)
			check_dim(dim + 1);
		if (dim == cap)
		{
			cap *= 2;
			values = repalloc(values, sizeof(float4) * cap);
		}
		values[dim++] = value;
		p = end;
		while (isspace((unsigned char) *p))
			p++;
		if (*p == ',')
		{
			p++;
			continue;
		}
		if (*p == ']')
		{
			p++;
			break;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type vector: \"%s\"", lit)));
	}
	while (isspace((unsigned char) *p))
		p++;
	if (*p != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type vector: \"%s\"", lit),
				 errdetail("Junk after closing right bracket.")));
	check_expected_dim(typmod, dim);
	v = new_vector(dim);
	memcpy(VECTOR_DATA(v), values, sizeof(float4) * dim);
	pfree(values);
	PG_RETURN_POINTER(v);
}

/*
 * orochi_vector_out
 *		'[1,2.5,-300]': the shortest text that reads back to the same float4.
 */
Datum
orochi_vector_out(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);
	int			dim = VECTOR_DIM(v);
	float4	   *x = VECTOR_DATA(v);
	char	   *buf = palloc(dim * (FLOAT_SHORTEST_DECIMAL_LEN + 1) + 2);
	char	   *p = buf;

	*p++ = '[';
	for (int i = 0; i < dim; i++)
	{
		if (i > 0)
			*p++ = ',';
		p += float_to_shortest_decimal_bufn(x[i], p);
	}
	*p++ = ']';
	*p = '\0';
	PG_RETURN_CSTRING(buf);
}

/*
 * orochi_vector_typmod_in
 *		vector(n): n dimensions, 1 to 16000.
 */
Datum
orochi_vector_typmod_in(PG_FUNCTION_ARGS)
{
	ArrayType  *ta = PG_GETARG_ARRAYTYPE_P(0);
	int32	   *tl;
	int			n;

	tl = ArrayGetIntegerTypmods(ta, &n);
	if (n != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid type modifier"),
				 errdetail("A vector takes one type modifier, its number of dimensions.")));
	if (tl[0] < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type vector must be at least 1")));
	if (tl[0] > VECTOR_MAX_DIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dimensions for type vector cannot exceed %d", VECTOR_MAX_DIM)));
	PG_RETURN_INT32(tl[0]);
}

/*
 * orochi_vector_recv
 *		pgvector's binary form: int16 dimensions, int16 unused (0), then each
 *		element as a float4 in network order.
 */
Datum
orochi_vector_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		typmod = PG_GETARG_INT32(2);
	int16		dim = pq_getmsgint(buf, sizeof(int16));
	int16		unused = pq_getmsgint(buf, sizeof(int16));
	struct varlena *v;

	check_dim(dim);
	check_expected_dim(typmod, dim);
	if (unused != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("expected unused to be 0, not %d", unused)));
	v = new_vector(dim);
	for (int i = 0; i < dim; i++)
	{
		VECTOR_DATA(v)[i] = pq_getmsgfloat4(buf);
		check_element(VECTOR_DATA(v)[i]);
	}
	PG_RETURN_POINTER(v);
}

Datum
orochi_vector_send(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint(&buf, VECTOR_DIM(v), sizeof(int16));
	pq_sendint(&buf, 0, sizeof(int16));
	for (int i = 0; i < VECTOR_DIM(v); i++)
		pq_sendfloat4(&buf, VECTOR_DATA(v)[i]);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/*
 * orochi_vector_coerce
 *		vector(vector, typmod, explicit): the length coercion of vector(n).
 */
Datum
orochi_vector_coerce(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);

	check_expected_dim(PG_GETARG_INT32(1), VECTOR_DIM(v));
	PG_RETURN_POINTER(v);
}

/* ---------------------------------------------------------------------
 * Casts from and to arrays
 * ---------------------------------------------------------------------
 */

/*
 * orochi_array_to_vector
 *		real[], double precision[] or integer[] (one dimension, no NULLs,
 *		finite values) as a vector.
 */
Datum
orochi_array_to_vector(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	int32		typmod = PG_GETARG_INT32(1);
	Oid			elemtype = ARR_ELEMTYPE(arr);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	struct varlena *v;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("array must be 1-D")));
	if (elemtype != FLOAT4OID && elemtype != FLOAT8OID && elemtype != INT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("unsupported array type %s", format_type_be(elemtype))));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(arr, elemtype, typlen, typbyval, typalign, &elems, &nulls, &n);
	check_dim(n);
	check_expected_dim(typmod, n);
	v = new_vector(n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("array must not contain nulls")));
		if (elemtype == FLOAT4OID)
			VECTOR_DATA(v)[i] = DatumGetFloat4(elems[i]);
		else if (elemtype == FLOAT8OID)
		{
			float8		d = DatumGetFloat8(elems[i]);

			if (!isnan(d) && !isinf(d) && fabs(d) > FLT_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("value out of range: overflow")));
			VECTOR_DATA(v)[i] = (float4) d;
		}
		else
			VECTOR_DATA(v)[i] = (float4) DatumGetInt32(elems[i]);
		check_element(VECTOR_DATA(v)[i]);
	}
	PG_RETURN_POINTER(v);
}

Datum
orochi_vector_to_float4(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);
	int			dim = VECTOR_DIM(v);
	Datum	   *elems = palloc(sizeof(Datum) * dim);

	for (int i = 0; i < dim; i++)
		elems[i] = Float4GetDatum(VECTOR_DATA(v)[i]);
	PG_RETURN_POINTER(construct_array(elems, dim, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT));
}

/* ---------------------------------------------------------------------
 * Distances: double accumulation in eight lanes (see the file header)
 * ---------------------------------------------------------------------
 */
#define LANES 8

static inline double
lanes_total(const double *acc)
{
	return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static double
squared_l2(const float4 *a, const float4 *b, int n)
{
	double		acc[LANES] = {0};
	double		tail = 0;
	int			i = 0;

	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
		{
			double		d = (double) a[i + j] - (double) b[i + j];

			acc[j] += d * d;
		}
	for (; i < n; i++)
	{
		double		d = (double) a[i] - (double) b[i];

		tail += d * d;
	}
	return lanes_total(acc) + tail;
}

static double
dot(const float4 *a, const float4 *b, int n)
{
	double		acc[LANES] = {0};
	double		tail = 0;
	int			i = 0;

	for (; i + LANES <= n; i += LANES)
		for (int j = 0; j < LANES; j++)
			acc[j] += (double) a[i + j] * (double) b[i + j];
	for (; i < n; i++)
		tail += (double) a[i] * (double) b[i];
	return lanes_total(acc) + tail;
}

Datum
orochi_vector_l2_distance(PG_FUNCTION_ARGS)
{
	struct varlena *a = PG_GETARG_VECTOR_P(0);
	struct varlena *b = PG_GETARG_VECTOR_P(1);

	check_same_dims(a, b);
	PG_RETURN_FLOAT8(sqrt(squared_l2(VECTOR_DATA(a), VECTOR_DATA(b), VECTOR_DIM(a))));
}

Datum
orochi_vector_inner_product(PG_FUNCTION_ARGS)
{
	struct varlena *a = PG_GETARG_VECTOR_P(0);
	struct varlena *b = PG_GETARG_VECTOR_P(1);

	check_same_dims(a, b);
	PG_RETURN_FLOAT8(dot(VECTOR_DATA(a), VECTOR_DATA(b), VECTOR_DIM(a)));
}

Datum
orochi_vector_negative_inner_product(PG_FUNCTION_ARGS)
{
	struct varlena *a = PG_GETARG_VECTOR_P(0);
	struct varlena *b = PG_GETARG_VECTOR_P(1);

	check_same_dims(a, b);
	PG_RETURN_FLOAT8(-dot(VECTOR_DATA(a), VECTOR_DATA(b), VECTOR_DIM(a)));
}

/*
 * orochi_vector_cosine_distance
 *		1 - cos(a, b), clamped to [0, 2]; NaN when either vector is zero (as
 *		pgvector).
 */
Datum
orochi_vector_cosine_distance(PG_FUNCTION_ARGS)
{
	struct varlena *a = PG_GETARG_VECTOR_P(0);
	struct varlena *b = PG_GETARG_VECTOR_P(1);
	int			n;
	double		ab,
				aa,
				bb,
				sim;

	check_same_dims(a, b);
	n = VECTOR_DIM(a);
	ab = dot(VECTOR_DATA(a), VECTOR_DATA(b), n);
	aa = dot(VECTOR_DATA(a), VECTOR_DATA(a), n);
	bb = dot(VECTOR_DATA(b), VECTOR_DATA(b), n);
	if (aa == 0 || bb == 0)
		PG_RETURN_FLOAT8(get_float8_nan());
	sim = ab / (sqrt(aa) * sqrt(bb));
	if (sim > 1)
		sim = 1;
	else if (sim < -1)
		sim = -1;
	PG_RETURN_FLOAT8(1 - sim);
}

Datum
orochi_vector_dims(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);

	PG_RETURN_INT32(VECTOR_DIM(v));
}

Datum
orochi_vector_norm(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);

	PG_RETURN_FLOAT8(sqrt(dot(VECTOR_DATA(v), VECTOR_DATA(v), VECTOR_DIM(v))));
}

/*
 * orochi_vector_l2_normalize
 *		v / |v|; the zero vector stays zero (as pgvector).
 */
Datum
orochi_vector_l2_normalize(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_VECTOR_P(0);
	int			dim = VECTOR_DIM(v);
	double		norm = sqrt(dot(VECTOR_DATA(v), VECTOR_DATA(v), dim));
	struct varlena *r = new_vector(dim);

	if (norm > 0)
		for (int i = 0; i < dim; i++)
			VECTOR_DATA(r)[i] = (float4) (VECTOR_DATA(v)[i] / norm);
	PG_RETURN_POINTER(r);
}

/* ---------------------------------------------------------------------
 * The bridge: vectors as their float4 payload
 * ---------------------------------------------------------------------
 */

/*
 * orochi_vector_check_payload
 *		A vector's payload from Python (a batch or a single value): a positive
 *		multiple of four bytes, the column's dimensions if it has them, finite
 *		elements.
 */
void
orochi_vector_check_payload(const char *data, int64 len, int32 typmod)
{
	int64		dim = len / (int64) sizeof(float4);

	if (len % sizeof(float4) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("a vector from Python has %lld bytes, not a whole number of float4 values",
						(long long) len)));
	check_dim(dim > VECTOR_MAX_DIM ? VECTOR_MAX_DIM + 1 : (int) dim);
	check_expected_dim(typmod, (int) dim);
	for (int64 i = 0; i < dim; i++)
	{
		float4		x;

		memcpy(&x, data + i * sizeof(float4), sizeof(float4));
		check_element(x);
	}
}

/*
 * orochi_vector_from_bytes
 *		A vector Datum from its payload (checked).
 */
Datum
orochi_vector_from_bytes(const char *data, int64 len, int32 typmod)
{
	struct varlena *v;

	orochi_vector_check_payload(data, len, typmod);
	v = new_vector((int) (len / sizeof(float4)));
	memcpy(VECTOR_DATA(v), data, len);
	return PointerGetDatum(v);
}
