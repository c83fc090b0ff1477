-- 019: every service role holds exactly what its service's SQL uses
-- (tests/db/test_service_grants.py compares the grants with the SQL of each service).
--
-- * ghostly_export reads the statistics over gRPC from the statistics service (with the
--   caller's token), never from these tables; its own SQL is the audit trail (export_history),
--   the session and researcher it references, and the caseload check (patients, therapists).
-- * ghostly_jit_signal never reads session_settings (its processing parameters come with the
--   statistics rows through the EMG core's codec, analysis_details.processing_params).
--
-- * ghostly_ingest replaces statistics (DELETE emg_statistics cascades to emg_contractions
--   with the owner's rights) and upserts settings and BFR rows; it never deletes sessions,
--   settings or BFR rows, nor updates statistics or contractions in place.
--
-- Runs inside the single transaction opened by the migration runner.

REVOKE SELECT ON bfr_monitoring, session_settings, performance_scores, emg_contractions, emg_statistics,
    cohort_day_scores, scoring_config, patient_calibrations, session_outcomes FROM ghostly_export;
REVOKE SELECT ON session_settings FROM ghostly_jit_signal;
REVOKE DELETE ON therapy_sessions, bfr_monitoring, session_settings, emg_contractions FROM ghostly_ingest;
REVOKE UPDATE ON emg_contractions, emg_statistics FROM ghostly_ingest;
