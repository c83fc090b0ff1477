-- 014: cohort_day_scores, the researchers' cohort summary pre-computed at write time.
--
-- GetCohortSummary over the whole cohort aggregated every completed session on each call:
-- 70k sessions x their scores, ~90 ms, and more under row-level security. This table keeps
-- the first level of that aggregation, one row per (patient, protocol day) with the session
-- count and the sums the summary needs (mean, sample stddev from the sum of squares), so a
-- summary reads ~10k small rows instead of joining 140k.
--
-- Maintained by statement-level triggers on therapy_sessions and performance_scores (set-based:
-- one refresh per statement, also for COPY and the legacy data migration). A refresh recomputes
-- the affected groups from the session tables, so it is exact whatever happened before; the
-- writers of groups are serialised by a table lock (SHARE ROW EXCLUSIVE: readers are never
-- blocked), so a refresh in READ COMMITTED sees every committed change. Counted: sessions with
-- processing_status 'completed' that have a performance score, as the raw query counts them.
-- Summaries restricted to a date range still aggregate the sessions themselves.

-- The refresh finds the sessions of a group by patient (idx_therapy_sessions_patient_date);
-- sessions without a patient by this small partial index.
CREATE INDEX idx_therapy_sessions_no_patient_day ON therapy_sessions (protocol_day) WHERE patient_id IS NULL;

CREATE TABLE cohort_day_scores (
    patient_key     TEXT NOT NULL,          -- COALESCE(patient_id, ''): the key of the group
    patient_id      TEXT,                   -- patients.patient_code (NULL: session without patient)
    protocol_day    INTEGER NOT NULL,       -- COALESCE(therapy_sessions.protocol_day, 0); 0 = unknown
    session_count   INTEGER NOT NULL CHECK (session_count > 0),
    sum_overall     DOUBLE PRECISION,       -- sum(overall_performance_score)
    sumsq_overall   DOUBLE PRECISION,       -- sum(overall_performance_score ^ 2)
    sum_compliance  DOUBLE PRECISION,       -- sum(compliance_score)
    sum_symmetry    DOUBLE PRECISION,       -- sum(symmetry_score)
    PRIMARY KEY (patient_key, protocol_day)
);

COMMENT ON TABLE cohort_day_scores IS
    'Per (patient, protocol day) sums of the completed sessions'' scores; kept by triggers (migration 014).';

-- Recompute groups: those given as (patient_key, protocol_day) pairs, and the current groups of
-- the given sessions, which are read only once the lock is held, so a concurrent change of a
-- session's status, patient or day is seen (a trigger reading them first could miss it).
-- SECURITY DEFINER: every writer role (ingest, the owner running the legacy migration) keeps
-- the summary without privileges on it; it runs as the owner, to whom RLS does not apply.
-- Only the writers may call it (see the REVOKE below).
CREATE FUNCTION cohort_day_scores_refresh(p_keys TEXT[], p_days INTEGER[], p_sessions UUID[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    keys TEXT[];
    days INTEGER[];
BEGIN
    IF COALESCE(cardinality(p_keys), 0) = 0 AND COALESCE(cardinality(p_sessions), 0) = 0 THEN
        RETURN;
    END IF;
    -- Each statement below takes a new snapshot once the lock is ours (READ COMMITTED), so
    -- the groups are rebuilt from everything committed before plus this transaction's rows.
    LOCK TABLE cohort_day_scores IN SHARE ROW EXCLUSIVE MODE;
    SELECT array_agg(g.patient_key), array_agg(g.protocol_day) INTO keys, days
      FROM (SELECT u.patient_key, u.protocol_day
              FROM unnest(COALESCE(p_keys, '{}'::TEXT[]), COALESCE(p_days, '{}'::INTEGER[])) AS u(patient_key, protocol_day)
            UNION
            SELECT COALESCE(s.patient_id, ''), COALESCE(s.protocol_day, 0)
              FROM therapy_sessions s WHERE s.id = ANY(COALESCE(p_sessions, '{}'::UUID[]))) g;
    IF keys IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM cohort_day_scores c
     USING unnest(keys, days) AS k(patient_key, protocol_day)
     WHERE c.patient_key = k.patient_key AND c.protocol_day = k.protocol_day;
    -- Plain equality on patient_id (its index) for patients; the partial index below for the
    -- sessions without one.
    INSERT INTO cohort_day_scores (patient_key, patient_id, protocol_day, session_count,
                                   sum_overall, sumsq_overall, sum_compliance, sum_symmetry)
    WITH k AS (SELECT DISTINCT * FROM unnest(keys, days) AS u(patient_key, protocol_day))
    SELECT k.patient_key, min(s.patient_id), k.protocol_day, count(*),
           sum(p.overall_performance_score),
           sum(p.overall_performance_score * p.overall_performance_score),
           sum(p.compliance_score), sum(p.symmetry_score)
      FROM k
      JOIN therapy_sessions s ON s.patient_id = k.patient_key AND COALESCE(s.protocol_day, 0) = k.protocol_day
      JOIN performance_scores p ON p.session_id = s.id
     WHERE s.processing_status = 'completed' AND k.patient_key <> ''
     GROUP BY k.patient_key, k.protocol_day
    UNION ALL
    SELECT k.patient_key, NULL, k.protocol_day, count(*),
           sum(p.overall_performance_score),
           sum(p.overall_performance_score * p.overall_performance_score),
           sum(p.compliance_score), sum(p.symmetry_score)
      FROM k
      JOIN therapy_sessions s ON s.patient_id IS NULL AND COALESCE(s.protocol_day, 0) = k.protocol_day
      JOIN performance_scores p ON p.session_id = s.id
     WHERE s.processing_status = 'completed' AND k.patient_key = ''
     GROUP BY k.patient_key, k.protocol_day;
END
$fn$;

REVOKE EXECUTE ON FUNCTION cohort_day_scores_refresh(TEXT[], INTEGER[], UUID[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cohort_day_scores_refresh(TEXT[], INTEGER[], UUID[]) TO ghostly_ingest;

-- therapy_sessions: a session leaves or moves between groups when it is deleted (its score goes
-- by cascade) or its status, patient or protocol day changes. An INSERT changes no group: a new
-- session has no performance score yet (the score's foreign key needs the session first), so
-- there is no insert trigger, and a bulk load of sessions takes no lock.
CREATE FUNCTION cohort_day_scores_sessions_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    keys TEXT[];
    days INTEGER[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(COALESCE(o.patient_id, '')), array_agg(COALESCE(o.protocol_day, 0))
          INTO keys, days
          FROM (SELECT DISTINCT patient_id, protocol_day FROM old_rows
                 WHERE processing_status = 'completed') o;
    ELSE
        SELECT array_agg(g.patient_key), array_agg(g.protocol_day) INTO keys, days
          FROM (SELECT COALESCE(o.patient_id, '') AS patient_key, COALESCE(o.protocol_day, 0) AS protocol_day
                  FROM old_rows o JOIN new_rows n ON n.id = o.id
                 WHERE 'completed' IN (o.processing_status, n.processing_status)
                   AND (o.processing_status IS DISTINCT FROM n.processing_status
                        OR o.patient_id IS DISTINCT FROM n.patient_id
                        OR o.protocol_day IS DISTINCT FROM n.protocol_day)
                UNION
                SELECT COALESCE(n.patient_id, ''), COALESCE(n.protocol_day, 0)
                  FROM old_rows o JOIN new_rows n ON n.id = o.id
                 WHERE 'completed' IN (o.processing_status, n.processing_status)
                   AND (o.processing_status IS DISTINCT FROM n.processing_status
                        OR o.patient_id IS DISTINCT FROM n.patient_id
                        OR o.protocol_day IS DISTINCT FROM n.protocol_day)) g;
    END IF;
    PERFORM cohort_day_scores_refresh(keys, days, NULL);
    RETURN NULL;
END
$fn$;

-- performance_scores: a score written, rewritten (reprocessing) or removed changes the group
-- of its session (read under the lock). A score deleted with its session is handled by the
-- sessions trigger (the session is gone by then).
CREATE FUNCTION cohort_day_scores_scores_changed() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    ids UUID[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT session_id) INTO ids FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(DISTINCT session_id) INTO ids FROM old_rows;
    ELSE
        SELECT array_agg(r.session_id) INTO ids
          FROM (SELECT session_id FROM old_rows UNION SELECT session_id FROM new_rows) r;
    END IF;
    PERFORM cohort_day_scores_refresh(NULL, NULL, ids);
    RETURN NULL;
END
$fn$;

-- Transition tables allow one event per trigger: one trigger per event.
CREATE TRIGGER cohort_day_scores_sessions_update AFTER UPDATE ON therapy_sessions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cohort_day_scores_sessions_changed();
CREATE TRIGGER cohort_day_scores_sessions_delete AFTER DELETE ON therapy_sessions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cohort_day_scores_sessions_changed();
CREATE TRIGGER cohort_day_scores_scores_insert AFTER INSERT ON performance_scores
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cohort_day_scores_scores_changed();
CREATE TRIGGER cohort_day_scores_scores_update AFTER UPDATE ON performance_scores
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cohort_day_scores_scores_changed();
CREATE TRIGGER cohort_day_scores_scores_delete AFTER DELETE ON performance_scores
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cohort_day_scores_scores_changed();

-- Existing data.
INSERT INTO cohort_day_scores (patient_key, patient_id, protocol_day, session_count,
                               sum_overall, sumsq_overall, sum_compliance, sum_symmetry)
SELECT COALESCE(s.patient_id, ''), min(s.patient_id), COALESCE(s.protocol_day, 0), count(*),
       sum(p.overall_performance_score), sum(p.overall_performance_score * p.overall_performance_score),
       sum(p.compliance_score), sum(p.symmetry_score)
  FROM therapy_sessions s
  JOIN performance_scores p ON p.session_id = s.id
 WHERE s.processing_status = 'completed'
 GROUP BY 1, 3;

-- A therapist's cohort starts from their patients.
CREATE INDEX idx_patients_therapist ON patients (therapist_id);

-- Readers: the services that read the session tables, under the same caseload rule (012).
GRANT SELECT ON cohort_day_scores TO ghostly_statistics, ghostly_export;
ALTER TABLE cohort_day_scores ENABLE ROW LEVEL SECURITY;
CREATE POLICY cohort_day_scores_read_caseload ON cohort_day_scores FOR SELECT
    TO ghostly_statistics, ghostly_export
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR ((SELECT current_setting('ghostly.role', true)) = 'therapist'
               AND patient_id IN (SELECT p.patient_code FROM patients p JOIN therapists t ON t.id = p.therapist_id
                                  WHERE t.user_id::text = current_setting('ghostly.user_id', true))));
