-- 018: jit_signal runs as its own role (ghostly_jit_signal) with row-level security in force.
--
-- Its cache index row is (re)validated only while the session is still the ingest run the
-- payload was built from: `SELECT ... FROM therapy_sessions ... FOR SHARE` waits for a
-- concurrent reprocess. PostgreSQL requires UPDATE privilege for a row lock, and with RLS an
-- UPDATE policy whose USING admits the row. Both are given here without letting the role
-- change anything: UPDATE is granted on one column only, and the policy's WITH CHECK is false,
-- so any actual UPDATE is refused while FOR SHARE works on the rows the caller may see.
--
-- Runs inside the single transaction opened by the migration runner.

GRANT UPDATE (processed_at) ON therapy_sessions TO ghostly_jit_signal;

CREATE POLICY sessions_jit_row_locks ON therapy_sessions FOR UPDATE TO ghostly_jit_signal
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR ((SELECT current_setting('ghostly.role', true)) = 'therapist'
               AND patient_id IN (SELECT p.patient_code FROM patients p JOIN therapists t ON t.id = p.therapist_id
                                  WHERE t.user_id::text = current_setting('ghostly.user_id', true))))
    WITH CHECK (false);
