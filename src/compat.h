/*-------------------------------------------------------------------------
 *
 * compat.h
 *		The one place where differences between PostgreSQL major versions
 *		are papered over.  Code elsewhere calls the sequin_cdc_* spellings,
 *		and names a renamed type or constant by its newest name (defined
 *		here for the older servers).
 *
 * Supported: PostgreSQL 15 and later (built and tested on 15, 16, 17, 18
 * and 19 beta).  14 and older lack APIs the extension is built on:
 * shmem_request_hook (shared memory requested from _PG_init), the
 * MarkGUCPrefixReserved of its settings, InitMaterializedSRF for its
 * set-returning functions, pg_prng, and schema publications
 * (GetSchemaPublications).
 *
 * Each entry says which release changed what.  Sorted by subsystem.
 * Outside C there is one more: create_publication() (sql/src) sets
 * publish_generated_columns = stored on 18 and later.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_COMPAT_H
#define SEQUIN_CDC_COMPAT_H

#include "postgres.h"

#include "access/attmap.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "replication/logical.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/reorderbuffer.h"
#include "replication/slot.h"
#include "utils/jsonb.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif

#if PG_VERSION_NUM < 150000
#error "sequin_cdc needs PostgreSQL 15 or later (shmem_request_hook, MarkGUCPrefixReserved, InitMaterializedSRF, pg_prng)"
#endif

/* ---- replication origins ---- */

/* RepOriginId became ReplOriginId in 19 */
#if PG_VERSION_NUM < 190000
typedef RepOriginId ReplOriginId;
#define InvalidReplOriginId InvalidRepOriginId
#endif

/* replorigin_session_setup grew an "acquired_by" argument in 16 */
#if PG_VERSION_NUM >= 160000
#define sequin_cdc_replorigin_session_setup(origin) \
	replorigin_session_setup((origin), 0)
#else
#define sequin_cdc_replorigin_session_setup(origin) \
	replorigin_session_setup(origin)
#endif

/*
 * The origin a transaction's commit records, and its remote commit LSN and
 * time: the replorigin_session_origin* globals until 18, the fields of
 * replorigin_xact_state in 19.  Assignable.
 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_xact_origin (replorigin_xact_state.origin)
#define sequin_cdc_xact_origin_lsn (replorigin_xact_state.origin_lsn)
#define sequin_cdc_xact_origin_timestamp (replorigin_xact_state.origin_timestamp)
#else
#define sequin_cdc_xact_origin replorigin_session_origin
#define sequin_cdc_xact_origin_lsn replorigin_session_origin_lsn
#define sequin_cdc_xact_origin_timestamp replorigin_session_origin_timestamp
#endif

/* ---- replication slots ---- */

/* ReplicationSlotValidateName grew "allow_reserved_name" in 19 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_slot_validate_name(name) \
	ReplicationSlotValidateName((name), false, ERROR)
#else
#define sequin_cdc_slot_validate_name(name) \
	ReplicationSlotValidateName((name), ERROR)
#endif

/*
 * A new ephemeral, database-specific, non-two-phase slot, a failover slot
 * when asked.  ReplicationSlotCreate grew "failover" and "synced" in 17,
 * "repack" (before failover) in 19; below 17 failover must be false
 * (create_slot refuses it first, see SEQUIN_CDC_HAVE_FAILOVER_SLOTS).
 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false, false, (failover), false)
#elif PG_VERSION_NUM >= 170000
#define sequin_cdc_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false, (failover), false)
#else
#define sequin_cdc_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false)
#endif

/*
 * Acquire a slot, waiting for no one.  ReplicationSlotAcquire grew
 * "error_if_invalid" in 18: true, as pg_logical_slot_get_changes() passes
 * (older servers fail later, in CreateDecodingContext).
 */
#if PG_VERSION_NUM >= 180000
#define sequin_cdc_slot_acquire(name) ReplicationSlotAcquire((name), true, true)
#else
#define sequin_cdc_slot_acquire(name) ReplicationSlotAcquire((name), true)
#endif

/*
 * Has the slot been invalidated (WAL removed, catalog rows removed, idle
 * timeout)?  16 records the cause in data.invalidated; 15 only the LSN
 * (data.invalidated_at, with restart_lsn cleared).
 */
#if PG_VERSION_NUM >= 160000
#define sequin_cdc_slot_is_invalidated(s) \
	((s)->data.invalidated != RS_INVAL_NONE)
#else
#define sequin_cdc_slot_is_invalidated(s) \
	(XLogRecPtrIsInvalid((s)->data.restart_lsn) && \
	 !XLogRecPtrIsInvalid((s)->data.invalidated_at))
#endif

/* ---- logical decoding ---- */

/* CheckLogicalDecodingRequirements grew "repack" in 19 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_check_logical_decoding_requirements() \
	CheckLogicalDecodingRequirements(false)
#else
#define sequin_cdc_check_logical_decoding_requirements() \
	CheckLogicalDecodingRequirements()
#endif

/* CreateInitDecodingContext grew "for_repack" (after need_full_snapshot) in 19 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_create_init_decoding_context(plugin, options, need_full_snapshot, \
												restart_lsn, xl_routine, prepare_write, \
												do_write, update_progress) \
	CreateInitDecodingContext((plugin), (options), (need_full_snapshot), false, \
							  (restart_lsn), (xl_routine), (prepare_write), \
							  (do_write), (update_progress))
#else
#define sequin_cdc_create_init_decoding_context(plugin, options, need_full_snapshot, \
												restart_lsn, xl_routine, prepare_write, \
												do_write, update_progress) \
	CreateInitDecodingContext((plugin), (options), (need_full_snapshot), \
							  (restart_lsn), (xl_routine), (prepare_write), \
							  (do_write), (update_progress))
#endif

/* A decoded transaction's commit time: xact_time.commit_time until 18 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_txn_commit_time(txn) ((txn)->commit_time)
#else
#define sequin_cdc_txn_commit_time(txn) ((txn)->xact_time.commit_time)
#endif

/*
 * The new and old tuple of a decoded change, as HeapTuple (or NULL).
 * 17 dropped ReorderBufferTupleBuf: the change holds HeapTuples itself.
 */
#if PG_VERSION_NUM >= 170000
#define sequin_cdc_change_new_tuple(change) ((change)->data.tp.newtuple)
#define sequin_cdc_change_old_tuple(change) ((change)->data.tp.oldtuple)
#else
#define sequin_cdc_change_new_tuple(change) \
	((change)->data.tp.newtuple ? &(change)->data.tp.newtuple->tuple : NULL)
#define sequin_cdc_change_old_tuple(change) \
	((change)->data.tp.oldtuple ? &(change)->data.tp.oldtuple->tuple : NULL)
#endif

/* A transactional logical message.  LogLogicalMessage grew "flush" in 17. */
#if PG_VERSION_NUM >= 170000
#define sequin_cdc_log_message(prefix, message, size) \
	LogLogicalMessage((prefix), (message), (size), true, false)
#else
#define sequin_cdc_log_message(prefix, message, size) \
	LogLogicalMessage((prefix), (message), (size), true)
#endif

/* ---- publications ---- */

/*
 * The publications that list relid itself.  19 added FOR ALL TABLES
 * EXCEPT (...), stored as pg_publication_rel rows too, and split
 * GetRelationPublications into the included and the excluded ones.
 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_relation_publications(relid) \
	GetRelationIncludedPublications(relid)
#define sequin_cdc_relation_excluded_publications(relid) \
	GetRelationExcludedPublications(relid)
#else
#define sequin_cdc_relation_publications(relid) \
	GetRelationPublications(relid)
#define sequin_cdc_relation_excluded_publications(relid) NIL
#endif

/* ---- executor ---- */

/*
 * Set up estate's range table as the single relation rte (range table
 * index 1), as the logical replication apply worker does.  16 moved the
 * permission fields of RangeTblEntry into RTEPermissionInfo
 * (ExecInitRangeTable grew "permInfos"); 18 added "unpruned_relids", the
 * indexes the executor may open.
 */
static inline void
sequin_cdc_init_range_table(EState *estate, RangeTblEntry *rte)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;

	addRTEPermissionInfo(&perminfos, rte);
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
	ExecInitRangeTable(estate, list_make1(rte));
#endif
}

/*
 * The map from a partitioned table's row to the routed partition's, NULL
 * when they match.  16 replaced ri_RootToPartitionMap with
 * ExecGetRootToChildMap(), which builds it on first use.
 */
#if PG_VERSION_NUM >= 160000
#define sequin_cdc_root_to_child_map(rri, estate) \
	ExecGetRootToChildMap((rri), (estate))
#else
#define sequin_cdc_root_to_child_map(rri, estate) ((rri)->ri_RootToPartitionMap)
#endif

/* build_attrmap_by_name_if_req grew "missing_ok" in 16 (false: as before) */
#if PG_VERSION_NUM >= 160000
#define sequin_cdc_attrmap_by_name_if_req(indesc, outdesc) \
	build_attrmap_by_name_if_req((indesc), (outdesc), false)
#else
#define sequin_cdc_attrmap_by_name_if_req(indesc, outdesc) \
	build_attrmap_by_name_if_req((indesc), (outdesc))
#endif

/* ---- table access ---- */

/*
 * A sequential scan of a table with the given snapshot.  19 added a flags
 * argument to table_beginscan.
 */
#if PG_VERSION_NUM >= 190000
#define sequin_cdc_table_beginscan(rel, snapshot) \
	table_beginscan((rel), (snapshot), 0, NULL, 0)
#else
#define sequin_cdc_table_beginscan(rel, snapshot) \
	table_beginscan((rel), (snapshot), 0, NULL)
#endif

/* ---- tuple descriptors ---- */

/* Is the column a virtual generated column (new in 18; not stored)? */
#if PG_VERSION_NUM >= 180000
#define sequin_cdc_attr_is_virtual(att) \
	((att)->attgenerated == ATTRIBUTE_GENERATED_VIRTUAL)
#else
#define sequin_cdc_attr_is_virtual(att) false
#endif

/* ---- JSON ---- */

/*
 * A lexer over a string (not NUL-terminated).  17 made the caller pass the
 * JsonLexContext to fill (NULL: allocate one).
 */
#if PG_VERSION_NUM >= 170000
#define sequin_cdc_json_lexer(json, len) \
	makeJsonLexContextCstringLen(NULL, (json), (len), GetDatabaseEncoding(), false)
#else
#define sequin_cdc_json_lexer(json, len) \
	makeJsonLexContextCstringLen((json), (len), GetDatabaseEncoding(), false)
#endif

/*
 * Building a jsonb value with pushJsonbValue: 19 keeps the builder's state
 * and result in a JsonbInState; before, the caller keeps a
 * JsonbParseState pointer and the last push returns the result.
 * Initialise with memset 0 (or = {0}), push, then take the result.
 */
typedef struct SequinCdcJsonbBuilder
{
#if PG_VERSION_NUM >= 190000
	JsonbInState state;
#else
	JsonbParseState *state;
	JsonbValue *result;
#endif
} SequinCdcJsonbBuilder;

static inline void
sequin_cdc_jsonb_push(SequinCdcJsonbBuilder *b, JsonbIteratorToken seq, JsonbValue *v)
{
#if PG_VERSION_NUM >= 190000
	pushJsonbValue(&b->state, seq, v);
#else
	b->result = pushJsonbValue(&b->state, seq, v);
#endif
}

/* The completed value (after the closing push), as a Jsonb. */
static inline Jsonb *
sequin_cdc_jsonb_result(SequinCdcJsonbBuilder *b)
{
#if PG_VERSION_NUM >= 190000
	return JsonbValueToJsonb(b->state.result);
#else
	return JsonbValueToJsonb(b->result);
#endif
}


/* ---------------------------------------------------------------------
 * Failover slots and slot invalidation (17+, 18+)
 * ---------------------------------------------------------------------
 */

/* 17+: a logical slot can be a failover slot, synchronized to standbys */
#if PG_VERSION_NUM >= 170000
#define SEQUIN_CDC_HAVE_FAILOVER_SLOTS 1
#else
#define SEQUIN_CDC_HAVE_FAILOVER_SLOTS 0
#endif

/*
 * Why slot s was invalidated, as pg_replication_slots.invalidation_reason
 * names it ("idle_timeout" for idle_replication_slot_timeout, new in 18), or
 * NULL when it is valid.  Only 18 has GetSlotInvalidationCauseName(); below
 * it NULL, and PostgreSQL's own error at slot acquisition or decoding start
 * says why.
 */
#if PG_VERSION_NUM >= 180000
static inline const char *
sequin_cdc_slot_invalidation_reason(ReplicationSlot *s)
{
	ReplicationSlotInvalidationCause cause;

	SpinLockAcquire(&s->mutex);
	cause = s->data.invalidated;
	SpinLockRelease(&s->mutex);
	return cause == RS_INVAL_NONE ? NULL : GetSlotInvalidationCauseName(cause);
}
#else
#define sequin_cdc_slot_invalidation_reason(s) ((const char *) NULL)
#endif

#endif							/* SEQUIN_CDC_COMPAT_H */
