/*-------------------------------------------------------------------------
 *
 * ddl_guard.c
 *		DDL on the objects capture depends on: refused, or carried out
 *		consistently, never silent.
 *
 * An object access hook, installed by the preloaded library, sees every
 * object a statement drops, whatever the path (DROP TABLE, DROP SCHEMA
 * ... CASCADE, DROP OWNED, ALTER PUBLICATION ... DROP TABLE / SET TABLE,
 * whose removals are drops of pg_publication_rel and
 * pg_publication_namespace entries), and every change of a publication's
 * options (and, from the statement itself, publication renames).  Unlike
 * an event trigger it cannot be switched off (only a superuser's
 * session_replication_role = replica lets publication changes past, as
 * it does triggers).  It only
 * takes note: what it saw is judged when the statement is over (a
 * ProcessUtility hook), by sequin_cdc._ddl_guard_check() in SQL, which
 * then sees the catalogs as the statement left them.  That way a table
 * that ALTER PUBLICATION ... SET TABLE removes and adds back (its row
 * filter changed) is not refused, and rules of a source table dropped in
 * the same statement as their change table do not hold the latter.  The
 * check raises an error (the statement and its transaction are undone)
 * for a publication a slot captures, a change table rules write into,
 * a retained table removed from its slot's publication and a publish
 * option a rule needs (what writes into or feeds capture); it removes,
 * with a notice, what only read a dropped table: the rules of a source
 * table (no rule is left for a table that reuses the OID) and the sinks of
 * a change table.  So a role that may merely read a table cannot use a
 * rule or a sink to hold its owner's DROP TABLE.
 *
 * The one check made at once is DROP EXTENSION's: the extension's own
 * tables go with it, so their rows are read when the hook sees them
 * dropped, and the drop is refused while slots, sinks or retention
 * policies exist, because each of them holds something outside the
 * extension (a replication slot and origin, a worker, a pg_cron job).
 *
 * Nothing is consulted in a database without the extension, nor while
 * the extension's own scripts run (CREATE/ALTER EXTENSION).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_publication.h"
#include "catalog/pg_publication_namespace.h"
#include "catalog/pg_publication_rel.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "replication/slot.h"
#include "storage/lwlock.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "catalog.h"
#include "compat.h"
#include "ddl_guard.h"
#include "run_as.h"
#include "sequin_cdc.h"

/* What the current transaction's statements changed, judged at their end */
typedef struct DdlGuardNotes
{
	List	   *publications;	/* names of publications dropped or renamed */
	List	   *table_pubs;		/* publication ... */
	List	   *table_rels;		/* ... and the table removed from it */
	List	   *schema_pubs;	/* publication ... */
	List	   *schema_nsps;	/* ... and the schema removed from it */
	List	   *altered_pubs;	/* publications whose options changed */
	List	   *tables;			/* tables dropped ... */
	List	   *table_names;	/* ... and their qualified names */
} DdlGuardNotes;

static DdlGuardNotes notes;
static bool notes_taken = false;

static object_access_hook_type ddl_prev_object_access = NULL;
static ProcessUtility_hook_type ddl_prev_process_utility = NULL;

/*
 * The OID of the extension when it exists in this database and none of
 * its own scripts is running; InvalidOid otherwise (nothing to guard).
 */
static Oid
ddl_guarded_extension(void)
{
	Oid			ext = get_extension_oid(SEQUIN_CDC_EXTENSION, true);

	if (creating_extension && CurrentExtensionObject == ext)
		return InvalidOid;
	return ext;
}

/* Forget the notes when the transaction ends (their memory goes with it). */
static void
ddl_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			memset(&notes, 0, sizeof(notes));
			notes_taken = false;
			break;
		default:
			break;
	}
}

/*
 * The values, as text, of column attnum of every row of our table relname.
 * A table this statement already dropped has none (it was empty, or its
 * own drop would have been refused).  Reads the heap directly, with the
 * latest snapshot: the table's indexes may already be gone.
 */
static List *
ddl_table_values(const char *relname, AttrNumber attnum)
{
	Oid			nsp = get_namespace_oid(SEQUIN_CDC_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(relname, nsp) : InvalidOid;
	Relation	rel;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	Oid			typoutput;
	bool		typisvarlena;
	List	   *values = NIL;

	if (!OidIsValid(relid))
		return NIL;
	rel = table_open(relid, AccessShareLock);
	getTypeOutputInfo(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid,
					  &typoutput, &typisvarlena);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = sequin_cdc_table_beginscan(rel, snap);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, attnum, &isnull);

		if (!isnull)
			values = lappend(values, OidOutputFunctionCall(typoutput, d));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return values;
}

/*
 * The replication slots of this database that our plugin decodes but that
 * have no row in sequin_cdc.slots (made by hand, or left by a restore):
 * the launcher serves them too, so they would outlive the extension.
 */
static List *
ddl_unregistered_slots(List *registered)
{
	List	   *names = NIL;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
		ListCell   *lc;
		bool		found = false;

		if (!s->in_use || s->data.database != MyDatabaseId ||
			strcmp(NameStr(s->data.plugin), SEQUIN_CDC_PLUGIN) != 0)
			continue;
		foreach(lc, registered)
			found |= strcmp(lfirst(lc), NameStr(s->data.name)) == 0;
		if (!found)
			names = lappend(names, pstrdup(NameStr(s->data.name)));
	}
	LWLockRelease(ReplicationSlotControlLock);
	return names;
}

/*
 * Append "what: a, b. " to detail and " SELECT call('a'); ..." to hint for
 * the names in list; returns how many there were.
 */
static int
ddl_describe(List *list, const char *what, const char *call,
			 StringInfo detail, StringInfo hint)
{
	ListCell   *lc;

	foreach(lc, list)
	{
		appendStringInfo(detail, "%s%s", foreach_current_index(lc) == 0 ? what : ", ",
						 (char *) lfirst(lc));
		appendStringInfo(hint, " SELECT %s(%s);", call, quote_literal_cstr(lfirst(lc)));
	}
	if (list != NIL)
		appendStringInfoString(detail, ". ");
	return list_length(list);
}

/*
 * One of the tables that hold slots, sinks or retention policies is being
 * dropped (DROP EXTENSION, DROP SCHEMA sequin_cdc CASCADE, DROP OWNED):
 * refuse while any of them has a row, or a slot of our plugin is left in
 * this database, naming each and the call that removes it.
 */
static void
ddl_check_extension_drop(void)
{
	StringInfoData detail,
				hint;
	List	   *slots = ddl_table_values(SEQUIN_CDC_SLOTS_TABLE, Anum_slots_slot_name);
	int			n = 0;

	initStringInfo(&detail);
	initStringInfo(&hint);
	n += ddl_describe(slots, "Slots: ", "sequin_cdc.drop_slot", &detail, &hint);
	n += ddl_describe(ddl_unregistered_slots(slots),
					  "Replication slots of sequin_cdc without configuration: ",
					  "pg_drop_replication_slot", &detail, &hint);
	n += ddl_describe(ddl_table_values(SEQUIN_CDC_SINKS_TABLE, Anum_sinks_name),
					  "Sinks: ", "sequin_cdc.drop_sink", &detail, &hint);
	n += ddl_describe(ddl_table_values(SEQUIN_CDC_RETENTION_POLICIES_TABLE,
									   Anum_retention_policies_change_table),
					  "Retention policies: ", "sequin_cdc.drop_retention_policy",
					  &detail, &hint);
	if (n == 0)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
			 errmsg("cannot drop extension sequin_cdc while slots, sinks or retention policies exist"),
			 errdetail("%sEach holds something the extension would leave behind: a replication slot and its origin, a worker, a pg_cron job.",
					   detail.data),
			 errhint("Remove them first:%s", hint.data)));
}

/* Is relid one of our tables whose rows outlive the extension elsewhere? */
static bool
ddl_is_holding_table(Oid relid)
{
	Oid			nsp = get_rel_namespace(relid);
	char	   *name;

	if (!OidIsValid(nsp) || nsp != get_namespace_oid(SEQUIN_CDC_SCHEMA, true))
		return false;
	name = get_rel_name(relid);
	return name != NULL &&
		(strcmp(name, SEQUIN_CDC_SLOTS_TABLE) == 0 ||
		 strcmp(name, SEQUIN_CDC_SINKS_TABLE) == 0 ||
		 strcmp(name, SEQUIN_CDC_RETENTION_POLICIES_TABLE) == 0);
}

/*
 * Note the publication and the table or schema of entry, a row of
 * pg_publication_rel or pg_publication_namespace (cacheid) being removed.
 */
static void
ddl_note_entry(int cacheid, Oid entry, AttrNumber pubatt, AttrNumber otheratt,
			   List **pubs, List **others)
{
	HeapTuple	tup = SearchSysCache1(cacheid, ObjectIdGetDatum(entry));
	bool		isnull;

	if (!HeapTupleIsValid(tup))
		return;
	*pubs = lappend_oid(*pubs, DatumGetObjectId(SysCacheGetAttr(cacheid, tup, pubatt, &isnull)));
	*others = lappend_oid(*others, DatumGetObjectId(SysCacheGetAttr(cacheid, tup, otheratt, &isnull)));
	ReleaseSysCache(tup);
}

/*
 * Take note of one object about to be dropped, if capture may depend on
 * it: a table, a publication, or a table's or schema's entry in one.
 */
static void
ddl_note_drop(Oid classId, Oid objectId, int flags)
{
	MemoryContext old;

	if (classId == RelationRelationId)
	{
		char		relkind = get_rel_relkind(objectId);

		/* transient heaps of rewrites, temporary tables at session end */
		if ((flags & PERFORM_DELETION_INTERNAL) ||
			(relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE))
			return;
	}
	else if (classId != PublicationRelationId &&
			 classId != PublicationRelRelationId &&
			 classId != PublicationNamespaceRelationId)
		return;
	if (!OidIsValid(ddl_guarded_extension()))
		return;
	if (classId == RelationRelationId && ddl_is_holding_table(objectId))
		ddl_check_extension_drop();

	old = MemoryContextSwitchTo(TopTransactionContext);
	if (classId == RelationRelationId)
	{
		notes.tables = lappend_oid(notes.tables, objectId);
		notes.table_names = lappend(notes.table_names,
									quote_qualified_identifier(get_namespace_name(get_rel_namespace(objectId)),
															   get_rel_name(objectId)));
	}
	else if (classId == PublicationRelationId)
	{
		char	   *name = get_publication_name(objectId, true);

		if (name)
			notes.publications = lappend(notes.publications, name);
	}
	else if (classId == PublicationRelRelationId)
		ddl_note_entry(PUBLICATIONREL, objectId, Anum_pg_publication_rel_prpubid,
					   Anum_pg_publication_rel_prrelid, &notes.table_pubs, &notes.table_rels);
	else
		ddl_note_entry(PUBLICATIONNAMESPACE, objectId, Anum_pg_publication_namespace_pnpubid,
					   Anum_pg_publication_namespace_pnnspid, &notes.schema_pubs, &notes.schema_nsps);
	notes_taken = true;
	MemoryContextSwitchTo(old);
}

/*
 * The object access hook: note drops of tables and publication entries,
 * and changes of publications (their publish option).
 */
static void
ddl_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				  int subId, void *arg)
{
	if (ddl_prev_object_access)
		ddl_prev_object_access(access, classId, objectId, subId, arg);

	if (subId != 0 || !IsTransactionState())
		return;
	if (access == OAT_DROP)
		ddl_note_drop(classId, objectId, ((ObjectAccessDrop *) arg)->dropflags);
	else if (access == OAT_POST_ALTER && classId == PublicationRelationId &&
			 OidIsValid(ddl_guarded_extension()))
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		notes.altered_pubs = lappend_oid(notes.altered_pubs, objectId);
		notes_taken = true;
		MemoryContextSwitchTo(old);
	}
}

/* An oid[] of a list of OIDs, or a text[] of a list of C strings */
static Datum
ddl_array(List *list, Oid elemtype)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(list), 1));
	ListCell   *lc;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	foreach(lc, list)
		elems[foreach_current_index(lc)] = elemtype == OIDOID ?
			ObjectIdGetDatum(lfirst_oid(lc)) : CStringGetTextDatum(lfirst(lc));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, list_length(list), elemtype,
										   typlen, typbyval, typalign));
}

/*
 * The statement is over: hand what it did to sequin_cdc._ddl_guard_check(),
 * which refuses (an error undoes the statement) or completes it.  It runs
 * as the bootstrap superuser, restricted: it removes configuration rows
 * (the rules of a dropped table) that the role dropping the table may not
 * be allowed to touch.  It runs only SQL of ours, with a fixed search_path.
 * An extension older than the function (not yet updated) is not guarded.
 */
static void
ddl_judge_notes(void)
{
	DdlGuardNotes n = notes;
	Oid			argtypes[8] = {TEXTARRAYOID, OIDARRAYOID, OIDARRAYOID, OIDARRAYOID,
	OIDARRAYOID, OIDARRAYOID, OIDARRAYOID, TEXTARRAYOID};
	Oid			fn;
	SequinUserContext ucxt;

	memset(&notes, 0, sizeof(notes));
	notes_taken = false;
	if (!IsTransactionState() || !OidIsValid(ddl_guarded_extension()))
		return;

	/*
	 * session_replication_role = replica (superuser only) lets a statement
	 * past the publication checks, as it does triggers and event triggers:
	 * the way to take a publication from under a slot on purpose.  Capture
	 * then stops loudly at the first change it can no longer decode (state
	 * error), confirming nothing past it.  Dropped tables are still judged.
	 */
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
	{
		n.publications = NIL;
		n.table_pubs = n.table_rels = NIL;
		n.schema_pubs = n.schema_nsps = NIL;
		n.altered_pubs = NIL;
	}

	/* (the lookup too: the role may lack USAGE on our schema) */
	sequin_cdc_switch_to_user(BOOTSTRAP_SUPERUSERID, &ucxt);
	fn = LookupFuncName(list_make2(makeString(SEQUIN_CDC_SCHEMA),
								   makeString("_ddl_guard_check")),
						lengthof(argtypes), argtypes, true);
	if (OidIsValid(fn))
	{
		CommandCounterIncrement();
		PushActiveSnapshot(GetTransactionSnapshot());
		(void) OidFunctionCall8(fn,
								ddl_array(n.publications, TEXTOID),
								ddl_array(n.table_pubs, OIDOID), ddl_array(n.table_rels, OIDOID),
								ddl_array(n.schema_pubs, OIDOID), ddl_array(n.schema_nsps, OIDOID),
								ddl_array(n.altered_pubs, OIDOID),
								ddl_array(n.tables, OIDOID), ddl_array(n.table_names, TEXTOID));
		PopActiveSnapshot();
	}
	sequin_cdc_restore_user(&ucxt);
}

/*
 * The ProcessUtility hook: a renamed publication is noted before the
 * statement (its old name is gone after), and the notes are judged after.
 */
static void
ddl_process_utility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, RenameStmt) &&
		((RenameStmt *) parsetree)->renameType == OBJECT_PUBLICATION &&
		IsTransactionState() && OidIsValid(ddl_guarded_extension()))
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		notes.publications = lappend(notes.publications,
									 pstrdup(strVal(((RenameStmt *) parsetree)->object)));
		notes_taken = true;
		MemoryContextSwitchTo(old);
	}

	if (ddl_prev_process_utility)
		ddl_prev_process_utility(pstmt, queryString, readOnlyTree, context,
								 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (notes_taken)
		ddl_judge_notes();
}

/* Install the hooks (from _PG_init, at server start). */
void
sequin_cdc_ddl_guard_init(void)
{
	ddl_prev_object_access = object_access_hook;
	object_access_hook = ddl_object_access;
	ddl_prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = ddl_process_utility;
	RegisterXactCallback(ddl_xact_callback, NULL);
}
