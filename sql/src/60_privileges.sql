------------------------------------------------------------------------------
-- The dedicated role
------------------------------------------------------------------------------

-- What grant_usage gives and revoke_usage takes back, in one list so that
-- the two cannot drift apart: USAGE on the schema, rights on the
-- configuration tables (guarded by triggers) and their sequences, the
-- monitoring views, and the internal helpers the API calls. Revoking takes
-- ALL rights on the same objects. Superusers only.
CREATE FUNCTION sequin_cdc._set_usage(role regrole, give bool) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    verb text := CASE WHEN give THEN 'grant' ELSE 'revoke' END;
    rights text[];
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass the role, e.g. SELECT sequin_cdc.%s_usage(''sequin'');', verb);
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to % the use of sequin_cdc', verb
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    -- {privileges granted, objects}
    FOREACH rights SLICE 1 IN ARRAY ARRAY[
        ['USAGE', 'SCHEMA sequin_cdc'],
        ['SELECT, INSERT, UPDATE, DELETE',
         'sequin_cdc.slots, sequin_cdc.change_tables, sequin_cdc.change_retention, '
         'sequin_cdc.backfills, sequin_cdc.retention_policies, sequin_cdc.sinks'],
        ['USAGE', 'SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                  'sequin_cdc.sinks_id_seq'],
        ['SELECT', 'sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, '
                   'sequin_cdc.pg_stat_backfills, sequin_cdc.pg_stat_retention'],
        ['EXECUTE', 'FUNCTION sequin_cdc._validate_filter(regclass, text), '
                    'sequin_cdc._validate_backfill_where(regclass, text), '
                    'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                    'sequin_cdc._retention_jobs()']]
    LOOP
        IF give THEN
            EXECUTE format('GRANT %s ON %s TO %s', rights[1], rights[2], role);
        ELSE
            EXECUTE format('REVOKE ALL ON %s FROM %s', rights[2], role);
        END IF;
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._set_usage(regrole, bool) IS
    'Internal: grants (give) or revokes the rights sequin_cdc.grant_usage() gives a role. Superusers only.';

CREATE FUNCTION sequin_cdc.grant_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM sequin_cdc._set_usage(role, true);
    IF to_regnamespace('cron') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA cron TO %s', role);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.grant_usage(regrole) IS
    'Lets a role use the whole API: USAGE on the schema, rights on the configuration tables (guarded by triggers), the monitoring views, the internal helpers the API calls, and USAGE on schema cron when pg_cron is here. Superusers only.';
REVOKE ALL ON FUNCTION sequin_cdc.grant_usage(regrole) FROM PUBLIC;

CREATE FUNCTION sequin_cdc.revoke_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM sequin_cdc._set_usage(role, false);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.revoke_usage(regrole) IS
    'Takes back what sequin_cdc.grant_usage() granted (not USAGE on schema cron). Superusers only.';
REVOKE ALL ON FUNCTION sequin_cdc.revoke_usage(regrole) FROM PUBLIC;

