------------------------------------------------------------------------------
-- pg_dump / pg_restore
--
-- The configuration tables are dumped whole (pg_extension_config_dump), and
-- a restore first runs CREATE EXTENSION, which inserts rows of its own: the
-- database identity and the registration of sequin_cdc.changes.  COPY
-- knows no ON CONFLICT, so these BEFORE INSERT triggers let the dumped row
-- replace the one CREATE EXTENSION made: the restored database keeps the id
-- its change rows carry.  Only superusers can insert those rows (the guard
-- triggers, and REVOKE on database_identity), so nothing else changes.
------------------------------------------------------------------------------

-- Before a row of database_identity or the registration of
-- sequin_cdc.changes is inserted, the row of the same key goes.
CREATE FUNCTION sequin_cdc._replace_install_row() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_TABLE_NAME = 'database_identity' THEN
        DELETE FROM sequin_cdc.database_identity d WHERE d.singleton = NEW.singleton;
    ELSIF TG_TABLE_NAME = 'change_tables'
          AND NEW.change_table = to_regclass('sequin_cdc.changes') THEN
        DELETE FROM sequin_cdc.change_tables ct WHERE ct.change_table = NEW.change_table;
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION sequin_cdc._replace_install_row() IS
    'Internal: lets a restored row of database_identity, or the restored registration of sequin_cdc.changes, replace the one CREATE EXTENSION inserted.';

CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.database_identity
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();
CREATE TRIGGER replace_install_row BEFORE INSERT ON sequin_cdc.change_tables
    FOR EACH ROW EXECUTE FUNCTION sequin_cdc._replace_install_row();
