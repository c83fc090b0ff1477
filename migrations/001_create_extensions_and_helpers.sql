-- 001_create_extensions_and_helpers.sql
--
-- What: shared helpers used by the legacy schema (migrations 002-005) and by the
--       statistics-first schema (006): the trigger function that maintains
--       `updated_at` columns.
-- Why:  the legacy deployments (before the statistics-first project) kept
--       `updated_at` current with a BEFORE UPDATE trigger; recreating it here lets
--       001-005 reproduce a legacy database exactly so real legacy data can be
--       loaded and migrated.
--
-- No extension is created: gen_random_uuid() is built into PostgreSQL 13+ (the
-- target is PostgreSQL 15), so pgcrypto is not needed for UUID defaults, and
-- SHA-256 file hashes are computed by the application, not in SQL.
--
-- Runs inside the single transaction opened by the migration runner: no
-- BEGIN/COMMIT here.

CREATE OR REPLACE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION update_updated_at_column() IS
    'BEFORE UPDATE trigger function: sets NEW.updated_at to now() (transaction start time).';
