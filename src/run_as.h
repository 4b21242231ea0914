/*-------------------------------------------------------------------------
 *
 * run_as.h
 *		Running user-defined code as the role that owns it, restricted.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_RUN_AS_H
#define SEQUIN_CDC_RUN_AS_H

#include "postgres.h"

/* What sequin_cdc_switch_to_user saved, for sequin_cdc_restore_user */
typedef struct SequinUserContext
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} SequinUserContext;

extern void sequin_cdc_switch_to_user(Oid userid, SequinUserContext *context);
extern void sequin_cdc_restore_user(SequinUserContext *context);
extern bool sequin_cdc_role_exists(Oid roleid);

#endif							/* SEQUIN_CDC_RUN_AS_H */
