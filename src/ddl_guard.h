/*-------------------------------------------------------------------------
 *
 * ddl_guard.h
 *		DDL on the objects capture depends on: refused, or carried out
 *		consistently (ddl_guard.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SEQUIN_CDC_DDL_GUARD_H
#define SEQUIN_CDC_DDL_GUARD_H

extern void sequin_cdc_ddl_guard_init(void);

#endif							/* SEQUIN_CDC_DDL_GUARD_H */
