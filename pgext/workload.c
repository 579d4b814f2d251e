/*-------------------------------------------------------------------------
 *
 * workload.c
 *		  Workload management: resource pools with admission control,
 *		  priorities, a wait queue and per-pool timeouts (docs/workload.md).
 *
 * The plumbing only.  Pools and workload classes are defined, validated and
 * stored by Python (orochi_fdw/workload/) in catalog tables of one database
 * (orochi.workload_database); this file mirrors those tables into shared
 * memory and admits every statement of every client backend against them
 * without calling Python.  The pieces:
 *
 *	WorkloadShared		the shared segment (needs shared_preload_libraries):
 *						one LWLock, the definitions in force, a generation
 *						counter bumped whenever they change, and the live
 *						state of every pool and every backend.
 *	WorkloadPool		a pool's definition, its running and queued counts,
 *						its queue (a dlist of backends, in priority then
 *						arrival order) and its statistics.
 *	WorkloadBackend		one per backend (by BackendId): state (idle, queued,
 *						running), pool, class, priority, arrival number,
 *						timestamps, and a session class assignment.
 *	the session cache	(backend-local) the classes that can apply to this
 *						session, found once per generation, role and
 *						application_name; a statement then only tests the
 *						per-statement criteria (kind, estimated cost).
 *	the loader			a short-lived background worker that reads the
 *						catalog when the definitions are first needed after
 *						start-up (or a crash restart) or on reload; a
 *						transaction that changes the catalog (holding a
 *						self-conflicting lock on it) reads it at pre-commit
 *						and publishes it at commit.
 *
 * Admission.  A top-level statement is admitted before it runs: a plannable
 * statement at ExecutorStart (its plan's cost is known there), a utility
 * statement (DDL, COPY, CALL, DO ...) at ProcessUtility.  While a backend
 * holds a slot, everything else it starts (SPI in functions, cursors, a
 * second portal) runs under that slot.  A statement that finds its pool
 * full joins the pool's queue and sleeps on its latch; a backend freeing a
 * slot hands it to the head of the queue directly (the slot is counted as
 * the waiter's before it wakes), so the order is exactly priority then
 * arrival and no one polls.  A waiter leaves the queue on cancel,
 * statement_timeout, the pool's queue_timeout_ms or termination; a backend
 * that exits frees its slot from a before_shmem_exit callback, and a crash
 * (kill -9) makes the postmaster reinitialise shared memory, after which the
 * definitions are loaded again.
 *
 * A statement's relation locks are taken at parse and plan time, before it
 * is admitted, and earlier statements of its transaction may hold more.  So
 * a queued statement might hold a lock that a statement holding a slot of
 * its pool waits for: a cycle no deadlock detector sees.  The waiter checks
 * for it when it joins the queue and every deadlock_timeout after: if a slot
 * holder of its pool waits, directly or through other lock waits and pool
 * queues, for this backend, the waiter is admitted at once, beyond the
 * pool's limit (the holder it blocks does not run either), and the pool's
 * lock_admitted counter says so.
 *
 *-------------------------------------------------------------------------
 */
#include "orochi.h"

#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "optimizer/planner.h"
#include "funcapi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "port/pg_bitutils.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

/* Limits; orochi_fdw/workload/catalog.py checks the same ones */
#define WL_MAX_POOLS			64	/* pools in the catalog */
#define WL_POOL_SLOTS			(2 * WL_MAX_POOLS + 1)	/* + the default pool and
														 * dropped pools still busy */
#define WL_MAX_CLASSES			128
#define WL_MAX_ROLE_CLASSES		256
#define WL_MAX_MATCH_VALUES		8

/* Statement kinds, as the match's "kind" bitmask (catalog.KINDS) */
#define WL_KIND_READ			1
#define WL_KIND_WRITE			2
#define WL_KIND_DDL				4

/* Wait-time histogram: bucket 0 is "no wait", then 4 buckets per power of two of microseconds */
#define WL_HIST_SUB				4
#define WL_HIST_BUCKETS			(1 + 40 * WL_HIST_SUB)

/* How long a statement waits for the loader before going on without pools */
#define WL_LOAD_WAIT_MS			10000

#define WL_DEFAULT_POOL			0
#define WL_DEFAULT_POOL_NAME	"default"

/* ---------------------------------------------------------------------
 * Definitions (the same layout locally, as read from the catalog, and in
 * shared memory)
 * ---------------------------------------------------------------------
 */
typedef struct WorkloadPoolDef
{
	int32		id;				/* catalog pool_id; 0 the default pool; -1 a free slot */
	char		name[NAMEDATALEN];
	int32		max_concurrency;	/* > 0; 0 = no limit */
	int32		max_queue;		/* -1 = no limit; 0 = never queue */
	int32		queue_timeout_ms;	/* 0 = wait as long as it takes */
	int32		query_timeout_ms;	/* -1 = orochi.default_query_timeout_ms; 0 = none */
	int32		priority;
	int32		work_mem_kb;	/* 0 = the session's work_mem */
} WorkloadPoolDef;

typedef struct WorkloadClassDef
{
	int32		id;
	char		name[NAMEDATALEN];
	int32		pool_id;		/* 0 = the default pool */
	bool		has_priority;
	int32		priority;
	int16		nroles;
	int16		ndatabases;
	int16		napps;
	Oid			roles[WL_MAX_MATCH_VALUES];
	Oid			databases[WL_MAX_MATCH_VALUES];
	char		apps[WL_MAX_MATCH_VALUES][NAMEDATALEN];	/* LIKE patterns */
	int32		kinds;			/* WL_KIND_* bits; 0 = any */
	bool		has_min_cost;
	double		min_cost;
} WorkloadClassDef;

typedef struct WorkloadRoleClass
{
	Oid			role;
	int32		class_id;
} WorkloadRoleClass;

/* What the catalog says, read in one transaction */
typedef struct WorkloadDefs
{
	int			npools;
	WorkloadPoolDef pools[WL_MAX_POOLS];
	int			nclasses;
	WorkloadClassDef classes[WL_MAX_CLASSES];	/* in evaluation order */
	int			nroles;
	WorkloadRoleClass roles[WL_MAX_ROLE_CLASSES];
} WorkloadDefs;

/* ---------------------------------------------------------------------
 * Shared state
 * ---------------------------------------------------------------------
 */
typedef struct WorkloadPool
{
	WorkloadPoolDef def;
	bool		dropped;		/* gone from the catalog, still has queries */
	int32		running;
	int32		queued;
	dlist_head	queue;			/* WorkloadBackend.node, priority desc, seq asc */
	/* statistics since stats_reset */
	uint64		admitted;		/* statements admitted (at once or after waiting) */
	uint64		waited;			/* of those, admitted after waiting in the queue */
	uint64		rejected;		/* refused at once: max_queue reached */
	uint64		timed_out;		/* left the queue at queue_timeout_ms */
	uint64		canceled;		/* left the queue on cancel, statement_timeout, exit */
	uint64		lock_admitted;	/* admitted beyond the limit to break a lock cycle */
	uint64		wait_sum_us;
	uint64		wait_max_us;
	uint64		wait_hist[WL_HIST_BUCKETS];
	TimestampTz stats_reset;
} WorkloadPool;

typedef enum WorkloadState
{
	WL_IDLE = 0,
	WL_QUEUED,
	WL_RUNNING
} WorkloadState;

typedef struct WorkloadBackend
{
	pid_t		pid;			/* 0 = unused */
	int			pgprocno;
	WorkloadState state;
	int			pool;			/* index into pools[] while queued or running */
	int32		class_id;		/* 0 = none */
	int32		priority;
	uint64		seq;			/* arrival number */
	TimestampTz enqueued_at;	/* when the statement asked for a slot */
	TimestampTz admitted_at;	/* when it got one */
	int32		assigned_class; /* assign_workload_class(..., pid): 0 = none */
	dlist_node	node;
} WorkloadBackend;

typedef enum WorkloadLoadState
{
	WL_LOAD_NONE = 0,			/* nothing read since start-up */
	WL_LOAD_RUNNING,			/* a loader was started at load_started */
	WL_LOAD_DONE
} WorkloadLoadState;

typedef struct WorkloadShared
{
	LWLock	   *lock;
	pg_atomic_uint32 load_state;
	pg_atomic_uint64 generation;	/* bumped when definitions or assignments change */
	ConditionVariable load_cv;
	TimestampTz load_started;
	TimestampTz loaded_at;
	char		load_error[256];
	uint64		next_seq;
	WorkloadPool pools[WL_POOL_SLOTS];	/* [0] the default pool */
	int			nclasses;
	WorkloadClassDef classes[WL_MAX_CLASSES];
	int			nroles;
	WorkloadRoleClass roles[WL_MAX_ROLE_CLASSES];
	int			nbackends;
	WorkloadBackend backends[FLEXIBLE_ARRAY_MEMBER];
} WorkloadShared;

/* ---------------------------------------------------------------------
 * Backend-local state
 * ---------------------------------------------------------------------
 */

/* settings */
static bool orochi_workload_enabled = false;
static int	orochi_default_pool_concurrency = 0;
static int	orochi_default_query_timeout_ms = 0;
static char *orochi_workload_database = NULL;

static bool wl_preloaded = false;	/* orochi is in shared_preload_libraries */
static WorkloadShared *wl_shared = NULL;
static WorkloadBackend *wl_me = NULL;	/* my entry, once set up */

/* the slot this backend holds, if any */
static bool wl_holding = false;
static uint64 wl_admission = 0;	/* number of the current (or last) admission */
static EState *wl_estate = NULL;	/* the admitted executor; NULL for a utility */
static int32 wl_work_mem_kb = 0;
static int	wl_exempt_depth = 0;	/* inside COMMIT, SET ...: nothing is admitted */
static int	wl_planning_depth = 0;	/* inside the planner: its queries are its statement's */

/* the pool's query timeout, carried by statement_timeout's timer */
static TimestampTz wl_deadline = 0;
static bool wl_timer_armed = false;
static bool wl_saved_timer_active = false;
static TimestampTz wl_saved_timer_fin = 0;

/* a transaction that changed the catalog publishes it at commit */
static bool wl_publish_pending = false;
static WorkloadDefs *wl_pending_defs = NULL;

/* the session cache: the classes that may apply to this session */
typedef struct SessionCandidate
{
	int32		class_id;
	int32		pool_id;
	int			pool;			/* index into pools[] */
	bool		has_priority;
	int32		priority;
	int32		kinds;
	bool		has_min_cost;
	double		min_cost;
} SessionCandidate;

static struct
{
	bool		valid;
	uint64		generation;
	Oid			session_user;
	char		application_name[NAMEDATALEN];
	int			ncandidates;
	SessionCandidate candidates[WL_MAX_CLASSES + 1];
} wl_session;

/* hooks we chain to */
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorRun_hook_type prev_ExecutorRun = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static planner_hook_type prev_planner = NULL;

PGDLLEXPORT void orochi_workload_loader_main(Datum main_arg);

static void release_slot(bool normal);

/* ---------------------------------------------------------------------
 * Shared memory
 * ---------------------------------------------------------------------
 */

static Size
workload_shmem_size(void)
{
	return add_size(offsetof(WorkloadShared, backends),
					mul_size(MaxBackends, sizeof(WorkloadBackend)));
}

static void
workload_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(workload_shmem_size());
	RequestNamedLWLockTranche("orochi_workload", 1);
}

static void
init_pool(WorkloadPool *pool, int32 id)
{
	memset(pool, 0, sizeof(WorkloadPool));
	pool->def.id = id;
	pool->def.max_queue = -1;
	pool->def.query_timeout_ms = -1;
	dlist_init(&pool->queue);
	pool->stats_reset = GetCurrentTimestamp();
}

/*
 * workload_shmem_startup
 *		Runs in the postmaster at start-up and after every crash restart:
 *		fresh memory, nothing loaded, no pool but the default one.
 */
static void
workload_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wl_shared = ShmemInitStruct("orochi workload", workload_shmem_size(), &found);
	if (!found)
	{
		memset(wl_shared, 0, workload_shmem_size());
		wl_shared->lock = &(GetNamedLWLockTranche("orochi_workload"))->lock;
		pg_atomic_init_u32(&wl_shared->load_state, WL_LOAD_NONE);
		pg_atomic_init_u64(&wl_shared->generation, 1);
		ConditionVariableInit(&wl_shared->load_cv);
		init_pool(&wl_shared->pools[WL_DEFAULT_POOL], 0);
		strlcpy(wl_shared->pools[WL_DEFAULT_POOL].def.name, WL_DEFAULT_POOL_NAME, NAMEDATALEN);
		for (i = 1; i < WL_POOL_SLOTS; i++)
			wl_shared->pools[i].def.id = -1;
		wl_shared->nbackends = MaxBackends;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* a queue node not in any queue (PG15's ilist has no helpers for this) */
static inline void
queue_node_init(dlist_node *node)
{
	node->prev = node->next = NULL;
}

static inline void
queue_remove(dlist_node *node)
{
	dlist_delete(node);
	node->prev = node->next = NULL;
}

static inline WorkloadPool *
pool_at(int index)
{
	return &wl_shared->pools[index];
}

static inline bool
pool_has_room(WorkloadPool *pool)
{
	return pool->dropped || pool->def.max_concurrency <= 0 ||
		pool->running < pool->def.max_concurrency;
}

/* bucket of a wait of us microseconds */
static int
wait_bucket(uint64 us)
{
	int			e,
				sub;

	if (us == 0)
		return 0;
	e = pg_leftmost_one_pos64(us);
	sub = e >= 2 ? (int) ((us >> (e - 2)) & 3) : 0;
	return Min(1 + e * WL_HIST_SUB + sub, WL_HIST_BUCKETS - 1);
}

/* the largest wait (us) bucket b holds */
static double
bucket_upper_us(int b)
{
	int			e,
				sub;

	if (b == 0)
		return 0;
	e = (b - 1) / WL_HIST_SUB;
	sub = (b - 1) % WL_HIST_SUB;
	return ldexp(1.0 + (sub + 1) / (double) WL_HIST_SUB, e);
}

/* Caller holds the lock exclusively: entry got a slot of pool */
static void
record_admission(WorkloadPool *pool, WorkloadBackend *entry, TimestampTz now)
{
	uint64		wait_us = now > entry->enqueued_at ? (uint64) (now - entry->enqueued_at) : 0;

	entry->state = WL_RUNNING;
	entry->admitted_at = now;
	pool->running++;
	pool->admitted++;
	pool->wait_sum_us += wait_us;
	pool->wait_max_us = Max(pool->wait_max_us, wait_us);
	pool->wait_hist[wait_bucket(wait_us)]++;
}

/*
 * dispatch
 *		Caller holds the lock exclusively.  Hand free slots of the pool to the
 *		head of its queue, waking each new holder.
 */
static void
dispatch(WorkloadPool *pool)
{
	TimestampTz now = 0;

	while (!dlist_is_empty(&pool->queue) && pool_has_room(pool))
	{
		WorkloadBackend *entry = dlist_container(WorkloadBackend, node,
												 dlist_head_node(&pool->queue));

		if (now == 0)
			now = GetCurrentTimestamp();
		pool->waited++;
		queue_remove(&entry->node);
		pool->queued--;
		record_admission(pool, entry, now);
		SetLatch(&ProcGlobal->allProcs[entry->pgprocno].procLatch);
	}
	/* a dropped pool's slot is reused once nothing runs in it */
	if (pool->dropped && pool->running == 0 && pool->queued == 0)
	{
		pool->dropped = false;
		pool->def.id = -1;
	}
}

/* ---------------------------------------------------------------------
 * Publishing definitions
 * ---------------------------------------------------------------------
 */

static int
find_pool_index(int32 pool_id)
{
	int			i;

	if (pool_id == 0)
		return WL_DEFAULT_POOL;
	for (i = 1; i < WL_POOL_SLOTS; i++)
		if (wl_shared->pools[i].def.id == pool_id && !wl_shared->pools[i].dropped)
			return i;
	return -1;
}

/*
 * publish_defs
 *		Make defs the definitions in force.  Pools keep their live state and
 *		statistics by id; a pool gone from the catalog that still runs or
 *		queues statements lets them all run and disappears when they are
 *		done.  Called at commit or by the loader: must not fail.
 *
 *		if_generation: publish only if nothing was published since the
 *		generation given (0: always).  The loader reads the catalog without
 *		locking it; a transaction that changed the catalog and committed
 *		after the loader took its snapshot publishes after that commit, so a
 *		loader that sees the generation moved has read an older state and
 *		must read again.  Returns whether it published.
 */
static bool
publish_defs(const WorkloadDefs *defs, uint64 if_generation)
{
	bool		seen[WL_POOL_SLOTS];
	int			i,
				j;

	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	if (if_generation != 0 && pg_atomic_read_u64(&wl_shared->generation) != if_generation)
	{
		LWLockRelease(wl_shared->lock);
		return false;
	}
	memset(seen, 0, sizeof(seen));
	seen[WL_DEFAULT_POOL] = true;
	for (i = 0; i < defs->npools; i++)
	{
		const WorkloadPoolDef *def = &defs->pools[i];
		int			index = find_pool_index(def->id);

		if (index < 0)
		{
			for (j = 1; j < WL_POOL_SLOTS; j++)
				if (wl_shared->pools[j].def.id == -1)
					break;
			if (j == WL_POOL_SLOTS)
			{
				elog(WARNING, "orochi: no room in shared memory for resource pool \"%s\"; "
					 "its statements go to the default pool", def->name);
				continue;
			}
			index = j;
			init_pool(pool_at(index), def->id);
		}
		pool_at(index)->def = *def;
		seen[index] = true;
	}
	for (i = 1; i < WL_POOL_SLOTS; i++)
	{
		WorkloadPool *pool = pool_at(i);

		if (pool->def.id == -1 || seen[i])
			continue;
		if (pool->running == 0 && pool->queued == 0)
			pool->def.id = -1;
		else
			pool->dropped = true;
	}
	for (i = 0; i < WL_POOL_SLOTS; i++)
		if (pool_at(i)->def.id != -1)
			dispatch(pool_at(i));

	wl_shared->nclasses = defs->nclasses;
	memcpy(wl_shared->classes, defs->classes, sizeof(WorkloadClassDef) * defs->nclasses);
	wl_shared->nroles = defs->nroles;
	memcpy(wl_shared->roles, defs->roles, sizeof(WorkloadRoleClass) * defs->nroles);
	wl_shared->loaded_at = GetCurrentTimestamp();
	wl_shared->load_error[0] = '\0';
	pg_atomic_fetch_add_u64(&wl_shared->generation, 1);
	pg_atomic_write_u32(&wl_shared->load_state, WL_LOAD_DONE);
	LWLockRelease(wl_shared->lock);
	ConditionVariableBroadcast(&wl_shared->load_cv);
	return true;
}

/* ---------------------------------------------------------------------
 * Reading the catalog (SPI; the caller has a transaction and a snapshot)
 * ---------------------------------------------------------------------
 */

static bool
catalog_exists(void)
{
	bool		isnull;
	Datum		d;

	if (!OidIsValid(get_extension_oid("orochi", true)))
		return false;
	if (SPI_execute("SELECT pg_catalog.to_regclass('orochi.resource_pools') IS NOT NULL "
					"AND pg_catalog.to_regclass('orochi.workload_classes') IS NOT NULL "
					"AND pg_catalog.to_regclass('orochi.workload_role_classes') IS NOT NULL",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "orochi: could not look for the workload catalog");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetBool(d);
}

static int32
spi_int(int row, int col, int32 ifnull)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? ifnull : DatumGetInt32(d);
}

static void
spi_name(int row, int col, char *out)
{
	char	   *s = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	strlcpy(out, s ? s : "", NAMEDATALEN);
}

/* elements of an array column (oid[] or text[]), at most WL_MAX_MATCH_VALUES */
static int
spi_array(int row, int col, Oid elemtype, Datum **elems)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	if (isnull)
		return 0;
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(DatumGetArrayTypeP(d), elemtype, typlen, typbyval, typalign, elems, NULL, &n);
	if (n > WL_MAX_MATCH_VALUES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a workload class may match at most %d values of one kind", WL_MAX_MATCH_VALUES)));
	return n;
}

/*
 * read_catalog
 *		The three catalog tables into defs, classes in evaluation order (more
 *		criteria first, then by name); nothing if the extension (or this
 *		version's catalog) is not there.  Read as the extension owner, whose
 *		tables they are, with the search path pinned (docs/SECURITY.md).
 */
static void read_catalog_tables(WorkloadDefs *defs);

static void
read_catalog(WorkloadDefs *defs)
{
	OrochiSecuritySave save;

	memset(defs, 0, sizeof(WorkloadDefs));
	if (!catalog_exists())
		return;
	orochi_internal_begin(&save);
	read_catalog_tables(defs);
	orochi_internal_end(&save);
}

/* read_catalog's queries; an error is cleaned up by the transaction's abort */
static void
read_catalog_tables(WorkloadDefs *defs)
{
	uint64		i;

	if (SPI_execute("SELECT pool_id, pool_name, max_concurrency, max_queue, queue_timeout_ms, "
					"query_timeout_ms, priority, work_mem_kb FROM orochi.resource_pools "
					"ORDER BY pool_id", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "orochi: could not read orochi.resource_pools");
	if (SPI_processed > WL_MAX_POOLS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many resource pools: %llu (at most %d)",
						(unsigned long long) SPI_processed, WL_MAX_POOLS)));
	for (i = 0; i < SPI_processed; i++)
	{
		WorkloadPoolDef *p = &defs->pools[defs->npools++];

		p->id = spi_int(i, 1, -1);
		spi_name(i, 2, p->name);
		p->max_concurrency = spi_int(i, 3, 1);
		p->max_queue = spi_int(i, 4, -1);
		p->queue_timeout_ms = spi_int(i, 5, 0);
		p->query_timeout_ms = spi_int(i, 6, -1);
		p->priority = spi_int(i, 7, 0);
		p->work_mem_kb = spi_int(i, 8, 0);
	}

	if (SPI_execute("SELECT class_id, class_name, pool_id, priority, match_roles, match_databases, "
					"match_application_names, match_kinds, match_min_cost "
					"FROM orochi.workload_classes ORDER BY specificity DESC, class_name",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "orochi: could not read orochi.workload_classes");
	if (SPI_processed > WL_MAX_CLASSES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many workload classes: %llu (at most %d)",
						(unsigned long long) SPI_processed, WL_MAX_CLASSES)));
	for (i = 0; i < SPI_processed; i++)
	{
		WorkloadClassDef *c = &defs->classes[defs->nclasses++];
		Datum	   *elems;
		bool		isnull;
		Datum		d;
		int			n,
					k;

		c->id = spi_int(i, 1, 0);
		spi_name(i, 2, c->name);
		c->pool_id = spi_int(i, 3, 0);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4, &isnull);
		c->has_priority = !isnull;
		c->priority = isnull ? 0 : DatumGetInt32(d);
		n = spi_array(i, 5, OIDOID, &elems);
		for (k = 0; k < n; k++)
			c->roles[k] = DatumGetObjectId(elems[k]);
		c->nroles = n;
		n = spi_array(i, 6, OIDOID, &elems);
		for (k = 0; k < n; k++)
			c->databases[k] = DatumGetObjectId(elems[k]);
		c->ndatabases = n;
		n = spi_array(i, 7, TEXTOID, &elems);
		for (k = 0; k < n; k++)
			text_to_cstring_buffer(DatumGetTextPP(elems[k]), c->apps[k], NAMEDATALEN);
		c->napps = n;
		c->kinds = spi_int(i, 8, 0);
		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 9, &isnull);
		c->has_min_cost = !isnull;
		c->min_cost = isnull ? 0 : DatumGetFloat8(d);
	}

	if (SPI_execute("SELECT role, class_id FROM orochi.workload_role_classes ORDER BY role",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "orochi: could not read orochi.workload_role_classes");
	if (SPI_processed > WL_MAX_ROLE_CLASSES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many roles assigned to workload classes: %llu (at most %d)",
						(unsigned long long) SPI_processed, WL_MAX_ROLE_CLASSES)));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		defs->roles[defs->nroles].role = DatumGetObjectId(d);
		defs->roles[defs->nroles].class_id = spi_int(i, 2, 0);
		defs->nroles++;
	}
}

/* ---------------------------------------------------------------------
 * The loader: a short-lived background worker connected to the workload
 * database
 * ---------------------------------------------------------------------
 */

/* if the loader ends without publishing, say so and release the waiters */
static void
loader_on_exit(int code, Datum arg)
{
	if (wl_shared == NULL)
		return;
	if (pg_atomic_read_u32(&wl_shared->load_state) == WL_LOAD_RUNNING)
	{
		LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
		if (wl_shared->load_error[0] == '\0')
			snprintf(wl_shared->load_error, sizeof(wl_shared->load_error),
					 "the loader of database \"%s\" exited before reading the catalog",
					 orochi_workload_database);
		wl_shared->loaded_at = GetCurrentTimestamp();
		pg_atomic_write_u32(&wl_shared->load_state, WL_LOAD_DONE);
		LWLockRelease(wl_shared->lock);
		ConditionVariableBroadcast(&wl_shared->load_cv);
	}
}

void
orochi_workload_loader_main(Datum main_arg)
{
	WorkloadDefs *defs;
	int			attempt;

	before_shmem_exit(loader_on_exit, (Datum) 0);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(orochi_workload_database, NULL, 0);
	pgstat_report_activity(STATE_RUNNING, "orochi: loading resource pools and workload classes");
	defs = MemoryContextAlloc(TopMemoryContext, sizeof(WorkloadDefs));

	for (attempt = 1;; attempt++)
	{
		uint64		generation = pg_atomic_read_u64(&wl_shared->generation);

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		PG_TRY();
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "orochi: SPI_connect failed");
			read_catalog(defs);
			SPI_finish();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
			snprintf(wl_shared->load_error, sizeof(wl_shared->load_error), "%s", edata->message);
			LWLockRelease(wl_shared->lock);
			PG_RE_THROW();
		}
		PG_END_TRY();
		PopActiveSnapshot();
		CommitTransactionCommand();
		/* someone published since we read: their state may be newer than ours */
		if (publish_defs(defs, attempt < 10 ? generation : 0))
			break;
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}

static bool
start_loader(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "orochi");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "orochi_workload_loader_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "orochi workload loader");
	snprintf(worker.bgw_type, BGW_MAXLEN, "orochi workload loader");
	worker.bgw_notify_pid = 0;
	return RegisterDynamicBackgroundWorker(&worker, NULL);
}

/*
 * request_load
 *		Start a loader (unless one is running, or force) and wait until the
 *		definitions are published or WL_LOAD_WAIT_MS passed.
 */
static void
request_load(bool force)
{
	uint64		generation = pg_atomic_read_u64(&wl_shared->generation);
	bool		start = false;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz deadline = TimestampTzPlusMilliseconds(now, WL_LOAD_WAIT_MS);

	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	if (force || pg_atomic_read_u32(&wl_shared->load_state) == WL_LOAD_NONE ||
		(pg_atomic_read_u32(&wl_shared->load_state) == WL_LOAD_RUNNING &&
		 TimestampDifferenceExceeds(wl_shared->load_started, now, WL_LOAD_WAIT_MS)))
	{
		pg_atomic_write_u32(&wl_shared->load_state, WL_LOAD_RUNNING);
		wl_shared->load_started = now;
		wl_shared->load_error[0] = '\0';
		start = true;
	}
	LWLockRelease(wl_shared->lock);

	if (start && !start_loader())
	{
		LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
		snprintf(wl_shared->load_error, sizeof(wl_shared->load_error),
				 "could not start the workload loader: no background worker slot free "
				 "(max_worker_processes)");
		pg_atomic_write_u32(&wl_shared->load_state, WL_LOAD_DONE);
		LWLockRelease(wl_shared->lock);
		ereport(WARNING,
				(errmsg("orochi could not start the workload loader; resource pools are not in force"),
				 errhint("Raise max_worker_processes, then call orochi.workload_reload().")));
		return;
	}

	ConditionVariablePrepareToSleep(&wl_shared->load_cv);
	for (;;)
	{
		long		remaining;

		if (pg_atomic_read_u32(&wl_shared->load_state) == WL_LOAD_DONE &&
			(!force || pg_atomic_read_u64(&wl_shared->generation) != generation ||
			 wl_shared->load_error[0] != '\0'))
			break;
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		(void) ConditionVariableTimedSleep(&wl_shared->load_cv, remaining, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

static inline void
ensure_loaded(void)
{
	if (likely(pg_atomic_read_u32(&wl_shared->load_state) == WL_LOAD_DONE))
		return;
	request_load(false);
}

/* ---------------------------------------------------------------------
 * Transactions that change the catalog publish it when they commit
 * ---------------------------------------------------------------------
 */

static void
workload_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (wl_publish_pending && wl_shared != NULL)
			{
				WorkloadDefs *defs = MemoryContextAlloc(TopMemoryContext, sizeof(WorkloadDefs));

				/*
				 * The latest snapshot, not the transaction's: under REPEATABLE
				 * READ that one may predate a change another transaction
				 * committed before this one took the catalog's lock.
				 */
				PushActiveSnapshot(GetLatestSnapshot());
				if (SPI_connect() != SPI_OK_CONNECT)
					elog(ERROR, "orochi: SPI_connect failed");
				read_catalog(defs);
				SPI_finish();
				PopActiveSnapshot();
				wl_pending_defs = defs;
			}
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (wl_publish_pending)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed resource pools or workload classes")));
			break;
		case XACT_EVENT_COMMIT:
			if (wl_pending_defs != NULL)
				(void) publish_defs(wl_pending_defs, 0);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (wl_pending_defs != NULL)
				pfree(wl_pending_defs);
			wl_pending_defs = NULL;
			wl_publish_pending = false;
			break;
		default:
			break;
	}
}

/* ---------------------------------------------------------------------
 * This backend's entry
 * ---------------------------------------------------------------------
 */

static void
backend_on_exit(int code, Datum arg)
{
	if (wl_me == NULL)
		return;
	if (wl_holding || wl_me->state != WL_IDLE)
		release_slot(false);
	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	wl_me->pid = 0;
	wl_me->assigned_class = 0;
	LWLockRelease(wl_shared->lock);
	wl_me = NULL;
}

static void
ensure_backend_entry(void)
{
	WorkloadBackend *entry;

	if (likely(wl_me != NULL))
		return;
	if (MyBackendId == InvalidBackendId || MyBackendId > wl_shared->nbackends)
		elog(ERROR, "orochi: backend id %d out of range for workload management", MyBackendId);
	entry = &wl_shared->backends[MyBackendId - 1];
	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	if (entry->pid != MyProcPid)
	{
		/* left by an earlier process with this id */
		entry->assigned_class = 0;
		entry->seq = 0;
		entry->enqueued_at = entry->admitted_at = 0;
	}
	entry->pid = MyProcPid;
	entry->pgprocno = MyProc->pgprocno;
	entry->state = WL_IDLE;
	entry->pool = WL_DEFAULT_POOL;
	entry->class_id = 0;
	queue_node_init(&entry->node);
	LWLockRelease(wl_shared->lock);
	wl_me = entry;
	before_shmem_exit(backend_on_exit, (Datum) 0);
}

/* ---------------------------------------------------------------------
 * Classification
 * ---------------------------------------------------------------------
 */

static bool
class_matches_session(const WorkloadClassDef *c, Oid session_user, const char *appname)
{
	int			i;
	bool		ok;

	if (c->nroles > 0)
	{
		ok = false;
		for (i = 0; i < c->nroles && !ok; i++)
			ok = session_user == c->roles[i] || is_member_of_role_nosuper(session_user, c->roles[i]);
		if (!ok)
			return false;
	}
	if (c->ndatabases > 0)
	{
		ok = false;
		for (i = 0; i < c->ndatabases && !ok; i++)
			ok = MyDatabaseId == c->databases[i];
		if (!ok)
			return false;
	}
	if (c->napps > 0)
	{
		text	   *name = cstring_to_text(appname);

		ok = false;
		for (i = 0; i < c->napps && !ok; i++)
		{
			const char *pattern = c->apps[i];
			size_t		len = strlen(pattern);
			size_t		escapes = 0;

			/* a pattern ending with an escape is an error for LIKE: never a match (the API refuses it) */
			while (escapes < len && pattern[len - 1 - escapes] == '\\')
				escapes++;
			if (escapes % 2 == 1)
				continue;
			ok = DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
													  PointerGetDatum(name),
													  PointerGetDatum(cstring_to_text(pattern))));
		}
		if (!ok)
			return false;
	}
	return true;
}

/* add class i of the copy as a candidate; whole_session: it takes every statement */
static void
add_candidate(const WorkloadClassDef *c, int pool, bool whole_session)
{
	SessionCandidate *cand = &wl_session.candidates[wl_session.ncandidates++];

	cand->class_id = c->id;
	cand->pool_id = c->pool_id;
	cand->pool = pool;
	cand->has_priority = c->has_priority;
	cand->priority = c->priority;
	cand->kinds = whole_session ? 0 : c->kinds;
	cand->has_min_cost = whole_session ? false : c->has_min_cost;
	cand->min_cost = c->min_cost;
}

/*
 * classify_session
 *		Which classes may take this session's statements, in order: the
 *		class assigned to the session, the one assigned to its role, then
 *		the classes whose role, database and application_name criteria the
 *		session meets (their per-statement criteria are tested per
 *		statement).
 */
static void
classify_session(void)
{
	WorkloadClassDef *classes;
	WorkloadRoleClass *roles;
	int			pool_of[WL_MAX_CLASSES];
	int			nclasses,
				nroles,
				i;
	int32		assigned;
	uint64		generation;
	Oid			session_user = GetSessionUserId();
	const char *appname = application_name ? application_name : "";

	/* copy what we need, then test it without holding the lock */
	classes = palloc(sizeof(WorkloadClassDef) * WL_MAX_CLASSES);
	roles = palloc(sizeof(WorkloadRoleClass) * WL_MAX_ROLE_CLASSES);
	LWLockAcquire(wl_shared->lock, LW_SHARED);
	generation = pg_atomic_read_u64(&wl_shared->generation);
	nclasses = wl_shared->nclasses;
	memcpy(classes, wl_shared->classes, sizeof(WorkloadClassDef) * nclasses);
	nroles = wl_shared->nroles;
	memcpy(roles, wl_shared->roles, sizeof(WorkloadRoleClass) * nroles);
	for (i = 0; i < nclasses; i++)
	{
		int			index = find_pool_index(classes[i].pool_id);

		pool_of[i] = index < 0 ? WL_DEFAULT_POOL : index;
	}
	assigned = wl_me->assigned_class;
	LWLockRelease(wl_shared->lock);

	wl_session.ncandidates = 0;
	for (i = 0; i < nclasses && assigned != 0; i++)
		if (classes[i].id == assigned)
		{
			add_candidate(&classes[i], pool_of[i], true);
			break;
		}
	if (wl_session.ncandidates == 0)
	{
		int32		role_class = 0;

		for (i = 0; i < nroles; i++)
			if (roles[i].role == session_user)
				role_class = roles[i].class_id;
		for (i = 0; i < nclasses && role_class != 0; i++)
			if (classes[i].id == role_class)
			{
				add_candidate(&classes[i], pool_of[i], true);
				break;
			}
	}
	if (wl_session.ncandidates == 0)
	{
		for (i = 0; i < nclasses; i++)
			if (class_matches_session(&classes[i], session_user, appname))
				add_candidate(&classes[i], pool_of[i], false);
	}
	pfree(classes);
	pfree(roles);

	wl_session.generation = generation;
	wl_session.session_user = session_user;
	strlcpy(wl_session.application_name, appname, NAMEDATALEN);
	wl_session.valid = true;
}

static inline bool
session_cache_valid(void)
{
	return wl_session.valid &&
		wl_session.generation == pg_atomic_read_u64(&wl_shared->generation) &&
		wl_session.session_user == GetSessionUserId() &&
		strcmp(wl_session.application_name, application_name ? application_name : "") == 0;
}

/* The candidate that takes a statement of this kind and cost, or NULL (the default pool) */
static SessionCandidate *
pick_class(int kind, double cost)
{
	int			i;

	for (i = 0; i < wl_session.ncandidates; i++)
	{
		SessionCandidate *cand = &wl_session.candidates[i];

		if (cand->kinds != 0 && (cand->kinds & kind) == 0)
			continue;
		if (cand->has_min_cost && cost < cand->min_cost)
			continue;
		return cand;
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * Lock cycles through the queue
 * ---------------------------------------------------------------------
 */

typedef struct BackendSnap
{
	pid_t		pid;
	WorkloadState state;
	int			pool;
	int			pgprocno;
} BackendSnap;

/*
 * holder_waits_for_me
 *		Whether a statement holding a slot of pool waits, directly or through
 *		other lock waits and pool queues, for a lock this backend holds.
 *		Only looked into when some holder of the pool waits for a lock.
 */
static bool
holder_waits_for_me_in(int pool);

static bool
holder_waits_for_me(int pool)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "orochi lock cycle check",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		found;

	found = holder_waits_for_me_in(pool);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return found;
}

static bool
holder_waits_for_me_in(int pool)
{
	BackendSnap *snap;
	int			n = wl_shared->nbackends;
	int		   *stack;
	int			depth = 0;
	pid_t	   *visited;
	int			nvisited = 0;
	bool		some_holder_waits = false;
	bool		found = false;
	int			i;

	snap = palloc(sizeof(BackendSnap) * n);
	LWLockAcquire(wl_shared->lock, LW_SHARED);
	for (i = 0; i < n; i++)
	{
		WorkloadBackend *e = &wl_shared->backends[i];

		snap[i].pid = e->pid;
		snap[i].state = e->pid != 0 ? e->state : WL_IDLE;
		snap[i].pool = e->pool;
		snap[i].pgprocno = e->pgprocno;
		if (e->pid != 0 && snap[i].state == WL_RUNNING && snap[i].pool == pool &&
			ProcGlobal->allProcs[e->pgprocno].waitLock != NULL)
			some_holder_waits = true;
	}
	LWLockRelease(wl_shared->lock);
	if (!some_holder_waits)
		return false;

	/* depth-first over "waits for" edges, starting at the pool's holders */
	stack = palloc(sizeof(int) * (MaxBackends + n + 16));
	visited = palloc(sizeof(pid_t) * (MaxBackends + n + 16));
	for (i = 0; i < n; i++)
		if (snap[i].state == WL_RUNNING && snap[i].pool == pool && snap[i].pid != MyProcPid)
		{
			stack[depth++] = snap[i].pid;
			visited[nvisited++] = snap[i].pid;
		}
	while (depth > 0 && !found)
	{
		pid_t		pid = stack[--depth];
		ArrayType  *blockers;
		Datum	   *elems;
		int			nelems,
					k,
					v;

		/* lock edges */
		blockers = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids, Int32GetDatum(pid)));
		deconstruct_array(blockers, INT4OID, 4, true, TYPALIGN_INT, &elems, NULL, &nelems);
		for (k = 0; k < nelems && !found; k++)
		{
			pid_t		b = DatumGetInt32(elems[k]);

			if (b == MyProcPid)
			{
				found = true;
				break;
			}
			for (v = 0; v < nvisited && visited[v] != b; v++)
				;
			if (v == nvisited && nvisited < MaxBackends + n)
			{
				visited[nvisited++] = b;
				stack[depth++] = b;
			}
		}
		/* queue edges: a queued backend waits for its pool's holders */
		for (i = 0; i < n && !found; i++)
		{
			int			j;

			if (snap[i].pid != pid || snap[i].state != WL_QUEUED)
				continue;
			for (j = 0; j < n; j++)
			{
				if (snap[j].state != WL_RUNNING || snap[j].pool != snap[i].pool || snap[j].pid == 0)
					continue;
				if (snap[j].pid == MyProcPid)
				{
					found = true;
					break;
				}
				for (v = 0; v < nvisited && visited[v] != snap[j].pid; v++)
					;
				if (v == nvisited && nvisited < MaxBackends + n)
				{
					visited[nvisited++] = snap[j].pid;
					stack[depth++] = snap[j].pid;
				}
			}
		}
	}
	return found;
}

/* ---------------------------------------------------------------------
 * Admission and release
 * ---------------------------------------------------------------------
 */

/*
 * wait_in_queue
 *		Sleep until a releasing backend hands this one a slot.  Leaves with an
 *		ERROR at the pool's queue timeout; cancel, statement_timeout and
 *		terminate arrive through CHECK_FOR_INTERRUPTS (the caller cleans up).
 */
static void
wait_in_queue(int pool_index, int queue_timeout_ms, const char *pool_name, int max_concurrency)
{
	TimestampTz start = wl_me->enqueued_at;
	TimestampTz queue_deadline = queue_timeout_ms > 0 ?
		TimestampTzPlusMilliseconds(start, queue_timeout_ms) : 0;
	TimestampTz next_cycle_check = start;

	for (;;)
	{
		WorkloadState state;
		TimestampTz now;
		long		timeout;

		ResetLatch(MyLatch);
		LWLockAcquire(wl_shared->lock, LW_SHARED);
		state = wl_me->state;
		LWLockRelease(wl_shared->lock);
		if (state == WL_RUNNING)
			return;

		now = GetCurrentTimestamp();
		if (queue_deadline != 0 && now >= queue_deadline)
		{
			bool		granted = false;

			LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
			if (wl_me->state == WL_QUEUED)
			{
				WorkloadPool *pool = pool_at(pool_index);

				queue_remove(&wl_me->node);
				pool->queued--;
				pool->timed_out++;
				wl_me->state = WL_IDLE;
			}
			else
				granted = true;
			LWLockRelease(wl_shared->lock);
			if (granted)
				return;
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("canceling statement due to queue timeout of resource pool \"%s\"", pool_name),
					 errdetail("The statement waited %d ms for one of the pool's %d slots.",
							   queue_timeout_ms, max_concurrency),
					 errhint("Raise the pool's queue_timeout_ms or max_concurrency with orochi.alter_resource_pool.")));
		}
		if (now >= next_cycle_check)
		{
			if (holder_waits_for_me(pool_index))
			{
				LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
				if (wl_me->state == WL_QUEUED)
				{
					WorkloadPool *pool = pool_at(pool_index);

					queue_remove(&wl_me->node);
					pool->queued--;
					pool->waited++;
					pool->lock_admitted++;
					record_admission(pool, wl_me, GetCurrentTimestamp());
				}
				LWLockRelease(wl_shared->lock);
				return;
			}
			next_cycle_check = TimestampTzPlusMilliseconds(now, Max(DeadlockTimeout, 1));
		}

		timeout = TimestampDifferenceMilliseconds(now, next_cycle_check);
		if (queue_deadline != 0)
			timeout = Min(timeout, TimestampDifferenceMilliseconds(now, queue_deadline));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
}

/* the pool's query timeout, through statement_timeout's timer */
static void
arm_query_timeout(int timeout_ms)
{
	TimestampTz deadline;

	wl_deadline = 0;
	wl_timer_armed = false;
	if (timeout_ms <= 0)
		return;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	wl_deadline = deadline;
	wl_saved_timer_active = get_timeout_active(STATEMENT_TIMEOUT);
	wl_saved_timer_fin = wl_saved_timer_active ? get_timeout_finish_time(STATEMENT_TIMEOUT) : 0;
	if (wl_saved_timer_active && wl_saved_timer_fin <= deadline)
		return;					/* statement_timeout comes first */
	enable_timeout_at(STATEMENT_TIMEOUT, deadline);
	wl_timer_armed = true;
}

/*
 * The extended protocol's Execute message stops statement_timeout's timer
 * when statement_timeout is 0, after Bind admitted and started the
 * executor (and a cursor's later FETCH runs after it was stopped): set it
 * again, at the same deadline, before the executor runs.
 */
static void
rearm_query_timeout(void)
{
	if (wl_deadline == 0)
		return;
	if (get_timeout_active(STATEMENT_TIMEOUT) &&
		get_timeout_finish_time(STATEMENT_TIMEOUT) <= wl_deadline)
		return;
	if (!wl_timer_armed)
	{
		wl_saved_timer_active = get_timeout_active(STATEMENT_TIMEOUT);
		wl_saved_timer_fin = wl_saved_timer_active ? get_timeout_finish_time(STATEMENT_TIMEOUT) : 0;
	}
	enable_timeout_at(STATEMENT_TIMEOUT, wl_deadline);
	wl_timer_armed = true;
}

/* after a statement that ran normally: statement_timeout's timer as it was */
static void
restore_query_timeout(void)
{
	if (wl_timer_armed)
	{
		if (wl_saved_timer_active)
			enable_timeout_at(STATEMENT_TIMEOUT, wl_saved_timer_fin);
		else if (get_timeout_active(STATEMENT_TIMEOUT))
			disable_timeout(STATEMENT_TIMEOUT, false);
	}
	wl_timer_armed = false;
	wl_deadline = 0;
}

/* the pool's work_mem for the duration of one call; returns the GUC nest level or -1 */
static int
push_pool_settings(void)
{
	int			nest;
	char		value[32];

	if (wl_work_mem_kb <= 0)
		return -1;
	nest = NewGUCNestLevel();
	snprintf(value, sizeof(value), "%d", wl_work_mem_kb);
	(void) set_config_option("work_mem", value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

static void
pop_pool_settings(int nest)
{
	if (nest >= 0)
		AtEOXact_GUC(true, nest);
}

/*
 * admit
 *		Get a slot for a top-level statement of this kind and estimated cost,
 *		waiting in the queue if its pool is full.  On return the backend
 *		holds the slot (wl_holding); an ERROR leaves it holding nothing.
 */
static void
admit(int kind, double cost)
{
	SessionCandidate *cand;
	WorkloadPool *pool;
	int			pool_index;
	int			queue_timeout_ms;
	int			query_timeout_ms;
	int			max_concurrency;
	char		pool_name[NAMEDATALEN];
	TimestampTz now;

	ensure_backend_entry();
	ensure_loaded();

	for (;;)
	{
		if (!session_cache_valid())
			classify_session();
		cand = pick_class(kind, cost);
		pool_index = cand ? cand->pool : WL_DEFAULT_POOL;

		LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
		if (pg_atomic_read_u64(&wl_shared->generation) == wl_session.generation)
			break;
		LWLockRelease(wl_shared->lock);	/* definitions changed meanwhile */
		wl_session.valid = false;
	}

	/* under the lock, exclusively */
	pool = pool_at(pool_index);
	if (pool_index == WL_DEFAULT_POOL)
	{
		pool->def.max_concurrency = orochi_default_pool_concurrency;
		dispatch(pool);			/* the setting may have grown */
	}
	now = GetCurrentTimestamp();
	wl_me->pool = pool_index;
	wl_me->class_id = cand ? cand->class_id : 0;
	wl_me->priority = (cand && cand->has_priority) ? cand->priority : pool->def.priority;
	wl_me->seq = ++wl_shared->next_seq;
	wl_me->enqueued_at = now;
	queue_node_init(&wl_me->node);
	queue_timeout_ms = pool->def.queue_timeout_ms;
	query_timeout_ms = pool->def.query_timeout_ms >= 0 ? pool->def.query_timeout_ms :
		orochi_default_query_timeout_ms;
	max_concurrency = pool->def.max_concurrency;
	wl_work_mem_kb = pool->def.work_mem_kb;
	strlcpy(pool_name, pool->def.name, NAMEDATALEN);

	if (dlist_is_empty(&pool->queue) && pool_has_room(pool))
	{
		record_admission(pool, wl_me, now);
		LWLockRelease(wl_shared->lock);
	}
	else if (pool->def.max_queue >= 0 && pool->queued >= pool->def.max_queue)
	{
		int			running = pool->running;
		int			queued = pool->queued;
		int			max_queue = pool->def.max_queue;

		pool->rejected++;
		LWLockRelease(wl_shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("resource pool \"%s\" is full", pool_name),
				 errdetail("%d statements run and %d wait in its queue, which holds at most %d.",
						   running, queued, max_queue),
				 errhint("Retry later, or raise the pool's max_queue or max_concurrency.")));
	}
	else
	{
		dlist_iter	iter;
		bool		placed = false;

		/* after the last entry of at least this priority */
		dlist_reverse_foreach(iter, &pool->queue)
		{
			WorkloadBackend *e = dlist_container(WorkloadBackend, node, iter.cur);

			if (e->priority >= wl_me->priority)
			{
				dlist_insert_after(iter.cur, &wl_me->node);
				placed = true;
				break;
			}
		}
		if (!placed)
			dlist_push_head(&pool->queue, &wl_me->node);
		pool->queued++;
		wl_me->state = WL_QUEUED;
		LWLockRelease(wl_shared->lock);

		PG_TRY();
		{
			wait_in_queue(pool_index, queue_timeout_ms, pool_name, max_concurrency);
		}
		PG_CATCH();
		{
			release_slot(false);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}

	wl_holding = true;
	wl_estate = NULL;
	wl_admission++;
	arm_query_timeout(query_timeout_ms);
}

/*
 * release_slot
 *		Give the slot back and hand it to the next in the queue.  normal: the
 *		statement ended without error (statement_timeout's timer is put back
 *		as it was; after an error Postgres has stopped every timer).
 */
static void
release_slot(bool normal)
{
	if (wl_me == NULL)
		return;
	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	if (wl_me->state == WL_RUNNING)
	{
		WorkloadPool *pool = pool_at(wl_me->pool);

		pool->running--;
		wl_me->state = WL_IDLE;
		dispatch(pool);
	}
	else if (wl_me->state == WL_QUEUED)
	{
		WorkloadPool *pool = pool_at(wl_me->pool);

		queue_remove(&wl_me->node);
		pool->queued--;
		pool->canceled++;
		wl_me->state = WL_IDLE;
		dispatch(pool);
	}
	LWLockRelease(wl_shared->lock);
	wl_holding = false;
	wl_estate = NULL;
	wl_work_mem_kb = 0;
	if (normal)
		restore_query_timeout();
	else
	{
		wl_timer_armed = false;
		wl_deadline = 0;
	}
}

/* The admitted executor's memory goes away (ExecutorEnd, or abort) */
static void
executor_memory_gone(void *arg)
{
	uint64		admission = *(uint64 *) arg;

	if (wl_holding && wl_admission == admission)
		release_slot(false);
}

/* ---------------------------------------------------------------------
 * Hooks
 * ---------------------------------------------------------------------
 */

/* Whether a statement starting now is to be admitted */
static inline bool
admission_applies(void)
{
	return orochi_workload_enabled && wl_shared != NULL && !wl_holding &&
		wl_exempt_depth == 0 && wl_planning_depth == 0 &&
		MyBackendType == B_BACKEND && ActivePortal != NULL;
}

static int
executor_kind(QueryDesc *queryDesc)
{
	PlannedStmt *stmt = queryDesc->plannedstmt;

	switch (queryDesc->operation)
	{
		case CMD_SELECT:
			return (stmt->hasModifyingCTE || stmt->rowMarks != NIL) ? WL_KIND_WRITE : WL_KIND_READ;
		case CMD_INSERT:
		case CMD_UPDATE:
		case CMD_DELETE:
		case CMD_MERGE:
			return WL_KIND_WRITE;
		default:
			return WL_KIND_READ;
	}
}

static void
workload_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	MemoryContextCallback *cb;
	uint64	   *admission;

	if (!admission_applies() || (eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		if (prev_ExecutorStart)
			prev_ExecutorStart(queryDesc, eflags);
		else
			standard_ExecutorStart(queryDesc, eflags);
		return;
	}

	admit(executor_kind(queryDesc),
		  queryDesc->plannedstmt->planTree ? queryDesc->plannedstmt->planTree->total_cost : 0);
	PG_TRY();
	{
		int			nest = push_pool_settings();

		if (prev_ExecutorStart)
			prev_ExecutorStart(queryDesc, eflags);
		else
			standard_ExecutorStart(queryDesc, eflags);
		pop_pool_settings(nest);
	}
	PG_CATCH();
	{
		release_slot(false);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/* the slot goes back when the executor's memory does, at the latest */
	wl_estate = queryDesc->estate;
	cb = MemoryContextAlloc(queryDesc->estate->es_query_cxt, sizeof(MemoryContextCallback));
	admission = MemoryContextAlloc(queryDesc->estate->es_query_cxt, sizeof(uint64));
	*admission = wl_admission;
	cb->func = executor_memory_gone;
	cb->arg = admission;
	MemoryContextRegisterResetCallback(queryDesc->estate->es_query_cxt, cb);
}

static void
workload_ExecutorRun(QueryDesc *queryDesc, ScanDirection direction, uint64 count, bool execute_once)
{
	bool		mine = wl_holding && wl_estate != NULL && queryDesc->estate == wl_estate;
	int			nest = -1;

	if (mine)
	{
		rearm_query_timeout();
		nest = push_pool_settings();
	}
	if (prev_ExecutorRun)
		prev_ExecutorRun(queryDesc, direction, count, execute_once);
	else
		standard_ExecutorRun(queryDesc, direction, count, execute_once);
	if (mine)
	{
		pop_pool_settings(nest);
		/*
		 * A portal's query that returned all its rows (run to the end, or
		 * fewer rows than asked for) no longer runs, even if the portal
		 * stays.  (Not an executor that someone else still reads from after
		 * running it, as EXPLAIN ANALYZE does.)
		 */
		if (queryDesc->operation == CMD_SELECT && !queryDesc->plannedstmt->hasModifyingCTE &&
			ActivePortal != NULL && ActivePortal->queryDesc == queryDesc &&
			ScanDirectionIsForward(direction) &&
			(count == 0 || queryDesc->estate->es_processed < count) &&
			wl_holding && queryDesc->estate == wl_estate)
			release_slot(true);
	}
}

static void
workload_ExecutorEnd(QueryDesc *queryDesc)
{
	if (wl_holding && wl_estate != NULL && queryDesc->estate == wl_estate)
		release_slot(true);
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

/*
 * The planner may run queries (functions evaluated at plan time, a
 * wrapper's catalog reads): they belong to the statement being planned,
 * which is admitted when it starts executing.  Planning happens outside any
 * portal for the client's own statements, but inside the utility's portal
 * for EXECUTE, DECLARE CURSOR and EXPLAIN ANALYZE.
 */
static PlannedStmt *
workload_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	PlannedStmt *result;

	wl_planning_depth++;
	PG_TRY();
	{
		if (prev_planner)
			result = prev_planner(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_FINALLY();
	{
		wl_planning_depth--;
	}
	PG_END_TRY();
	return result;
}

/* How a utility statement is admitted */
typedef enum UtilityAdmission
{
	UA_PASS,					/* not admitted; what it executes may be (EXECUTE, EXPLAIN) */
	UA_EXEMPT,					/* not admitted, nor anything it runs (COMMIT, SET ...) */
	UA_ADMIT
} UtilityAdmission;

static UtilityAdmission
utility_admission(Node *stmt, int *kind)
{
	switch (nodeTag(stmt))
	{
		case T_ExplainStmt:
			{
				ListCell   *lc;

				/* EXPLAIN ANALYZE runs its statement, which is admitted; EXPLAIN does not */
				foreach(lc, ((ExplainStmt *) stmt)->options)
				{
					DefElem    *opt = (DefElem *) lfirst(lc);

					if (strcmp(opt->defname, "analyze") == 0 && defGetBoolean(opt))
						return UA_PASS;
				}
				return UA_EXEMPT;
			}
		case T_ExecuteStmt:
		case T_DeclareCursorStmt:
		case T_FetchStmt:
			return UA_PASS;
		case T_TransactionStmt:
		case T_VariableSetStmt:
		case T_VariableShowStmt:
		case T_DiscardStmt:
		case T_PrepareStmt:
		case T_DeallocateStmt:
		case T_ClosePortalStmt:
		case T_ListenStmt:
		case T_UnlistenStmt:
		case T_NotifyStmt:
		case T_LoadStmt:
		case T_CheckPointStmt:
		case T_ConstraintsSetStmt:
			return UA_EXEMPT;
		case T_CopyStmt:
			*kind = ((CopyStmt *) stmt)->is_from ? WL_KIND_WRITE : WL_KIND_READ;
			return UA_ADMIT;
		case T_CallStmt:
		case T_DoStmt:
			*kind = WL_KIND_WRITE;
			return UA_ADMIT;
		default:
			*kind = WL_KIND_DDL;
			return UA_ADMIT;
	}
}

static void
call_prev_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

static void
workload_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						ProcessUtilityContext context, ParamListInfo params,
						QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	int			kind = WL_KIND_DDL;
	UtilityAdmission how;

	if (!admission_applies())
	{
		call_prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}
	how = utility_admission(pstmt->utilityStmt, &kind);
	if (how == UA_PASS)
	{
		call_prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		return;
	}
	if (how == UA_EXEMPT)
	{
		wl_exempt_depth++;
		PG_TRY();
		{
			call_prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		}
		PG_FINALLY();
		{
			wl_exempt_depth--;
		}
		PG_END_TRY();
		return;
	}

	admit(kind, 0.0);
	PG_TRY();
	{
		int			nest = push_pool_settings();

		call_prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
		pop_pool_settings(nest);
	}
	PG_CATCH();
	{
		release_slot(false);
		PG_RE_THROW();
	}
	PG_END_TRY();
	release_slot(true);
}

/* ---------------------------------------------------------------------
 * Settings and start-up
 * ---------------------------------------------------------------------
 */

static bool
check_workload_enabled(bool *newval, void **extra, GucSource source)
{
	if (*newval && !wl_preloaded)
	{
		GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
		GUC_check_errmsg("orochi.workload_enabled needs orochi in shared_preload_libraries");
		GUC_check_errdetail("Resource pools keep their state in shared memory, which only a preloaded library can have.");
		GUC_check_errhint("Add orochi to shared_preload_libraries and restart the server.");
		return false;
	}
	return true;
}

void
orochi_workload_init(void)
{
	wl_preloaded = process_shared_preload_libraries_in_progress;

	DefineCustomBoolVariable("orochi.workload_enabled",
							 "Admits every statement through the resource pools.",
							 "Needs orochi in shared_preload_libraries.",
							 &orochi_workload_enabled,
							 false,
							 PGC_SUSET,
							 0,
							 check_workload_enabled, NULL, NULL);
	DefineCustomIntVariable("orochi.default_pool_concurrency",
							"Statements the default pool runs at once (0: no limit).",
							"The default pool takes the statements no workload class takes.",
							&orochi_default_pool_concurrency,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("orochi.default_query_timeout_ms",
							"Query timeout of pools that set none, and of the default pool (0: none).",
							"Acts as statement_timeout from the moment a statement is admitted.",
							&orochi_default_query_timeout_ms,
							0, 0, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomStringVariable("orochi.workload_database",
							   "Database whose orochi catalog holds the resource pools and workload classes.",
							   "Read at server start.",
							   &orochi_workload_database,
							   "postgres",
							   wl_preloaded ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	if (wl_preloaded)
	{
		prev_shmem_request_hook = shmem_request_hook;
		shmem_request_hook = workload_shmem_request;
		prev_shmem_startup_hook = shmem_startup_hook;
		shmem_startup_hook = workload_shmem_startup;
	}
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = workload_ExecutorStart;
	prev_ExecutorRun = ExecutorRun_hook;
	ExecutorRun_hook = workload_ExecutorRun;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = workload_ExecutorEnd;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = workload_ProcessUtility;
	prev_planner = planner_hook;
	planner_hook = workload_planner;
	RegisterXactCallback(workload_xact_callback, NULL);
}

/* ---------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------
 */

static void
require_shared_memory(void)
{
	if (wl_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("workload management needs orochi in shared_preload_libraries"),
				 errhint("Add orochi to shared_preload_libraries and restart the server.")));
	ensure_loaded();
}

static void
require_superuser(const char *what)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to %s", what)));
}

static const char *
class_name_of(int32 class_id)
{
	int			i;

	if (class_id == 0)
		return NULL;
	for (i = 0; i < wl_shared->nclasses; i++)
		if (wl_shared->classes[i].id == class_id)
			return wl_shared->classes[i].name;
	return NULL;
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

static double
ms_between(TimestampTz from, TimestampTz to)
{
	return to > from ? (double) (to - from) / 1000.0 : 0.0;
}

PG_FUNCTION_INFO_V1(orochi_workload_publish);

/*
 * orochi_workload_publish
 *		orochi.workload_publish(): this transaction changed the catalog; read
 *		it at commit and put it in force (Python calls this after each change).
 */
Datum
orochi_workload_publish(PG_FUNCTION_ARGS)
{
	char	   *dbname = get_database_name(MyDatabaseId);

	require_superuser("change resource pools");
	if (dbname == NULL || orochi_workload_database == NULL ||
		strcmp(dbname, orochi_workload_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("resource pools and workload classes are defined in database \"%s\"",
						orochi_workload_database ? orochi_workload_database : "")));
	wl_publish_pending = true;
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orochi_workload_reload);

/*
 * orochi_workload_reload
 *		Read the catalog again (a loader does, in the workload database) and
 *		wait until it is in force.
 */
Datum
orochi_workload_reload(PG_FUNCTION_ARGS)
{
	require_superuser("reload resource pools");
	if (wl_shared == NULL)
		require_shared_memory();
	request_load(true);
	if (wl_shared->load_error[0] != '\0')
		ereport(WARNING,
				(errmsg("resource pools were not reloaded: %s", wl_shared->load_error)));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orochi_list_resource_pools);

/*
 * orochi_list_resource_pools
 *		The pools in force, the default one first.
 */
Datum
orochi_list_resource_pools(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkloadPoolDef *defs;
	int			n = 0,
				i;

	require_shared_memory();
	InitMaterializedSRF(fcinfo, 0);
	defs = palloc(sizeof(WorkloadPoolDef) * WL_POOL_SLOTS);
	LWLockAcquire(wl_shared->lock, LW_SHARED);
	for (i = 0; i < WL_POOL_SLOTS; i++)
		if (pool_at(i)->def.id != -1 && !pool_at(i)->dropped)
			defs[n++] = pool_at(i)->def;
	LWLockRelease(wl_shared->lock);
	defs[0].max_concurrency = orochi_default_pool_concurrency;

	for (i = 0; i < n; i++)
	{
		Datum		values[8];
		bool		nulls[8] = {0};
		int32		qt = defs[i].query_timeout_ms;

		values[0] = CStringGetTextDatum(defs[i].name);
		values[1] = Int32GetDatum(defs[i].max_concurrency);
		nulls[1] = defs[i].max_concurrency <= 0;
		values[2] = Int32GetDatum(defs[i].max_queue);
		nulls[2] = defs[i].max_queue < 0;
		values[3] = Int32GetDatum(defs[i].queue_timeout_ms);
		nulls[3] = defs[i].queue_timeout_ms <= 0;
		values[4] = Int32GetDatum(qt >= 0 ? qt : orochi_default_query_timeout_ms);
		nulls[4] = (qt >= 0 ? qt : orochi_default_query_timeout_ms) <= 0;
		values[5] = Int32GetDatum(defs[i].priority);
		values[6] = defs[i].work_mem_kb > 0 ?
			CStringGetTextDatum(psprintf("%dkB", defs[i].work_mem_kb)) : (Datum) 0;
		nulls[6] = defs[i].work_mem_kb <= 0;
		values[7] = BoolGetDatum(defs[i].id == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

static Datum
oid_array(const Oid *oids, int n, bool as_roles)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		const char *name = as_roles ? GetUserNameFromId(oids[i], true) : get_database_name(oids[i]);

		elems[i] = CStringGetTextDatum(name ? name : psprintf("%u", oids[i]));
	}
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

PG_FUNCTION_INFO_V1(orochi_list_workload_classes);

/*
 * orochi_list_workload_classes
 *		The classes in force, in evaluation order, with the roles assigned
 *		to each.
 */
Datum
orochi_list_workload_classes(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkloadClassDef *classes;
	WorkloadRoleClass *roles;
	char	  (*pool_names)[NAMEDATALEN];
	int			nclasses,
				nroles,
				i,
				k;

	require_shared_memory();
	InitMaterializedSRF(fcinfo, 0);
	classes = palloc(sizeof(WorkloadClassDef) * WL_MAX_CLASSES);
	roles = palloc(sizeof(WorkloadRoleClass) * WL_MAX_ROLE_CLASSES);
	pool_names = palloc(NAMEDATALEN * WL_MAX_CLASSES);
	LWLockAcquire(wl_shared->lock, LW_SHARED);
	nclasses = wl_shared->nclasses;
	memcpy(classes, wl_shared->classes, sizeof(WorkloadClassDef) * nclasses);
	nroles = wl_shared->nroles;
	memcpy(roles, wl_shared->roles, sizeof(WorkloadRoleClass) * nroles);
	for (i = 0; i < nclasses; i++)
	{
		int			index = find_pool_index(classes[i].pool_id);

		strlcpy(pool_names[i], pool_at(index < 0 ? WL_DEFAULT_POOL : index)->def.name, NAMEDATALEN);
	}
	LWLockRelease(wl_shared->lock);

	for (i = 0; i < nclasses; i++)
	{
		WorkloadClassDef *c = &classes[i];
		Datum		values[10];
		bool		nulls[10] = {0};
		Datum		elems[WL_MAX_MATCH_VALUES];
		Datum		kinds[3];
		Oid			assigned[WL_MAX_ROLE_CLASSES];
		int			nkinds = 0,
					nassigned = 0;

		values[0] = CStringGetTextDatum(c->name);
		values[1] = CStringGetTextDatum(pool_names[i]);
		values[2] = Int32GetDatum(c->priority);
		nulls[2] = !c->has_priority;
		values[3] = oid_array(c->roles, c->nroles, true);
		values[4] = oid_array(c->databases, c->ndatabases, false);
		for (k = 0; k < c->napps; k++)
			elems[k] = CStringGetTextDatum(c->apps[k]);
		values[5] = PointerGetDatum(construct_array(elems, c->napps, TEXTOID, -1, false, TYPALIGN_INT));
		if (c->kinds & WL_KIND_READ)
			kinds[nkinds++] = CStringGetTextDatum("read");
		if (c->kinds & WL_KIND_WRITE)
			kinds[nkinds++] = CStringGetTextDatum("write");
		if (c->kinds & WL_KIND_DDL)
			kinds[nkinds++] = CStringGetTextDatum("ddl");
		values[6] = PointerGetDatum(construct_array(kinds, nkinds, TEXTOID, -1, false, TYPALIGN_INT));
		values[7] = Float8GetDatum(c->min_cost);
		nulls[7] = !c->has_min_cost;
		for (k = 0; k < nroles; k++)
			if (roles[k].class_id == c->id)
				assigned[nassigned++] = roles[k].role;
		values[8] = oid_array(assigned, nassigned, true);
		values[9] = Int32GetDatum(i + 1);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(orochi_pool_stats);

/*
 * orochi_pool_stats
 *		Live counts and statistics of every pool.
 */
Datum
orochi_pool_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkloadPool *pools;
	int			n = 0,
				i,
				b;

	require_shared_memory();
	InitMaterializedSRF(fcinfo, 0);
	pools = palloc(sizeof(WorkloadPool) * WL_POOL_SLOTS);
	LWLockAcquire(wl_shared->lock, LW_SHARED);
	for (i = 0; i < WL_POOL_SLOTS; i++)
		if (pool_at(i)->def.id != -1)
			memcpy(&pools[n++], pool_at(i), sizeof(WorkloadPool));
	LWLockRelease(wl_shared->lock);

	for (i = 0; i < n; i++)
	{
		WorkloadPool *p = &pools[i];
		Datum		values[14];
		bool		nulls[14] = {0};
		uint64		total = 0,
					cum = 0,
					target;

		values[0] = CStringGetTextDatum(p->def.name);
		values[1] = Int32GetDatum(p->def.max_concurrency);
		nulls[1] = p->def.max_concurrency <= 0 || p->dropped;
		values[2] = Int32GetDatum(p->running);
		values[3] = Int32GetDatum(p->queued);
		values[4] = Int64GetDatum((int64) p->admitted);
		values[5] = Int64GetDatum((int64) p->waited);
		values[6] = Int64GetDatum((int64) p->rejected);
		values[7] = Int64GetDatum((int64) p->timed_out);
		values[8] = Int64GetDatum((int64) p->canceled);
		values[9] = Int64GetDatum((int64) p->lock_admitted);
		for (b = 0; b < WL_HIST_BUCKETS; b++)
			total += p->wait_hist[b];
		if (total == 0)
		{
			nulls[10] = true;
			nulls[11] = true;
		}
		else
		{
			values[10] = Float8GetDatum((double) p->wait_sum_us / total / 1000.0);
			target = (uint64) ceil(0.95 * (double) total);
			for (b = 0; b < WL_HIST_BUCKETS; b++)
			{
				cum += p->wait_hist[b];
				if (cum >= target)
					break;
			}
			values[11] = Float8GetDatum(Min(bucket_upper_us(b), (double) p->wait_max_us) / 1000.0);
		}
		values[12] = TimestampTzGetDatum(p->stats_reset);
		values[13] = BoolGetDatum(p->dropped);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(orochi_pool_stats_reset);

/*
 * orochi_pool_stats_reset
 *		Zero the statistics of one pool (by name) or of all (NULL).
 */
Datum
orochi_pool_stats_reset(PG_FUNCTION_ARGS)
{
	char	   *name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		found = false;
	int			i;

	require_superuser("reset pool statistics");
	require_shared_memory();
	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < WL_POOL_SLOTS; i++)
	{
		WorkloadPool *p = pool_at(i);

		if (p->def.id == -1 || (name != NULL && strcmp(p->def.name, name) != 0))
			continue;
		found = true;
		p->admitted = p->waited = p->rejected = p->timed_out = p->canceled = p->lock_admitted = 0;
		p->wait_sum_us = p->wait_max_us = 0;
		memset(p->wait_hist, 0, sizeof(p->wait_hist));
		p->stats_reset = GetCurrentTimestamp();
	}
	LWLockRelease(wl_shared->lock);
	if (name != NULL && !found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("resource pool \"%s\" does not exist", name)));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orochi_workload_status);

/*
 * orochi_workload_status
 *		One row: whether workload management is on, and what is in force.
 */
Datum
orochi_workload_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {0};
	int			npools = 0,
				running = 0,
				queued = 0,
				i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "orochi: workload_status must return a record");
	values[0] = BoolGetDatum(orochi_workload_enabled);
	values[1] = BoolGetDatum(wl_preloaded && wl_shared != NULL);
	values[2] = CStringGetTextDatum(orochi_workload_database ? orochi_workload_database : "");
	if (wl_shared == NULL)
	{
		for (i = 3; i < 11; i++)
			nulls[i] = true;
	}
	else
	{
		char		error[256];
		TimestampTz loaded_at;
		int			nclasses,
					nroles;
		uint32		state;

		ensure_loaded();
		LWLockAcquire(wl_shared->lock, LW_SHARED);
		for (i = 0; i < WL_POOL_SLOTS; i++)
			if (pool_at(i)->def.id != -1)
			{
				npools += pool_at(i)->dropped ? 0 : 1;
				running += pool_at(i)->running;
				queued += pool_at(i)->queued;
			}
		nclasses = wl_shared->nclasses;
		nroles = wl_shared->nroles;
		strlcpy(error, wl_shared->load_error, sizeof(error));
		loaded_at = wl_shared->loaded_at;
		state = pg_atomic_read_u32(&wl_shared->load_state);
		LWLockRelease(wl_shared->lock);
		values[3] = BoolGetDatum(state == WL_LOAD_DONE);
		values[4] = TimestampTzGetDatum(loaded_at);
		nulls[4] = loaded_at == 0;
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&wl_shared->generation));
		values[6] = Int32GetDatum(npools);
		values[7] = Int32GetDatum(nclasses);
		values[8] = Int32GetDatum(running);
		values[9] = Int32GetDatum(queued);
		values[10] = text_or_null(error[0] ? error : NULL, &nulls[10]);
		(void) nroles;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* one row per backend that took part in admission: queued ones, or all */
static void
backend_rows(FunctionCallInfo fcinfo, bool queued_only)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n = wl_shared->nbackends;
	WorkloadBackend *snap = palloc(sizeof(WorkloadBackend) * n);
	char	  (*pool_names)[NAMEDATALEN] = palloc(NAMEDATALEN * n);
	char	  (*class_names)[NAMEDATALEN] = palloc(NAMEDATALEN * n);
	int		   *position = palloc0(sizeof(int) * n);
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	LWLockAcquire(wl_shared->lock, LW_SHARED);
	for (i = 0; i < n; i++)
	{
		const char *cname;

		snap[i] = wl_shared->backends[i];
		if (snap[i].pid == 0)
			continue;
		strlcpy(pool_names[i], pool_at(snap[i].pool)->def.name, NAMEDATALEN);
		cname = class_name_of(snap[i].class_id);
		strlcpy(class_names[i], cname ? cname : "", NAMEDATALEN);
		if (snap[i].state == WL_QUEUED)
		{
			dlist_iter	iter;
			int			pos = 0;

			dlist_foreach(iter, &pool_at(snap[i].pool)->queue)
			{
				pos++;
				if (iter.cur == &wl_shared->backends[i].node)
					break;
			}
			position[i] = pos;
		}
	}
	LWLockRelease(wl_shared->lock);

	for (i = 0; i < n; i++)
	{
		WorkloadBackend *e = &snap[i];
		Datum		values[7];
		bool		nulls[7] = {0};

		if (e->pid == 0 || (queued_only && e->state != WL_QUEUED))
			continue;
		if (!queued_only && e->seq == 0 && e->state == WL_IDLE)
			continue;			/* never admitted anything */
		values[0] = Int32GetDatum(e->pid);
		values[1] = CStringGetTextDatum(pool_names[i]);
		values[2] = text_or_null(class_names[i][0] ? class_names[i] : NULL, &nulls[2]);
		values[3] = Int32GetDatum(e->priority);
		if (queued_only)
		{
			values[4] = Int32GetDatum(position[i]);
			values[5] = Float8GetDatum(ms_between(e->enqueued_at, now));
			values[6] = TimestampTzGetDatum(e->enqueued_at);
		}
		else
		{
			values[4] = CStringGetTextDatum(e->state == WL_QUEUED ? "queued" :
											e->state == WL_RUNNING ? "running" : "idle");
			values[5] = Float8GetDatum(e->state == WL_QUEUED ? ms_between(e->enqueued_at, now) :
									   ms_between(e->enqueued_at, e->admitted_at));
			values[6] = Float8GetDatum(ms_between(e->admitted_at, now));
			nulls[6] = e->state != WL_RUNNING;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

PG_FUNCTION_INFO_V1(orochi_session_resources);

/*
 * orochi_session_resources
 *		Per backend that has been admitted: pool, class, state (idle,
 *		queued, running), waited ms (this statement's wait so far, or the
 *		last statement's), running ms.
 */
Datum
orochi_session_resources(PG_FUNCTION_ARGS)
{
	require_shared_memory();
	InitMaterializedSRF(fcinfo, 0);
	backend_rows(fcinfo, false);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(orochi_queued_queries);

/*
 * orochi_queued_queries
 *		The statements waiting for a slot, with their place in their pool's
 *		queue (1 is next).
 */
Datum
orochi_queued_queries(PG_FUNCTION_ARGS)
{
	require_shared_memory();
	InitMaterializedSRF(fcinfo, 0);
	backend_rows(fcinfo, true);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(orochi_workload_assign_session);

/*
 * orochi_workload_assign_session
 *		orochi.workload_assign_session(pid, class_name): the session's
 *		statements go to that class (NULL: back to the usual rules) until it
 *		ends.
 */
Datum
orochi_workload_assign_session(PG_FUNCTION_ARGS)
{
	int			pid = PG_GETARG_INT32(0);
	char	   *class_name = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	PGPROC	   *proc;
	int32		class_id = 0;
	WorkloadBackend *entry;
	int			i;

	require_superuser("assign sessions to workload classes");
	require_shared_memory();
	proc = BackendPidGetProc(pid);
	if (proc == NULL || proc->backendId == InvalidBackendId || proc->backendId > wl_shared->nbackends)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("PID %d is not a PostgreSQL backend process", pid)));
	LWLockAcquire(wl_shared->lock, LW_EXCLUSIVE);
	if (class_name != NULL)
	{
		for (i = 0; i < wl_shared->nclasses; i++)
			if (strcmp(wl_shared->classes[i].name, class_name) == 0)
				class_id = wl_shared->classes[i].id;
		if (class_id == 0)
		{
			LWLockRelease(wl_shared->lock);
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("workload class \"%s\" does not exist", class_name)));
		}
	}
	entry = &wl_shared->backends[proc->backendId - 1];
	if (entry->pid != pid)
	{
		/* the session has not been admitted yet: its entry starts now */
		entry->pid = pid;
		entry->pgprocno = proc->pgprocno;
		entry->state = WL_IDLE;
		entry->pool = WL_DEFAULT_POOL;
		entry->class_id = 0;
		entry->seq = 0;
		queue_node_init(&entry->node);
	}
	entry->assigned_class = class_id;
	pg_atomic_fetch_add_u64(&wl_shared->generation, 1);
	LWLockRelease(wl_shared->lock);
	PG_RETURN_VOID();
}
