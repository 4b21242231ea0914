------------------------------------------------------------------------------
-- The dedicated role
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc.grant_usage(role regrole) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the role, e.g. SELECT sequin_cdc.grant_usage(''sequin'');';
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to grant the use of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA sequin_cdc TO %s', role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.slots, sequin_cdc.change_tables, '
                   'sequin_cdc.change_retention, sequin_cdc.backfills, sequin_cdc.retention_policies, '
                   'sequin_cdc.sinks TO %s', role);
    EXECUTE format('GRANT USAGE ON SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                   'sequin_cdc.sinks_id_seq TO %s', role);
    EXECUTE format('GRANT SELECT ON sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, '
                   'sequin_cdc.pg_stat_backfills, sequin_cdc.pg_stat_retention TO %s', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION sequin_cdc._validate_filter(regclass, text), '
                   'sequin_cdc._validate_backfill_where(regclass, text), '
                   'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                   'sequin_cdc._retention_jobs() TO %s', role);
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
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the role, e.g. SELECT sequin_cdc.revoke_usage(''sequin'');';
    END IF;
    IF NOT sequin_cdc._is_superuser() THEN
        RAISE EXCEPTION 'must be superuser to revoke the use of sequin_cdc'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask a superuser to run it.';
    END IF;
    EXECUTE format('REVOKE ALL ON sequin_cdc.slots, sequin_cdc.change_tables, sequin_cdc.change_retention, '
                   'sequin_cdc.backfills, sequin_cdc.retention_policies, sequin_cdc.sinks, '
                   'sequin_cdc.pg_stat_capture, sequin_cdc.pg_stat_sinks, sequin_cdc.pg_stat_backfills, '
                   'sequin_cdc.pg_stat_retention FROM %s', role);
    EXECUTE format('REVOKE ALL ON SEQUENCE sequin_cdc.change_retention_id_seq, sequin_cdc.backfills_id_seq, '
                   'sequin_cdc.sinks_id_seq FROM %s', role);
    EXECUTE format('REVOKE ALL ON FUNCTION sequin_cdc._validate_filter(regclass, text), '
                   'sequin_cdc._validate_backfill_where(regclass, text), '
                   'sequin_cdc._invalidate_relation(regclass), sequin_cdc._start_backfill(bigint), '
                   'sequin_cdc._retention_jobs() FROM %s', role);
    EXECUTE format('REVOKE ALL ON SCHEMA sequin_cdc FROM %s', role);
END
$fn$;
COMMENT ON FUNCTION sequin_cdc.revoke_usage(regrole) IS
    'Takes back what sequin_cdc.grant_usage() granted (not USAGE on schema cron). Superusers only.';
REVOKE ALL ON FUNCTION sequin_cdc.revoke_usage(regrole) FROM PUBLIC;

