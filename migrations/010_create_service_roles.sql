-- 010_create_service_roles.sql
--
-- What: one database role per service, with only the privileges that service needs:
--         ghostly_ingest      read/write the session tables (the write path)
--         ghostly_statistics  SELECT only: statistics tables, contractions, patients, therapists
--         ghostly_jit_signal  SELECT sessions/statistics/contractions/settings,
--                             read/write signal_processing_cache
--         ghostly_export      SELECT what exports read, INSERT/UPDATE export_history
-- Why:  least privilege. The dashboard read path (statistics) must not be able to change
--       clinical data even if it has a bug, and a read replica can be used with the same role.
--
-- Roles are cluster-wide, databases are not: many databases on one cluster (tests, staging)
-- each run this file. So a role is created only when missing (DO block, tolerant of a
-- concurrent creator in another database), while the GRANTs below are per database.
-- Roles get LOGIN and NO password: operators set one (ALTER ROLE ... PASSWORD ...) or use
-- certificate / peer / pg_hba rules; the migration never ships secrets.
--
-- Tables created by later migrations are NOT granted to anyone automatically (default
-- privileges below); every later migration that adds a table must GRANT it explicitly.
--
-- Runs inside the single transaction opened by the migration runner.

DO $roles$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['ghostly_ingest', 'ghostly_statistics', 'ghostly_jit_signal', 'ghostly_export']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Another database's migration created it concurrently: fine.
                NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;

-- Per database: connect and see the schema.
DO $connect$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ghostly_ingest, ghostly_statistics, '
                   'ghostly_jit_signal, ghostly_export', current_database());
END
$connect$;

GRANT USAGE ON SCHEMA public TO ghostly_ingest, ghostly_statistics, ghostly_jit_signal, ghostly_export;
-- Service roles never create objects (PG < 15 lets PUBLIC create in schema public).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

------------------------------------------------------------------------------
-- ghostly_ingest: the write path
------------------------------------------------------------------------------
GRANT SELECT, INSERT, UPDATE, DELETE
    ON therapy_sessions, emg_statistics, emg_contractions, performance_scores,
       bfr_monitoring, session_settings
    TO ghostly_ingest;
-- Patients are looked up, and created when GHOSTLY_AUTO_CREATE_PATIENTS is on
-- (patient_code default uses the sequence).
GRANT SELECT, INSERT ON patients TO ghostly_ingest;
GRANT USAGE ON SEQUENCE patients_patient_code_seq TO ghostly_ingest;
GRANT SELECT ON therapists TO ghostly_ingest;
-- Reprocessing a session invalidates its cached signals (cache_valid / invalidated_*).
GRANT SELECT, UPDATE ON signal_processing_cache TO ghostly_ingest;

------------------------------------------------------------------------------
-- ghostly_statistics: read only
------------------------------------------------------------------------------
GRANT SELECT
    ON therapy_sessions, emg_statistics, emg_contractions, performance_scores,
       bfr_monitoring, session_settings, patients, therapists
    TO ghostly_statistics;

------------------------------------------------------------------------------
-- ghostly_jit_signal: read sessions, statistics, contractions; own the cache index
------------------------------------------------------------------------------
GRANT SELECT ON therapy_sessions, emg_statistics, emg_contractions, session_settings
    TO ghostly_jit_signal;
GRANT SELECT, INSERT, UPDATE, DELETE ON signal_processing_cache TO ghostly_jit_signal;

------------------------------------------------------------------------------
-- ghostly_export: read what reports contain, append to the audit trail
------------------------------------------------------------------------------
GRANT SELECT
    ON therapy_sessions, emg_statistics, emg_contractions, performance_scores,
       bfr_monitoring, session_settings, patients, therapists, researcher_profiles
    TO ghostly_export;
-- Audit rows are inserted, then completed (status, size, hash); never deleted.
GRANT SELECT, INSERT, UPDATE ON export_history TO ghostly_export;

------------------------------------------------------------------------------
-- Later objects: not accidentally readable or writable by anyone but their owner.
-- (Applies to objects created by the role that runs the migrations.)
------------------------------------------------------------------------------
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE ALL ON TABLES FROM ghostly_ingest, ghostly_statistics, ghostly_jit_signal, ghostly_export;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE ALL ON SEQUENCES FROM ghostly_ingest, ghostly_statistics, ghostly_jit_signal, ghostly_export;
