------------------------------------------------------------------------------
-- DDL on objects capture depends on
--
-- The library's DDL guard (src/ddl_guard.c) notes what a statement drops or
-- changes, whatever the path (DROP, DROP SCHEMA ... CASCADE, DROP OWNED,
-- ALTER PUBLICATION), and calls this function when the statement is over,
-- as the bootstrap superuser: an error here undoes the statement. Its
-- arguments: publications dropped or renamed (their names), pairs of
-- (publication, table) and (publication, schema) removed from publications,
-- publications whose options changed, and tables dropped (OIDs and names).
-- What writes into a dropped change table (rules, a retention policy)
-- refuses the drop; what only reads a dropped table (the rules of a source
-- table, the sinks of a change table) goes with it, with a notice.
------------------------------------------------------------------------------

CREATE FUNCTION sequin_cdc._ddl_guard_check(
    publications text[], table_pubs oid[], table_rels oid[],
    schema_pubs oid[], schema_nsps oid[], altered_pubs oid[],
    tables oid[], table_names text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
    k record;
    dropped oid[];
    calls text;
BEGIN
    -- a publication a slot decodes (by name) is gone
    SELECT s.slot_name, s.publication INTO r
      FROM sequin_cdc.slots s
     WHERE s.publication::text = ANY (publications)
       AND NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.publication)
     ORDER BY s.slot_name LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'publication "%" is captured by sequin_cdc slot "%"', r.publication, r.slot_name
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'The slot decodes the publication by its name; without it no change would be captured.',
                  HINT = format('Drop the slot first with SELECT sequin_cdc.drop_slot(%L);', r.slot_name);
    END IF;

    SELECT array_agg(t.relid) INTO dropped
      FROM unnest(tables) t(relid)
     WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.relid);

    -- a dropped change table that rules of surviving tables write into, or
    -- with a retention policy (and its pg_cron job)
    FOR r IN SELECT t.relid, t.name
               FROM unnest(tables, table_names) t(relid, name)
              WHERE t.relid = ANY (dropped)
                AND EXISTS (SELECT 1 FROM sequin_cdc.change_tables ct WHERE ct.change_table = t.relid)
    LOOP
        SELECT string_agg(format('SELECT sequin_cdc.drop_change_retention(%s);', cr.id), ' ' ORDER BY cr.id)
          INTO calls
          FROM sequin_cdc.change_retention cr
         WHERE cr.change_table = r.relid AND cr.source_table <> ALL (dropped);
        IF calls IS NOT NULL THEN
            RAISE EXCEPTION 'cannot drop change table % because retention rules write into it', r.name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = 'The changes those rules keep would be lost from now on.',
                      HINT = format('Remove the rules first: %s', calls);
        END IF;
        IF EXISTS (SELECT 1 FROM sequin_cdc.retention_policies p WHERE p.change_table = r.relid) THEN
            RAISE EXCEPTION 'cannot drop change table % because it has a retention policy', r.name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = 'Its scheduled job would fail from now on.',
                      HINT = format('Drop the policy first with SELECT sequin_cdc.drop_retention_policy(%L);', r.name);
        END IF;
        -- what only reads it goes with it, as the rules of a dropped source
        -- table do: a role that may read a change table cannot hold its drop
        FOR k IN SELECT s.name FROM sequin_cdc.sinks s WHERE s.change_table = r.relid ORDER BY s.name
        LOOP
            PERFORM sequin_cdc.drop_sink(k.name);
            RAISE NOTICE 'sink "%" of dropped change table % removed', k.name, r.name;
        END LOOP;
        DELETE FROM sequin_cdc.change_tables ct WHERE ct.change_table = r.relid;
    END LOOP;

    -- the rules of a dropped source table go with it: none is left for a
    -- table that reuses the OID
    FOR r IN DELETE FROM sequin_cdc.change_retention cr
              WHERE cr.source_table = ANY (dropped)
          RETURNING cr.id, cr.source_table::oid AS relid, cr.change_table
    LOOP
        RAISE NOTICE 'retention rule % of dropped table % removed',
                     r.id, (SELECT t.name FROM unnest(tables, table_names) t(relid, name)
                             WHERE t.relid = r.relid LIMIT 1)
            USING DETAIL = format('Its changes were kept in %s; the rows already there stay.', r.change_table);
    END LOOP;

    -- a retained table no longer in the publication of its rule's slot
    -- (only when entries left a publication: _publication_covers() opens
    -- the publication's tables, and a plain DROP TABLE of one of them must
    -- not wait for the others, which concurrent drops hold)
    IF cardinality(table_pubs) > 0 OR cardinality(schema_pubs) > 0 THEN
        SELECT cr.id, cr.source_table, s.slot_name, s.publication INTO r
          FROM sequin_cdc.change_retention cr
          JOIN sequin_cdc.slots s ON s.slot_name = cr.slot_name
          JOIN pg_publication p ON p.pubname = s.publication
         WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = cr.source_table)
           AND (EXISTS (SELECT 1 FROM unnest(table_pubs, table_rels) x(pub, rel)
                         WHERE x.pub = p.oid AND x.rel IN (SELECT sequin_cdc._related(cr.source_table)))
                OR EXISTS (SELECT 1 FROM unnest(schema_pubs, schema_nsps) x(pub, nsp)
                             JOIN pg_class c ON c.relnamespace = x.nsp
                            WHERE x.pub = p.oid AND c.oid IN (SELECT sequin_cdc._related(cr.source_table))))
           AND NOT sequin_cdc._publication_covers(s.publication, cr.source_table)
         ORDER BY cr.id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'table % would no longer be in publication "%" of sequin_cdc slot "%"',
                            r.source_table, r.publication, r.slot_name
                USING ERRCODE = 'dependent_objects_still_exist',
                      DETAIL = format('Retention rule %s keeps its changes; they would no longer be captured.', r.id),
                      HINT = format('Remove the rule first with SELECT sequin_cdc.drop_change_retention(%s);', r.id);
        END IF;
    END IF;

    -- a publish option that no longer includes an action a rule keeps
    SELECT cr.id, cr.source_table, s.slot_name, p.pubname, a.action INTO r
      FROM pg_publication p
      JOIN sequin_cdc.slots s ON s.publication = p.pubname
      JOIN sequin_cdc.change_retention cr ON cr.slot_name = s.slot_name
      CROSS JOIN LATERAL unnest(cr.actions) a(action)
     WHERE p.oid = ANY (altered_pubs)
       AND NOT CASE a.action WHEN 'insert' THEN p.pubinsert
                             WHEN 'update' THEN p.pubupdate
                             ELSE p.pubdelete END
     ORDER BY cr.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'publication "%" would no longer publish % changes', r.pubname, r.action
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('Retention rule %s of sequin_cdc slot "%s" keeps the %s changes of %s.',
                                  r.id, r.slot_name, r.action, r.source_table),
                  HINT = format('Keep %s in the publish option, or remove the rule first with SELECT sequin_cdc.drop_change_retention(%s);',
                                r.action, r.id);
    END IF;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._ddl_guard_check(text[], oid[], oid[], oid[], oid[], oid[], oid[], text[]) IS
    'Internal: called by the DDL guard at the end of a statement that dropped or changed what capture depends on; refuses it or completes it (removes the rules of dropped tables).';
REVOKE ALL ON FUNCTION sequin_cdc._ddl_guard_check(text[], oid[], oid[], oid[], oid[], oid[], oid[], text[]) FROM PUBLIC;
