-- 002_create_therapists_and_researchers.sql
--
-- What: the legacy user tables `therapists` and `researcher_profiles`, as they
--       stood before the statistics-first project (see
--       shared/design/legacy-schema.md, "Preserved tables").
-- Why:  both tables are preserved by the statistics-first design and are FK
--       targets of the new schema (therapy_sessions.therapist_id ->
--       therapists.id, export_history.exported_by -> researcher_profiles.id).
--
-- The auth-users table is outside this project: therapists.user_id and
-- researcher_profiles.id hold auth user ids as plain UUIDs, without a foreign
-- key. researcher_profiles.id therefore has no default - it is the auth user's
-- id and must be supplied by the caller.
--
-- Runs inside the single transaction opened by the migration runner.

CREATE TABLE therapists (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     UUID NOT NULL UNIQUE,          -- auth user id (no FK: auth is external)
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    created_at  TIMESTAMP WITH TIME ZONE DEFAULT now()
);

COMMENT ON TABLE therapists IS 'Legacy (preserved): clinical staff; owners of patients and therapy sessions.';
COMMENT ON COLUMN therapists.user_id IS 'Auth user id (external auth table, no FK).';

CREATE TABLE researcher_profiles (
    id            UUID PRIMARY KEY,             -- = auth user id (external, no FK, no default)
    full_name     TEXT NOT NULL,
    institution   TEXT NOT NULL,
    department    TEXT,
    role          TEXT DEFAULT 'researcher'
                  CHECK (role IN ('admin', 'clinical_specialist', 'researcher')),
    access_level  TEXT DEFAULT 'basic'
                  CHECK (access_level IN ('full', 'advanced', 'basic')),
    created_at    TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at    TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    last_login    TIMESTAMP WITH TIME ZONE
);

COMMENT ON TABLE researcher_profiles IS 'Legacy (preserved): research staff; referenced by export_history.exported_by for the export audit trail.';
COMMENT ON COLUMN researcher_profiles.id IS 'Auth user id (external auth table, no FK, supplied by the caller).';

CREATE TRIGGER trg_researcher_profiles_updated_at
    BEFORE UPDATE ON researcher_profiles
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
