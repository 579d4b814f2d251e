/*-------------------------------------------------------------------------
 *
 * py_convert.c
 *		  Moving values between Datums and Python: single values (quals,
 *		  parameters, per-row scans, SQL function arguments and results) and
 *		  column batches (the fast scan and insert paths).
 *
 * A batch column arrives as (kind, values, validity, offsets): buffers read
 * through the buffer protocol and written straight into Datums.  Nothing read
 * from a buffer is trusted: sizes, offsets and encodings are checked first.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

/*
 * Python's datetime.h and Postgres's utils/datetime.h share the include
 * guard DATETIME_H: take Python's, then let Postgres's in too.  Only this
 * file uses the datetime C API (PyDateTimeAPI is per translation unit).
 */
#include <datetime.h>
#undef DATETIME_H
#include "utils/datetime.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_coerce.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

static PyObject *decimal_type = NULL;
static PyObject *uuid_type = NULL;
static PyObject *interval_type = NULL;	/* orochi_fdw.bridge.types.Interval */
static PyObject *special_type = NULL;	/* orochi_fdw.bridge.types.SpecialValue */
static PyObject *json_dumps = NULL;

static PyObject *
import_attr(const char *module, const char *attr)
{
	PyObject   *m = PyImport_ImportModule(module);
	PyObject   *a;

	if (m == NULL)
		orochi_py_raise(module);
	a = PyObject_GetAttrString(m, attr);
	Py_DECREF(m);
	if (a == NULL)
		orochi_py_raise(attr);
	return a;
}

void
orochi_convert_init(void)
{
	PyDateTime_IMPORT;
	if (PyDateTimeAPI == NULL)
		orochi_py_raise("importing datetime");
	decimal_type = import_attr("decimal", "Decimal");
	uuid_type = import_attr("uuid", "UUID");
	json_dumps = import_attr("json", "dumps");
	interval_type = import_attr("orochi_fdw.bridge.types", "Interval");
	special_type = import_attr("orochi_fdw.bridge.types", "SpecialValue");
}

/*
 * Error context: which column a failing value belongs to.
 */
static void
conv_error_callback(void *arg)
{
	OrochiTypeConv *conv = (OrochiTypeConv *) arg;

	if (conv && conv->attname)
		errcontext("column \"%s\" of type %s", conv->attname,
				   format_type_with_typemod(conv->typoid, conv->typmod));
}

OrochiWireKind
orochi_wire_kind_for_type(Oid typoid, int32 typmod)
{
	switch (typoid)
	{
		case BOOLOID:
			return WIRE_BOOL;
		case INT2OID:
			return WIRE_INT16;
		case INT4OID:
			return WIRE_INT32;
		case INT8OID:
			return WIRE_INT64;
		case FLOAT4OID:
			return WIRE_FLOAT32;
		case FLOAT8OID:
			return WIRE_FLOAT64;
		case DATEOID:
			return WIRE_DATE;
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return WIRE_TIMESTAMP;
		case TIMEOID:
			return WIRE_TIME;
		case INTERVALOID:
			return WIRE_INTERVAL;
		case UUIDOID:
			return WIRE_UUID;
		case TEXTOID:
		case VARCHAROID:
			return WIRE_TEXT;
		case BYTEAOID:
			return WIRE_BYTEA;
		default:
			/* orochi.vector: its payload is the float4 values, as bytea's is bytes */
			if (orochi_is_vector_type(typoid))
				return WIRE_BYTEA;
			/* numeric, jsonb, bpchar, and everything else: the type's text I/O */
			return WIRE_CSTRING;
	}
}

void
orochi_type_conv_init(OrochiTypeConv *conv, Oid typoid, int32 typmod, const char *attname)
{
	Oid			infunc;
	Oid			outfunc;
	bool		isvarlena;

	memset(conv, 0, sizeof(*conv));
	conv->typoid = typoid;
	conv->typmod = typmod;
	conv->attname = attname;
	get_typlenbyvalalign(typoid, &conv->typlen, &conv->typbyval, &conv->typalign);
	conv->wire = orochi_wire_kind_for_type(typoid, typmod);
	conv->elemtype = get_element_type(typoid);
	getTypeInputInfo(typoid, &infunc, &conv->inioparam);
	fmgr_info(infunc, &conv->infunc);
	getTypeOutputInfo(typoid, &outfunc, &isvarlena);
	fmgr_info(outfunc, &conv->outfunc);
	if (typmod >= 0)
	{
		Oid			funcid;

		if (find_typmod_coercion_function(typoid, &funcid) == COERCION_PATH_FUNC)
		{
			fmgr_info(funcid, &conv->typmodfunc);
			conv->has_typmodfunc = true;
		}
	}
}

/*
 * A value made without the type's input function (a str for varchar(n), a
 * datetime for timestamp(p) ...) brought to the column's type modifier as an
 * assignment does: too long a varchar is an error (22001), a timestamp or a
 * numeric is rounded.
 */
static inline Datum
apply_typmod(Datum value, OrochiTypeConv *conv)
{
	if (!conv->has_typmodfunc)
		return value;
	return FunctionCall3(&conv->typmodfunc, value, Int32GetDatum(conv->typmod), BoolGetDatum(false));
}

/* ---------------------------------------------------------------------
 * Text helpers: Python str is UTF-8; the database may not be.
 * ---------------------------------------------------------------------
 */
PyObject *
orochi_cstring_to_py(const char *s)
{
	int			len = strlen(s);
	char	   *utf8 = (char *) s;
	PyObject   *r;

	if (GetDatabaseEncoding() != PG_UTF8)
		utf8 = pg_server_to_any(s, len, PG_UTF8);
	r = PyUnicode_DecodeUTF8(utf8, strlen(utf8), "strict");
	if (utf8 != s)
		pfree(utf8);
	if (r == NULL)
	{
		PyErr_Clear();
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("could not convert a text value to a Python string"),
				 errdetail("The value is not valid UTF-8 after conversion from the database encoding %s.",
						   GetDatabaseEncodingName())));
	}
	return r;
}

static PyObject *
text_to_py(const char *data, int len)
{
	PyObject   *r;

	if (GetDatabaseEncoding() == PG_UTF8)
		r = PyUnicode_DecodeUTF8(data, len, "strict");
	else
	{
		char	   *copy = pnstrdup(data, len);
		char	   *utf8 = pg_server_to_any(copy, len, PG_UTF8);

		r = PyUnicode_DecodeUTF8(utf8, strlen(utf8), "strict");
		if (utf8 != copy)
			pfree(utf8);
		pfree(copy);
	}
	if (r == NULL)
	{
		PyErr_Clear();
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("could not convert a text value to a Python string"),
				 errdetail("The value is not valid UTF-8 after conversion from the database encoding %s.",
						   GetDatabaseEncodingName())));
	}
	return r;
}

/*
 * A Python str (or bytes holding UTF-8) as a palloc'd, NUL-terminated string
 * in the server encoding.  Raises a Postgres ERROR if it cannot be.
 */
static char *
py_str_to_server(PyObject *obj, int *lenp)
{
	const char *utf8;
	Py_ssize_t	len;
	char	   *copy;
	char	   *server;

	if (PyUnicode_Check(obj))
	{
		utf8 = PyUnicode_AsUTF8AndSize(obj, &len);
		if (utf8 == NULL)
			orochi_py_raise("converting a str to text");
	}
	else if (PyBytes_Check(obj))
	{
		utf8 = PyBytes_AS_STRING(obj);
		len = PyBytes_GET_SIZE(obj);
	}
	else
		elog(ERROR, "orochi: expected str or bytes");

	if (memchr(utf8, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("a string from Python contains a NUL character, which text cannot hold")));
	copy = palloc(len + 1);
	memcpy(copy, utf8, len);
	copy[len] = '\0';
	if (GetDatabaseEncoding() == PG_UTF8)
	{
		if (!PyUnicode_Check(obj))
			pg_verifymbstr(copy, len, false);
		server = copy;
	}
	else
	{
		server = pg_any_to_server(copy, len, PG_UTF8);
		if (server != copy)
			pfree(copy);
	}
	if (lenp)
		*lenp = strlen(server);
	return server;
}

/*
 * UTF-8 text (an error message from Python) in the server encoding, for an
 * error report: never raises a Postgres error; a character the server
 * encoding cannot hold becomes '?'.
 */
char *
orochi_utf8_to_server_lossy(const char *utf8)
{
	char	   *volatile server = NULL;
	StringInfoData buf;

	if (GetDatabaseEncoding() == PG_UTF8)
		return pstrdup(utf8);
	PG_TRY();
	{
		server = pg_any_to_server(utf8, strlen(utf8), PG_UTF8);
	}
	PG_CATCH();
	{
		FlushErrorState();
		server = NULL;
	}
	PG_END_TRY();
	if (server != NULL)
		return server == utf8 ? pstrdup(utf8) : server;
	initStringInfo(&buf);
	for (const unsigned char *p = (const unsigned char *) utf8; *p; p++)
	{
		if (*p < 0x80)
			appendStringInfoChar(&buf, (char) *p);
		else if ((*p & 0xC0) != 0x80)
			appendStringInfoChar(&buf, '?');	/* the first byte of a character */
	}
	return buf.data;
}

char *
orochi_py_to_cstring(PyObject *obj)
{
	PyObject   *s;
	char	   *r;

	if (PyUnicode_Check(obj))
		return py_str_to_server(obj, NULL);
	s = PyObject_Str(obj);
	if (s == NULL)
		orochi_py_raise("converting a value to text");
	PG_TRY();
	{
		r = py_str_to_server(s, NULL);
	}
	PG_FINALLY();
	{
		OROCHI_RELEASE(s);
	}
	PG_END_TRY();
	return r;
}

/* ---------------------------------------------------------------------
 * Datum -> Python
 * ---------------------------------------------------------------------
 */
static PyObject *
special_value(OrochiTypeConv *conv, Datum value, long long raw)
{
	char	   *text = OutputFunctionCall(&conv->outfunc, value);
	PyObject   *pytext = orochi_cstring_to_py(text);
	PyObject   *r;

	r = PyObject_CallFunction(special_type, "sLN", format_type_be(conv->typoid), raw, pytext);
	if (r == NULL)
		orochi_py_raise("building a SpecialValue");
	return r;
}

static PyObject *
timestamp_to_py(OrochiTypeConv *conv, Datum value, Timestamp ts, bool with_tz)
{
	int64		days,
				rem;
	int			y,
				m,
				d;

	if (TIMESTAMP_NOT_FINITE(ts))
		return special_value(conv, value, ts);
	days = ts / USECS_PER_DAY;
	rem = ts % USECS_PER_DAY;
	if (rem < 0)
	{
		rem += USECS_PER_DAY;
		days--;
	}
	j2date((int) (days + POSTGRES_EPOCH_JDATE), &y, &m, &d);
	if (y < 1 || y > 9999)
		return special_value(conv, value, ts);
	return PyDateTimeAPI->DateTime_FromDateAndTime(
												   y, m, d,
												   (int) (rem / USECS_PER_HOUR),
												   (int) ((rem / USECS_PER_MINUTE) % 60),
												   (int) ((rem / USECS_PER_SEC) % 60),
												   (int) (rem % USECS_PER_SEC),
												   with_tz ? PyDateTime_TimeZone_UTC : Py_None,
												   PyDateTimeAPI->DateTimeType);
}

PyObject *
orochi_datum_to_py(Datum value, bool isnull, OrochiTypeConv *conv)
{
	PyObject   *r = NULL;

	if (isnull)
		Py_RETURN_NONE;

	switch (conv->typoid)
	{
		case BOOLOID:
			r = PyBool_FromLong(DatumGetBool(value));
			break;
		case INT2OID:
			r = PyLong_FromLong(DatumGetInt16(value));
			break;
		case INT4OID:
			r = PyLong_FromLong(DatumGetInt32(value));
			break;
		case INT8OID:
			r = PyLong_FromLongLong(DatumGetInt64(value));
			break;
		case OIDOID:
			r = PyLong_FromUnsignedLong(DatumGetObjectId(value));
			break;
		case FLOAT4OID:
			r = PyFloat_FromDouble(DatumGetFloat4(value));
			break;
		case FLOAT8OID:
			r = PyFloat_FromDouble(DatumGetFloat8(value));
			break;
		case NUMERICOID:
			{
				char	   *s = OutputFunctionCall(&conv->outfunc, value);

				r = PyObject_CallFunction(decimal_type, "s", s);
				pfree(s);
				break;
			}
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case JSONOID:
		case XMLOID:
			if (conv->typoid == NAMEOID)
				return text_to_py(NameStr(*DatumGetName(value)), strlen(NameStr(*DatumGetName(value))));
			else
			{
				struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));

				r = text_to_py(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			break;
		case BYTEAOID:
			{
				struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));

				r = PyBytes_FromStringAndSize(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				break;
			}
		case DATEOID:
			{
				DateADT		date = DatumGetDateADT(value);
				int			y,
							m,
							d;

				if (DATE_NOT_FINITE(date))
					return special_value(conv, value, date);
				j2date(date + POSTGRES_EPOCH_JDATE, &y, &m, &d);
				if (y < 1 || y > 9999)
					return special_value(conv, value, date);
				r = PyDate_FromDate(y, m, d);
				break;
			}
		case TIMESTAMPOID:
			r = timestamp_to_py(conv, value, DatumGetTimestamp(value), false);
			break;
		case TIMESTAMPTZOID:
			r = timestamp_to_py(conv, value, DatumGetTimestampTz(value), true);
			break;
		case TIMEOID:
			{
				TimeADT		t = DatumGetTimeADT(value);

				if (t >= USECS_PER_DAY)	/* 24:00:00 */
					return special_value(conv, value, t);
				r = PyTime_FromTime((int) (t / USECS_PER_HOUR), (int) ((t / USECS_PER_MINUTE) % 60),
									(int) ((t / USECS_PER_SEC) % 60), (int) (t % USECS_PER_SEC));
				break;
			}
		case INTERVALOID:
			{
				Interval   *iv = DatumGetIntervalP(value);

				r = PyObject_CallFunction(interval_type, "iiL", iv->month, iv->day,
										  (long long) iv->time);
				break;
			}
		case UUIDOID:
			{
				pg_uuid_t  *u = DatumGetUUIDP(value);
				PyObject   *b = PyBytes_FromStringAndSize((const char *) u->data, UUID_LEN);
				PyObject   *kw;

				if (b == NULL)
					break;
				kw = Py_BuildValue("{s:N}", "bytes", b);
				if (kw == NULL)
					break;
				{
					PyObject   *noargs = PyTuple_New(0);

					r = PyObject_Call(uuid_type, noargs, kw);
					Py_DECREF(noargs);
				}
				Py_DECREF(kw);
				break;
			}
		default:
			if (conv->wire == WIRE_BYTEA)
			{
				/* orochi.vector: its float4 payload, as bytes */
				struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));

				r = PyBytes_FromStringAndSize(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			}
			else if (OidIsValid(conv->elemtype))
			{
				ArrayType  *arr = DatumGetArrayTypeP(value);
				OrochiTypeConv elem;
				Datum	   *elems;
				bool	   *nulls;
				int			n;

				orochi_type_conv_init(&elem, conv->elemtype, -1, conv->attname);
				deconstruct_array(arr, conv->elemtype, elem.typlen, elem.typbyval, elem.typalign,
								  &elems, &nulls, &n);
				r = PyList_New(n);
				if (r == NULL)
					break;
				for (int i = 0; i < n; i++)
				{
					PyObject   *item;

					PG_TRY();
					{
						item = orochi_datum_to_py(elems[i], nulls[i], &elem);
					}
					PG_CATCH();
					{
						OROCHI_RELEASE(r);
						PG_RE_THROW();
					}
					PG_END_TRY();
					PyList_SET_ITEM(r, i, item);
				}
			}
			else
			{
				char	   *s = OutputFunctionCall(&conv->outfunc, value);

				r = orochi_cstring_to_py(s);
				pfree(s);
			}
			break;
	}
	if (r == NULL)
		orochi_py_raise("converting a value to Python");
	return r;
}

/* ---------------------------------------------------------------------
 * Python -> Datum
 * ---------------------------------------------------------------------
 */
static Datum
via_input_function(PyObject *obj, OrochiTypeConv *conv)
{
	char	   *s = orochi_py_to_cstring(obj);

	return InputFunctionCall(&conv->infunc, s, conv->inioparam, conv->typmod);
}

static int64
py_to_int64(PyObject *obj, OrochiTypeConv *conv, int64 min, int64 max)
{
	PyObject   *idx;
	long long	v;
	int			overflow;

	if (PyLong_Check(obj))
		idx = (Py_INCREF(obj), obj);
	else if (PyFloat_Check(obj))
	{
		double		d = PyFloat_AS_DOUBLE(obj);

		if (d != d || d < (double) min || d > (double) max || d != (double) (int64) d)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("value %g from Python is not an integer in range for type %s",
							d, format_type_be(conv->typoid))));
		return (int64) d;
	}
	else
	{
		idx = PyNumber_Index(obj);
		if (idx == NULL)
		{
			PyErr_Clear();
			return DatumGetInt64(DirectFunctionCall1(int8in,
													 CStringGetDatum(orochi_py_to_cstring(obj))));
		}
	}
	v = PyLong_AsLongLongAndOverflow(idx, &overflow);
	Py_DECREF(idx);
	if (v == -1 && PyErr_Occurred())
		orochi_py_raise("converting an int");
	if (overflow || v < min || v > max)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("integer from Python out of range for type %s", format_type_be(conv->typoid))));
	return (int64) v;
}

static Timestamp
py_datetime_to_timestamp(PyObject *obj, bool apply_offset)
{
	int64		days = date2j(PyDateTime_GET_YEAR(obj), PyDateTime_GET_MONTH(obj),
							  PyDateTime_GET_DAY(obj)) - POSTGRES_EPOCH_JDATE;
	int64		t = ((PyDateTime_DATE_GET_HOUR(obj) * INT64CONST(60) +
					  PyDateTime_DATE_GET_MINUTE(obj)) * 60 +
					 PyDateTime_DATE_GET_SECOND(obj)) * USECS_PER_SEC +
		PyDateTime_DATE_GET_MICROSECOND(obj);
	Timestamp	ts = days * USECS_PER_DAY + t;

	if (apply_offset)
	{
		PyObject   *off = PyObject_CallMethod(obj, "utcoffset", NULL);

		if (off == NULL)
			orochi_py_raise("datetime.utcoffset()");
		if (off != Py_None)
			ts -= ((int64) PyDateTime_DELTA_GET_DAYS(off) * 86400 +
				   PyDateTime_DELTA_GET_SECONDS(off)) * USECS_PER_SEC +
				PyDateTime_DELTA_GET_MICROSECONDS(off);
		Py_DECREF(off);
	}
	return ts;
}

static Datum
py_to_array(PyObject *obj, OrochiTypeConv *conv)
{
	OrochiTypeConv elem;
	PyObject   *seq = PySequence_Fast(obj, "expected a sequence for an array");
	Py_ssize_t	n;
	Datum	   *values;
	bool	   *nulls;
	int			dims[1];
	int			lbs[1] = {1};
	ArrayType  *arr;

	if (seq == NULL)
		orochi_py_raise("converting an array");
	n = PySequence_Fast_GET_SIZE(seq);
	orochi_type_conv_init(&elem, conv->elemtype, -1, conv->attname);
	values = palloc(sizeof(Datum) * (n > 0 ? n : 1));
	nulls = palloc(sizeof(bool) * (n > 0 ? n : 1));
	PG_TRY();
	{
		for (Py_ssize_t i = 0; i < n; i++)
		{
			PyObject   *item = PySequence_Fast_GET_ITEM(seq, i);

			if (PyList_Check(item) || PyTuple_Check(item))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("multidimensional arrays from Python are not supported")));
			values[i] = orochi_py_to_datum(item, &elem, &nulls[i]);
		}
	}
	PG_FINALLY();
	{
		OROCHI_RELEASE(seq);
	}
	PG_END_TRY();
	dims[0] = (int) n;
	arr = construct_md_array(values, nulls, 1, dims, lbs, conv->elemtype, elem.typlen,
							 elem.typbyval, elem.typalign);
	return PointerGetDatum(arr);
}

/*
 * orochi_py_to_datum
 *		Convert one Python value to a Datum of conv's type.  Direct paths for
 *		the common types; the type's input function over str(obj) for the rest.
 */
static Datum py_to_datum(PyObject *obj, OrochiTypeConv *conv, bool *isnull);

/*
 * orochi_py_to_datum
 *		A Python value as a Datum of conv's type, within its type modifier.
 */
Datum
orochi_py_to_datum(PyObject *obj, OrochiTypeConv *conv, bool *isnull)
{
	Datum		d = py_to_datum(obj, conv, isnull);

	return *isnull ? d : apply_typmod(d, conv);
}

static Datum
py_to_datum(PyObject *obj, OrochiTypeConv *conv, bool *isnull)
{
	*isnull = false;
	if (obj == Py_None)
	{
		*isnull = true;
		return (Datum) 0;
	}

	switch (conv->typoid)
	{
		case BOOLOID:
			if (PyBool_Check(obj) || PyLong_Check(obj))
				return BoolGetDatum(PyObject_IsTrue(obj));
			break;
		case INT2OID:
			return Int16GetDatum((int16) py_to_int64(obj, conv, PG_INT16_MIN, PG_INT16_MAX));
		case INT4OID:
			return Int32GetDatum((int32) py_to_int64(obj, conv, PG_INT32_MIN, PG_INT32_MAX));
		case INT8OID:
			return Int64GetDatum(py_to_int64(obj, conv, PG_INT64_MIN, PG_INT64_MAX));
		case FLOAT4OID:
		case FLOAT8OID:
			if (PyFloat_Check(obj) || PyLong_Check(obj))
			{
				double		d = PyFloat_AsDouble(obj);

				if (d == -1.0 && PyErr_Occurred())
					orochi_py_raise("converting a float");
				return conv->typoid == FLOAT4OID ? Float4GetDatum((float4) d) : Float8GetDatum(d);
			}
			break;
		case TEXTOID:
		case VARCHAROID:
			if (PyUnicode_Check(obj))
			{
				int			len;
				char	   *s = py_str_to_server(obj, &len);
				text	   *t = cstring_to_text_with_len(s, len);

				pfree(s);
				return PointerGetDatum(t);
			}
			break;
		case BYTEAOID:
			if (PyBytes_Check(obj) || PyByteArray_Check(obj) || PyMemoryView_Check(obj))
			{
				Py_buffer	view;
				bytea	   *b;

				if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
					orochi_py_raise("reading bytes");
				b = palloc(VARHDRSZ + view.len);
				SET_VARSIZE(b, VARHDRSZ + view.len);
				memcpy(VARDATA(b), view.buf, view.len);
				PyBuffer_Release(&view);
				return PointerGetDatum(b);
			}
			break;
		case DATEOID:
			if (PyDate_Check(obj))
				return DateADTGetDatum(date2j(PyDateTime_GET_YEAR(obj), PyDateTime_GET_MONTH(obj),
											  PyDateTime_GET_DAY(obj)) - POSTGRES_EPOCH_JDATE);
			break;
		case TIMESTAMPOID:
			if (PyDateTime_Check(obj))
				return TimestampGetDatum(py_datetime_to_timestamp(obj, false));
			break;
		case TIMESTAMPTZOID:
			if (PyDateTime_Check(obj) && ((PyDateTime_DateTime *) obj)->hastzinfo)
				return TimestampTzGetDatum(py_datetime_to_timestamp(obj, true));
			/* naive datetimes mean the session's time zone, as in SQL */
			break;
		case TIMEOID:
			if (PyTime_Check(obj))
				return TimeADTGetDatum(((PyDateTime_TIME_GET_HOUR(obj) * INT64CONST(60) +
										 PyDateTime_TIME_GET_MINUTE(obj)) * 60 +
										PyDateTime_TIME_GET_SECOND(obj)) * USECS_PER_SEC +
									   PyDateTime_TIME_GET_MICROSECOND(obj));
			break;
		case INTERVALOID:
			if (PyDelta_Check(obj))
			{
				Interval   *iv = palloc(sizeof(Interval));

				iv->month = 0;
				iv->day = PyDateTime_DELTA_GET_DAYS(obj);
				iv->time = (int64) PyDateTime_DELTA_GET_SECONDS(obj) * USECS_PER_SEC +
					PyDateTime_DELTA_GET_MICROSECONDS(obj);
				return IntervalPGetDatum(iv);
			}
			if (PyObject_IsInstance(obj, interval_type) == 1)
			{
				Interval   *iv = palloc(sizeof(Interval));
				PyObject   *m = PyObject_GetAttrString(obj, "months");
				PyObject   *d = PyObject_GetAttrString(obj, "days");
				PyObject   *us = PyObject_GetAttrString(obj, "microseconds");

				iv->month = m ? (int32) PyLong_AsLong(m) : 0;
				iv->day = d ? (int32) PyLong_AsLong(d) : 0;
				iv->time = us ? PyLong_AsLongLong(us) : 0;
				Py_XDECREF(m);
				Py_XDECREF(d);
				Py_XDECREF(us);
				if (PyErr_Occurred())
					orochi_py_raise("converting an Interval");
				return IntervalPGetDatum(iv);
			}
			break;
		case UUIDOID:
			if (PyObject_IsInstance(obj, uuid_type) == 1)
			{
				PyObject   *b = PyObject_GetAttrString(obj, "bytes");
				pg_uuid_t  *u;

				if (b == NULL)
					orochi_py_raise("uuid.bytes");
				if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != UUID_LEN)
				{
					Py_DECREF(b);
					elog(ERROR, "orochi: uuid.bytes is not 16 bytes");
				}
				u = palloc(sizeof(pg_uuid_t));
				memcpy(u->data, PyBytes_AS_STRING(b), UUID_LEN);
				Py_DECREF(b);
				return UUIDPGetDatum(u);
			}
			break;
		case JSONBOID:
		case JSONOID:
			if (PyDict_Check(obj) || PyList_Check(obj) || PyBool_Check(obj) ||
				PyLong_Check(obj) || PyFloat_Check(obj))
			{
				PyObject   *s = PyObject_CallOneArg(json_dumps, obj);
				Datum		d;

				if (s == NULL)
					orochi_py_raise("json.dumps");
				PG_TRY();
				{
					d = via_input_function(s, conv);
				}
				PG_FINALLY();
				{
					OROCHI_RELEASE(s);
				}
				PG_END_TRY();
				return d;
			}
			break;
		default:
			if (conv->wire == WIRE_BYTEA && PyBytes_Check(obj))
				/* orochi.vector from its float4 payload */
				return orochi_vector_from_bytes(PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj),
												conv->typmod);
			if (OidIsValid(conv->elemtype) && (PyList_Check(obj) || PyTuple_Check(obj)))
				return py_to_array(obj, conv);
			break;
	}
	if (PyObject_IsInstance(obj, special_type) == 1)
	{
		/* infinity and dates Python cannot hold: their text form */
		PyObject   *text = PyObject_GetAttrString(obj, "text");
		Datum		d;

		if (text == NULL)
			orochi_py_raise("SpecialValue.text");
		PG_TRY();
		{
			d = via_input_function(text, conv);
		}
		PG_FINALLY();
		{
			OROCHI_RELEASE(text);
		}
		PG_END_TRY();
		return d;
	}
	if (PyBytes_Check(obj) && conv->typoid != BYTEAOID)
	{
		/* bytes holding text */
		char	   *s = py_str_to_server(obj, NULL);

		return InputFunctionCall(&conv->infunc, s, conv->inioparam, conv->typmod);
	}
	return via_input_function(obj, conv);
}

/*
 * Parameter types from Python values where they are unambiguous; InvalidOid
 * lets the parser infer the type from the query, as for untyped libpq
 * parameters.
 */
Oid
orochi_guess_param_type(PyObject *obj)
{
	if (obj == Py_None || PyUnicode_Check(obj))
		return InvalidOid;
	if (PyBool_Check(obj))
		return BOOLOID;
	if (PyLong_Check(obj))
		return INT8OID;
	if (PyFloat_Check(obj))
		return FLOAT8OID;
	if (PyBytes_Check(obj) || PyByteArray_Check(obj))
		return BYTEAOID;
	if (PyDateTime_Check(obj))
		return ((PyDateTime_DateTime *) obj)->hastzinfo ? TIMESTAMPTZOID : TIMESTAMPOID;
	if (PyDate_Check(obj))
		return DATEOID;
	if (PyTime_Check(obj))
		return TIMEOID;
	if (PyDelta_Check(obj))
		return INTERVALOID;
	if (PyObject_IsInstance(obj, uuid_type) == 1)
		return UUIDOID;
	if (PyObject_IsInstance(obj, decimal_type) == 1)
		return NUMERICOID;
	PyErr_Clear();
	return InvalidOid;
}

/* ---------------------------------------------------------------------
 * Options and column descriptions handed to Python
 * ---------------------------------------------------------------------
 */
PyObject *
orochi_options_to_dict(List *options)
{
	PyObject   *dict = PyDict_New();
	ListCell   *lc;

	if (dict == NULL)
		orochi_py_raise("building options");
	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);
		PyObject   *value;

		value = def->arg ? orochi_cstring_to_py(defGetString(def)) : (Py_INCREF(Py_None), Py_None);
		if (PyDict_SetItemString(dict, def->defname, value) < 0)
		{
			Py_DECREF(value);
			Py_DECREF(dict);
			orochi_py_raise("building options");
		}
		Py_DECREF(value);
	}
	return dict;
}

/*
 * Columns of a tuple descriptor as a list of
 * (name, type_oid, typmod, type_name, attnum, not_null, options) tuples,
 * dropped columns left out; options are the foreign table's column options
 * when relid is valid.  The runtime wraps them in ColumnDefinition.
 */
PyObject *
orochi_tupdesc_columns(TupleDesc tupdesc, Oid relid)
{
	PyObject   *list = PyList_New(0);

	if (list == NULL)
		orochi_py_raise("listing columns");
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		PyObject   *col;

		if (att->attisdropped)
			continue;
		col = Py_BuildValue("(NIiNiON)", orochi_cstring_to_py(NameStr(att->attname)),
							(unsigned int) att->atttypid, (int) att->atttypmod,
							orochi_cstring_to_py(format_type_with_typemod(att->atttypid, att->atttypmod)),
							(int) att->attnum, att->attnotnull ? Py_True : Py_False,
							OidIsValid(relid) ?
							orochi_options_to_dict(GetForeignColumnOptions(relid, att->attnum)) :
							PyDict_New());
		if (col == NULL || PyList_Append(list, col) < 0)
		{
			Py_XDECREF(col);
			Py_DECREF(list);
			orochi_py_raise("listing columns");
		}
		Py_DECREF(col);
	}
	return list;
}

/* ---------------------------------------------------------------------
 * Row ids: an int64 from Python in a tuple id (block = high 32 bits of the
 * 48, offset = low 16 bits + 1, so that no offset is the invalid 0).
 * ---------------------------------------------------------------------
 */
void
orochi_rowid_to_tid(int64 rowid, ItemPointer tid)
{
	if (rowid < 0 || rowid >= (INT64CONST(1) << 47))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("row id " INT64_FORMAT " from Python is outside [0, 2^47)", rowid)));
	ItemPointerSet(tid, (BlockNumber) (rowid >> 15), (OffsetNumber) ((rowid & 0x7FFF) + 1));
}

int64
orochi_tid_to_rowid(ItemPointer tid)
{
	return ((int64) ItemPointerGetBlockNumberNoCheck(tid) << 15) |
		(int64) (ItemPointerGetOffsetNumberNoCheck(tid) - 1);
}

/* ---------------------------------------------------------------------
 * Batches from Python: (nrows, columns, rowids)
 * ---------------------------------------------------------------------
 */
static int
wire_width(OrochiWireKind kind)
{
	switch (kind)
	{
		case WIRE_BOOL:
			return 1;
		case WIRE_INT16:
			return 2;
		case WIRE_INT32:
		case WIRE_FLOAT32:
		case WIRE_DATE:
			return 4;
		case WIRE_INT64:
		case WIRE_FLOAT64:
		case WIRE_TIMESTAMP:
		case WIRE_TIME:
		case WIRE_DECIMAL64:
			return 8;
		case WIRE_INTERVAL:
		case WIRE_UUID:
			return 16;
		default:
			return 0;			/* variable width */
	}
}

static void
get_buffer(PyObject *obj, Py_buffer *view, const char *what, const char *attname)
{
	if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
	{
		PyErr_Clear();
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("batch column \"%s\": %s is not a contiguous buffer", attname, what)));
	}
}

/* a batch's varlenas are built in one piece up to this size, else per row */
#define BATCH_VARLENA_LIMIT ((Size) 256 * 1024 * 1024)

/*
 * build_varlenas
 *		Make every value of a text or bytea column a varlena in one buffer
 *		(short headers where they fit, as heap tuples have them), so rows cost
 *		no allocation.  UTF-8 is checked once for the whole buffer, and every
 *		value must start on a character boundary.  Returns false where the
 *		column needs per-row conversion instead (another database encoding,
 *		the type's input function, or a very large batch).
 */
static bool
build_varlenas(OrochiBatchReader *reader, int i, OrochiTypeConv *conv)
{
	const int64 *off = (const int64 *) reader->offsets[i].buf;
	const unsigned char *data = (const unsigned char *) reader->values[i].buf;
	OrochiWireKind kind = reader->kinds[i];
	bool		is_text = (kind == WIRE_TEXT);
	Size		total = 0;
	char	   *buf;
	char	   *p;
	Datum	   *datums;

	if (!(kind == WIRE_BYTEA || (is_text && conv->wire == WIRE_TEXT && GetDatabaseEncoding() == PG_UTF8)))
		return false;
	for (int64 r = 0; r < reader->nrows; r++)
	{
		int64		len = off[r + 1] - off[r];

		total += (len + VARHDRSZ_SHORT <= VARATT_SHORT_MAX) ? len + VARHDRSZ_SHORT : len + VARHDRSZ + 3;
	}
	if (total > BATCH_VARLENA_LIMIT)
		return false;
	if (is_text)
	{
		int64		n = off[reader->nrows] - off[0];

		if (n > PG_INT32_MAX ||
			!pg_verify_mbstr(PG_UTF8, (const char *) data + off[0], (int) n, true))
			return false;		/* per row, where the error names the bad bytes */
		for (int64 r = 0; r < reader->nrows; r++)
			if (off[r + 1] > off[r] && (data[off[r]] & 0xC0) == 0x80)
				return false;
	}

	buf = MemoryContextAllocHuge(CurrentMemoryContext, Max(total, 1));
	datums = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(Datum) * Max(reader->nrows, 1));
	p = buf;
	for (int64 r = 0; r < reader->nrows; r++)
	{
		int64		len = off[r + 1] - off[r];

		if (len + VARHDRSZ_SHORT <= VARATT_SHORT_MAX)
		{
			SET_VARSIZE_SHORT(p, len + VARHDRSZ_SHORT);
			memcpy(p + VARHDRSZ_SHORT, data + off[r], len);
			datums[r] = PointerGetDatum(p);
			p += len + VARHDRSZ_SHORT;
		}
		else
		{
			p = (char *) INTALIGN(p);
			SET_VARSIZE(p, len + VARHDRSZ);
			memcpy(p + VARHDRSZ, data + off[r], len);
			datums[r] = PointerGetDatum(p);
			p += len + VARHDRSZ;
		}
	}
	reader->varlenas[i] = buf;
	reader->datums[i] = datums;
	return true;
}

/*
 * Whether a batch column's values need the column's type modifier applied
 * once read: all but those read through the type's input function (which
 * takes the modifier), i.e. variable-width values of types other than
 * text / varchar.
 */
static inline bool
typmod_after_read(OrochiWireKind kind, OrochiTypeConv *conv)
{
	if (!conv->has_typmodfunc)
		return false;
	if (kind == WIRE_TEXT || kind == WIRE_CSTRING || kind == WIRE_BYTEA)
		return conv->wire == WIRE_TEXT;
	if (kind == WIRE_DECIMAL64)
		return false;			/* at the scale and precision of the column read */
	return true;
}

void
orochi_batch_open(OrochiBatchReader *reader, PyObject *wire, TupleDesc tupdesc,
				  OrochiTypeConv *convs)
{
	PyObject   *nrows_obj,
			   *cols,
			   *rowids;
	int			natts = tupdesc->natts;

	memset(reader, 0, sizeof(*reader));
	if (!PyTuple_Check(wire) || PyTuple_GET_SIZE(wire) != 3)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("a batch must reach the bridge as (nrows, columns, rowids)")));
	nrows_obj = PyTuple_GET_ITEM(wire, 0);
	cols = PyTuple_GET_ITEM(wire, 1);
	rowids = PyTuple_GET_ITEM(wire, 2);
	reader->nrows = PyLong_AsLongLong(nrows_obj);
	if (reader->nrows < 0 || PyErr_Occurred())
	{
		PyErr_Clear();
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("a batch's row count must be a non-negative integer")));
	}
	if (!PyList_Check(cols) || PyList_GET_SIZE(cols) != natts)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("a batch must carry one entry per table attribute (%d)", natts)));

	Py_INCREF(wire);
	reader->owner = wire;
	reader->ncols = natts;
	reader->kinds = palloc0(sizeof(OrochiWireKind) * natts);
	reader->values = palloc0(sizeof(Py_buffer) * natts);
	reader->validity = palloc0(sizeof(Py_buffer) * natts);
	reader->offsets = palloc0(sizeof(Py_buffer) * natts);
	reader->present = palloc0(sizeof(bool) * natts);
	reader->scales = palloc0(sizeof(int) * natts);
	reader->datums = palloc0(sizeof(Datum *) * natts);
	reader->varlenas = palloc0(sizeof(char *) * natts);

	for (int i = 0; i < natts; i++)
	{
		PyObject   *col = PyList_GET_ITEM(cols, i);
		OrochiTypeConv *conv = &convs[i];
		const char *attname = NameStr(TupleDescAttr(tupdesc, i)->attname);
		long		kind;
		int			width;

		if (col == Py_None)
			continue;
		if (!PyTuple_Check(col) || PyTuple_GET_SIZE(col) != 4)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("batch column \"%s\" must be (kind, values, validity, offsets)", attname)));
		kind = PyLong_AsLong(PyTuple_GET_ITEM(col, 0));
		if (PyErr_Occurred())
			PyErr_Clear();
		if (kind >= WIRE_DECIMAL64 && kind <= WIRE_DECIMAL64 + WIRE_DECIMAL64_MAX_SCALE &&
			conv->typoid == NUMERICOID)
		{
			/* scaled integers of a numeric column: made into numerics here */
			reader->scales[i] = (int) (kind - WIRE_DECIMAL64);
			kind = WIRE_DECIMAL64;
			reader->allocates = true;
		}
		else if (kind != conv->wire && kind != WIRE_TEXT && kind != WIRE_CSTRING)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("batch column \"%s\" has wire kind %ld, which does not fit type %s",
							attname, kind, format_type_be(conv->typoid))));
		reader->kinds[i] = (OrochiWireKind) kind;
		width = wire_width(reader->kinds[i]);

		get_buffer(PyTuple_GET_ITEM(col, 1), &reader->values[i], "values", attname);
		reader->present[i] = true;
		if (width > 0)
		{
			if (reader->values[i].len < reader->nrows * width)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("batch column \"%s\": %zd bytes of values for " INT64_FORMAT " rows of width %d",
								attname, reader->values[i].len, reader->nrows, width)));
		}
		else
		{
			const int64 *off;
			int64		datalen = reader->values[i].len;

			if (PyTuple_GET_ITEM(col, 3) == Py_None)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("batch column \"%s\": variable-width values need offsets", attname)));
			get_buffer(PyTuple_GET_ITEM(col, 3), &reader->offsets[i], "offsets", attname);
			if (reader->offsets[i].len != (reader->nrows + 1) * (Py_ssize_t) sizeof(int64))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("batch column \"%s\": offsets must hold nrows + 1 int64 values", attname)));
			off = (const int64 *) reader->offsets[i].buf;
			if (off[0] < 0 || off[reader->nrows] > datalen)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("batch column \"%s\": offsets point outside the data", attname)));
			for (int64 r = 0; r < reader->nrows; r++)
			{
				if (off[r + 1] < off[r] || off[r + 1] - off[r] > MaxAllocSize - VARHDRSZ - 1)
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
							 errmsg("batch column \"%s\": offsets are not ascending at row " INT64_FORMAT,
									attname, r)));
			}
		}
		if (PyTuple_GET_ITEM(col, 2) != Py_None)
		{
			get_buffer(PyTuple_GET_ITEM(col, 2), &reader->validity[i], "validity", attname);
			if (reader->validity[i].len < reader->nrows)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("batch column \"%s\": validity must hold one byte per row", attname)));
		}
		if (reader->kinds[i] == WIRE_BYTEA && conv->typoid != BYTEAOID)
		{
			/* orochi.vector: every value's payload is checked first */
			const int64 *off = (const int64 *) reader->offsets[i].buf;
			const uint8 *valid = reader->validity[i].buf;

			for (int64 r = 0; r < reader->nrows; r++)
				if (valid == NULL || valid[r] != 0)
					orochi_vector_check_payload((const char *) reader->values[i].buf + off[r],
												off[r + 1] - off[r], conv->typmod);
		}
		if (width == 0 && !build_varlenas(reader, i, conv))
			reader->allocates = true;
		if (reader->kinds[i] == WIRE_INTERVAL && ((uintptr_t) reader->values[i].buf % MAXIMUM_ALIGNOF) != 0)
			reader->allocates = true;
		if (typmod_after_read(reader->kinds[i], conv))
			reader->allocates = true;

	}
	if (rowids != Py_None)
	{
		get_buffer(rowids, &reader->rowids, "row ids", "(row id)");
		reader->has_rowids = true;
		if (reader->rowids.len < reader->nrows * (Py_ssize_t) sizeof(int64))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("a batch's row ids must hold one int64 per row")));
	}
}

void
orochi_batch_close(OrochiBatchReader *reader)
{
	if (reader->owner == NULL)
		return;
	for (int i = 0; i < reader->ncols; i++)
	{
		if (reader->values[i].obj)
			PyBuffer_Release(&reader->values[i]);
		if (reader->validity[i].obj)
			PyBuffer_Release(&reader->validity[i]);
		if (reader->offsets[i].obj)
			PyBuffer_Release(&reader->offsets[i]);
	}
	if (reader->has_rowids && reader->rowids.obj)
		PyBuffer_Release(&reader->rowids);
	for (int i = 0; i < reader->ncols; i++)
	{
		if (reader->varlenas[i])
			pfree(reader->varlenas[i]);
		if (reader->datums[i])
			pfree(reader->datums[i]);
	}
	pfree(reader->varlenas);
	pfree(reader->datums);
	reader->varlenas = NULL;
	reader->datums = NULL;
	reader->allocates = false;
	pfree(reader->kinds);
	pfree(reader->values);
	pfree(reader->validity);
	pfree(reader->offsets);
	pfree(reader->present);
	reader->kinds = NULL;
	reader->values = reader->validity = reader->offsets = NULL;
	reader->present = NULL;
	reader->ncols = 0;
	Py_CLEAR(reader->owner);
	reader->nrows = 0;
	reader->next = 0;
}

static Datum
varwidth_to_datum(OrochiBatchReader *reader, int i, int64 r, OrochiTypeConv *conv)
{
	const int64 *off = (const int64 *) reader->offsets[i].buf;
	const char *data = (const char *) reader->values[i].buf + off[r];
	int64		len = off[r + 1] - off[r];
	OrochiWireKind kind = reader->kinds[i];

	if (kind == WIRE_BYTEA)
	{
		bytea	   *b = palloc(VARHDRSZ + len);

		SET_VARSIZE(b, VARHDRSZ + len);
		memcpy(VARDATA(b), data, len);
		return PointerGetDatum(b);
	}
	if (kind == WIRE_TEXT && conv->wire == WIRE_TEXT && GetDatabaseEncoding() == PG_UTF8)
	{
		/* UTF-8 in, UTF-8 database: check it, then take the bytes as they are */
		pg_verifymbstr(data, (int) len, false);
		return PointerGetDatum(cstring_to_text_with_len(data, (int) len));
	}
	else
	{
		char	   *copy = palloc(len + 1);
		char	   *server;

		memcpy(copy, data, len);
		copy[len] = '\0';
		if (memchr(copy, '\0', len) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
					 errmsg("a text value from Python contains a NUL byte")));
		if (GetDatabaseEncoding() == PG_UTF8)
		{
			pg_verifymbstr(copy, (int) len, false);
			server = copy;
		}
		else
			server = pg_any_to_server(copy, (int) len, PG_UTF8);
		if (conv->wire == WIRE_TEXT)
			return PointerGetDatum(cstring_to_text(server));
		return InputFunctionCall(&conv->infunc, server, conv->inioparam, conv->typmod);
	}
}

/* numeric's text of a scaled int64 (int64 max: NaN) */
static char *
decimal64_text(int64 v, int scale)
{
	uint64		u = v < 0 ? -(uint64) v : (uint64) v;
	uint64		p = 1;

	if (v == PG_INT64_MAX)
		return pstrdup("NaN");
	for (int k = 0; k < scale; k++)
		p *= 10;
	if (scale == 0)
		return psprintf("%s" UINT64_FORMAT, v < 0 ? "-" : "", u);
	return psprintf("%s" UINT64_FORMAT ".%0*" INT64_MODIFIER "u", v < 0 ? "-" : "", u / p, scale, u % p);
}

/*
 * orochi_batch_store_row
 *		Store the reader's next row into the slot (virtual tuple).  Datums are
 *		allocated in CurrentMemoryContext, which the caller resets per row.
 */
void
orochi_batch_store_row(OrochiBatchReader *reader, TupleTableSlot *slot, OrochiTypeConv *convs)
{
	int64		r = reader->next++;
	Datum	   *values = slot->tts_values;
	bool	   *nulls = slot->tts_isnull;
	ErrorContextCallback errcb;

	errcb.callback = conv_error_callback;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (int i = 0; i < reader->ncols; i++)
	{
		const char *buf;

		if (!reader->present[i] ||
			(reader->validity[i].buf && ((const uint8 *) reader->validity[i].buf)[r] == 0))
		{
			values[i] = (Datum) 0;
			nulls[i] = true;
			continue;
		}
		nulls[i] = false;
		buf = (const char *) reader->values[i].buf;
		errcb.arg = &convs[i];
		switch (reader->kinds[i])
		{
			case WIRE_BOOL:
				values[i] = BoolGetDatum(((const uint8 *) buf)[r] != 0);
				break;
			case WIRE_INT16:
				values[i] = Int16GetDatum(((const int16 *) buf)[r]);
				break;
			case WIRE_INT32:
				values[i] = Int32GetDatum(((const int32 *) buf)[r]);
				break;
			case WIRE_INT64:
				values[i] = Int64GetDatum(((const int64 *) buf)[r]);
				break;
			case WIRE_FLOAT32:
				values[i] = Float4GetDatum(((const float4 *) buf)[r]);
				break;
			case WIRE_FLOAT64:
				values[i] = Float8GetDatum(((const float8 *) buf)[r]);
				break;
			case WIRE_DATE:
				{
					DateADT		d = ((const int32 *) buf)[r];

					if (!DATE_NOT_FINITE(d) && !IS_VALID_DATE(d))
						ereport(ERROR,
								(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
								 errmsg("date out of range in a batch from Python")));
					values[i] = DateADTGetDatum(d);
					break;
				}
			case WIRE_TIMESTAMP:
				{
					Timestamp	t = ((const int64 *) buf)[r];

					if (!TIMESTAMP_NOT_FINITE(t) && !IS_VALID_TIMESTAMP(t))
						ereport(ERROR,
								(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
								 errmsg("timestamp out of range in a batch from Python")));
					values[i] = TimestampGetDatum(t);
					break;
				}
			case WIRE_TIME:
				{
					TimeADT		t = ((const int64 *) buf)[r];

					if (t < 0 || t > USECS_PER_DAY)
						ereport(ERROR,
								(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
								 errmsg("time out of range in a batch from Python")));
					values[i] = TimeADTGetDatum(t);
					break;
				}
			case WIRE_INTERVAL:
				if (((uintptr_t) buf % MAXIMUM_ALIGNOF) == 0)
					values[i] = PointerGetDatum(buf + r * 16);	/* lives with the batch */
				else
				{
					Interval   *iv = palloc(sizeof(Interval));

					memcpy(iv, buf + r * 16, 16);
					values[i] = IntervalPGetDatum(iv);
				}
				break;
			case WIRE_UUID:
				values[i] = PointerGetDatum(buf + r * 16);	/* no alignment needed */
				break;
			case WIRE_DECIMAL64:
				{
					int64		v = ((const int64 *) buf)[r];

					/*
					 * As numeric_in reads the value's text at that scale;
					 * int64_div_fast_to_numeric multiplies by up to 1000
					 * first (older minor releases of PostgreSQL 15 do so in
					 * int64 without an overflow check): the text for values
					 * that large.
					 */
					if (v > INT64CONST(999999999999999) || v < -INT64CONST(999999999999999))
						values[i] = DirectFunctionCall3(numeric_in,
														CStringGetDatum(decimal64_text(v, reader->scales[i])),
														ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
					else
						values[i] = NumericGetDatum(int64_div_fast_to_numeric(v, reader->scales[i]));
					break;
				}
			case WIRE_TEXT:
			case WIRE_BYTEA:
			case WIRE_CSTRING:
				if (reader->datums[i])
					values[i] = reader->datums[i][r];
				else
					values[i] = varwidth_to_datum(reader, i, r, &convs[i]);
				break;
			default:
				elog(ERROR, "orochi: unexpected wire kind %d", reader->kinds[i]);
		}
		if (typmod_after_read(reader->kinds[i], &convs[i]))
			values[i] = apply_typmod(values[i], &convs[i]);
	}
	error_context_stack = errcb.previous;
	if (reader->has_rowids)
		orochi_rowid_to_tid(((const int64 *) reader->rowids.buf)[r], &slot->tts_tid);
}

/*
 * orochi_row_store
 *		Per-row path: a dict (by column name) or a sequence (in the order of
 *		the table's non-dropped columns) into the slot.
 */
void
orochi_row_store(PyObject *row, TupleTableSlot *slot, OrochiTypeConv *convs, PyObject **attnames)
{
	TupleDesc	tupdesc = slot->tts_tupleDescriptor;
	ErrorContextCallback errcb;
	PyObject   *seq = NULL;
	bool		is_dict = PyDict_Check(row);
	Py_ssize_t	pos = 0;

	if (!is_dict)
	{
		if (!PyTuple_Check(row) && !PyList_Check(row))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("a wrapper yielded a %s; rows must be dicts, tuples or lists, "
							"and batches orochi_fdw.bridge.Batch objects",
							Py_TYPE(row)->tp_name)));
		seq = row;
	}

	errcb.callback = conv_error_callback;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	for (int i = 0; i < tupdesc->natts; i++)
	{
		PyObject   *item;

		if (TupleDescAttr(tupdesc, i)->attisdropped)
		{
			slot->tts_isnull[i] = true;
			continue;
		}
		if (is_dict)
		{
			item = PyDict_GetItemWithError(row, attnames[i]);
			if (item == NULL && PyErr_Occurred())
				orochi_py_raise("reading a row");
		}
		else
		{
			item = pos < PySequence_Fast_GET_SIZE(seq) ? PySequence_Fast_GET_ITEM(seq, pos) : NULL;
			pos++;
		}
		errcb.arg = &convs[i];
		if (item == NULL)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		else
			slot->tts_values[i] = orochi_py_to_datum(item, &convs[i], &slot->tts_isnull[i]);
	}
	error_context_stack = errcb.previous;
	if (!is_dict && PySequence_Fast_GET_SIZE(seq) != pos)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("a wrapper yielded a row of %zd values for a table of %zd columns",
						PySequence_Fast_GET_SIZE(seq), pos)));
}

/* ---------------------------------------------------------------------
 * Batches to Python (batch insert): slots appended column by column
 * ---------------------------------------------------------------------
 */
void
orochi_batch_writer_init(OrochiBatchWriter *writer, TupleDesc tupdesc, OrochiTypeConv *convs,
						 MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	int			natts = tupdesc->natts;

	writer->ncols = natts;
	writer->nrows = 0;
	writer->cxt = cxt;
	writer->kinds = palloc0(sizeof(OrochiWireKind) * natts);
	writer->values = palloc0(sizeof(StringInfoData) * natts);
	writer->validity = palloc0(sizeof(StringInfoData) * natts);
	writer->offsets = palloc0(sizeof(StringInfoData) * natts);
	for (int i = 0; i < natts; i++)
	{
		if (TupleDescAttr(tupdesc, i)->attisdropped)
			continue;
		writer->kinds[i] = convs[i].wire;
		initStringInfo(&writer->values[i]);
		initStringInfo(&writer->validity[i]);
		if (wire_width(writer->kinds[i]) == 0)
		{
			int64		zero = 0;

			initStringInfo(&writer->offsets[i]);
			appendBinaryStringInfo(&writer->offsets[i], (char *) &zero, sizeof(zero));
		}
	}
	MemoryContextSwitchTo(old);
}

static void
append_varwidth(OrochiBatchWriter *writer, int i, Datum value, OrochiTypeConv *conv)
{
	StringInfo	buf = &writer->values[i];
	int64		end;

	if (writer->kinds[i] == WIRE_BYTEA ||
		(writer->kinds[i] == WIRE_TEXT && GetDatabaseEncoding() == PG_UTF8))
	{
		struct varlena *t = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));

		appendBinaryStringInfo(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		if ((Pointer) t != DatumGetPointer(value))
			pfree(t);
	}
	else
	{
		char	   *s;
		char	   *utf8;

		if (writer->kinds[i] == WIRE_TEXT)
			s = TextDatumGetCString(value);
		else
			s = OutputFunctionCall(&conv->outfunc, value);
		utf8 = pg_server_to_any(s, strlen(s), PG_UTF8);
		appendBinaryStringInfo(buf, utf8, strlen(utf8));
		if (utf8 != s)
			pfree(utf8);
		pfree(s);
	}
	end = buf->len;
	appendBinaryStringInfo(&writer->offsets[i], (char *) &end, sizeof(end));
}

void
orochi_batch_writer_add(OrochiBatchWriter *writer, TupleTableSlot *slot, OrochiTypeConv *convs)
{
	MemoryContext old = MemoryContextSwitchTo(writer->cxt);
	ErrorContextCallback errcb;

	slot_getallattrs(slot);
	errcb.callback = conv_error_callback;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	for (int i = 0; i < writer->ncols; i++)
	{
		StringInfo	buf = &writer->values[i];
		Datum		value = slot->tts_values[i];
		bool		isnull = slot->tts_isnull[i];
		char		valid = isnull ? 0 : 1;
		int			width;

		if (writer->kinds[i] == WIRE_NONE)
			continue;
		errcb.arg = &convs[i];
		appendStringInfoCharMacro(&writer->validity[i], valid);
		width = wire_width(writer->kinds[i]);
		if (width > 0)
		{
			char		zero[16] = {0};
			union
			{
				uint8		b;
				int16		i16;
				int32		i32;
				int64		i64;
				float4		f4;
				float8		f8;
			}			v;

			if (isnull)
			{
				appendBinaryStringInfo(buf, zero, width);
				continue;
			}
			switch (writer->kinds[i])
			{
				case WIRE_BOOL:
					v.b = DatumGetBool(value) ? 1 : 0;
					break;
				case WIRE_INT16:
					v.i16 = DatumGetInt16(value);
					break;
				case WIRE_INT32:
				case WIRE_DATE:
					v.i32 = DatumGetInt32(value);
					break;
				case WIRE_INT64:
				case WIRE_TIMESTAMP:
				case WIRE_TIME:
					v.i64 = DatumGetInt64(value);
					break;
				case WIRE_FLOAT32:
					v.f4 = DatumGetFloat4(value);
					break;
				case WIRE_FLOAT64:
					v.f8 = DatumGetFloat8(value);
					break;
				case WIRE_INTERVAL:
				case WIRE_UUID:
					appendBinaryStringInfo(buf, DatumGetPointer(value), 16);
					continue;
				default:
					elog(ERROR, "orochi: unexpected wire kind %d", writer->kinds[i]);
			}
			appendBinaryStringInfo(buf, (char *) &v, width);
		}
		else if (isnull)
		{
			int64		end = buf->len;

			appendBinaryStringInfo(&writer->offsets[i], (char *) &end, sizeof(end));
		}
		else
			append_varwidth(writer, i, value, &convs[i]);
	}
	error_context_stack = errcb.previous;
	writer->nrows++;
	MemoryContextSwitchTo(old);
}

/*
 * orochi_batch_writer_take
 *		The buffered rows as (nrows, columns, None), every buffer copied into
 *		a Python bytes object; the writer is emptied.
 */
PyObject *
orochi_batch_writer_take(OrochiBatchWriter *writer, TupleDesc tupdesc)
{
	PyObject   *cols = PyList_New(writer->ncols);
	PyObject   *result;

	if (cols == NULL)
		orochi_py_raise("building a batch");
	for (int i = 0; i < writer->ncols; i++)
	{
		PyObject   *col;

		if (writer->kinds[i] == WIRE_NONE)
		{
			Py_INCREF(Py_None);
			PyList_SET_ITEM(cols, i, Py_None);
			continue;
		}
		if (wire_width(writer->kinds[i]) > 0)
			col = Py_BuildValue("(iy#y#O)", (int) writer->kinds[i],
								writer->values[i].data, (Py_ssize_t) writer->values[i].len,
								writer->validity[i].data, (Py_ssize_t) writer->validity[i].len,
								Py_None);
		else
			col = Py_BuildValue("(iy#y#y#)", (int) writer->kinds[i],
								writer->values[i].data, (Py_ssize_t) writer->values[i].len,
								writer->validity[i].data, (Py_ssize_t) writer->validity[i].len,
								writer->offsets[i].data, (Py_ssize_t) writer->offsets[i].len);
		if (col == NULL)
		{
			Py_DECREF(cols);
			orochi_py_raise("building a batch");
		}
		PyList_SET_ITEM(cols, i, col);
		resetStringInfo(&writer->values[i]);
		resetStringInfo(&writer->validity[i]);
		if (wire_width(writer->kinds[i]) == 0)
		{
			int64		zero = 0;

			resetStringInfo(&writer->offsets[i]);
			appendBinaryStringInfo(&writer->offsets[i], (char *) &zero, sizeof(zero));
		}
	}
	result = Py_BuildValue("(LNO)", (long long) writer->nrows, cols, Py_None);
	if (result == NULL)
		orochi_py_raise("building a batch");
	writer->nrows = 0;
	return result;
}
