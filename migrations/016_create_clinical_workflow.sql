-- 016: the clinical workflow (issue 14): patient registry state, per-patient calibration with
-- history, post-session outcomes, the versioned trial-wide scoring configuration.
--
-- * patients.active / deactivated_at / updated_at: DeactivatePatient keeps the patient and its
--   history; the registry lists active patients by default.
-- * patient_calibrations: append-only history; the current calibration of a patient is its
--   newest row (created_at, then id). Each row is a complete snapshot (values the caller left
--   unset are carried over by the service). MVCs are volts of the RMS envelope (the unit of
--   emg_statistics.mvc_rms_value). source 'assessment_session' names the session it came from.
-- * session_settings.calibration_id / value_sources: which calibration a session was
--   analysed with and where each calibratable value came from (session_request >
--   patient_calibration > default), so a new calibration never silently rewrites a session and
--   Reprocess(apply_current_calibration) knows which values it may replace.
-- * session_outcomes: post-session data recorded after the upload (RPE, game points, BFR
--   pressure) with who/when; one row per session, updated in place (partial updates).
-- * scoring_config: versioned configuration (weights, compliance sub-weights, RPE -> effort,
--   BFR gate, max game points per level); version 1 = the defaults the code used so far.
--   performance_scores.scoring_config_version records the version of every score (existing
--   scores: 1, which is what they were computed with).
-- * Grants: ingest writes all of it; statistics and export read it; RLS as for the session
--   tables (a therapist sees only the calibrations and outcomes of their own patients).
--
-- Runs inside the single transaction opened by the migration runner.

ALTER TABLE patients
    ADD COLUMN active BOOLEAN NOT NULL DEFAULT true,
    ADD COLUMN deactivated_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN updated_at TIMESTAMP WITH TIME ZONE DEFAULT now(),
    ADD CONSTRAINT patients_deactivated_consistent CHECK (active = (deactivated_at IS NULL));

CREATE TRIGGER trg_patients_updated_at
    BEFORE UPDATE ON patients
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE patient_calibrations (
    id                          UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    patient_code                TEXT NOT NULL REFERENCES patients (patient_code),
    mvc_left_v                  DOUBLE PRECISION CHECK (mvc_left_v > 0 AND mvc_left_v <= 0.1),
    mvc_right_v                 DOUBLE PRECISION CHECK (mvc_right_v > 0 AND mvc_right_v <= 0.1),
    duration_threshold_left_s   DOUBLE PRECISION CHECK (duration_threshold_left_s > 0 AND duration_threshold_left_s <= 60),
    duration_threshold_right_s  DOUBLE PRECISION CHECK (duration_threshold_right_s > 0 AND duration_threshold_right_s <= 60),
    target_contractions         INTEGER CHECK (target_contractions > 0 AND target_contractions <= 1000),
    bfr_target_pressure_aop     DOUBLE PRECISION CHECK (bfr_target_pressure_aop >= 0 AND bfr_target_pressure_aop <= 100),
    source                      TEXT NOT NULL CHECK (source IN ('therapist_entered', 'assessment_session')),
    source_session_id           UUID REFERENCES therapy_sessions (id) ON DELETE SET NULL,
    rule                        TEXT,
    created_by                  TEXT NOT NULL,
    created_by_role             TEXT NOT NULL CHECK (created_by_role IN ('therapist', 'researcher', 'admin', 'service')),
    created_at                  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT clock_timestamp(),
    notes                       TEXT,
    CONSTRAINT patient_calibrations_source_session CHECK (
        source <> 'assessment_session' OR rule IS NOT NULL)
);
CREATE INDEX idx_patient_calibrations_current ON patient_calibrations (patient_code, created_at DESC, id DESC);
COMMENT ON TABLE patient_calibrations IS
    'Per-patient calibration history (append-only); the newest row of a patient is current.';

ALTER TABLE session_settings
    ADD COLUMN calibration_id UUID REFERENCES patient_calibrations (id),
    ADD COLUMN value_sources JSONB NOT NULL DEFAULT '{}';
COMMENT ON COLUMN session_settings.value_sources IS
    'Per calibratable value (mvc_left, mvc_right, duration_left, duration_right, target_contractions, '
    'bfr_target): session_request | patient_calibration | default.';

CREATE TABLE session_outcomes (
    session_id                  UUID PRIMARY KEY REFERENCES therapy_sessions (id) ON DELETE CASCADE,
    rpe_post_session            INTEGER CHECK (rpe_post_session BETWEEN 0 AND 10),
    game_points                 INTEGER CHECK (game_points >= 0),
    game_points_max             INTEGER CHECK (game_points_max > 0),
    bfr_actual_pressure_aop     DOUBLE PRECISION CHECK (bfr_actual_pressure_aop >= 0 AND bfr_actual_pressure_aop <= 100),
    recorded_by                 TEXT NOT NULL,
    recorded_at                 TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
COMMENT ON TABLE session_outcomes IS
    'Post-session data recorded after the upload (RecordSessionOutcome): the latest values and who/when.';

CREATE TABLE scoring_config (
    version                     INTEGER PRIMARY KEY CHECK (version > 0),
    config                      JSONB NOT NULL,
    created_by                  TEXT NOT NULL,
    created_at                  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    notes                       TEXT
);
COMMENT ON TABLE scoring_config IS
    'Versioned trial-wide scoring configuration; the highest version is current. config keys: '
    'performance_weights, compliance_weights, rpe_effort ({"0": score, ..., "10": score}), '
    'bfr_gate [low, high], game_points_max_by_level ({"1": points, ...}).';

INSERT INTO scoring_config (version, config, created_by, notes) VALUES (1, '{
    "performance_weights": {"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15},
    "compliance_weights": {"completion": 0.3333333333333333, "intensity": 0.3333333333333333,
                           "duration": 0.3333333333333334},
    "rpe_effort": {"0": 20, "1": 20, "2": 60, "3": 80, "4": 100, "5": 100, "6": 100, "7": 80,
                   "8": 60, "9": 20, "10": 20},
    "bfr_gate": [45.0, 55.0],
    "game_points_max_by_level": {}
}', 'migration 016', 'defaults of the scoring until now');

ALTER TABLE performance_scores
    ADD COLUMN scoring_config_version INTEGER NOT NULL DEFAULT 1 REFERENCES scoring_config (version);

-- Grants: the write path owns these tables; the readers read them.
GRANT SELECT, UPDATE ON patients TO ghostly_ingest;
GRANT INSERT ON therapists TO ghostly_ingest;
GRANT SELECT, INSERT ON patient_calibrations TO ghostly_ingest;
GRANT SELECT, INSERT, UPDATE ON session_outcomes TO ghostly_ingest;
GRANT SELECT, INSERT ON scoring_config TO ghostly_ingest;
GRANT SELECT ON patient_calibrations, session_outcomes, scoring_config TO ghostly_statistics, ghostly_export;

-- RLS: a therapist reads only their own patients' calibrations and outcomes.
ALTER TABLE patient_calibrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY patient_calibrations_read_caseload ON patient_calibrations FOR SELECT
    TO ghostly_statistics, ghostly_export
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR ((SELECT current_setting('ghostly.role', true)) = 'therapist'
               AND patient_code IN (SELECT p.patient_code FROM patients p JOIN therapists t ON t.id = p.therapist_id
                                    WHERE t.user_id::text = current_setting('ghostly.user_id', true))));
CREATE POLICY patient_calibrations_ingest_all ON patient_calibrations FOR ALL TO ghostly_ingest
    USING (true) WITH CHECK (true);

ALTER TABLE session_outcomes ENABLE ROW LEVEL SECURITY;
CREATE POLICY session_outcomes_read_caseload ON session_outcomes FOR SELECT
    TO ghostly_statistics, ghostly_export
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.id = session_outcomes.session_id));
CREATE POLICY session_outcomes_ingest_all ON session_outcomes FOR ALL TO ghostly_ingest
    USING (true) WITH CHECK (true);
