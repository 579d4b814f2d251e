/*-------------------------------------------------------------------------
 *
 * fdw_modify.c
 *		  INSERT (row by row or in column batches, also for COPY FROM),
 *		  UPDATE and DELETE through a row id, TRUNCATE, IMPORT FOREIGN SCHEMA, and the
 *		  lookup of a table's wrapper instance.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "lib/ilist.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/appendinfo.h"
#include "parser/parsetree.h"
#include "access/tableam.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/syscache.h"
#include "executor/nodeModifyTable.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

/* a batch is handed to Python when it has this many bytes buffered */
#define BATCH_FLUSH_BYTES (64 * 1024 * 1024)

#define ROWID_JUNK_NAME "orochi_rowid"

/*
 * Indexes of the items of the fdw_private list PlanForeignModify returns.
 */
enum FdwModifyPrivateIndex
{
	/* Integer: 1 if the statement calls functions that may read tables */
	FdwModifyPrivateCallsFunctions
};

typedef struct OrochiModifyState
{
	Relation	rel;
	TupleDesc	tupdesc;
	CmdType		operation;
	PyObject   *instance;
	OrochiTypeConv *convs;
	PyObject  **attnames;
	AttrNumber	rowid_attno;	/* junk attribute in the plan's output */
	bool		rowid_is_ctid;
	OrochiTypeConv rowid_conv;
	bool		batch_mode;		/* wrapper has insert_batch */
	int			batch_size;
	OrochiBatchWriter writer;
	bool		released;
	/* in the list of modifications under way (see orochi_flush_pending_writes) */
	dlist_node	node;
	bool		listed;
	SubTransactionId subid;		/* the sub-transaction it began in */
	bool		pending;		/* rows handed over since the last flush */
	bool		calls_functions;	/* no executor batches: see PlanForeignModify */
	Oid			userid;			/* the role writing (see orochi_flush_pending_writes) */
	int			sec_context;
	/* the single-row INSERT fast path (see FastInsertEntry), when taken */
	bool		fast;
	Relation	delta_rel;
	ResultRelInfo *delta_rinfo;
	TupleTableSlot *delta_slot;
	Oid			seq_relid;
	AttrNumber	delta_rowid_attno;
	AttrNumber *delta_attno;	/* per column of the table: its delta column, 0 none */
	/* for a row the fast path turns down after all (fast_insert_routable) */
	ModifyTableState *mtstate;
	bool		calls_functions_planned;
	uint64		epoch;			/* of the FastInsertEntry the state was made from */
} OrochiModifyState;

/*
 * A routed table (a table extension cuts its rows into parts: a hypertable's
 * chunks; orochi_fdw/columnar/extensions.py) allows the fast path for a row
 * that falls in a part Python knew of when it gave the layout: the layout
 * then also names the routing column, its kind, the parts' inclusive ranges
 * of its values, and the advisory lock writers hold (shared) against part
 * drops.  A row whose value is NULL, infinite or in no known part takes the
 * ordinary path (which errors, or creates the part; any change of a
 * hypertable's catalog rows invalidates the table's relcache entry through
 * orochi_hypertable_catalog_changed, so the layout is learned again).  After the lock the invalidation messages are read: a part dropped
 * by a transaction that committed before the lock was granted has dropped
 * the entry, and the row takes the ordinary path.
 */
typedef struct FastInsertRouting
{
	AttrNumber	attnum;			/* the routing column */
	char		kind;			/* 't' timestamp(tz), 'd' date, 's' int2, 'i' int4, 'l' int8 */
	int			nranges;
	int64	   *lo;				/* sorted, disjoint, inclusive; in TopMemoryContext */
	int64	   *hi;
	int32		lock_key;		/* pg_advisory_xact_lock_shared(lock_key, relid::int4) */
} FastInsertRouting;

/*
 * The single-row INSERT fast path.
 *
 * A one-row INSERT ... VALUES into a columnar table ends up as one row of the
 * table's delta store (a heap table, orochi_fdw/columnar/delta.py).  Through
 * Python that costs several calls per statement (the wrapper, the statement's
 * writes, an SPI INSERT); here the row is written into the delta table
 * directly.  Python decides, once per table and backend, whether a table
 * allows it and gives the layout (runtime.fast_insert_layout: the delta
 * table, its row id sequence, the delta column of each column); C only copies
 * the row's datums.  The facts are kept per backend and dropped whenever the
 * relcache entry of the table or of its delta table is invalidated (ALTER,
 * DROP, a table becoming a hypertable, change capture starting in the
 * database: Python invalidates then, spi.invalidate_relcache).  Anything
 * unusual (RETURNING, triggers, several rows, a table Python refused) takes
 * the ordinary path.
 */
typedef struct FastInsertEntry
{
	Oid			relid;			/* hash key */
	bool		allowed;
	Oid			delta_relid;
	Oid			seq_relid;
	AttrNumber	rowid_attno;
	int			natts;
	AttrNumber *delta_attno;	/* in TopMemoryContext */
	bool		routed;
	FastInsertRouting routing;
	uint64		epoch;			/* when it was learned (unique per backend) */
} FastInsertEntry;

static HTAB *fast_insert_cache = NULL;
static uint64 fast_insert_epoch = 0;

/*
 * The modifications under way in this backend (statements still running,
 * possibly several nested), whose rows may still be buffered in C or in the
 * wrapper.
 */
static dlist_head active_modifies = DLIST_STATIC_INIT(active_modifies);
static bool flushing = false;

/*
 * orochi_instance_for_relid
 *		The wrapper instance of a foreign table, from runtime.instance_for
 *		(which caches it while the options and columns stay the same).
 */
PyObject *
orochi_instance_for_relid(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	PyObject   *instance;

	PG_TRY();
	{
		instance = orochi_instance_for_relation(rel);
	}
	PG_FINALLY();
	{
		table_close(rel, AccessShareLock);
	}
	PG_END_TRY();
	return instance;
}

PyObject *
orochi_instance_for_relation(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	ForeignTable *table = GetForeignTable(relid);
	ForeignServer *server = GetForeignServer(table->serverid);
	PyObject   *instance;

	orochi_python_ensure();

	/*
	 * The table's wrapper joins the transaction in instance_for (its begin
	 * hook runs there): from now on the transaction's end must be reported
	 * to Python, even if instance_for fails.
	 */
	orochi_mark_xact_touched();
	instance = orochi_runtime_call("instance_for",
								   Py_BuildValue("(INNNNNi)", (unsigned int) relid,
												 orochi_cstring_to_py(server->servername),
												 orochi_options_to_dict(server->options),
												 orochi_options_to_dict(table->options),
												 orochi_tupdesc_columns(RelationGetDescr(rel), relid),
												 orochi_cstring_to_py(RelationGetRelationName(rel)),
												 RelationGetDescr(rel)->natts));
	return instance;
}

static void
fast_insert_entry_free(FastInsertEntry *entry)
{
	if (entry->delta_attno != NULL)
		pfree(entry->delta_attno);
	if (entry->routing.lo != NULL)
		pfree(entry->routing.lo);
	if (entry->routing.hi != NULL)
		pfree(entry->routing.hi);
	entry->delta_attno = NULL;
	entry->routing.lo = entry->routing.hi = NULL;
}

static void
fast_insert_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	FastInsertEntry *entry;

	if (fast_insert_cache == NULL)
		return;
	hash_seq_init(&status, fast_insert_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (OidIsValid(relid) && entry->relid != relid && entry->delta_relid != relid)
			continue;
		fast_insert_entry_free(entry);
		hash_search(fast_insert_cache, &entry->relid, HASH_REMOVE, NULL);
	}
}

static FastInsertEntry *
fast_insert_lookup(Oid relid)
{
	if (fast_insert_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(FastInsertEntry);
		fast_insert_cache = hash_create("orochi fast insert", 64, &ctl, HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(fast_insert_invalidate, (Datum) 0);
	}
	return hash_search(fast_insert_cache, &relid, HASH_FIND, NULL);
}

/*
 * orochi_hypertable_catalog_changed
 *		Trigger of orochi.hypertables and orochi.hypertable_chunks: a row of
 *		a hypertable changed (a chunk made, dropped or compressed, invalidation
 *		logging switched on or off, by whatever statement), so every backend
 *		must learn the table's layout again (FastInsertRouting): its relcache
 *		entry is invalidated, at commit for the other backends.
 */
PG_FUNCTION_INFO_V1(orochi_hypertable_catalog_changed);

Datum
orochi_hypertable_catalog_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	int			attnum;
	HeapTuple	tuples[2];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "orochi: %s must be called as a row trigger", "orochi._hypertable_catalog_changed");
	tupdesc = RelationGetDescr(trigdata->tg_relation);
	attnum = SPI_fnumber(tupdesc, "relid");
	if (attnum <= 0)
		elog(ERROR, "orochi: the table of trigger %s has no column \"relid\"", trigdata->tg_trigger->tgname);
	tuples[0] = trigdata->tg_trigtuple;
	tuples[1] = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_newtuple : NULL;
	for (int i = 0; i < 2; i++)
	{
		bool		isnull;
		Datum		d;
		Oid			relid;

		if (tuples[i] == NULL)
			continue;
		d = heap_getattr(tuples[i], attnum, tupdesc, &isnull);
		relid = isnull ? InvalidOid : DatumGetObjectId(d);
		/* a table being dropped has gone from pg_class already */
		if (OidIsValid(relid) && SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			CacheInvalidateRelcacheByRelid(relid);
	}
	return PointerGetDatum(NULL);
}

/*
 * fast_insert_learn
 *		Ask Python whether the table allows the fast path, and its layout:
 *		None, or (delta relid, sequence relid, row id attno, {attnum: delta
 *		attno}).
 */
static void
fast_insert_learn(Relation rel, PyObject *instance)
{
	Oid			relid = RelationGetRelid(rel);
	int			natts = RelationGetDescr(rel)->natts;
	PyObject   *res;
	FastInsertEntry entry;
	FastInsertEntry *e;
	bool		found;

	memset(&entry, 0, sizeof(entry));
	entry.relid = relid;
	entry.natts = natts;
	res = orochi_runtime_call("fast_insert_layout", Py_BuildValue("(O)", instance));
	if (res != Py_None)
	{
		unsigned int delta_relid,
					seq_relid;
		int			rowid_attno;
		PyObject   *attnos;
		PyObject   *key,
				   *value;
		Py_ssize_t	pos = 0;
		AttrNumber *map = MemoryContextAllocZero(TopMemoryContext, sizeof(AttrNumber) * Max(natts, 1));

		int			route_attnum = 0;
		const char *route_kind = NULL;
		PyObject   *ranges = NULL;
		int			lock_key = 0;

		if (!PyArg_ParseTuple(res, "IIiO!|isO!i", &delta_relid, &seq_relid, &rowid_attno, &PyDict_Type, &attnos,
							  &route_attnum, &route_kind, &PyList_Type, &ranges, &lock_key))
		{
			pfree(map);
			Py_DECREF(res);
			orochi_py_raise("fast_insert_layout must return (oid, oid, int, dict[, int, str, list, int]) or None");
		}
		if (ranges != NULL)
		{
			Py_ssize_t	n = PyList_Size(ranges);
			FastInsertRouting *r = &entry.routing;

			if (route_attnum < 1 || route_attnum > natts || strlen(route_kind) != 1 ||
				strchr("tdsil", route_kind[0]) == NULL)
			{
				pfree(map);
				Py_DECREF(res);
				elog(ERROR, "orochi: fast_insert_layout gave an invalid routing column");
			}
			entry.routed = true;
			r->attnum = (AttrNumber) route_attnum;
			r->kind = route_kind[0];
			r->lock_key = (int32) lock_key;
			r->nranges = (int) n;
			r->lo = MemoryContextAlloc(TopMemoryContext, sizeof(int64) * Max(n, 1));
			r->hi = MemoryContextAlloc(TopMemoryContext, sizeof(int64) * Max(n, 1));
			for (Py_ssize_t i = 0; i < n; i++)
			{
				PyObject   *item = PyList_GetItem(ranges, i);
				long long	lo,
							hi;

				if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "LL", &lo, &hi) ||
					(i > 0 && lo <= r->hi[i - 1]) || lo > hi)
				{
					pfree(map);
					fast_insert_entry_free(&entry);
					Py_DECREF(res);
					PyErr_Clear();
					elog(ERROR, "orochi: fast_insert_layout gave invalid part ranges");
				}
				r->lo[i] = (int64) lo;
				r->hi[i] = (int64) hi;
			}
		}
		while (PyDict_Next(attnos, &pos, &key, &value))
		{
			long		attnum = PyLong_AsLong(key);
			long		delta_attno = PyLong_AsLong(value);

			if (PyErr_Occurred() || attnum < 1 || attnum > natts || delta_attno < 1 ||
				delta_attno > MaxAttrNumber)
			{
				pfree(map);
				fast_insert_entry_free(&entry);
				Py_DECREF(res);
				PyErr_Clear();
				elog(ERROR, "orochi: fast_insert_layout gave an invalid column map");
			}
			map[attnum - 1] = (AttrNumber) delta_attno;
		}
		entry.allowed = true;
		entry.delta_relid = delta_relid;
		entry.seq_relid = seq_relid;
		entry.rowid_attno = (AttrNumber) rowid_attno;
		entry.delta_attno = map;
	}
	Py_DECREF(res);
	entry.epoch = ++fast_insert_epoch;
	e = hash_search(fast_insert_cache, &relid, HASH_ENTER, &found);
	if (found)
		fast_insert_entry_free(e);
	*e = entry;
}

/*
 * fast_insert_shape
 *		Whether the statement is a plain INSERT of at most one row (VALUES
 *		of one row: a Result node without input) with no RETURNING, no ON
 *		CONFLICT and no triggers on the table.
 */
static bool
fast_insert_shape(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	ModifyTable *plan = (ModifyTable *) mtstate->ps.plan;
	Plan	   *sub;

	if (mtstate->operation != CMD_INSERT || plan->returningLists != NIL ||
		plan->onConflictAction != ONCONFLICT_NONE || rinfo->ri_TrigDesc != NULL)
		return false;
	sub = outerPlanState(mtstate) ? outerPlanState(mtstate)->plan : NULL;
	return sub != NULL && IsA(sub, Result) && sub->lefttree == NULL;
}

/* A fast-path state: the delta table open, its indexes, a slot */
static OrochiModifyState *
fast_insert_begin(Relation rel, FastInsertEntry *entry, EState *estate)
{
	OrochiModifyState *state = palloc0(sizeof(OrochiModifyState));
	ResultRelInfo *drinfo = makeNode(ResultRelInfo);

	state->rel = rel;
	state->tupdesc = RelationGetDescr(rel);
	state->operation = CMD_INSERT;
	state->fast = true;
	state->epoch = entry->epoch;
	state->seq_relid = entry->seq_relid;
	state->delta_rowid_attno = entry->rowid_attno;
	state->delta_attno = palloc(sizeof(AttrNumber) * Max(entry->natts, 1));
	memcpy(state->delta_attno, entry->delta_attno, sizeof(AttrNumber) * entry->natts);
	state->delta_rel = table_open(entry->delta_relid, RowExclusiveLock);
	InitResultRelInfo(drinfo, state->delta_rel, 0, NULL, estate->es_instrument);
	ExecOpenIndices(drinfo, false);
	state->delta_rinfo = drinfo;
	state->delta_slot = MakeSingleTupleTableSlot(RelationGetDescr(state->delta_rel), &TTSOpsVirtual);
	return state;
}

/* The row, as a row of the delta table with the next row id */
static void
fast_insert_row(OrochiModifyState *state, TupleTableSlot *slot, EState *estate)
{
	TupleTableSlot *dslot = state->delta_slot;
	int			dnatts = dslot->tts_tupleDescriptor->natts;
	List	   *recheck;

	slot_getallattrs(slot);
	ExecClearTuple(dslot);
	for (int i = 0; i < dnatts; i++)
	{
		dslot->tts_values[i] = (Datum) 0;
		dslot->tts_isnull[i] = true;
	}
	for (int i = 0; i < state->tupdesc->natts; i++)
	{
		AttrNumber	d = state->delta_attno[i];

		if (d < 1 || d > dnatts)
			continue;
		dslot->tts_values[d - 1] = slot->tts_values[i];
		dslot->tts_isnull[d - 1] = slot->tts_isnull[i];
	}
	dslot->tts_values[state->delta_rowid_attno - 1] = Int64GetDatum(nextval_internal(state->seq_relid, false));
	dslot->tts_isnull[state->delta_rowid_attno - 1] = false;
	ExecStoreVirtualTuple(dslot);
	table_tuple_insert(state->delta_rel, dslot, estate->es_output_cid, 0, NULL);
	if (state->delta_rinfo->ri_NumIndices > 0)
	{
		recheck = ExecInsertIndexTuples(state->delta_rinfo, dslot, estate, false, false, NULL, NIL);
		list_free(recheck);
	}
}

/*
 * fast_insert_routable
 *		For a routed table: whether the row falls in a known part, with the
 *		writers' lock taken and the table's entry still the one the state was
 *		made from (see FastInsertRouting).  Any other row takes the ordinary
 *		path.
 */
static bool
fast_insert_routable(OrochiModifyState *state, TupleTableSlot *slot)
{
	FastInsertEntry *entry = fast_insert_lookup(RelationGetRelid(state->rel));
	FastInsertRouting *r;
	Datum		d;
	int64		v;
	int			lo,
				hi;

	if (entry == NULL || entry->epoch != state->epoch)
		return false;
	if (!entry->routed)
		return true;
	r = &entry->routing;
	slot_getallattrs(slot);
	if (slot->tts_isnull[r->attnum - 1])
		return false;
	d = slot->tts_values[r->attnum - 1];
	switch (r->kind)
	{
		case 't':
			v = DatumGetInt64(d);
			if (TIMESTAMP_NOT_FINITE(v))
				return false;
			break;
		case 'd':
			if (DATE_NOT_FINITE(DatumGetDateADT(d)))
				return false;
			v = DatumGetDateADT(d);
			break;
		case 's':
			v = DatumGetInt16(d);
			break;
		case 'i':
			v = DatumGetInt32(d);
			break;
		default:
			v = DatumGetInt64(d);
			break;
	}
	/* the last range starting at or before v */
	lo = 0;
	hi = r->nranges - 1;
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (r->lo[mid] <= v)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	if (hi < 0 || v > r->hi[hi])
		return false;
	DirectFunctionCall2(pg_advisory_xact_lock_shared_int4, Int32GetDatum(r->lock_key),
						Int32GetDatum((int32) RelationGetRelid(state->rel)));
	AcceptInvalidationMessages();
	entry = fast_insert_lookup(RelationGetRelid(state->rel));
	return entry != NULL && entry->epoch == state->epoch;
}

static void
fast_insert_end(OrochiModifyState *state)
{
	ExecCloseIndices(state->delta_rinfo);
	ExecDropSingleTupleTableSlot(state->delta_slot);
	table_close(state->delta_rel, NoLock);
	state->released = true;
}

/*
 * orochiAddForeignUpdateTargets
 *		Add the row id the wrapper names (rowid_column): one of the table's
 *		columns, or "ctid" for row ids the wrapper delivers with its batches.
 */
static void
orochiAddForeignUpdateTargets(PlannerInfo *root, Index rtindex, RangeTblEntry *target_rte,
							  Relation target_relation)
{
	PyObject   *res = orochi_runtime_call("rowid_column",
								   Py_BuildValue("(N)", orochi_instance_for_relation(target_relation)));
	const char *name;
	Var		   *var;

	if (res == Py_None || !PyUnicode_Check(res))
	{
		Py_DECREF(res);
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_CREATE_EXECUTION),
				 errmsg("foreign table \"%s\" does not support UPDATE or DELETE",
						RelationGetRelationName(target_relation)),
				 errdetail("Its wrapper names no rowid_column.")));
	}
	PG_TRY();
	{
		name = orochi_py_to_cstring(res);
	}
	PG_FINALLY();
	{
		Py_DECREF(res);
	}
	PG_END_TRY();
	if (strcmp(name, "ctid") == 0)
		var = makeVar(rtindex, SelfItemPointerAttributeNumber, TIDOID, -1, InvalidOid, 0);
	else
	{
		TupleDesc	tupdesc = RelationGetDescr(target_relation);
		Form_pg_attribute att = NULL;

		for (int i = 0; i < tupdesc->natts; i++)
		{
			Form_pg_attribute a = TupleDescAttr(tupdesc, i);

			if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
				att = a;
		}
		if (att == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("rowid_column \"%s\" is not a column of foreign table \"%s\"",
							name, RelationGetRelationName(target_relation))));
		var = makeVar(rtindex, att->attnum, att->atttypid, att->atttypmod, att->attcollation, 0);
	}
	add_row_identity_var(root, var, rtindex, ROWID_JUNK_NAME);
}

static bool
sees_writes_checker(Oid funcid, void *context)
{
	return orochi_function_sees_writes(funcid);
}

static bool
calls_functions_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, sees_writes_checker, context))
		return true;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, calls_functions_walker, context, 0);
	return expression_tree_walker(node, calls_functions_walker, context);
}

/*
 * orochiPlanForeignModify
 *		Refuse ON CONFLICT; note whether the statement calls functions that
 *		may read tables (volatile functions in SQL or a procedural language).
 *		Such a function must see the rows the statement wrote before it was
 *		called, as it would in a heap table: its calls flush the buffered rows
 *		(orochi_flush_pending_writes), and the executor must not hold rows
 *		back in batches of its own.
 */
static List *
orochiPlanForeignModify(PlannerInfo *root, ModifyTable *plan, Index resultRelation,
						int subplan_index)
{
	bool		calls = false;
	ListCell   *lc;

	if (plan->onConflictAction != ONCONFLICT_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("INSERT with ON CONFLICT is not supported on orochi foreign tables"),
				 errdetail("Foreign tables have no unique indexes to detect a conflict with.")));
	if (plan->operation == CMD_INSERT)
	{
		/* the statement as planned, and every subquery planned apart */
		calls = query_tree_walker(root->parse, calls_functions_walker, NULL, 0);
		foreach(lc, root->glob->subroots)
		{
			PlannerInfo *sub = (PlannerInfo *) lfirst(lc);

			if (!calls && sub != NULL && sub->parse != NULL)
				calls = query_tree_walker(sub->parse, calls_functions_walker, NULL, 0);
		}
	}
	return list_make1(makeInteger(calls ? 1 : 0));
}

static void
modify_state_reset_callback(void *arg)
{
	OrochiModifyState *state = (OrochiModifyState *) arg;

	if (state->listed)
	{
		dlist_delete(&state->node);
		state->listed = false;
	}
	if (state->released)
		return;
	state->released = true;
	if (!orochi_python_cleanup_allowed())
		return;
	for (int i = 0; i < state->tupdesc->natts; i++)
		Py_CLEAR(state->attnames[i]);
	Py_CLEAR(state->instance);
}

static OrochiModifyState *
modify_state_create(Relation rel, CmdType operation, ModifyTableState *mtstate)
{
	OrochiModifyState *state = palloc0(sizeof(OrochiModifyState));
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));
	TupleDesc	tupdesc = RelationGetDescr(rel);
	PyObject   *res;
	long		batch_size;

	orochi_python_ensure();
	state->rel = rel;
	state->tupdesc = tupdesc;
	state->operation = operation;
	state->convs = palloc0(sizeof(OrochiTypeConv) * tupdesc->natts);
	state->attnames = palloc0(sizeof(PyObject *) * tupdesc->natts);
	cb->func = modify_state_reset_callback;
	cb->arg = state;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		orochi_type_conv_init(&state->convs[i], att->atttypid, att->atttypmod,
							  NameStr(att->attname));
		state->attnames[i] = orochi_cstring_to_py(NameStr(att->attname));
	}
	state->instance = orochi_instance_for_relation(rel);

	/* tell the wrapper a modification starts (before its scans iterate) */
	res = orochi_runtime_call("begin_modify",
							  Py_BuildValue("(Os)", state->instance,
											operation == CMD_INSERT ? "insert" :
											operation == CMD_UPDATE ? "update" : "delete"));
	Py_DECREF(res);

	if (operation == CMD_INSERT)
	{
		res = orochi_runtime_call("insert_batch_size", Py_BuildValue("(O)", state->instance));
		batch_size = PyLong_AsLong(res);
		Py_DECREF(res);
		if (batch_size == -1 && PyErr_Occurred())
			orochi_py_raise("insert_batch_size must return an int");
		state->batch_mode = batch_size > 0;
		state->batch_size = (int) Min(Max(batch_size, 1), 1000000);
		if (state->batch_mode)
			orochi_batch_writer_init(&state->writer, tupdesc, state->convs,
									 AllocSetContextCreate(CurrentMemoryContext,
														   "orochi insert batch",
														   ALLOCSET_DEFAULT_SIZES));
	}
	else if (mtstate != NULL)
	{
		Plan	   *subplan = outerPlanState(mtstate)->plan;

		state->rowid_attno = ExecFindJunkAttributeInTlist(subplan->targetlist, ROWID_JUNK_NAME);
		if (!AttributeNumberIsValid(state->rowid_attno))
			elog(ERROR, "orochi: could not find the row id junk column");
		{
			TargetEntry *tle = list_nth(subplan->targetlist, state->rowid_attno - 1);
			Oid			type = exprType((Node *) tle->expr);

			state->rowid_is_ctid = (type == TIDOID);
			orochi_type_conv_init(&state->rowid_conv, type, exprTypmod((Node *) tle->expr), "row id");
		}
	}
	orochi_mark_xact_touched();
	state->subid = GetCurrentSubTransactionId();
	GetUserIdAndSecContext(&state->userid, &state->sec_context);
	dlist_push_tail(&active_modifies, &state->node);
	state->listed = true;
	return state;
}

static void
orochiBeginForeignModify(ModifyTableState *mtstate, ResultRelInfo *rinfo, List *fdw_private,
						 int subplan_index, int eflags)
{
	OrochiModifyState *state;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	if (orochi_insert_fast_path && fast_insert_shape(mtstate, rinfo))
	{
		Oid			relid = RelationGetRelid(rinfo->ri_RelationDesc);
		FastInsertEntry *entry = fast_insert_lookup(relid);

		if (entry == NULL)
		{
			/* learned now, this statement may take it already */
			PyObject   *instance = orochi_instance_for_relation(rinfo->ri_RelationDesc);

			fast_insert_learn(rinfo->ri_RelationDesc, instance);
			Py_DECREF(instance);
			entry = fast_insert_lookup(relid);
		}
		if (entry != NULL && entry->allowed)
		{
			state = fast_insert_begin(rinfo->ri_RelationDesc, entry, mtstate->ps.state);
			state->mtstate = mtstate;
			state->calls_functions_planned = fdw_private != NIL &&
				intVal(list_nth(fdw_private, FdwModifyPrivateCallsFunctions)) != 0;
			rinfo->ri_FdwState = state;
			return;
		}
	}
	state = modify_state_create(rinfo->ri_RelationDesc, mtstate->operation, mtstate);
	state->calls_functions = fdw_private != NIL &&
		intVal(list_nth(fdw_private, FdwModifyPrivateCallsFunctions)) != 0;
	rinfo->ri_FdwState = state;
}

/* COPY FROM and tuple routing into a foreign partition */
static void
orochiBeginForeignInsert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	rinfo->ri_FdwState = modify_state_create(rinfo->ri_RelationDesc, CMD_INSERT, NULL);
}

static void
flush_batch(OrochiModifyState *state)
{
	PyObject   *wire;
	PyObject   *res;

	if (!state->batch_mode || state->writer.nrows == 0)
		return;
	wire = orochi_batch_writer_take(&state->writer, state->tupdesc);
	res = orochi_runtime_call("insert_batch", Py_BuildValue("(ON)", state->instance, wire));
	Py_DECREF(res);
}

static void
buffer_row(OrochiModifyState *state, TupleTableSlot *slot)
{
	int64		bytes = 0;

	orochi_batch_writer_add(&state->writer, slot, state->convs);
	for (int i = 0; i < state->writer.ncols; i++)
		if (state->writer.kinds[i] != WIRE_NONE)
			bytes += state->writer.values[i].len;
	if (state->writer.nrows >= state->batch_size || bytes >= BATCH_FLUSH_BYTES)
		flush_batch(state);
}

/* The slot's values as a dict keyed by column name */
static PyObject *
slot_to_dict(OrochiModifyState *state, TupleTableSlot *slot)
{
	PyObject   *dict = PyDict_New();

	if (dict == NULL)
		orochi_py_raise("building a row");
	slot_getallattrs(slot);
	PG_TRY();
	{
		for (int i = 0; i < state->tupdesc->natts; i++)
		{
			PyObject   *v;

			if (TupleDescAttr(state->tupdesc, i)->attisdropped)
				continue;
			v = orochi_datum_to_py(slot->tts_values[i], slot->tts_isnull[i], &state->convs[i]);
			if (PyDict_SetItem(dict, state->attnames[i], v) < 0)
			{
				Py_DECREF(v);
				orochi_py_raise("building a row");
			}
			Py_DECREF(v);
		}
	}
	PG_CATCH();
	{
		OROCHI_RELEASE(dict);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return dict;
}

/*
 * A row returned by insert/update (for RETURNING) replaces the slot's values.
 * False from update means the row was not updated (this statement already
 * modified it): NULL, so that the executor neither counts nor returns it.
 */
static TupleTableSlot *
store_returned_row(OrochiModifyState *state, PyObject *res, TupleTableSlot *slot)
{
	if (res == Py_None)
	{
		Py_DECREF(res);
		return slot;
	}
	if (res == Py_False)
	{
		Py_DECREF(res);
		return NULL;
	}
	PG_TRY();
	{
		slot_getallattrs(slot);
		ExecClearTuple(slot);
		orochi_row_store(res, slot, state->convs, state->attnames);
		ExecStoreVirtualTuple(slot);
	}
	PG_FINALLY();
	{
		OROCHI_RELEASE(res);
	}
	PG_END_TRY();
	return slot;
}

/*
 * NOT NULL and CHECK constraints: Postgres checks them for heap tables only
 * (a foreign table's constraints are taken on trust), but an orochi table is
 * where the rows are stored, so the bridge checks them, with Postgres's own
 * check and errors, before a row reaches the wrapper.
 */
static void
check_constraints(ResultRelInfo *rinfo, TupleTableSlot *slot, EState *estate)
{
	TupleConstr *constr = RelationGetDescr(rinfo->ri_RelationDesc)->constr;

	if (constr != NULL && (constr->has_not_null || constr->num_check > 0))
		ExecConstraints(rinfo, slot, estate);
}

static TupleTableSlot *
orochiExecForeignInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
						TupleTableSlot *planSlot)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;

	check_constraints(rinfo, slot, estate);
	if (state->fast)
	{
		OrochiModifyState *slow;
		MemoryContext oldcxt;

		if (fast_insert_routable(state, slot))
		{
			fast_insert_row(state, slot, estate);
			return slot;
		}
		/* not for the fast path after all: the ordinary path takes the row */
		oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
		slow = modify_state_create(state->rel, CMD_INSERT, state->mtstate);
		MemoryContextSwitchTo(oldcxt);
		slow->calls_functions = state->calls_functions_planned;
		fast_insert_end(state);
		rinfo->ri_FdwState = state = slow;
	}
	state->pending = true;
	if (state->batch_mode)
		buffer_row(state, slot);
	else
		return store_returned_row(state,
								  orochi_runtime_call("insert", Py_BuildValue("(ON)", state->instance,
																			  slot_to_dict(state, slot))),
								  slot);
	return slot;
}

static TupleTableSlot **
orochiExecForeignBatchInsert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot **slots,
							 TupleTableSlot **planSlots, int *numSlots)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;

	for (int i = 0; i < *numSlots; i++)
	{
		check_constraints(rinfo, slots[i], estate);
		state->pending = true;
		buffer_row(state, slots[i]);
	}
	return slots;
}

/*
 * orochiGetForeignModifyBatchSize
 *		Batches only where the executor allows them (no RETURNING, no row
 *		triggers); rows are buffered in column form in either case.
 */
static int
orochiGetForeignModifyBatchSize(ResultRelInfo *rinfo)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;

	if (state == NULL || !state->batch_mode || state->calls_functions ||
		rinfo->ri_projectReturning != NULL ||
		(rinfo->ri_TrigDesc &&
		 (rinfo->ri_TrigDesc->trig_insert_before_row || rinfo->ri_TrigDesc->trig_insert_after_row)))
		return 1;
	return Min(state->batch_size, 1000);
}

static PyObject *
rowid_from_plan_slot(OrochiModifyState *state, TupleTableSlot *planSlot)
{
	bool		isnull;
	Datum		d = ExecGetJunkAttribute(planSlot, state->rowid_attno, &isnull);

	if (isnull)
		elog(ERROR, "orochi: row id is NULL");
	if (state->rowid_is_ctid)
		return PyLong_FromLongLong(orochi_tid_to_rowid((ItemPointer) DatumGetPointer(d)));
	return orochi_datum_to_py(d, false, &state->rowid_conv);
}

static TupleTableSlot *
orochiExecForeignUpdate(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
						TupleTableSlot *planSlot)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;
	PyObject   *rowid;
	PyObject   *values;

	check_constraints(rinfo, slot, estate);
	state->pending = true;
	rowid = rowid_from_plan_slot(state, planSlot);

	PG_TRY();
	{
		values = slot_to_dict(state, slot);
	}
	PG_CATCH();
	{
		OROCHI_RELEASE(rowid);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return store_returned_row(state,
							  orochi_runtime_call("update", Py_BuildValue("(ONN)", state->instance, rowid, values)),
							  slot);
}

static TupleTableSlot *
orochiExecForeignDelete(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
						TupleTableSlot *planSlot)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;
	PyObject   *res;

	state->pending = true;
	res = orochi_runtime_call("delete", Py_BuildValue("(ON)", state->instance,
											   rowid_from_plan_slot(state, planSlot)));

	/* False: the row was not deleted (this statement already deleted it) */
	if (res == Py_False)
	{
		Py_DECREF(res);
		return NULL;
	}

	/*
	 * RETURNING needs the deleted row, which only the wrapper can give (as a
	 * dict, like update's); without one the values would all read as NULL.
	 */
	if (rinfo->ri_projectReturning != NULL)
	{
		if (res == Py_None)
		{
			Py_DECREF(res);
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("DELETE ... RETURNING is not supported on foreign table \"%s\"",
							RelationGetRelationName(rinfo->ri_RelationDesc)),
					 errdetail("Its wrapper's delete() returns no row.")));
		}
		ExecClearTuple(slot);
		for (int i = 0; i < slot->tts_tupleDescriptor->natts; i++)
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
		ExecStoreVirtualTuple(slot);
		store_returned_row(state, res, slot);
		return slot;
	}
	Py_DECREF(res);
	return slot;
}

static void
orochiEndForeignModify(EState *estate, ResultRelInfo *rinfo)
{
	OrochiModifyState *state = (OrochiModifyState *) rinfo->ri_FdwState;
	PyObject   *res;

	if (state == NULL || state->released)
		return;
	if (state->fast)
	{
		fast_insert_end(state);
		return;
	}
	state->pending = false;
	flush_batch(state);
	res = orochi_runtime_call("end_modify", Py_BuildValue("(O)", state->instance));
	Py_DECREF(res);
	modify_state_reset_callback(state);
}

static void
orochiEndForeignInsert(EState *estate, ResultRelInfo *rinfo)
{
	orochiEndForeignModify(estate, rinfo);
}

/* ---------------------------------------------------------------------
 * Rows a running statement has not handed over yet
 * ---------------------------------------------------------------------
 */

/*
 * orochi_flush_pending_writes
 *		Hand every row the running modifications hold back (in C's batch
 *		buffer, or in the wrapper until the end of the statement) to where a
 *		query sees it: the wrapper's flush_writes().  Called before a trigger
 *		function or a volatile function that may read tables runs (see
 *		hooks.c), so that it sees the statement's writes as it would see a
 *		heap table's: AFTER triggers see all of them, a function called for a
 *		row sees the rows written before.
 *
 *		The function manager calls its hook once the function's own identity
 *		is in place (a SECURITY DEFINER function's owner, with its settings).
 *		The rows are the writing statement's, so they are handed over as the
 *		role that was writing them, as the end of the statement would, never
 *		as the function's owner; the security context only gains
 *		restrictions.
 */
void
orochi_flush_pending_writes(void)
{
	dlist_iter	iter;
	Oid			save_userid;
	int			save_sec_context;

	if (flushing || dlist_is_empty(&active_modifies))
		return;
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	flushing = true;
	PG_TRY();
	{
		dlist_foreach(iter, &active_modifies)
		{
			OrochiModifyState *state = dlist_container(OrochiModifyState, node, iter.cur);
			PyObject   *res;

			if (!state->pending || state->released)
				continue;
			state->pending = false;
			if (state->userid != save_userid)
				SetUserIdAndSecContext(state->userid, save_sec_context | state->sec_context |
									   SECURITY_LOCAL_USERID_CHANGE);
			flush_batch(state);
			res = orochi_runtime_call("flush_writes", Py_BuildValue("(O)", state->instance));
			Py_DECREF(res);
			SetUserIdAndSecContext(save_userid, save_sec_context);
		}
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
		flushing = false;
	}
	PG_END_TRY();
}

bool
orochi_has_pending_writes(void)
{
	dlist_iter	iter;

	if (flushing)
		return false;
	dlist_foreach(iter, &active_modifies)
	{
		if (dlist_container(OrochiModifyState, node, iter.cur)->pending)
			return true;
	}
	return false;
}

/*
 * A statement that failed leaves the list with its memory: the modifications
 * begun in an aborted (sub-)transaction are forgotten at once.
 */
static void
forget_modifies(SubTransactionId from)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &active_modifies)
	{
		OrochiModifyState *state = dlist_container(OrochiModifyState, node, iter.cur);

		if (from == InvalidSubTransactionId || state->subid >= from)
		{
			dlist_delete(&state->node);
			state->listed = false;
		}
	}
}

void
orochi_modify_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		forget_modifies(InvalidSubTransactionId);
}

void
orochi_modify_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		forget_modifies(mySubid);
}

/*
 * orochiExecForeignTruncate
 *		TRUNCATE of one or more foreign tables of this wrapper: the runtime's
 *		truncate(handles, behavior, restart_seqs) calls each wrapper's
 *		truncate().  Relations arrive locked by the executor.
 */
static void
orochiExecForeignTruncate(List *rels, DropBehavior behavior, bool restart_seqs)
{
	PyObject   *handles = PyList_New(0);
	PyObject   *res;
	ListCell   *lc;

	if (handles == NULL)
		orochi_py_raise("truncate");
	PG_TRY();
	{
		foreach(lc, rels)
		{
			PyObject   *handle = orochi_instance_for_relation((Relation) lfirst(lc));
			int			rc = PyList_Append(handles, handle);

			Py_DECREF(handle);
			if (rc < 0)
				orochi_py_raise("truncate");
		}
	}
	PG_CATCH();
	{
		OROCHI_RELEASE(handles);
		PG_RE_THROW();
	}
	PG_END_TRY();
	res = orochi_runtime_call("truncate",
					   Py_BuildValue("(Nsi)", handles,
									 behavior == DROP_CASCADE ? "cascade" : "restrict",
									 (int) restart_seqs));
	Py_DECREF(res);
}

/*
 * orochiImportForeignSchema
 *		The wrapper returns the CREATE FOREIGN TABLE statements.
 */
static List *
orochiImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
	ForeignServer *server = GetForeignServer(serverOid);
	PyObject   *tables;
	PyObject   *res;
	List	   *commands = NIL;
	ListCell   *lc;
	const char *list_type = stmt->list_type == FDW_IMPORT_SCHEMA_LIMIT_TO ? "limit" :
	stmt->list_type == FDW_IMPORT_SCHEMA_EXCEPT ? "except" : "all";

	orochi_python_ensure();
	tables = PyList_New(0);
	if (tables == NULL)
		orochi_py_raise("import_schema");
	foreach(lc, stmt->table_list)
	{
		RangeVar   *rv = (RangeVar *) lfirst(lc);
		PyObject   *name = orochi_cstring_to_py(rv->relname);

		PyList_Append(tables, name);
		Py_DECREF(name);
	}
	res = orochi_runtime_call("import_schema",
					   Py_BuildValue("(NNNNNN)", orochi_cstring_to_py(server->servername),
									 orochi_options_to_dict(server->options),
									 orochi_cstring_to_py(stmt->remote_schema),
									 orochi_cstring_to_py(stmt->local_schema ? stmt->local_schema : ""),
									 Py_BuildValue("(sN)", list_type, tables),
									 orochi_options_to_dict(stmt->options)));
	if (!PyList_Check(res))
	{
		Py_DECREF(res);
		elog(ERROR, "orochi: import_schema must return a list of statements");
	}
	for (Py_ssize_t i = 0; i < PyList_GET_SIZE(res); i++)
	{
		PyObject   *s = PyList_GET_ITEM(res, i);

		if (!PyUnicode_Check(s))
			continue;
		commands = lappend(commands, orochi_py_to_cstring(s));
	}
	Py_DECREF(res);
	return commands;
}

void
orochi_fill_modify_routine(FdwRoutine *routine)
{
	/* updating */
	routine->AddForeignUpdateTargets = orochiAddForeignUpdateTargets;
	routine->PlanForeignModify = orochiPlanForeignModify;
	routine->BeginForeignModify = orochiBeginForeignModify;
	routine->ExecForeignInsert = orochiExecForeignInsert;
	routine->ExecForeignBatchInsert = orochiExecForeignBatchInsert;
	routine->GetForeignModifyBatchSize = orochiGetForeignModifyBatchSize;
	routine->ExecForeignUpdate = orochiExecForeignUpdate;
	routine->ExecForeignDelete = orochiExecForeignDelete;
	routine->EndForeignModify = orochiEndForeignModify;
	routine->BeginForeignInsert = orochiBeginForeignInsert;
	routine->EndForeignInsert = orochiEndForeignInsert;

	/* TRUNCATE */
	routine->ExecForeignTruncate = orochiExecForeignTruncate;

	/* IMPORT FOREIGN SCHEMA */
	routine->ImportForeignSchema = orochiImportForeignSchema;
}
