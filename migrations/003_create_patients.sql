-- 003_create_patients.sql
--
-- What: the legacy `patients` table with its human-readable `patient_code`
--       ('P001', 'P002', ...) generated from a sequence.
-- Why:  preserved by the statistics-first design; patient_code is the key that
--       C3D storage folders use (e.g. 'P005/Ghostly_Emg_....c3d') and the FK
--       target of therapy_sessions.patient_id.
--
-- patient_code default: 'P' followed by the next value of
-- patients_patient_code_seq, zero-padded to at least 3 digits (P001 .. P999,
-- then P1000, P1001, ... - padding never truncates). Codes may also be inserted
-- explicitly (legacy data); the sequence is not advanced by explicit codes, so
-- after a bulk load of explicit codes the loader must setval() the sequence past
-- the highest numeric code, otherwise the UNIQUE constraint will reject the next
-- generated code.
--
-- Runs inside the single transaction opened by the migration runner.

CREATE SEQUENCE patients_patient_code_seq AS BIGINT START WITH 1 MINVALUE 1;

CREATE FUNCTION generate_patient_code()
RETURNS TEXT
LANGUAGE sql
VOLATILE
AS $$
    SELECT 'P' || lpad(n::text, greatest(3, length(n::text)), '0')
    FROM (SELECT nextval('patients_patient_code_seq') AS n) AS s
$$;

COMMENT ON FUNCTION generate_patient_code() IS
    'Default for patients.patient_code: ''P'' + next sequence value zero-padded to >= 3 digits (P001, ..., P999, P1000).';

CREATE TABLE patients (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    therapist_id   UUID NOT NULL REFERENCES therapists (id),
    patient_code   TEXT UNIQUE DEFAULT generate_patient_code(),
    first_name     TEXT NOT NULL,
    last_name      TEXT NOT NULL,
    date_of_birth  DATE NOT NULL,
    created_at     TIMESTAMP WITH TIME ZONE DEFAULT now()
);

ALTER SEQUENCE patients_patient_code_seq OWNED BY patients.patient_code;

COMMENT ON TABLE patients IS 'Legacy (preserved): patient demographics; patient_code is referenced by therapy_sessions.patient_id.';
COMMENT ON COLUMN patients.patient_code IS 'Human-readable code, e.g. P005; also the storage folder name of the patient''s C3D files.';
