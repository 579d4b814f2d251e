/*-------------------------------------------------------------------------
 *
 * wal.c
 *		  Columnar files in the WAL: Orochi's custom WAL resource manager.
 *
 * Stripe files (and the vector index files beside them) are immutable files
 * under the data directory, outside PostgreSQL's buffer manager.  Every
 * change to them goes through the WAL as one of three records, so that
 * crash recovery, streaming standbys, base backups and point-in-time
 * recovery carry them like any table:
 *
 *	FILE_DATA	a piece (at most OROCHI_WAL_PIECE bytes) of a new file: its
 *				path, offset and bytes.  The first piece of a file is flagged
 *				FIRST, the last LAST (which also gives the file's size).
 *	REMOVE		a file, an empty folder or a whole tree is removed.
 *	COPY_DIR	a database's folder is copied to a new database's folder
 *				(CREATE DATABASE ... TEMPLATE).
 *
 * The rule of the primary is "do, then log": a file is written, fsynced and
 * linked into place by the writer (Python) before its bytes are logged, a
 * folder is copied before COPY_DIR is logged.  So whatever redo start point a
 * crash, a restartpoint or a base backup picks, the file on disk at that
 * point is either complete or rewritten by the records replayed after it.
 * Removals go the other way: REMOVE is logged and flushed first, then the
 * file is removed, so that a crash between the two cannot leave a standby
 * with a file its primary no longer has.
 *
 * Redo is plain C in the startup process (no Python) and idempotent: a piece
 * is written at its offset into a file created if missing, the last piece
 * truncates the file to its size (a longer torn file is repaired), and every
 * piece is fsynced before the record counts as replayed (a restartpoint may
 * come right after it).  Removing what is already gone is not an error.
 *
 * The resource manager exists only when orochi is in shared_preload_libraries
 * (PostgreSQL registers custom resource managers at start-up only); without
 * it, Python refuses to write columnar files rather than write files that
 * would not replicate.  Paths in records are relative to the data directory
 * (the working directory of every server process) or absolute for a server's
 * data_dir outside it.
 *
 * The same module hooks CREATE DATABASE (a database made from a template
 * gets its own copy of the template's columnar folder) and DROP DATABASE (the
 * folder goes with the database).
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/copydir.h"
#include "storage/fd.h"
#include "tcop/utility.h"
#include "utils/guc.h"

/* record types (the high bits of xl_info) */
#define XLOG_OROCHI_FILE_DATA	0x00
#define XLOG_OROCHI_REMOVE		0x10
#define XLOG_OROCHI_COPY_DIR	0x20

/* FILE_DATA flags */
#define OROCHI_FILE_FIRST		0x0001
#define OROCHI_FILE_LAST		0x0002

/* what REMOVE removes */
#define OROCHI_REMOVE_FILE		0
#define OROCHI_REMOVE_EMPTY_DIR	1
#define OROCHI_REMOVE_TREE		2

/* bytes of a file per FILE_DATA record */
#define OROCHI_WAL_PIECE		(1024 * 1024)

/* the folder of columnar data inside the data directory (files.DEFAULT_FOLDER) */
#define OROCHI_DATA_FOLDER		"orochi"

typedef struct xl_orochi_file_data
{
	uint64		offset;			/* where the bytes go in the file */
	uint32		length;			/* bytes of data after the path */
	uint16		flags;			/* OROCHI_FILE_FIRST, OROCHI_FILE_LAST */
	uint16		path_len;		/* bytes of the path, no terminator */
	/* the path, then the data */
} xl_orochi_file_data;

typedef struct xl_orochi_remove
{
	uint16		kind;			/* OROCHI_REMOVE_* */
	uint16		path_len;
	/* the path */
} xl_orochi_remove;

typedef struct xl_orochi_copy_dir
{
	uint16		src_len;
	uint16		dst_len;
	/* the source folder, then the destination folder */
} xl_orochi_copy_dir;

/* the resource manager's id: the orochi.wal_resource_manager_id setting */
static int	orochi_wal_rmgr_id = OROCHI_WAL_RMGR_ID;

/* true once the resource manager is registered (preloaded servers only) */
static bool orochi_wal_registered = false;

static ProcessUtility_hook_type prev_process_utility = NULL;

static void orochi_wal_redo(XLogReaderState *record);
static void log_pieces(int fd, const char *path, const char *walpath, uint16 path_len, char *buf,
					   uint64 size);
static void orochi_wal_desc(StringInfo buf, XLogReaderState *record);
static const char *orochi_wal_identify(uint8 info);

static RmgrData orochi_rmgr = {
	.rm_name = "orochi",
	.rm_redo = orochi_wal_redo,
	.rm_desc = orochi_wal_desc,
	.rm_identify = orochi_wal_identify,
	.rm_startup = NULL,
	.rm_cleanup = NULL,
	.rm_mask = NULL,
	.rm_decode = NULL,			/* logical decoding skips the records */
};

/* ---------------------------------------------------------------- redo */

/*
 * check_path
 *		A path from a record: not empty, and no ".." component (records name
 *		files under the data directory or under a server's data_dir).
 */
static void
check_path(const char *path)
{
	const char *p = path;

	if (path[0] == '\0')
		elog(ERROR, "orochi WAL record with an empty path");
	while ((p = strstr(p, "..")) != NULL)
	{
		if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
			elog(ERROR, "orochi WAL record with a path leaving its folder: \"%s\"", path);
		p += 2;
	}
}

/* make the folder that holds "path" (and its parents) */
static void
ensure_parent_dir(const char *path)
{
	char	   *dir = pstrdup(path);
	char	   *slash = strrchr(dir, '/');

	if (slash != NULL && slash != dir)
	{
		*slash = '\0';
		if (pg_mkdir_p(dir, pg_dir_create_mode) != 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", dir)));
	}
	pfree(dir);
}

/* fsync the folder that holds "path" */
static void
fsync_parent_dir(const char *path)
{
	char	   *dir = pstrdup(path);
	char	   *slash = strrchr(dir, '/');

	if (slash != NULL && slash != dir)
	{
		*slash = '\0';
		fsync_fname(dir, true);
	}
	pfree(dir);
}

static void
redo_file_data(XLogReaderState *record)
{
	char	   *rec = XLogRecGetData(record);
	xl_orochi_file_data hdr;
	char	   *path;
	const char *data;
	int			fd;
	uint32		done = 0;

	memcpy(&hdr, rec, sizeof(hdr));
	path = pnstrdup(rec + sizeof(hdr), hdr.path_len);
	data = rec + sizeof(hdr) + hdr.path_len;
	check_path(path);
	ensure_parent_dir(path);

	fd = OpenTransientFile(path, O_RDWR | O_CREAT | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	while (done < hdr.length)
	{
		ssize_t		n = pg_pwrite(fd, data + done, hdr.length - done, hdr.offset + done);

		if (n <= 0)
		{
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				errno = ENOSPC;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write to file \"%s\": %m", path)));
		}
		done += n;
	}
	if ((hdr.flags & OROCHI_FILE_LAST) && ftruncate(fd, hdr.offset + hdr.length) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not truncate file \"%s\": %m", path)));
	/* durable before the record counts as replayed: a restartpoint may follow */
	if (pg_fsync(fd) != 0)
		ereport(data_sync_elevel(ERROR),
				(errcode_for_file_access(),
				 errmsg("could not fsync file \"%s\": %m", path)));
	if (CloseTransientFile(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", path)));
	if (hdr.flags & OROCHI_FILE_FIRST)
		fsync_parent_dir(path);
	pfree(path);
}

/* remove a file, an empty folder or a tree; what is gone already is fine */
static void
remove_path(const char *path, int kind)
{
	struct stat st;

	switch (kind)
	{
		case OROCHI_REMOVE_FILE:
			if (unlink(path) != 0 && errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove file \"%s\": %m", path)));
			break;
		case OROCHI_REMOVE_EMPTY_DIR:
			if (rmdir(path) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove directory \"%s\": %m", path)));
			break;
		case OROCHI_REMOVE_TREE:
			if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
				(void) rmtree(path, true);	/* warns about what it cannot remove */
			else if (unlink(path) != 0 && errno != ENOENT)
				ereport(WARNING,
						(errcode_for_file_access(),
						 errmsg("could not remove file \"%s\": %m", path)));
			break;
		default:
			elog(ERROR, "orochi WAL record: unknown removal kind %d", kind);
	}
}

static void
redo_remove(XLogReaderState *record)
{
	char	   *rec = XLogRecGetData(record);
	xl_orochi_remove hdr;
	char	   *path;

	memcpy(&hdr, rec, sizeof(hdr));
	path = pnstrdup(rec + sizeof(hdr), hdr.path_len);
	check_path(path);
	remove_path(path, hdr.kind);
	pfree(path);
}

/*
 * copy_folder
 *		Make "dst" an independent copy of "src" (nothing happens if "src" is
 *		missing); what "dst" held before is removed first, so that doing it
 *		again (redo) gives the same result.
 */
static void
copy_folder(char *src, char *dst)
{
	struct stat st;

	if (lstat(dst, &st) == 0)
		(void) rmtree(dst, true);
	if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode))
		return;
	ensure_parent_dir(dst);
	copydir(src, dst, true);	/* fsyncs what it writes */
	fsync_parent_dir(dst);
}

static void
redo_copy_dir(XLogReaderState *record)
{
	char	   *rec = XLogRecGetData(record);
	xl_orochi_copy_dir hdr;
	char	   *src;
	char	   *dst;

	memcpy(&hdr, rec, sizeof(hdr));
	src = pnstrdup(rec + sizeof(hdr), hdr.src_len);
	dst = pnstrdup(rec + sizeof(hdr) + hdr.src_len, hdr.dst_len);
	check_path(src);
	check_path(dst);
	copy_folder(src, dst);
	pfree(src);
	pfree(dst);
}

static void
orochi_wal_redo(XLogReaderState *record)
{
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	switch (info)
	{
		case XLOG_OROCHI_FILE_DATA:
			redo_file_data(record);
			break;
		case XLOG_OROCHI_REMOVE:
			redo_remove(record);
			break;
		case XLOG_OROCHI_COPY_DIR:
			redo_copy_dir(record);
			break;
		default:
			elog(PANIC, "orochi_wal_redo: unknown record type %u", info);
	}
}

static void
orochi_wal_desc(StringInfo buf, XLogReaderState *record)
{
	char	   *rec = XLogRecGetData(record);
	uint8		info = XLogRecGetInfo(record) & ~XLR_INFO_MASK;

	if (info == XLOG_OROCHI_FILE_DATA)
	{
		xl_orochi_file_data hdr;

		memcpy(&hdr, rec, sizeof(hdr));
		appendStringInfo(buf, "%.*s offset " UINT64_FORMAT " length %u%s%s",
						 (int) hdr.path_len, rec + sizeof(hdr), hdr.offset, hdr.length,
						 (hdr.flags & OROCHI_FILE_FIRST) ? " first" : "",
						 (hdr.flags & OROCHI_FILE_LAST) ? " last" : "");
	}
	else if (info == XLOG_OROCHI_REMOVE)
	{
		xl_orochi_remove hdr;

		memcpy(&hdr, rec, sizeof(hdr));
		appendStringInfo(buf, "%s %.*s",
						 hdr.kind == OROCHI_REMOVE_FILE ? "file" :
						 hdr.kind == OROCHI_REMOVE_EMPTY_DIR ? "empty directory" : "tree",
						 (int) hdr.path_len, rec + sizeof(hdr));
	}
	else if (info == XLOG_OROCHI_COPY_DIR)
	{
		xl_orochi_copy_dir hdr;

		memcpy(&hdr, rec, sizeof(hdr));
		appendStringInfo(buf, "%.*s to %.*s", (int) hdr.src_len, rec + sizeof(hdr),
						 (int) hdr.dst_len, rec + sizeof(hdr) + hdr.src_len);
	}
}

static const char *
orochi_wal_identify(uint8 info)
{
	switch (info & ~XLR_INFO_MASK)
	{
		case XLOG_OROCHI_FILE_DATA:
			return "FILE_DATA";
		case XLOG_OROCHI_REMOVE:
			return "REMOVE";
		case XLOG_OROCHI_COPY_DIR:
			return "COPY_DIR";
	}
	return NULL;
}

/* ---------------------------------------------------------------- logging */

static void
check_can_log(void)
{
	if (!orochi_wal_registered)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("orochi is not in shared_preload_libraries"),
				 errhint("Add orochi to shared_preload_libraries and restart the server.")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot write columnar files during recovery")));
}

static void
check_path_length(const char *path, Py_ssize_t len)
{
	if (len <= 0 || len > PG_UINT16_MAX || memchr(path, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid path for the WAL: \"%s\"", path)));
}

static XLogRecPtr
log_file_piece(const char *walpath, uint16 path_len, uint64 offset, const char *data,
			   uint32 length, uint16 flags)
{
	xl_orochi_file_data hdr;

	hdr.offset = offset;
	hdr.length = length;
	hdr.flags = flags;
	hdr.path_len = path_len;
	XLogBeginInsert();
	XLogRegisterData((char *) &hdr, sizeof(hdr));
	XLogRegisterData((char *) walpath, path_len);
	if (length > 0)
		XLogRegisterData((char *) data, length);
	return XLogInsert((RmgrId) orochi_wal_rmgr_id, XLOG_OROCHI_FILE_DATA);
}

/*
 * log_file_contents
 *		Log the whole of the complete file "path" under the name "walpath"
 *		(relative to the data directory, or absolute); returns its size.
 */
static uint64
log_file_contents(const char *path, const char *walpath, uint16 path_len)
{
	int			fd;
	struct stat st;
	char	   *volatile buf = NULL;
	uint64		size = 0;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\": %m", path)));
	PG_TRY();
	{
		if (fstat(fd, &st) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not stat file \"%s\": %m", path)));
		size = (uint64) st.st_size;
		buf = palloc(OROCHI_WAL_PIECE);
		log_pieces(fd, path, walpath, path_len, buf, size);
	}
	PG_FINALLY();
	{
		if (buf != NULL)
			pfree(buf);
		CloseTransientFile(fd);
	}
	PG_END_TRY();
	return size;
}

/* log the "size" bytes of the open file "fd" in pieces of OROCHI_WAL_PIECE */
static void
log_pieces(int fd, const char *path, const char *walpath, uint16 path_len, char *buf, uint64 size)
{
	uint64		offset = 0;

	do
	{
		uint32		want = (uint32) Min((uint64) OROCHI_WAL_PIECE, size - offset);
		uint32		got = 0;
		uint16		flags = 0;

		while (got < want)
		{
			ssize_t		n = pg_pread(fd, buf + got, want - got, offset + got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 n < 0 ? errmsg("could not read file \"%s\": %m", path)
						 : errmsg("file \"%s\" ended early while it was logged", path)));
			got += n;
		}
		if (offset == 0)
			flags |= OROCHI_FILE_FIRST;
		if (offset + want == size)
			flags |= OROCHI_FILE_LAST;
		log_file_piece(walpath, path_len, offset, buf, want, flags);
		offset += want;
	} while (offset < size);
}

/* ---------------------------------------------------------------- Python module */

/*
 * Run "body" under PG_TRY: a Postgres error becomes a Python SPIError (the
 * WAL insertion is reset, so that the next record can be logged).
 */
typedef PyObject *(*wal_body) (void *arg);

static PyObject *
run_guarded(wal_body body, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	PyObject   *volatile result = NULL;

	PG_TRY();
	{
		result = body(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		XLogResetInsertion();
		result = orochi_set_spi_error(edata);	/* the texts in the server encoding */
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return result;
}

static PyObject *
wal_available(PyObject *self, PyObject *noargs)
{
	return PyBool_FromLong(orochi_wal_registered);
}

static PyObject *
wal_resource_manager_id(PyObject *self, PyObject *noargs)
{
	return PyLong_FromLong(orochi_wal_rmgr_id);
}

typedef struct LogFileArgs
{
	const char *path;
	const char *walpath;
	Py_ssize_t	walpath_len;
} LogFileArgs;

static PyObject *
log_file_body(void *arg)
{
	LogFileArgs *a = (LogFileArgs *) arg;

	check_can_log();
	check_path_length(a->walpath, a->walpath_len);
	return PyLong_FromUnsignedLongLong(log_file_contents(a->path, a->walpath,
														(uint16) a->walpath_len));
}

/* log_file(path, walpath) -> size: log a complete file's bytes */
static PyObject *
wal_log_file(PyObject *self, PyObject *args)
{
	LogFileArgs a;

	if (!PyArg_ParseTuple(args, "ss#", &a.path, &a.walpath, &a.walpath_len))
		return NULL;
	return run_guarded(log_file_body, &a);
}

typedef struct RemovalsArgs
{
	PyObject   *items;			/* sequence of (walpath, kind) */
} RemovalsArgs;

static PyObject *
log_removals_body(void *arg)
{
	RemovalsArgs *a = (RemovalsArgs *) arg;
	Py_ssize_t	n = PySequence_Fast_GET_SIZE(a->items);
	XLogRecPtr	last = InvalidXLogRecPtr;

	check_can_log();
	for (Py_ssize_t i = 0; i < n; i++)
	{
		PyObject   *item = PySequence_Fast_GET_ITEM(a->items, i);
		const char *path;
		Py_ssize_t	path_len;
		int			kind;
		xl_orochi_remove hdr;

		if (!PyArg_ParseTuple(item, "s#i", &path, &path_len, &kind))
			return NULL;
		check_path_length(path, path_len);
		if (kind < OROCHI_REMOVE_FILE || kind > OROCHI_REMOVE_TREE)
			elog(ERROR, "unknown removal kind %d", kind);
		hdr.kind = (uint16) kind;
		hdr.path_len = (uint16) path_len;
		XLogBeginInsert();
		XLogRegisterData((char *) &hdr, sizeof(hdr));
		XLogRegisterData((char *) path, path_len);
		last = XLogInsert((RmgrId) orochi_wal_rmgr_id, XLOG_OROCHI_REMOVE);
	}
	/* on disk before anything is removed (see the file's header) */
	if (!XLogRecPtrIsInvalid(last))
		XLogFlush(last);
	Py_RETURN_NONE;
}

/* log_removals([(walpath, kind), ...]): log removals, flushed on return */
static PyObject *
wal_log_removals(PyObject *self, PyObject *arg)
{
	RemovalsArgs a;
	PyObject   *result;

	a.items = PySequence_Fast(arg, "log_removals expects a sequence of (path, kind)");
	if (a.items == NULL)
		return NULL;
	result = run_guarded(log_removals_body, &a);
	Py_DECREF(a.items);
	return result;
}

static PyMethodDef wal_methods[] = {
	{"available", wal_available, METH_NOARGS,
	"whether columnar files can be WAL-logged (orochi is preloaded)"},
	{"resource_manager_id", wal_resource_manager_id, METH_NOARGS,
	"the id of Orochi's WAL resource manager"},
	{"log_file", wal_log_file, METH_VARARGS,
	"log_file(path, walpath) -> size: log the bytes of a complete file"},
	{"log_removals", wal_log_removals, METH_O,
	"log_removals([(walpath, kind)]): log removals (0 file, 1 empty folder, 2 tree), flushed"},
	{NULL, NULL, 0, NULL}
};

static struct PyModuleDef wal_module = {
	PyModuleDef_HEAD_INIT, "_orochi_wal",
	"Columnar files in the WAL (Orochi's custom WAL resource manager).", -1, wal_methods
};

PyObject *
orochi_wal_module_init(void)
{
	PyObject   *mod = PyModule_Create(&wal_module);

	if (mod == NULL)
		return NULL;
	if (PyModule_AddIntConstant(mod, "REMOVE_FILE", OROCHI_REMOVE_FILE) < 0 ||
		PyModule_AddIntConstant(mod, "REMOVE_EMPTY_DIR", OROCHI_REMOVE_EMPTY_DIR) < 0 ||
		PyModule_AddIntConstant(mod, "REMOVE_TREE", OROCHI_REMOVE_TREE) < 0 ||
		PyModule_AddIntConstant(mod, "PIECE_BYTES", OROCHI_WAL_PIECE) < 0)
	{
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}

/* ---------------------------------------------------------------- databases */

static char *
database_folder(Oid dboid)
{
	return psprintf("%s/%u", OROCHI_DATA_FOLDER, dboid);
}

/*
 * copy_template_folder
 *		After CREATE DATABASE: the new database gets a copy of its template's
 *		columnar folder (the catalog names files relative to the database's
 *		own folder), copied first, then logged.
 */
static void
copy_template_folder(CreatedbStmt *stmt)
{
	const char *template_name = "template1";
	Oid			template_oid;
	Oid			new_oid;
	char	   *src;
	char	   *dst;
	struct stat st;
	ListCell   *lc;

	foreach(lc, stmt->options)
	{
		DefElem    *opt = (DefElem *) lfirst(lc);

		if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
			template_name = defGetString(opt);
	}
	template_oid = get_database_oid(template_name, true);
	new_oid = get_database_oid(stmt->dbname, true);
	if (!OidIsValid(template_oid) || !OidIsValid(new_oid))
		return;
	src = database_folder(template_oid);
	dst = database_folder(new_oid);
	if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode))
	{
		struct stat dst_st;

		/* a folder left by a database that had this oid before */
		if (lstat(dst, &dst_st) == 0)
			(void) rmtree(dst, true);
		return;
	}
	PG_TRY();
	{
		copy_folder(src, dst);
		if (orochi_wal_registered && XLogIsNeeded())
		{
			xl_orochi_copy_dir hdr;

			hdr.src_len = strlen(src);
			hdr.dst_len = strlen(dst);
			XLogBeginInsert();
			XLogRegisterData((char *) &hdr, sizeof(hdr));
			XLogRegisterData(src, hdr.src_len);
			XLogRegisterData(dst, hdr.dst_len);
			XLogInsert((RmgrId) orochi_wal_rmgr_id, XLOG_OROCHI_COPY_DIR);
		}
	}
	PG_CATCH();
	{
		/* the new database goes with the failed statement: so does its copy */
		(void) rmtree(dst, true);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* After DROP DATABASE: its columnar folder goes too (logged, then removed). */
static void
remove_database_folder(Oid dboid)
{
	char	   *dir = database_folder(dboid);
	struct stat st;

	if (lstat(dir, &st) != 0)
		return;
	if (orochi_wal_registered)
	{
		xl_orochi_remove hdr;
		XLogRecPtr	lsn;

		hdr.kind = OROCHI_REMOVE_TREE;
		hdr.path_len = strlen(dir);
		XLogBeginInsert();
		XLogRegisterData((char *) &hdr, sizeof(hdr));
		XLogRegisterData(dir, hdr.path_len);
		lsn = XLogInsert((RmgrId) orochi_wal_rmgr_id, XLOG_OROCHI_REMOVE);
		XLogFlush(lsn);
	}
	remove_path(dir, OROCHI_REMOVE_TREE);
}

static void
orochi_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					   ProcessUtilityContext context, ParamListInfo params,
					   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	Oid			dropped = InvalidOid;

	if (IsA(parsetree, DropdbStmt))
		dropped = get_database_oid(((DropdbStmt *) parsetree)->dbname, true);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
							 dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);

	if (IsA(parsetree, CreatedbStmt))
		copy_template_folder((CreatedbStmt *) parsetree);
	else if (OidIsValid(dropped) &&
			 !OidIsValid(get_database_oid(((DropdbStmt *) parsetree)->dbname, true)))
		remove_database_folder(dropped);
}

/* ---------------------------------------------------------------- start-up */

/*
 * orochi_wal_init
 *		From _PG_init: with shared_preload_libraries, register the resource
 *		manager (PostgreSQL allows it only then) and the CREATE / DROP
 *		DATABASE hook.
 */
void
orochi_wal_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("orochi.wal_resource_manager_id",
							"Id of Orochi's custom WAL resource manager.",
							"Change it only if another preloaded library claims the same id: "
							"on every server of a replication group, before any of them has "
							"WAL written with the old id to replay.",
							&orochi_wal_rmgr_id,
							OROCHI_WAL_RMGR_ID,
							RM_MIN_CUSTOM_ID, RM_MAX_CUSTOM_ID,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);
	RegisterCustomRmgr((RmgrId) orochi_wal_rmgr_id, &orochi_rmgr);
	orochi_wal_registered = true;

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = orochi_process_utility;
}
