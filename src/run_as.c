/*-------------------------------------------------------------------------
 *
 * run_as.c
 *		Running user-defined code as the role that owns it, restricted.
 *
 * The workers connect as the bootstrap superuser.  Whenever they do
 * something that can run code a user defined (the triggers, constraints,
 * generated columns and index expressions of a change table, the row level
 * security policies of a table read by a backfill or a sink), they first
 * become the role that owns that code or asked for the work, the way
 * PostgreSQL 16's apply worker does with run_as_owner = false
 * (SwitchToUntrustedUser / RestoreUserContext), and add
 * SECURITY_RESTRICTED_OPERATION, as maintenance commands do: the code
 * cannot SET ROLE back, create temporary objects or leave a cursor behind
 * for the superuser session.  Any setting the code changes (even with a
 * plain SET) is undone when we switch back, so it cannot steer what the
 * worker does afterwards as superuser (a search_path leading to the
 * user's own operators, say).
 *
 * An error between switch and restore needs no cleanup here: aborting the
 * transaction restores the user and security context and unwinds the
 * setting nest levels.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "run_as.h"

/*
 * Become userid, restricted, until sequin_cdc_restore_user.  We always
 * switch, even when the role is a superuser: the restriction and the
 * setting rollback still apply.
 */
void
sequin_cdc_switch_to_user(Oid userid, SequinUserContext *context)
{
	GetUserIdAndSecContext(&context->save_userid, &context->save_sec_context);
	SetUserIdAndSecContext(userid, context->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	context->save_nestlevel = NewGUCNestLevel();
}

/* Undo the settings changed since the switch, and become ourselves again. */
void
sequin_cdc_restore_user(SequinUserContext *context)
{
	AtEOXact_GUC(false, context->save_nestlevel);
	SetUserIdAndSecContext(context->save_userid, context->save_sec_context);
}

/*
 * Whether roleid still names a role: a role stored as an OID may have been
 * dropped since, and a dropped role's OID must never be acted as.
 */
bool
sequin_cdc_role_exists(Oid roleid)
{
	return OidIsValid(roleid) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(roleid));
}
