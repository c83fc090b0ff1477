-- 012: row-level security, the second wall behind the services' own query filters (issue 9).
--
-- A therapist may read only the sessions of their own patients (patients.therapist_id ->
-- therapists.user_id = the token's subject); researchers, admins and services read all.
-- The services set two settings on their connection for each request (libs/db/access.py):
--   ghostly.role     therapist | researcher | admin | service
--   ghostly.user_id  the token's subject (auth user id)
-- With no role set, a service role reads NOTHING (fail closed).
--
-- Policies bind the per-service roles of 010 (RLS does not apply to the tables' owner, which
-- runs migrations and the legacy data migration). ghostly_ingest writes for admins/services
-- only (checked by the service), so it gets an all-rows policy.

ALTER TABLE therapy_sessions ENABLE ROW LEVEL SECURITY;
-- Written inline (no function call per row). The settings are read in scalar sub-selects,
-- which the planner evaluates ONCE per query (init plans), so a row costs one comparison;
-- a therapist's caseload is an uncorrelated sub-select hashed once per query.
CREATE POLICY sessions_read_caseload ON therapy_sessions FOR SELECT
    TO ghostly_statistics, ghostly_jit_signal, ghostly_export
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR ((SELECT current_setting('ghostly.role', true)) = 'therapist'
               AND patient_id IN (SELECT p.patient_code FROM patients p JOIN therapists t ON t.id = p.therapist_id
                                  WHERE t.user_id::text = current_setting('ghostly.user_id', true))));
CREATE POLICY sessions_ingest_all ON therapy_sessions FOR ALL TO ghostly_ingest
    USING (true) WITH CHECK (true);

-- Child tables: visible when their session is visible (the subquery is itself filtered by
-- the policy above). Non-therapists short-circuit without the lookup.
DO $child$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['emg_statistics', 'emg_contractions', 'performance_scores',
                             'bfr_monitoring', 'session_settings', 'signal_processing_cache']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY %I ON %I FOR SELECT TO ghostly_statistics, ghostly_jit_signal, ghostly_export '
            'USING ((SELECT current_setting(''ghostly.role'', true)) IN (''researcher'', ''admin'', ''service'') '
            '       OR EXISTS (SELECT 1 FROM therapy_sessions s WHERE s.id = %I.session_id))',
            t || '_read_caseload', t, t);
        EXECUTE format('CREATE POLICY %I ON %I FOR ALL TO ghostly_ingest USING (true) WITH CHECK (true)',
                       t || '_ingest_all', t);
    END LOOP;
END
$child$;

-- The JIT service maintains its cache rows for whoever it serves.
CREATE POLICY signal_processing_cache_jit_write ON signal_processing_cache FOR ALL TO ghostly_jit_signal
    USING (true) WITH CHECK (true);

-- The caseload check reads patients/therapists as the calling role.
GRANT SELECT ON patients, therapists TO ghostly_jit_signal;
