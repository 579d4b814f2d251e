/*-------------------------------------------------------------------------
 *
 * py_security.c
 *		  Who SQL from Python runs as: the extension owner for Orochi's own
 *		  catalog (as Citus reads its metadata), or another role for a block
 *		  of Python (a job's owner, as VACUUM and REFRESH MATERIALIZED VIEW
 *		  run as the table's owner).
 *
 * Plumbing only.  Which statements are internal, whose rights a job has and
 * what a caller may do are decided in Python (orochi_fdw.bridge.spi and the
 * callers of its internal=True statements).
 *
 * Both switches impose SECURITY_RESTRICTED_OPERATION, so code running under
 * them cannot SET ROLE, SET SESSION AUTHORIZATION, RESET ROLE or create
 * temporary objects that would outlive the switch, and open a GUC nest
 * level, so that settings changed meanwhile are rolled back when the switch
 * ends.  An error ending the (sub)transaction restores the user as well.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/syscache.h"

/* the search path of internal statements: nothing a user created is found */
#define INTERNAL_SEARCH_PATH "pg_catalog, pg_temp"

/* extension name whose owner internal statements run as */
#define OROCHI_EXTENSION_NAME "orochi"

/*
 * orochi_extension_owner
 *		The role that owns the orochi extension (and so its catalog tables).
 *		ERROR if the extension is not installed in this database.
 */
Oid
orochi_extension_owner(void)
{
	Oid			extoid = get_extension_oid(OROCHI_EXTENSION_NAME, true);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(extoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"%s\" is not installed in this database", OROCHI_EXTENSION_NAME),
				 errhint("Run CREATE EXTENSION orochi.")));
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "could not find tuple for extension %u", extoid);
	owner = ((Form_pg_extension) GETSTRUCT(tuple))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return owner;
}

/*
 * orochi_internal_begin
 *		Run what follows as the extension owner, with the search path pinned
 *		to pg_catalog (then pg_temp), as a security-restricted operation.
 *		Must be paired with orochi_internal_end in the same (sub)transaction;
 *		an error in between is cleaned up by the (sub)transaction's abort.
 */
void
orochi_internal_begin(OrochiSecuritySave *save)
{
	Oid			owner = orochi_extension_owner();

	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	save->nestlevel = NewGUCNestLevel();
	SetUserIdAndSecContext(owner, save->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	(void) set_config_option("search_path", INTERNAL_SEARCH_PATH, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

void
orochi_internal_end(OrochiSecuritySave *save)
{
	AtEOXact_GUC(false, save->nestlevel);
	SetUserIdAndSecContext(save->userid, save->sec_context);
}

/*
 * _orochi_pg.become_user(role_oid) -> token
 *		Run what follows as role_oid (a security-restricted operation, with
 *		its own GUC nest level) until restore_user(token).
 */
static PyObject *
pg_become_user(PyObject *self, PyObject *arg)
{
	unsigned long role = PyLong_AsUnsignedLong(arg);
	OrochiSecuritySave save;
	volatile bool failed = false;
	MemoryContext oldcxt = CurrentMemoryContext;

	if (PyErr_Occurred())
		return NULL;
	PG_TRY();
	{
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum((Oid) role)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %lu does not exist", role)));
		GetUserIdAndSecContext(&save.userid, &save.sec_context);
		save.nestlevel = NewGUCNestLevel();
		SetUserIdAndSecContext((Oid) role, save.sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		PyErr_Format(PyExc_RuntimeError, "could not switch to role %lu: %s", role, edata->message);
		FreeErrorData(edata);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	return Py_BuildValue("(kiik)", (unsigned long) save.userid, save.sec_context, save.nestlevel,
						 role);
}

/* _orochi_pg.restore_user(token): end become_user */
static PyObject *
pg_restore_user(PyObject *self, PyObject *args)
{
	unsigned long userid;
	unsigned long role;
	int			sec_context;
	int			nestlevel;
	volatile bool failed = false;
	MemoryContext oldcxt = CurrentMemoryContext;

	if (!PyArg_ParseTuple(args, "(kiik)", &userid, &sec_context, &nestlevel, &role))
		return NULL;
	if (GetUserId() != (Oid) role)
	{
		/* someone else switched meanwhile and did not switch back */
		PyErr_Format(PyExc_RuntimeError, "the current role is %u, not the role %lu switched to",
					 GetUserId(), role);
		return NULL;
	}
	PG_TRY();
	{
		AtEOXact_GUC(false, nestlevel);
		SetUserIdAndSecContext((Oid) userid, sec_context);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		SetUserIdAndSecContext((Oid) userid, sec_context);
		PyErr_Format(PyExc_RuntimeError, "could not switch back from role %lu: %s", role,
					 edata->message);
		FreeErrorData(edata);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		return NULL;
	Py_RETURN_NONE;
}

/* _orochi_pg.is_superuser(): whether the current role is a superuser */
static PyObject *
pg_is_superuser(PyObject *self, PyObject *noargs)
{
	return PyBool_FromLong(superuser());
}

/* _orochi_pg.current_user_oid(): the current role (as current_user) */
static PyObject *
pg_current_user_oid(PyObject *self, PyObject *noargs)
{
	return PyLong_FromUnsignedLong(GetUserId());
}

/* _orochi_pg.setting(name): a setting's value as text, None if it does not exist */
static PyObject *
pg_setting(PyObject *self, PyObject *arg)
{
	const char *name = PyUnicode_AsUTF8(arg);
	const char *value;

	if (name == NULL)
		return NULL;
	/* GetConfigOption with missing_ok does not ERROR; no privilege filter: Python decides */
	value = GetConfigOption(name, true, false);
	if (value == NULL)
		Py_RETURN_NONE;
	return PyUnicode_FromString(value);
}

PyMethodDef orochi_security_methods[] = {
	{"become_user", pg_become_user, METH_O,
	"become_user(role_oid) -> token: run as that role (restricted) until restore_user(token)"},
	{"restore_user", pg_restore_user, METH_VARARGS, "restore_user(token)"},
	{"is_superuser", pg_is_superuser, METH_NOARGS, "whether the current role is a superuser"},
	{"current_user_oid", pg_current_user_oid, METH_NOARGS, "the oid of the current role"},
	{"setting", pg_setting, METH_O, "setting(name) -> its value as text, or None"},
	{NULL, NULL, 0, NULL}
};
