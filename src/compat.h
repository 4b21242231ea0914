/*-------------------------------------------------------------------------
 *
 * compat.h
 *		The one place where differences between PostgreSQL major versions
 *		are papered over.  Code elsewhere calls the sequin_cdc_* spellings.
 *
 * Tested on PostgreSQL 15; the branches for 14, 16 and 17 follow the
 * signatures in those releases' headers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_COMPAT_H
#define SEQUIN_CDC_COMPAT_H

#include "postgres.h"

#include "executor/executor.h"
#include "replication/origin.h"
#include "replication/slot.h"

#if PG_VERSION_NUM < 140000
#error "sequin_cdc needs PostgreSQL 14 or later"
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
 * ReplicationSlotCreate grew a "failover" argument in 17; below 17 failover
 * must be false (create_slot refuses it first, see SEQUIN_CDC_HAVE_FAILOVER_SLOTS).
 */
#if PG_VERSION_NUM >= 170000
#define sequin_cdc_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false, false, (failover))
#else
#define sequin_cdc_slot_create(name, failover) \
	ReplicationSlotCreate((name), true, RS_EPHEMERAL, false)
#endif

/* ReplicationSlotAcquire grew an "error_if_invalid" argument in 18 */
#define sequin_cdc_slot_acquire(name) ReplicationSlotAcquire((name), true)

/* ExecInsertIndexTuples grew an "onlySummarizing" argument in 16 */
#if PG_VERSION_NUM >= 160000
#define sequin_cdc_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define sequin_cdc_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

/* GetFlushRecPtr takes a timeline out-argument since 15 */
#if PG_VERSION_NUM >= 150000
#define sequin_cdc_flush_ptr() GetFlushRecPtr(NULL)
#else
#define sequin_cdc_flush_ptr() GetFlushRecPtr()
#endif

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
