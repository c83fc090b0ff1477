-- 006_create_statistics_schema.sql
--
-- What: the seven tables of the statistics-first design
--       (shared/design/statistics-first-plan.md section 3), their foreign keys
--       (section 8) and the indexes of the read paths:
--         therapy_sessions        central session registry (replaces c3d_metadata)
--         emg_statistics          pre-computed per-channel statistics
--         performance_scores      P_overall and its components, one row per session
--         bfr_monitoring          BFR pressure / safety data, one row per session
--         session_settings        thresholds and weights used, one row per session
--         export_history          audit trail of exports
--         signal_processing_cache cache index for just-in-time signal processing
-- Why:  dashboards and reports read pre-computed, typed statistics instead of
--       JSONB blobs; raw signals are re-derived from the C3D file on demand.
--
-- Columns, types, defaults and CHECKs are exactly the plan's. Deliberate
-- resolutions of the plan's ambiguities (details in migrations/README.md):
--   * therapy_sessions.therapist_id is UUID (plan: TEXT) because it is a FK to
--     therapists.id, which is UUID; a FK needs equal types.
--   * therapy_sessions.session_id is the game's session label from the file name
--     (e.g. 'Ghostly_Emg_20230321_17-50-17-0881'), TEXT, not a key. Every
--     `session_id` column of the other six tables is a UUID FK to
--     therapy_sessions.id.
--   * ON DELETE of a therapy session: statistics, scores, BFR data, settings and
--     cache rows CASCADE; export_history rows are audit records and are kept
--     with session_id SET NULL. Patients, therapists and researchers referenced
--     by sessions / exports cannot be deleted (NO ACTION).
--   * UNIQUE(session_id) added on performance_scores, bfr_monitoring and
--     session_settings: one row per session.
--   * session_settings.updated_at is maintained by the updated_at trigger.
--
-- Runs inside the single transaction opened by the migration runner (no
-- BEGIN/COMMIT, no CREATE INDEX CONCURRENTLY).

------------------------------------------------------------------------------
-- Table 1: therapy_sessions
------------------------------------------------------------------------------
CREATE TABLE therapy_sessions (
    id                         UUID DEFAULT gen_random_uuid() PRIMARY KEY,

    -- File identification (C3D source of truth)
    file_path                  TEXT NOT NULL UNIQUE,
    file_hash                  TEXT NOT NULL,
    file_size_bytes            BIGINT NOT NULL,

    -- Clinical identifiers
    patient_id                 TEXT,     -- patients.patient_code, e.g. 'P005'
    therapist_id               UUID,     -- therapists.id (plan said TEXT; UUID to match the FK target)
    session_id                 TEXT,     -- game session label, e.g. 'Ghostly_Emg_20230321_17-50-17-0881'
    session_date               TIMESTAMP WITH TIME ZONE,
    session_type               TEXT CHECK (session_type IN ('baseline', 'training', 'assessment')),
    protocol_day               INTEGER,  -- day in the 14-day protocol

    -- Technical metadata (from C3D header)
    original_sampling_rate     FLOAT NOT NULL,   -- Hz (ANALOG:RATE)
    original_duration_seconds  FLOAT NOT NULL,   -- seconds of analog data
    original_sample_count      INTEGER NOT NULL,
    channel_names              JSONB NOT NULL,   -- JSON array of C3D analog labels
    channel_count              INTEGER NOT NULL,

    -- Processing metadata
    processing_version         TEXT NOT NULL,
    processing_status          TEXT DEFAULT 'pending'
                               CHECK (processing_status IN ('pending', 'processing', 'completed', 'failed')),
    processing_time_ms         INTEGER,

    -- Timestamps
    created_at                 TIMESTAMP WITH TIME ZONE DEFAULT now(),
    processed_at               TIMESTAMP WITH TIME ZONE,

    CONSTRAINT fk_therapy_sessions_patient
        FOREIGN KEY (patient_id) REFERENCES patients (patient_code),
    CONSTRAINT fk_therapy_sessions_therapist
        FOREIGN KEY (therapist_id) REFERENCES therapists (id)
);

COMMENT ON TABLE therapy_sessions IS 'Central session registry, one row per C3D file (replaces c3d_metadata).';
COMMENT ON COLUMN therapy_sessions.patient_id IS 'FK to patients.patient_code (e.g. P005).';
COMMENT ON COLUMN therapy_sessions.therapist_id IS 'FK to therapists.id (UUID; the plan''s TEXT was changed to match the FK target).';
COMMENT ON COLUMN therapy_sessions.session_id IS 'Game session label from the C3D file name, e.g. Ghostly_Emg_20230321_17-50-17-0881. Not a key; the row key is id.';
COMMENT ON COLUMN therapy_sessions.original_sampling_rate IS 'Analog sampling rate in Hz.';
COMMENT ON COLUMN therapy_sessions.original_duration_seconds IS 'Duration of the analog data in seconds.';

-- Session listing / patient progress: filter by patient, therapist or nothing,
-- keyset pagination ordered by (session_date DESC, id DESC). Type/status
-- filters are low-cardinality and are applied on top of these scans.
CREATE INDEX idx_therapy_sessions_patient_date
    ON therapy_sessions (patient_id, session_date DESC, id DESC);
CREATE INDEX idx_therapy_sessions_therapist_date
    ON therapy_sessions (therapist_id, session_date DESC, id DESC);
CREATE INDEX idx_therapy_sessions_date
    ON therapy_sessions (session_date DESC, id DESC);
-- Idempotent ingest / data migration: "is this content already registered?"
CREATE INDEX idx_therapy_sessions_file_hash
    ON therapy_sessions (file_hash);

------------------------------------------------------------------------------
-- Table 2: emg_statistics
------------------------------------------------------------------------------
CREATE TABLE emg_statistics (
    id                           UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id                   UUID,
    channel_name                 TEXT NOT NULL,

    -- MVC calculations (amplitudes in volts, as read from the C3D)
    mvc_peak_value               FLOAT NOT NULL,
    mvc_rms_value                FLOAT NOT NULL,
    mvc_confidence_score         FLOAT NOT NULL CHECK (mvc_confidence_score >= 0 AND mvc_confidence_score <= 1),
    mvc_calculation_method       TEXT NOT NULL CHECK (mvc_calculation_method IN ('backend_95percentile', 'user_defined')),

    -- Contraction analysis
    total_contractions           INTEGER NOT NULL,
    good_contractions_intensity  INTEGER NOT NULL,   -- >= MVC threshold
    good_contractions_duration   INTEGER NOT NULL,   -- >= duration threshold
    good_contractions_both       INTEGER NOT NULL,   -- both criteria

    -- Compliance rates (0..1)
    completion_rate              FLOAT NOT NULL CHECK (completion_rate >= 0 AND completion_rate <= 1),
    intensity_rate               FLOAT NOT NULL CHECK (intensity_rate >= 0 AND intensity_rate <= 1),
    duration_rate                FLOAT NOT NULL CHECK (duration_rate >= 0 AND duration_rate <= 1),
    muscle_compliance_score      FLOAT NOT NULL CHECK (muscle_compliance_score >= 0 AND muscle_compliance_score <= 1),

    -- Signal quality
    signal_quality_score         FLOAT NOT NULL CHECK (signal_quality_score >= 0 AND signal_quality_score <= 1),
    noise_level_db               FLOAT,
    artifacts_detected           INTEGER DEFAULT 0,
    processing_confidence        FLOAT NOT NULL CHECK (processing_confidence >= 0 AND processing_confidence <= 1),

    -- Processing metadata
    processing_pipeline          TEXT NOT NULL DEFAULT '20Hz->Rectify->10Hz->RMS',
    processing_version           TEXT NOT NULL,
    processing_time_ms           INTEGER,

    -- Thresholds used
    mvc_threshold_percentage     FLOAT NOT NULL DEFAULT 0.75,   -- fraction of MVC (0.75 = 75 %)
    duration_threshold_seconds   FLOAT NOT NULL DEFAULT 2.0,

    processed_at                 TIMESTAMP WITH TIME ZONE DEFAULT now(),

    CONSTRAINT emg_statistics_session_id_channel_name_key UNIQUE (session_id, channel_name),
    CONSTRAINT emg_statistics_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE CASCADE
);
-- "Statistics of a session" is served by the UNIQUE (session_id, channel_name) index.

COMMENT ON TABLE emg_statistics IS 'Pre-computed per-channel EMG statistics (no raw signals). Amplitudes in volts.';
COMMENT ON COLUMN emg_statistics.mvc_peak_value IS 'Volts, as read from the C3D.';
COMMENT ON COLUMN emg_statistics.mvc_rms_value IS 'Volts, as read from the C3D.';

------------------------------------------------------------------------------
-- Table 3: performance_scores
------------------------------------------------------------------------------
CREATE TABLE performance_scores (
    id                            UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id                    UUID,

    overall_performance_score     FLOAT NOT NULL CHECK (overall_performance_score >= 0 AND overall_performance_score <= 100),

    compliance_score              FLOAT NOT NULL CHECK (compliance_score >= 0 AND compliance_score <= 100),
    symmetry_score                FLOAT NOT NULL CHECK (symmetry_score >= 0 AND symmetry_score <= 100),
    effort_score                  FLOAT NOT NULL CHECK (effort_score >= 0 AND effort_score <= 100),
    game_score                    FLOAT NOT NULL CHECK (game_score >= 0 AND game_score <= 100),

    -- Effective weights used for overall_performance_score (0 for an excluded
    -- component) plus "requested" and "excluded" details; see README.
    performance_weights           JSONB NOT NULL DEFAULT
        '{"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}',

    -- BFR safety gate
    bfr_pressure_aop              FLOAT,                         -- % of AOP; NULL = unknown
    bfr_compliance_gate           FLOAT NOT NULL DEFAULT 1.0
                                  CHECK (bfr_compliance_gate IN (0.0, 1.0)),

    -- Supporting metrics
    rpe_post_session              INTEGER CHECK (rpe_post_session >= 0 AND rpe_post_session <= 10),
    game_points_achieved          INTEGER NOT NULL DEFAULT 0,
    game_points_maximum           INTEGER NOT NULL DEFAULT 1000,
    session_duration_minutes      FLOAT,

    -- Detailed breakdown (0..1)
    left_muscle_completion_rate   FLOAT CHECK (left_muscle_completion_rate >= 0 AND left_muscle_completion_rate <= 1),
    left_muscle_intensity_rate    FLOAT CHECK (left_muscle_intensity_rate >= 0 AND left_muscle_intensity_rate <= 1),
    left_muscle_duration_rate     FLOAT CHECK (left_muscle_duration_rate >= 0 AND left_muscle_duration_rate <= 1),

    right_muscle_completion_rate  FLOAT CHECK (right_muscle_completion_rate >= 0 AND right_muscle_completion_rate <= 1),
    right_muscle_intensity_rate   FLOAT CHECK (right_muscle_intensity_rate >= 0 AND right_muscle_intensity_rate <= 1),
    right_muscle_duration_rate    FLOAT CHECK (right_muscle_duration_rate >= 0 AND right_muscle_duration_rate <= 1),

    calculated_at                 TIMESTAMP WITH TIME ZONE DEFAULT now(),

    CONSTRAINT performance_scores_session_id_key UNIQUE (session_id),
    CONSTRAINT performance_scores_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE CASCADE
);

COMMENT ON TABLE performance_scores IS 'P_overall and its components (0-100), one row per session.';
COMMENT ON COLUMN performance_scores.performance_weights IS
    'Effective weights actually used (sum 1; 0 for an excluded component), e.g. {"compliance":0.5,"symmetry":0.3125,"effort":0,"game":0.1875,"requested":{...},"excluded":{"effort":"rpe missing"}}. An excluded component''s score column holds 0 and must be read through its weight.';
COMMENT ON COLUMN performance_scores.bfr_pressure_aop IS 'Measured cuff pressure in % of arterial occlusion pressure; NULL = unknown.';
COMMENT ON COLUMN performance_scores.bfr_compliance_gate IS '1.0 if pressure in [45, 55] % AOP, 0.0 otherwise; 1.0 with bfr_pressure_aop NULL means the gate was NOT evaluated.';

------------------------------------------------------------------------------
-- Table 4: bfr_monitoring
------------------------------------------------------------------------------
CREATE TABLE bfr_monitoring (
    id                                  UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id                          UUID,

    -- BFR configuration (% of AOP)
    target_pressure_aop                 FLOAT NOT NULL CHECK (target_pressure_aop >= 0 AND target_pressure_aop <= 100),
    actual_pressure_aop                 FLOAT NOT NULL CHECK (actual_pressure_aop >= 0 AND actual_pressure_aop <= 100),
    pressure_stability_coefficient      FLOAT,

    -- Safety monitoring
    safety_gate_status                  BOOLEAN NOT NULL,
    safety_violations_count             INTEGER DEFAULT 0,
    safety_violations_duration_seconds  FLOAT,
    max_pressure_deviation_aop          FLOAT,

    -- Clinical baseline data
    patient_aop_baseline_mmhg           FLOAT,
    patient_limb_circumference_cm       FLOAT,
    cuff_size                           TEXT,
    cuff_position                       TEXT,

    -- Monitoring equipment
    monitoring_device                   TEXT,
    device_calibration_date             DATE,
    device_serial_number                TEXT,

    -- Session metadata
    bfr_session_duration_minutes        FLOAT,
    monitoring_frequency_hz             FLOAT DEFAULT 1.0,

    created_at                          TIMESTAMP WITH TIME ZONE DEFAULT now(),

    CONSTRAINT bfr_monitoring_session_id_key UNIQUE (session_id),
    CONSTRAINT bfr_monitoring_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE CASCADE
);

COMMENT ON TABLE bfr_monitoring IS 'Blood-flow-restriction pressure and safety data (pressures in % AOP), one row per session; no row when BFR data is unknown.';

------------------------------------------------------------------------------
-- Table 5: session_settings
------------------------------------------------------------------------------
CREATE TABLE session_settings (
    id                                        UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id                                UUID,

    -- MVC threshold system
    mvc_calculation_method                    TEXT NOT NULL CHECK (mvc_calculation_method IN ('backend_calculated', 'user_defined')),
    mvc_threshold_percentage                  FLOAT NOT NULL DEFAULT 0.75 CHECK (mvc_threshold_percentage > 0 AND mvc_threshold_percentage <= 1),

    mvc_user_left_quad                        FLOAT,   -- volts
    mvc_user_right_quad                       FLOAT,   -- volts

    -- Performance weights (requested configuration)
    performance_weights                       JSONB NOT NULL DEFAULT
        '{"compliance": 0.40, "symmetry": 0.25, "effort": 0.20, "game": 0.15}',

    -- Adaptive thresholds (seconds)
    duration_threshold_seconds                FLOAT NOT NULL DEFAULT 2.0 CHECK (duration_threshold_seconds > 0),
    duration_threshold_left_quad              FLOAT,
    duration_threshold_right_quad             FLOAT,

    -- Clinical protocol settings
    target_contractions_per_muscle            INTEGER NOT NULL DEFAULT 12 CHECK (target_contractions_per_muscle > 0),
    rest_period_between_contractions_seconds  INTEGER DEFAULT 5,
    rest_period_between_sets_seconds          INTEGER DEFAULT 120,

    -- BFR settings
    bfr_enabled                               BOOLEAN DEFAULT true,
    bfr_target_pressure_aop                   FLOAT DEFAULT 50.0 CHECK (bfr_target_pressure_aop >= 0 AND bfr_target_pressure_aop <= 100),

    -- Game / UI configuration
    game_difficulty_level                     INTEGER DEFAULT 1 CHECK (game_difficulty_level >= 1 AND game_difficulty_level <= 10),
    visual_feedback_enabled                   BOOLEAN DEFAULT true,
    audio_feedback_enabled                    BOOLEAN DEFAULT true,
    real_time_mvc_display                     BOOLEAN DEFAULT true,

    created_at                                TIMESTAMP WITH TIME ZONE DEFAULT now(),
    updated_at                                TIMESTAMP WITH TIME ZONE DEFAULT now(),

    CONSTRAINT session_settings_session_id_key UNIQUE (session_id),
    CONSTRAINT session_settings_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE CASCADE
);

CREATE TRIGGER trg_session_settings_updated_at
    BEFORE UPDATE ON session_settings
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

COMMENT ON TABLE session_settings IS 'Thresholds, weights and protocol settings in force for a session, one row per session.';

------------------------------------------------------------------------------
-- Table 6: export_history
------------------------------------------------------------------------------
CREATE TABLE export_history (
    id                 UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id         UUID,

    -- Export specification
    export_type        TEXT NOT NULL CHECK (export_type IN (
                           'statistics_only',
                           'performance_report',
                           'signals_visualization',
                           'signals_research_full',
                           'clinical_summary',
                           'bfr_safety_report'
                       )),
    channels_exported  JSONB,          -- JSON array of channel names, or NULL for all
    data_format        TEXT NOT NULL CHECK (data_format IN ('json', 'csv', 'excel', 'matlab')),
    export_options     JSONB,

    -- Processing metadata
    processing_method  TEXT NOT NULL CHECK (processing_method IN ('database_query', 'jit_c3d_processing')),
    processing_time_ms INTEGER,
    data_source        TEXT,           -- 'cached_statistics', 'c3d_file_processed'

    -- Export metadata
    exported_by        UUID,
    export_timestamp   TIMESTAMP WITH TIME ZONE DEFAULT now(),
    file_size_bytes    BIGINT,
    export_hash        TEXT,           -- SHA-256 hex of the exported payload

    -- Validation & quality
    export_status      TEXT DEFAULT 'success' CHECK (export_status IN ('success', 'partial', 'failed')),
    validation_checks  JSONB,
    error_message      TEXT,

    created_at         TIMESTAMP WITH TIME ZONE DEFAULT now(),

    -- Audit rows outlive the session they exported: SET NULL, never CASCADE.
    CONSTRAINT export_history_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE SET NULL,
    -- A researcher with exports on record cannot be deleted (audit provenance).
    CONSTRAINT export_history_exported_by_fkey
        FOREIGN KEY (exported_by) REFERENCES researcher_profiles (id)
);

CREATE INDEX idx_export_history_session
    ON export_history (session_id, export_timestamp DESC);
CREATE INDEX idx_export_history_exported_by
    ON export_history (exported_by, export_timestamp DESC);
CREATE INDEX idx_export_history_timestamp
    ON export_history (export_timestamp DESC);

COMMENT ON TABLE export_history IS 'Audit trail of data exports; rows are kept (session_id set NULL) when their session is deleted.';

------------------------------------------------------------------------------
-- Table 7: signal_processing_cache
------------------------------------------------------------------------------
CREATE TABLE signal_processing_cache (
    id                       UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    session_id               UUID,

    -- Cache key
    processing_request_hash  TEXT NOT NULL,
    processing_version       TEXT NOT NULL,

    -- Cache metadata
    cache_type               TEXT NOT NULL CHECK (cache_type IN ('visualization_1k', 'export_full', 'envelope_rms')),
    hit_count                INTEGER DEFAULT 0,
    last_accessed_at         TIMESTAMP WITH TIME ZONE DEFAULT now(),

    -- Cache expiration
    expires_at               TIMESTAMP WITH TIME ZONE DEFAULT (now() + INTERVAL '7 days'),
    cache_valid              BOOLEAN DEFAULT true,

    -- Cache invalidation
    invalidated_reason       TEXT,     -- 'session_reprocessed', 'expired', 'manual'
    invalidated_at           TIMESTAMP WITH TIME ZONE,

    created_at               TIMESTAMP WITH TIME ZONE DEFAULT now(),

    CONSTRAINT signal_processing_cache_session_id_processing_request_hash_key
        UNIQUE (session_id, processing_request_hash),
    CONSTRAINT signal_processing_cache_session_id_fkey
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE CASCADE
);
-- Lookups by session use the UNIQUE (session_id, processing_request_hash) index;
-- the expiry sweep uses this one.
CREATE INDEX idx_signal_processing_cache_expires_at
    ON signal_processing_cache (expires_at);

COMMENT ON TABLE signal_processing_cache IS 'Index of just-in-time signal processing results, keyed by (session, request hash).';
