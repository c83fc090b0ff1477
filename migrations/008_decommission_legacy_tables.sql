-- 008_decommission_legacy_tables.sql
-- ghostly:manual
--
-- What: decommission (plan, Story 10): drop the 007 backward-compatibility views and their
--       functions, and rename the legacy tables (and the legacy analysis_summary view) to
--       *_archived. Data, constraints, indexes and triggers stay as they are (a rename keeps
--       them; their names are unchanged). legacy_c3d_sources (provenance) is kept.
-- Why:  once every part of the application reads the statistics-first tables, the legacy
--       names must disappear so nothing keeps using them by accident, without losing data.
-- Manual: applied only on purpose, `ghostly migrate --to 8`, after the data migration and its
--       validation (rollout order in migrations/README.md, "Legacy rollout").
--
-- Runs inside the single transaction opened by the migration runner.

DROP VIEW c3d_metadata_view;
DROP VIEW analysis_results_view;
DROP FUNCTION legacy_compat_c3d_metadata();
DROP FUNCTION legacy_compat_analysis_results();
DROP FUNCTION legacy_compat_channel(emg_statistics);

ALTER VIEW analysis_summary RENAME TO analysis_summary_archived;
ALTER TABLE analysis_results RENAME TO analysis_results_archived;
ALTER TABLE c3d_metadata RENAME TO c3d_metadata_archived;

COMMENT ON TABLE c3d_metadata_archived IS 'Archived by 008: legacy c3d_metadata, superseded by therapy_sessions (see legacy_c3d_sources).';
COMMENT ON TABLE analysis_results_archived IS 'Archived by 008: legacy analysis_results, superseded by emg_statistics / emg_contractions / performance_scores.';
