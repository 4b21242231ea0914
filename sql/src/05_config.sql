------------------------------------------------------------------------------
-- Configuration
------------------------------------------------------------------------------

-- The source_database_id written into every change row.
CREATE TABLE sequin_cdc.database_identity (
    singleton bool PRIMARY KEY DEFAULT true CHECK (singleton),
    id uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO sequin_cdc.database_identity DEFAULT VALUES;
COMMENT ON TABLE sequin_cdc.database_identity IS
    'The uuid written as source_database_id into change rows of this database.';

CREATE TABLE sequin_cdc.slots (
    slot_name name PRIMARY KEY,
    publication name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sequin_cdc.slots IS
    'Replication slots created by sequin_cdc.create_slot and the publication each one captures.';

CREATE TABLE sequin_cdc.change_tables (
    change_table regclass PRIMARY KEY,
    partitioned bool NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sequin_cdc.change_tables IS
    'Tables created by sequin_cdc.create_change_table.';

-- Read by the capture workers with the historic snapshot of each change:
-- a user catalog table, and its column order is known to the C code that
-- loads the rules.
CREATE TABLE sequin_cdc.change_retention (
    id bigserial PRIMARY KEY,
    source_table regclass NOT NULL,
    change_table regclass NOT NULL,
    actions text[] NOT NULL,
    filter text,
    slot_name name NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_table, change_table)
) WITH (user_catalog_table = true);
COMMENT ON TABLE sequin_cdc.change_retention IS
    'Retention rules: which changes of which table go to which change table, through which slot.';

SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.database_identity', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.slots', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_tables', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_retention', '');
SELECT pg_catalog.pg_extension_config_dump('sequin_cdc.change_retention_id_seq', '');

-- The identity is fixed when the extension is created.
REVOKE ALL ON sequin_cdc.database_identity FROM PUBLIC;

