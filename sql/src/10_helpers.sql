------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc._validate_filter(source regclass, filter text) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_validate_filter';

CREATE FUNCTION sequin_cdc._invalidate_relation(source regclass) RETURNS void
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_invalidate_relation';

CREATE FUNCTION sequin_cdc._plugin_allowed() RETURNS bool
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_plugin_allowed';

CREATE FUNCTION sequin_cdc._capture_stats(
    OUT slot_name text, OUT database_oid oid, OUT pid int, OUT state text,
    OUT changes_captured bigint, OUT transactions_captured bigint,
    OUT last_decoded_lsn pg_lsn, OUT last_commit_time timestamptz,
    OUT errors bigint, OUT last_error text, OUT last_error_time timestamptz)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_capture_stats';

CREATE FUNCTION sequin_cdc._capture_failures(
    OUT slot_name text, OUT last_error_sqlstate text, OUT failed_attempts int,
    OUT next_attempt_at timestamptz)
RETURNS SETOF record
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_capture_failures';

-- A table with its partitions (all levels), for coverage and identity checks.
CREATE FUNCTION sequin_cdc._tree(source regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT source UNION SELECT relid FROM pg_partition_tree(source) $$;

-- The same, plus the tables it is a partition of.
CREATE FUNCTION sequin_cdc._related(source regclass) RETURNS SETOF regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sequin_cdc._tree(source) UNION SELECT relid FROM pg_partition_ancestors(source) $$;

REVOKE ALL ON FUNCTION sequin_cdc._validate_filter(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sequin_cdc._invalidate_relation(regclass) FROM PUBLIC;

------------------------------------------------------------------------------
-- Who the caller is, and what it owns
------------------------------------------------------------------------------

-- Is the current role a superuser?  (Taken from the session, never from a
-- table: every guard below starts here.)
CREATE FUNCTION sequin_cdc._is_superuser() RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) $$;
COMMENT ON FUNCTION sequin_cdc._is_superuser() IS
    'Internal: whether the current role is a superuser.';

-- Has the current role the privileges of the relation's owner?  Null when
-- the relation does not exist (any more).
CREATE FUNCTION sequin_cdc._owns(rel regclass) RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = rel $$;
COMMENT ON FUNCTION sequin_cdc._owns(regclass) IS
    'Internal: whether the current role has the privileges of the relation''s owner (null if it does not exist).';

-- The one owner check: raises insufficient_privilege with the caller's
-- message, detail (may be null) and hint unless the current role has the
-- privileges of the relation's owner.  A relation that no longer exists
-- passes when gone_ok, so that configuration rows naming a dropped table
-- can still be changed or removed.  Used by the guard triggers and the API.
CREATE FUNCTION sequin_cdc._require_owner(rel regclass, gone_ok bool,
                                          message text, detail text, hint text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    owns bool := sequin_cdc._owns(rel);
BEGIN
    IF owns OR (gone_ok AND owns IS NULL) THEN
        RETURN;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION '%', message USING ERRCODE = 'insufficient_privilege', HINT = hint;
    ELSE
        RAISE EXCEPTION '%', message USING ERRCODE = 'insufficient_privilege', DETAIL = detail, HINT = hint;
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_owner(regclass, bool, text, text, text) IS
    'Internal: raises the given insufficient_privilege error unless the current role has the privileges of the relation''s owner (a relation that is gone passes when gone_ok).';

-- The one read check of the API: raises insufficient_privilege with the
-- caller's message and detail, and a hint with the GRANT the table's owner
-- can run, unless the current role may SELECT from the table.
CREATE FUNCTION sequin_cdc._require_select(rel regclass, message text, detail text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT has_table_privilege(rel, 'SELECT') THEN
        RAISE EXCEPTION '%', message
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = detail,
                  HINT = format('The table''s owner can allow it: GRANT SELECT ON %s TO %I;', rel, current_user);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._require_select(regclass, text, text) IS
    'Internal: raises the given insufficient_privilege error, with the GRANT that would allow it, unless the current role may read the table.';

-- Does the publication publish the table, one of its partitions or one of
-- the tables it is a partition of?  By OID, never by name: a table dropped
-- or renamed meanwhile by another session cannot make it fail, and no
-- relation the caller may not look up is ever named.  False when the
-- publication does not exist.
CREATE FUNCTION sequin_cdc._publication_covers(publication name, source regclass) RETURNS bool
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM pg_publication p,
               LATERAL pg_get_publication_tables(p.pubname::text) pt
         WHERE p.pubname = publication
           AND pt.relid IN (SELECT sequin_cdc._related(source)))
$$;
COMMENT ON FUNCTION sequin_cdc._publication_covers(name, regclass) IS
    'Internal: whether the publication covers the table (or a table of its partition tree), compared by OID.';

-- output_plugin_libraries is readable only by superusers and members of
-- pg_read_all_settings; health() shows it to every role that may call it.
-- It names plugin libraries, nothing about other roles.
CREATE FUNCTION sequin_cdc._output_plugin_libraries() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT current_setting('output_plugin_libraries', true) $$;
COMMENT ON FUNCTION sequin_cdc._output_plugin_libraries() IS
    'Internal: the value of output_plugin_libraries (null on servers without it), for health().';

-- The backfill condition: one boolean expression over the table's columns,
-- parsed (never concatenated into SQL text).
CREATE FUNCTION sequin_cdc._validate_backfill_where(source regclass, "where" text) RETURNS text
LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'sequin_cdc_validate_backfill_where';
COMMENT ON FUNCTION sequin_cdc._validate_backfill_where(regclass, text) IS
    'Internal: raises an error unless "where" is one boolean expression over the table''s columns without subqueries, set operations, aggregates, volatile or non-built-in functions; returns it deparsed over the table aliased t.';
REVOKE ALL ON FUNCTION sequin_cdc._validate_backfill_where(regclass, text) FROM PUBLIC;

