/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable functions written in C: slots, filter validation, and
 *		the statistics behind pg_stat_capture (with the failures and
 *		backoff of its workers).
 *
 * The rest of the SQL API is PL/pgSQL in sql/sequin_cdc--*.sql; what needs
 * the slot machinery, the parser or shared memory is here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_publication.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "catalog.h"
#include "compat.h"
#include "filter.h"
#include "sequin_cdc.h"
#include "workers.h"

PG_FUNCTION_INFO_V1(sequin_cdc_check_preload);
PG_FUNCTION_INFO_V1(sequin_cdc_create_slot);
PG_FUNCTION_INFO_V1(sequin_cdc_drop_slot);
PG_FUNCTION_INFO_V1(sequin_cdc_validate_filter);
PG_FUNCTION_INFO_V1(sequin_cdc_validate_backfill_where);
PG_FUNCTION_INFO_V1(sequin_cdc_invalidate_relation);
PG_FUNCTION_INFO_V1(sequin_cdc_capture_stats);
PG_FUNCTION_INFO_V1(sequin_cdc_capture_failures);
PG_FUNCTION_INFO_V1(sequin_cdc_restart_capture);
PG_FUNCTION_INFO_V1(sequin_cdc_plugin_allowed);

/* _check_preload(): errors, with a hint, unless the library was preloaded */
Datum
sequin_cdc_check_preload(PG_FUNCTION_ARGS)
{
	sequin_cdc_require_preload();
	PG_RETURN_VOID();
}

/*
 * Does output_plugin_libraries (PostgreSQL 15.19 and later minor releases)
 * allow our plugin?  Servers without the setting allow every plugin.
 */
static bool
api_plugin_allowed(const char **setting)
{
	const char *value = GetConfigOption("output_plugin_libraries", true, false);
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	*setting = value;
	if (value == NULL)
		return true;
	copy = pstrdup(value);
	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
	{
		const char *n = lfirst(lc);

		if (strcmp(n, SEQUIN_CDC_PLUGIN) == 0 || strcmp(n, "*") == 0)
			found = true;
	}
	return found;
}

/* _plugin_allowed(): may create_slot() use our output plugin here? */
Datum
sequin_cdc_plugin_allowed(PG_FUNCTION_ARGS)
{
	const char *setting;

	PG_RETURN_BOOL(api_plugin_allowed(&setting));
}

/* Errors unless the current role may create and drop replication slots. */
static void
api_check_slot_privilege(const char *slot_name)
{
	if (!superuser() && !has_rolreplication(GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to manage replication slot \"%s\"", slot_name),
				 errdetail("Only superusers and roles with the REPLICATION attribute may create or drop replication slots."),
				 errhint("Run it as a superuser, or grant the attribute with ALTER ROLE %s REPLICATION.",
						 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
}

/*
 * Errors unless the current role holds every privilege in "privs" (an
 * AclMode mask) on sequin_cdc.slots.  Called before anything is changed, so
 * that a role lacking them gets an error and no half-made state.
 */
static void
api_check_slots_table_privilege(const char *slot_name, AclMode privs, const char *what)
{
	Oid			nsp = get_namespace_oid(SEQUIN_CDC_SCHEMA, false);
	Oid			relid = get_relname_relid(SEQUIN_CDC_SLOTS_TABLE, nsp);
	AclMode		modes[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table sequin_cdc.slots does not exist"),
				 errhint("Run ALTER EXTENSION sequin_cdc UPDATE, or drop and create the extension.")));
	for (int i = 0; i < lengthof(modes); i++)
	{
		if ((privs & modes[i]) == 0)
			continue;
		if (pg_class_aclcheck(relid, GetUserId(), modes[i]) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to %s sequin_cdc slot \"%s\"", what, slot_name),
					 errdetail("The role needs SELECT, INSERT, UPDATE and DELETE on sequin_cdc.slots; nothing was changed."),
					 errhint("A superuser can allow it: SELECT sequin_cdc.grant_usage('%s');",
							 quote_identifier(GetUserNameFromId(GetUserId(), false)))));
	}
}

/*
 * Errors if "replaces" is a replication slot of this database: its
 * configuration is in use, not left over from a restore.  "detail" says
 * when that was found.
 */
static void
api_refuse_replacing_slot_here(Name replaces, const char *detail)
{
	ReplicationSlot *s;
	bool		here;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(NameStr(*replaces), false);
	here = s != NULL && s->data.database == MyDatabaseId;
	LWLockRelease(ReplicationSlotControlLock);
	if (here)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("slot \"%s\" is a slot of this database", NameStr(*replaces)),
				 errdetail_internal("%s", detail),
				 errhint("Keep using slot \"%s\", or drop it first with sequin_cdc.drop_slot().",
						 NameStr(*replaces))));
}

/*
 * Errors unless "replaces" names configuration of this database whose slot
 * is not here: a row of sequin_cdc.slots without a replication slot of that
 * name in this database.  That is what a restored database has (slot names
 * are cluster-wide, and the slot stayed with the database that was dumped),
 * and what create_slot(..., replaces => ...) takes over.
 */
static void
api_check_replaces(Name slot, Name replaces)
{
	Oid			argtypes[1] = {NAMEOID};
	Datum		args[1] = {NameGetDatum(replaces)};
	bool		configured;

	if (namestrcmp(slot, NameStr(*replaces)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a slot cannot replace itself"),
				 errhint("Give the new slot another name: SELECT sequin_cdc.create_slot('<new name>', '<publication>', replaces => '%s');",
						 NameStr(*replaces))));

	SPI_connect();
	SPI_execute_with_args("SELECT 1 FROM " SEQUIN_CDC_SLOTS_QUALIFIED " WHERE slot_name = $1",
						  1, argtypes, args, NULL, true, 1);
	configured = SPI_processed > 0;
	SPI_finish();
	if (!configured)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("this database has no configuration of slot \"%s\"", NameStr(*replaces)),
				 errhint("replaces => names a row of sequin_cdc.slots whose slot is not in this database (as after a restore); sequin_cdc.health() lists them.")));

	api_refuse_replacing_slot_here(replaces,
								   _("replaces => takes over the configuration of a slot that is not in this database, as after a restore."));
}

/* Delete a slot's row in sequin_cdc.slots; returns rows deleted. */
static uint64
api_delete_slot_row(Name slot)
{
	Oid			argtypes[1] = {NAMEOID};
	Datum		args[1] = {NameGetDatum(slot)};
	uint64		n;

	SPI_connect();
	SPI_execute_with_args("DELETE FROM " SEQUIN_CDC_SLOTS_QUALIFIED " WHERE slot_name = $1",
						  1, argtypes, args, NULL, false, 0);
	n = SPI_processed;
	SPI_finish();
	return n;
}

/*
 * The new slot takes over the configuration of "replaces" (checked by
 * api_check_replaces): its retention rules and running backfills now name
 * the new slot (finished backfills keep the name they ran under), and the
 * old row goes.  In the transaction that records the slot.
 *
 * The old row is deleted first, and must still be there: that row lock
 * orders two sessions taking over the same configuration (or one dropping
 * it), so the second errors, and its new slot is dropped, instead of
 * leaving a slot with nothing to capture.  Under the lock, the slot of
 * that name must still not be in this database (a create_slot of it may
 * have run since the check).
 */
static void
api_take_over_configuration(Name slot, Name replaces)
{
	Oid			argtypes[2] = {NAMEOID, NAMEOID};
	Datum		args[2] = {NameGetDatum(slot), NameGetDatum(replaces)};

	if (api_delete_slot_row(replaces) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the configuration of slot \"%s\" was removed or taken over meanwhile",
						NameStr(*replaces)),
				 errdetail("Another session ran drop_slot() or create_slot(..., replaces => '%s') at the same time; nothing was changed.",
						   NameStr(*replaces)),
				 errhint("sequin_cdc.slots and sequin_cdc.change_retention show which slot has the rules now.")));

	api_refuse_replacing_slot_here(replaces,
								   _("It was created while this slot was being created; nothing was changed."));

	SPI_connect();
	SPI_execute_with_args("UPDATE " SEQUIN_CDC_SCHEMA "." SEQUIN_CDC_RULES_TABLE
						  " SET slot_name = $1 WHERE slot_name = $2",
						  2, argtypes, args, NULL, false, 0);
	SPI_execute_with_args("UPDATE " SEQUIN_CDC_BACKFILLS_QUALIFIED
						  " SET slot_name = $1 WHERE slot_name = $2"
						  " AND state = '" SEQUIN_CDC_BACKFILL_RUNNING "'",
						  2, argtypes, args, NULL, false, 0);
	SPI_finish();
}

/*
 * create_slot(slot name, publication name, failover bool = false,
 *			   replaces name = null) returns pg_lsn
 *
 * Checks everything a user can get wrong first, each with its own hint,
 * then creates the logical slot with our plugin, records it, and wakes the
 * launcher, which starts the capture worker at once.  Returns the LSN from
 * which changes are captured.  failover (17+) makes it a failover slot;
 * replaces names configuration whose slot is not here (a restored
 * database), which the new slot takes over.  The SQL of 0.1.0 and 0.2.0
 * passes two arguments only, that of 0.3.0 three (and is STRICT).
 */
Datum
sequin_cdc_create_slot(PG_FUNCTION_ARGS)
{
	Name		slot;
	Name		publication;
	bool		failover;
	Name volatile replaces = NULL;
	ReplicationSlot *existing;
	Oid			existing_db;
	const char *setting;
	int			in_use = 0;
	LogicalDecodingContext *ctx;
	XLogRecPtr	lsn;
	char		origin_name[NAMEDATALEN + 16];

	sequin_cdc_require_preload();

	for (int i = 0; i < Min(PG_NARGS(), 3); i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("slot, publication and failover must not be null"),
					 errhint("Pass a slot name and a publication, e.g. SELECT sequin_cdc.create_slot('shop_slot', 'shop');")));
	slot = PG_GETARG_NAME(0);
	publication = PG_GETARG_NAME(1);
	failover = PG_NARGS() > 2 ? PG_GETARG_BOOL(2) : false;
	if (PG_NARGS() > 3 && !PG_ARGISNULL(3))
		replaces = PG_GETARG_NAME(3);

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("logical decoding requires wal_level = logical"),
				 errdetail("The server runs with wal_level = %s.",
						   GetConfigOption("wal_level", false, false)),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
	if (!api_plugin_allowed(&setting))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("output_plugin_libraries does not allow the output plugin \"%s\"",
						SEQUIN_CDC_PLUGIN),
				 errdetail("output_plugin_libraries is \"%s\".", setting),
				 errhint("Add sequin_cdc to output_plugin_libraries in postgresql.conf, for example output_plugin_libraries = '%s, sequin_cdc', and reload the configuration.",
						 setting)));
	if (failover && !SEQUIN_CDC_HAVE_FAILOVER_SLOTS)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("failover slots need PostgreSQL 17 or later"),
				 errdetail("Failover slots, which standbys keep in sync, are new in PostgreSQL 17."),
				 errhint("Create the slot without failover => true, or upgrade the server to PostgreSQL 17 or later.")));
	api_check_slot_privilege(NameStr(*slot));
	api_check_slots_table_privilege(NameStr(*slot),
									ACL_SELECT | ACL_INSERT | ACL_UPDATE | (replaces ? ACL_DELETE : 0),
									"create");
	sequin_cdc_slot_validate_name(NameStr(*slot));
	if (replaces)
		api_check_replaces(slot, replaces);

	if (!OidIsValid(get_publication_oid(NameStr(*publication), true)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("publication \"%s\" does not exist", NameStr(*publication)),
				 errhint("Create it first with sequin_cdc.create_publication(), and commit it: a slot created before its publication can miss changes.")));

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	existing = SearchNamedReplicationSlot(NameStr(*slot), false);
	existing_db = existing ? existing->data.database : InvalidOid;
	LWLockRelease(ReplicationSlotControlLock);
	if (existing != NULL && OidIsValid(existing_db) && existing_db != MyDatabaseId)
	{
		char	   *dbname = get_database_name(existing_db);

		/* e.g. this database was restored from a dump of that one */
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication slot \"%s\" already exists in database \"%s\"",
						NameStr(*slot), dbname ? dbname : "?"),
				 errdetail("Slot names are cluster-wide."),
				 errhint("Choose another name; to take over this database's configuration of slot \"%s\": SELECT sequin_cdc.create_slot('<new name>', '%s', replaces => '%s');",
						 NameStr(*slot), NameStr(*publication), NameStr(*slot))));
	}
	if (existing != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("replication slot \"%s\" already exists", NameStr(*slot)),
				 errhint("Choose another name, or drop the existing slot first (sequin_cdc.drop_slot() for a sequin_cdc slot, pg_drop_replication_slot() otherwise).")));

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
		if (ReplicationSlotCtl->replication_slots[i].in_use)
			in_use++;
	LWLockRelease(ReplicationSlotControlLock);
	if (in_use >= max_replication_slots)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("all replication slots are in use"),
				 errdetail("max_replication_slots is %d.", max_replication_slots),
				 errhint("Drop a slot that is no longer needed, or raise max_replication_slots and restart the server.")));

	if (IsTransactionBlock() || TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("create_slot cannot run inside a transaction block"),
				 errhint("Run SELECT sequin_cdc.create_slot(...) as a statement of its own, after the publication is committed.")));

	sequin_cdc_check_logical_decoding_requirements();

	/*
	 * As pg_create_logical_replication_slot: ephemeral until a consistent
	 * start point is found, so an error leaves nothing behind.
	 */
	sequin_cdc_slot_create(NameStr(*slot), failover);
	ctx = sequin_cdc_create_init_decoding_context(SEQUIN_CDC_PLUGIN, NIL, false,
												  InvalidXLogRecPtr,
												  XL_ROUTINE(.page_read = read_local_xlog_page,
															 .segment_open = wal_segment_open,
															 .segment_close = wal_segment_close),
												  NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	lsn = MyReplicationSlot->data.confirmed_flush;
	FreeDecodingContext(ctx);
	ReplicationSlotPersist();
	ReplicationSlotRelease();

	PG_TRY();
	{
		Oid			argtypes[2] = {NAMEOID, NAMEOID};
		Datum		args[2] = {NameGetDatum(slot), NameGetDatum(publication)};
		ReplOriginId origin;

		/* a fresh origin: progress of an older slot of this name is void */
		sequin_cdc_origin_name(NameStr(*slot), origin_name, sizeof(origin_name));
		origin = replorigin_by_name(origin_name, true);
		if (origin != InvalidReplOriginId)
			replorigin_drop_by_name(origin_name, true, true);
		replorigin_create(origin_name);

		SPI_connect();
		SPI_execute_with_args("INSERT INTO " SEQUIN_CDC_SLOTS_QUALIFIED " (slot_name, publication) "
							  "VALUES ($1, $2) ON CONFLICT (slot_name) DO UPDATE "
							  "SET publication = excluded.publication, created_at = now()",
							  2, argtypes, args, NULL, false, 0);
		SPI_finish();
		if (replaces)
			api_take_over_configuration(slot, replaces);
	}
	PG_CATCH();
	{
		ReplicationSlotDrop(NameStr(*slot), true);
		PG_RE_THROW();
	}
	PG_END_TRY();

	/*
	 * The launcher may already have started the slot's worker, which waits
	 * for this row; woken when the row is visible, the launcher wakes it.
	 */
	sequin_cdc_at_commit(SEQUIN_AT_COMMIT_WAKE_LAUNCHER, 0);
	PG_RETURN_LSN(lsn);
}

/*
 * drop_slot(slot name)
 *
 * Configuration whose slot is not in this database (a restored database)
 * is removed alone.  Otherwise all or nothing: every check comes first
 * (REPLICATION, rights on sequin_cdc.slots, the slot is ours and in this
 * database), then the
 * transactional part (the row, whose triggers may still refuse), and only
 * then what cannot be rolled back: the worker is asked to stop, the slot is
 * dropped once it has released it, then its replication origin.
 */
Datum
sequin_cdc_drop_slot(PG_FUNCTION_ARGS)
{
	Name		slot = PG_GETARG_NAME(0);
	ReplicationSlot *s;
	bool		ours;
	Oid			slot_db;
	int			idx;
	char		origin_name[NAMEDATALEN + 16];

	sequin_cdc_require_preload();
	api_check_slot_privilege(NameStr(*slot));
	api_check_slots_table_privilege(NameStr(*slot), ACL_SELECT | ACL_DELETE, "drop");

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(NameStr(*slot), false);
	ours = s && strcmp(NameStr(s->data.plugin), SEQUIN_CDC_PLUGIN) == 0;
	slot_db = s ? s->data.database : InvalidOid;
	LWLockRelease(ReplicationSlotControlLock);
	if (s == NULL || slot_db != MyDatabaseId)
	{
		/*
		 * Only the configuration is here (e.g. after a restore, the slot
		 * stayed with the database that was dumped): it goes, the slot of
		 * that name, if any, stays.
		 */
		if (api_delete_slot_row(slot) > 0)
		{
			if (s == NULL)
				ereport(NOTICE,
						(errmsg("replication slot \"%s\" did not exist; its configuration was removed",
								NameStr(*slot))));
			else
				ereport(NOTICE,
						(errmsg("replication slot \"%s\" is not in this database and stays; its configuration here was removed",
								NameStr(*slot))));
			PG_RETURN_VOID();
		}
		if (s == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("replication slot \"%s\" does not exist", NameStr(*slot)),
					 errhint("sequin_cdc.pg_stat_capture lists the slots of sequin_cdc.")));
	}
	if (!ours)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("replication slot \"%s\" is not a sequin_cdc slot", NameStr(*slot)),
				 errhint("Drop it with pg_drop_replication_slot() if you mean to.")));
	if (slot_db != MyDatabaseId)
	{
		char	   *dbname = get_database_name(slot_db);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" belongs to database \"%s\"",
						NameStr(*slot), dbname ? dbname : "?"),
				 errhint("Connect to database \"%s\" and run sequin_cdc.drop_slot() there, so that its configuration goes too.",
						 dbname ? dbname : "?")));
	}

	/* transactional: an error here (privileges, a trigger) changes nothing */
	(void) api_delete_slot_row(slot);

	idx = sequin_cdc_request_slot_drop(NameStr(*slot));

	PG_TRY();
	{
		/* waits for the worker to release the slot */
		ReplicationSlotDrop(NameStr(*slot), false);
	}
	PG_CATCH();
	{
		sequin_cdc_cancel_slot_drop(idx);
		PG_RE_THROW();
	}
	PG_END_TRY();

	sequin_cdc_origin_name(NameStr(*slot), origin_name, sizeof(origin_name));
	replorigin_drop_by_name(origin_name, true, false);

	sequin_cdc_release_slot_entry(idx, NameStr(*slot));
	sequin_cdc_wake_launcher();
	PG_RETURN_VOID();
}

/*
 * _validate_filter(source regclass, filter text): raises the parse error a
 * bad filter deserves, at add_change_retention time.
 */
Datum
sequin_cdc_validate_filter(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *filter = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel = relation_open(relid, AccessShareLock);

	(void) sequin_cdc_parse_filter(rel, filter);
	relation_close(rel, AccessShareLock);
	PG_RETURN_VOID();
}

/*
 * _validate_backfill_where(source regclass, "where" text) returns text:
 * raises the error a bad backfill condition deserves, at backfill() time;
 * otherwise returns the condition deparsed from its parse tree, over the
 * table aliased t, for backfill() to count the rows it will read with
 *   format('SELECT count(*) FROM %s t WHERE %s', source, <result>)
 * so the text the user gave is never pasted into SQL.  The result is
 * meant for the current search_path (backfill() pins pg_catalog).  The
 * caller must be able to read the table.
 */
Datum
sequin_cdc_validate_backfill_where(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *where = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel;
	Expr	   *expr;
	char	   *sql;

	/* the parse errors tell column names and types: only to readers */
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table \"%s\"", get_rel_name(relid)),
				 errhint("A backfill reads the table as the role that starts it: that role needs SELECT on the table.")));
	rel = relation_open(relid, AccessShareLock);
	expr = sequin_cdc_parse_backfill_where(rel, where);
	sql = deparse_expression((Node *) expr, deparse_context_for("t", relid),
							 true, true);
	relation_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text(sql));
}

/*
 * _invalidate_relation(regclass): send a relcache invalidation for the
 * table and its partitions at commit.  The decoders replay it at this
 * transaction's place in the stream, which is how a new or dropped
 * retention rule takes effect exactly from its commit.
 */
Datum
sequin_cdc_invalidate_relation(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ListCell   *lc;

	/* a dropped table (a rule left by an older version) has nothing cached */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		PG_RETURN_VOID();
	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
		CacheInvalidateRelcacheByRelid(lfirst_oid(lc));
	PG_RETURN_VOID();
}

/* A capture state as pg_stat_capture shows it */
static const char *
api_state_name(CaptureState s)
{
	switch (s)
	{
		case CAPTURE_STOPPED:
			return "stopped";
		case CAPTURE_STARTING:
			return "starting";
		case CAPTURE_STREAMING:
			return "streaming";
		case CAPTURE_WAITING:
			return "waiting for configuration";
	}
	return "unknown";
}

/* The result columns of _capture_stats(), in order */
typedef enum ApiStatsColumn
{
	API_STATS_SLOT_NAME,
	API_STATS_DATABASE,
	API_STATS_PID,
	API_STATS_STATE,
	API_STATS_CHANGES,
	API_STATS_TRANSACTIONS,
	API_STATS_LAST_DECODED_LSN,
	API_STATS_LAST_COMMIT_TIME,
	API_STATS_ERRORS,
	API_STATS_LAST_ERROR,
	API_STATS_LAST_ERROR_TIME,
	API_STATS_NCOLUMNS,
} ApiStatsColumn;

/* Fills the columns of one slot entry's row of a statistics function */
typedef void (*ApiEntryColumns) (const CaptureSlotShared *e, Datum *values, bool *nulls);

/*
 * The body of the statistics functions over the slot entries: one row per
 * entry in use, copied out of shared memory under the lock, its columns
 * filled by fill.
 */
static Datum
api_slot_entries_srf(FunctionCallInfo fcinfo, int ncolumns, ApiEntryColumns fill)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	CaptureSlotShared *copy;
	Datum	   *values = palloc(sizeof(Datum) * ncolumns);
	bool	   *nulls = palloc(sizeof(bool) * ncolumns);

	sequin_cdc_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	copy = sequin_cdc_copy_slot_entries(&n);
	for (int i = 0; i < n; i++)
	{
		if (!copy[i].in_use)
			continue;
		memset(nulls, 0, sizeof(bool) * ncolumns);
		fill(&copy[i], values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* One row of _capture_stats() */
static void
api_stats_columns(const CaptureSlotShared *e, Datum *values, bool *nulls)
{
	values[API_STATS_SLOT_NAME] = CStringGetTextDatum(NameStr(e->slot_name));
	values[API_STATS_DATABASE] = ObjectIdGetDatum(e->dboid);
	values[API_STATS_PID] = Int32GetDatum(e->pid);
	nulls[API_STATS_PID] = e->pid == 0;
	/* failed and not recovered since: 'error', retrying or not */
	values[API_STATS_STATE] = CStringGetTextDatum(e->failures > 0 ? SEQUIN_CDC_STATE_ERROR :
												  api_state_name(e->pid ? e->state : CAPTURE_STOPPED));
	values[API_STATS_CHANGES] = Int64GetDatum((int64) e->changes_captured);
	values[API_STATS_TRANSACTIONS] = Int64GetDatum((int64) e->transactions_captured);
	values[API_STATS_LAST_DECODED_LSN] = LSNGetDatum(e->last_decoded_lsn);
	nulls[API_STATS_LAST_DECODED_LSN] = XLogRecPtrIsInvalid(e->last_decoded_lsn);
	values[API_STATS_LAST_COMMIT_TIME] = TimestampTzGetDatum(e->last_commit_time);
	nulls[API_STATS_LAST_COMMIT_TIME] = e->last_commit_time == 0;
	values[API_STATS_ERRORS] = Int64GetDatum((int64) e->errors);
	values[API_STATS_LAST_ERROR] = CStringGetTextDatum(e->last_error);
	nulls[API_STATS_LAST_ERROR] = e->last_error[0] == '\0';
	values[API_STATS_LAST_ERROR_TIME] = TimestampTzGetDatum(e->last_error_time);
	nulls[API_STATS_LAST_ERROR_TIME] = e->last_error_time == 0;
}

/*
 * _capture_stats(): one row per slot the launcher serves, copied out of
 * shared memory.  The view pg_stat_capture joins it with
 * pg_replication_slots.
 */
Datum
sequin_cdc_capture_stats(PG_FUNCTION_ARGS)
{
	return api_slot_entries_srf(fcinfo, API_STATS_NCOLUMNS, api_stats_columns);
}

/* The result columns of _capture_failures(), in order */
typedef enum ApiFailuresColumn
{
	API_FAILURES_SLOT_NAME,
	API_FAILURES_SQLSTATE,
	API_FAILURES_ATTEMPTS,
	API_FAILURES_NEXT_ATTEMPT,
	API_FAILURES_NCOLUMNS,
} ApiFailuresColumn;

/* One row of _capture_failures() */
static void
api_failures_columns(const CaptureSlotShared *e, Datum *values, bool *nulls)
{
	values[API_FAILURES_SLOT_NAME] = CStringGetTextDatum(NameStr(e->slot_name));
	values[API_FAILURES_SQLSTATE] = CStringGetTextDatum(unpack_sql_state(e->last_sqlstate));
	nulls[API_FAILURES_SQLSTATE] = e->last_sqlstate == 0;
	values[API_FAILURES_ATTEMPTS] = Int32GetDatum(e->failures);
	values[API_FAILURES_NEXT_ATTEMPT] = TimestampTzGetDatum(e->next_start);
	nulls[API_FAILURES_NEXT_ATTEMPT] = e->failures == 0 || e->pid != 0 || e->next_start == 0;
}

/*
 * _capture_failures(): per slot the launcher serves, the SQLSTATE of its
 * last error, how many attempts in a row failed (0 once one succeeds) and,
 * while the launcher backs off, when the next attempt starts.
 * pg_stat_capture shows them next to _capture_stats()'s columns.
 */
Datum
sequin_cdc_capture_failures(PG_FUNCTION_ARGS)
{
	return api_slot_entries_srf(fcinfo, API_FAILURES_NCOLUMNS, api_failures_columns);
}

/*
 * restart_capture(slot): the capture worker of a sequin_cdc slot of this
 * database failed and the launcher is backing off; once the cause is
 * fixed, start the next attempt now rather than when the backoff ends.
 * Takes effect at commit, so that the attempt sees the fix.  Needs the
 * rights drop_slot() needs (REPLICATION, and the slots table).
 */
Datum
sequin_cdc_restart_capture(PG_FUNCTION_ARGS)
{
	Name		slot = PG_GETARG_NAME(0);
	ReplicationSlot *s;
	bool		ours;
	int			idx;

	sequin_cdc_require_preload();
	api_check_slot_privilege(NameStr(*slot));
	api_check_slots_table_privilege(NameStr(*slot), ACL_SELECT, "restart capture of");

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(NameStr(*slot), false);
	ours = s && strcmp(NameStr(s->data.plugin), SEQUIN_CDC_PLUGIN) == 0 &&
		s->data.database == MyDatabaseId;
	LWLockRelease(ReplicationSlotControlLock);
	if (!ours)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("replication slot \"%s\" is not a sequin_cdc slot of this database", NameStr(*slot)),
				 errhint("sequin_cdc.pg_stat_capture lists the slots of sequin_cdc.")));

	LWLockAcquire(sequin_cdc_shared->lock, LW_SHARED);
	idx = sequin_cdc_find_slot_entry(NameStr(*slot));
	LWLockRelease(sequin_cdc_shared->lock);
	if (idx >= 0)
		sequin_cdc_at_commit(SEQUIN_AT_COMMIT_RETRY_CAPTURE, idx);
	PG_RETURN_VOID();
}
