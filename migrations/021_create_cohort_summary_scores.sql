-- 021: cohort_summary_scores, the cohort summary per protocol day kept at write time (issue 19).
--
-- GetCohortSummary read cohort_day_scores (014): one row per (patient, protocol day), so its cost
-- grew with the registry (~90k rows and ~85 ms at 700k sessions). This table keeps the second
-- level of that aggregation, so a summary reads at most (protocol days + 1) rows whatever the
-- number of sessions or patients:
--
--   therapist_id  protocol_day  the row holds
--   NULL          d             every completed, scored session of day d (with or without patient)
--   NULL          NULL          the whole cohort, all days (the summary's total line)
--   t             d             the sessions of day d of the patients whose patients.therapist_id = t
--   t             NULL          those patients, all days
--
-- Columns: session_count and the sums of the scores (NUMERIC: each group's double-precision sum
-- of 014 converted, so adding and removing a group is exact and the row never drifts, whatever
-- the order of writes), and patient_count: on a day row the number of (patient, day) groups of
-- that day (the group of the sessions without patient counts as one, as the per-group query
-- counted it); on an all-days row the number of distinct patients (sessions without patient are
-- not a patient). A row whose session count falls to 0 is deleted. Sessions without a protocol
-- day are day 0 (as in 014).
--
-- Maintenance: statement-level triggers on cohort_day_scores add each inserted group and
-- subtract each deleted group (transition tables; INSERT ... ON CONFLICT DO UPDATE with
-- increments), and a trigger on patients moves a patient's groups between therapists when
-- patients.therapist_id (or the code) changes. Every change runs under cohort_day_scores' SHARE
-- ROW EXCLUSIVE lock (014's refresh already holds it; the triggers take it too), so writers are
-- serialised and the "does this patient still have a group" counts see every committed change;
-- readers never wait. Ingest needs no code change: its writes fire 014's triggers, which write
-- cohort_day_scores, which fire these. The functions are SECURITY DEFINER (owner, no RLS); only
-- the owner may call them directly (REVOKE below). cohort_summary_rebuild() recomputes the whole
-- table from cohort_day_scores (used for the back-fill; an operator's repair tool).
--
-- Readers: ghostly_statistics (GetCohortSummary without a date range; a date range still
-- aggregates the sessions). It no longer reads cohort_day_scores, so that grant is revoked
-- (grants = what each service's SQL uses, tests/db/test_service_grants.py). RLS: a therapist sees
-- the rows of their own therapist id only (their patients' aggregates; the whole-cohort rows are
-- not theirs); researchers, admins and services see every row; no role set = nothing.
--
-- Runs inside the single transaction opened by the migration runner.

-- Writers wait from here to the commit: the back-fill below sees a stable cohort_day_scores.
LOCK TABLE cohort_day_scores IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE cohort_summary_scores (
    therapist_id    UUID,                   -- patients.therapist_id; NULL = the whole cohort
    protocol_day    INTEGER,                -- COALESCE(therapy_sessions.protocol_day, 0); NULL = all days
    patient_count   BIGINT NOT NULL,        -- (no CHECK: an upsert's proposed row carries a negative
    session_count   BIGINT NOT NULL,        --  delta; cohort_summary_add checks the result instead)
    sum_overall     NUMERIC NOT NULL,       -- sum(overall_performance_score)
    sumsq_overall   NUMERIC NOT NULL,       -- sum(overall_performance_score ^ 2)
    sum_compliance  NUMERIC NOT NULL,       -- sum(compliance_score)
    sum_symmetry    NUMERIC NOT NULL,       -- sum(symmetry_score)
    CONSTRAINT cohort_summary_scores_key UNIQUE NULLS NOT DISTINCT (therapist_id, protocol_day)
);

COMMENT ON TABLE cohort_summary_scores IS
    'Per (therapist or whole cohort, protocol day or all days) counts and sums of the completed sessions'' '
    'scores; kept from cohort_day_scores by triggers (migration 021).';

-- Add signed deltas: one entry per (scope, day) contribution; grouped, upserted with increments,
-- rows left with no session deleted.
CREATE FUNCTION cohort_summary_add(p_therapists UUID[], p_days INTEGER[], p_patients BIGINT[],
                                   p_sessions BIGINT[], p_so NUMERIC[], p_sq NUMERIC[],
                                   p_sc NUMERIC[], p_ss NUMERIC[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    INSERT INTO cohort_summary_scores AS s (therapist_id, protocol_day, patient_count, session_count,
                                            sum_overall, sumsq_overall, sum_compliance, sum_symmetry)
    SELECT u.therapist_id, u.protocol_day, sum(u.patients), sum(u.sessions), sum(u.so), sum(u.sq),
           sum(u.sc), sum(u.ss)
      FROM unnest(p_therapists, p_days, p_patients, p_sessions, p_so, p_sq, p_sc, p_ss)
           AS u(therapist_id, protocol_day, patients, sessions, so, sq, sc, ss)
     GROUP BY u.therapist_id, u.protocol_day
    ON CONFLICT (therapist_id, protocol_day) DO UPDATE
       SET patient_count  = s.patient_count + EXCLUDED.patient_count,
           session_count  = s.session_count + EXCLUDED.session_count,
           sum_overall    = s.sum_overall + EXCLUDED.sum_overall,
           sumsq_overall  = s.sumsq_overall + EXCLUDED.sumsq_overall,
           sum_compliance = s.sum_compliance + EXCLUDED.sum_compliance,
           sum_symmetry   = s.sum_symmetry + EXCLUDED.sum_symmetry;
    DELETE FROM cohort_summary_scores s
     WHERE s.session_count = 0
       AND (s.therapist_id IS NULL OR s.therapist_id = ANY(p_therapists));
    IF EXISTS (SELECT 1 FROM cohort_summary_scores s
                WHERE (s.therapist_id IS NULL OR s.therapist_id = ANY(p_therapists))
                  AND (s.session_count < 0 OR s.patient_count < 0)) THEN
        -- Only a direct edit of this table can get here: repair it rather than fail the write.
        RAISE WARNING 'cohort_summary_scores was out of step with cohort_day_scores (negative count): rebuilt';
        PERFORM cohort_summary_rebuild();
    END IF;
END
$fn$;

-- Groups of cohort_day_scores added (+1) or removed (-1): their whole-cohort and therapist rows,
-- day and all-days; a patient's all-days patient count changes when it gains its first group or
-- loses its last one (counted on the table as it is after the statement, under the lock).
CREATE FUNCTION cohort_summary_apply_groups(p_keys TEXT[], p_patients TEXT[], p_days INTEGER[],
                                            p_signs INTEGER[], p_n BIGINT[], p_so DOUBLE PRECISION[],
                                            p_sq DOUBLE PRECISION[], p_sc DOUBLE PRECISION[],
                                            p_ss DOUBLE PRECISION[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    v_t UUID[]; v_d INTEGER[]; v_pc BIGINT[]; v_n BIGINT[];
    v_so NUMERIC[]; v_sq NUMERIC[]; v_sc NUMERIC[]; v_ss NUMERIC[];
BEGIN
    IF COALESCE(cardinality(p_keys), 0) = 0 THEN
        RETURN;
    END IF;
    LOCK TABLE cohort_day_scores IN SHARE ROW EXCLUSIVE MODE;   -- (held already when 014's refresh writes)
    WITH g AS (
        SELECT u.*, p.therapist_id
          FROM unnest(p_keys, p_patients, p_days, p_signs, p_n, p_so, p_sq, p_sc, p_ss)
               AS u(patient_key, patient_id, protocol_day, sign, n, so, sq, sc, ss)
          LEFT JOIN patients p ON p.patient_code = u.patient_id
    ), presence AS (
        SELECT k.therapist_id, (c.now > 0)::int - (c.now - k.net > 0)::int AS delta
          FROM (SELECT patient_key, min(therapist_id::text)::uuid AS therapist_id, sum(sign) AS net
                  FROM g WHERE patient_id IS NOT NULL GROUP BY patient_key) k
          CROSS JOIN LATERAL (SELECT count(*) AS now FROM cohort_day_scores c
                               WHERE c.patient_key = k.patient_key) c
    ), x AS (
        SELECT NULL::uuid AS t, protocol_day AS d, sign::bigint AS pc, sign * n AS n,
               sign * so::numeric AS so, sign * sq::numeric AS sq, sign * sc::numeric AS sc,
               sign * ss::numeric AS ss FROM g
        UNION ALL
        SELECT therapist_id, protocol_day, sign, sign * n, sign * so::numeric, sign * sq::numeric,
               sign * sc::numeric, sign * ss::numeric FROM g WHERE therapist_id IS NOT NULL
        UNION ALL
        SELECT NULL, NULL, 0, sign * n, sign * so::numeric, sign * sq::numeric, sign * sc::numeric,
               sign * ss::numeric FROM g
        UNION ALL
        SELECT therapist_id, NULL, 0, sign * n, sign * so::numeric, sign * sq::numeric,
               sign * sc::numeric, sign * ss::numeric FROM g WHERE therapist_id IS NOT NULL
        UNION ALL
        SELECT NULL, NULL, delta, 0, 0, 0, 0, 0 FROM presence
        UNION ALL
        SELECT therapist_id, NULL, delta, 0, 0, 0, 0, 0 FROM presence WHERE therapist_id IS NOT NULL
    )
    SELECT array_agg(x.t), array_agg(x.d), array_agg(x.pc), array_agg(x.n), array_agg(x.so),
           array_agg(x.sq), array_agg(x.sc), array_agg(x.ss)
      INTO v_t, v_d, v_pc, v_n, v_so, v_sq, v_sc, v_ss FROM x;
    PERFORM cohort_summary_add(v_t, v_d, v_pc, v_n, v_so, v_sq, v_sc, v_ss);
END
$fn$;

CREATE FUNCTION cohort_summary_groups_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    v_k TEXT[]; v_p TEXT[]; v_d INTEGER[]; v_sg INTEGER[]; v_n BIGINT[];
    v_so DOUBLE PRECISION[]; v_sq DOUBLE PRECISION[]; v_sc DOUBLE PRECISION[]; v_ss DOUBLE PRECISION[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(patient_key), array_agg(patient_id), array_agg(protocol_day), array_agg(1),
               array_agg(session_count::bigint), array_agg(sum_overall), array_agg(sumsq_overall),
               array_agg(sum_compliance), array_agg(sum_symmetry)
          INTO v_k, v_p, v_d, v_sg, v_n, v_so, v_sq, v_sc, v_ss FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(patient_key), array_agg(patient_id), array_agg(protocol_day), array_agg(-1),
               array_agg(session_count::bigint), array_agg(sum_overall), array_agg(sumsq_overall),
               array_agg(sum_compliance), array_agg(sum_symmetry)
          INTO v_k, v_p, v_d, v_sg, v_n, v_so, v_sq, v_sc, v_ss FROM old_rows;
    ELSE
        SELECT array_agg(r.patient_key), array_agg(r.patient_id), array_agg(r.protocol_day), array_agg(r.sign),
               array_agg(r.session_count::bigint), array_agg(r.sum_overall), array_agg(r.sumsq_overall),
               array_agg(r.sum_compliance), array_agg(r.sum_symmetry)
          INTO v_k, v_p, v_d, v_sg, v_n, v_so, v_sq, v_sc, v_ss
          FROM (SELECT *, -1 AS sign FROM old_rows UNION ALL SELECT *, 1 FROM new_rows) r;
    END IF;
    PERFORM cohort_summary_apply_groups(v_k, v_p, v_d, v_sg, v_n, v_so, v_sq, v_sc, v_ss);
    RETURN NULL;
END
$fn$;

-- A patient moved to another therapist (or recoded): its groups leave the old therapist's rows
-- and join the new one's; the whole-cohort rows do not change. Other patient updates (names,
-- deactivation) return at once, without the lock.
CREATE FUNCTION cohort_summary_patients_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    v_moved INTEGER;
    v_t UUID[]; v_d INTEGER[]; v_pc BIGINT[]; v_n BIGINT[];
    v_so NUMERIC[]; v_sq NUMERIC[]; v_sc NUMERIC[]; v_ss NUMERIC[];
BEGIN
    SELECT count(*) INTO v_moved FROM old_rows o JOIN new_rows nw ON nw.id = o.id
     WHERE o.therapist_id IS DISTINCT FROM nw.therapist_id OR o.patient_code IS DISTINCT FROM nw.patient_code;
    IF v_moved = 0 THEN
        RETURN NULL;
    END IF;
    LOCK TABLE cohort_day_scores IN SHARE ROW EXCLUSIVE MODE;
    WITH m AS (
        SELECT o.patient_code AS code, o.therapist_id AS t, -1 AS sign
          FROM old_rows o JOIN new_rows nw ON nw.id = o.id
         WHERE o.therapist_id IS DISTINCT FROM nw.therapist_id OR o.patient_code IS DISTINCT FROM nw.patient_code
        UNION ALL
        SELECT nw.patient_code, nw.therapist_id, 1
          FROM old_rows o JOIN new_rows nw ON nw.id = o.id
         WHERE o.therapist_id IS DISTINCT FROM nw.therapist_id OR o.patient_code IS DISTINCT FROM nw.patient_code
    ), g AS (   -- read once the lock is ours: every committed group
        SELECT m.t, m.sign, c.* FROM m JOIN cohort_day_scores c ON c.patient_key = m.code
    ), x AS (
        SELECT g.t, g.protocol_day AS d, g.sign::bigint AS pc, g.sign * g.session_count::bigint AS n,
               g.sign * g.sum_overall::numeric AS so, g.sign * g.sumsq_overall::numeric AS sq,
               g.sign * g.sum_compliance::numeric AS sc, g.sign * g.sum_symmetry::numeric AS ss FROM g
        UNION ALL
        SELECT g.t, NULL, 0, g.sign * g.session_count::bigint, g.sign * g.sum_overall::numeric,
               g.sign * g.sumsq_overall::numeric, g.sign * g.sum_compliance::numeric,
               g.sign * g.sum_symmetry::numeric FROM g
        UNION ALL   -- the patient itself, once per side
        SELECT m.t, NULL, m.sign, 0, 0, 0, 0, 0 FROM m
         WHERE EXISTS (SELECT 1 FROM cohort_day_scores c WHERE c.patient_key = m.code)
    )
    SELECT array_agg(x.t), array_agg(x.d), array_agg(x.pc), array_agg(x.n), array_agg(x.so),
           array_agg(x.sq), array_agg(x.sc), array_agg(x.ss)
      INTO v_t, v_d, v_pc, v_n, v_so, v_sq, v_sc, v_ss FROM x;
    IF v_t IS NOT NULL THEN
        PERFORM cohort_summary_add(v_t, v_d, v_pc, v_n, v_so, v_sq, v_sc, v_ss);
    END IF;
    RETURN NULL;
END
$fn$;

-- The whole table from cohort_day_scores (back-fill; repair).
CREATE FUNCTION cohort_summary_rebuild() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    LOCK TABLE cohort_day_scores IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM cohort_summary_scores;
    INSERT INTO cohort_summary_scores (therapist_id, protocol_day, patient_count, session_count,
                                       sum_overall, sumsq_overall, sum_compliance, sum_symmetry)
    WITH g AS (
        SELECT c.patient_id, c.protocol_day, c.session_count, c.sum_overall::numeric AS so,
               c.sumsq_overall::numeric AS sq, c.sum_compliance::numeric AS sc,
               c.sum_symmetry::numeric AS ss, p.therapist_id
          FROM cohort_day_scores c LEFT JOIN patients p ON p.patient_code = c.patient_id
    )
    SELECT NULL::uuid, protocol_day, count(*), sum(session_count), sum(so), sum(sq), sum(sc), sum(ss)
      FROM g GROUP BY protocol_day
    UNION ALL
    SELECT therapist_id, protocol_day, count(*), sum(session_count), sum(so), sum(sq), sum(sc), sum(ss)
      FROM g WHERE therapist_id IS NOT NULL GROUP BY therapist_id, protocol_day
    UNION ALL
    SELECT NULL, NULL, count(DISTINCT patient_id), sum(session_count), sum(so), sum(sq), sum(sc), sum(ss)
      FROM g HAVING count(*) > 0
    UNION ALL
    SELECT therapist_id, NULL, count(DISTINCT patient_id), sum(session_count), sum(so), sum(sq), sum(sc), sum(ss)
      FROM g WHERE therapist_id IS NOT NULL GROUP BY therapist_id;
END
$fn$;

CREATE FUNCTION cohort_summary_groups_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    DELETE FROM cohort_summary_scores;
    RETURN NULL;
END
$fn$;

DO $revoke$
DECLARE
    f TEXT;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'cohort_summary_add(uuid[], integer[], bigint[], bigint[], numeric[], numeric[], numeric[], numeric[])',
        'cohort_summary_apply_groups(text[], text[], integer[], integer[], bigint[], double precision[], '
            'double precision[], double precision[], double precision[])',
        'cohort_summary_groups_changed()', 'cohort_summary_patients_changed()', 'cohort_summary_rebuild()',
        'cohort_summary_groups_truncated()']
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$revoke$;

-- Transition tables allow one event per trigger: one trigger per event.
CREATE TRIGGER cohort_summary_groups_insert AFTER INSERT ON cohort_day_scores
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION cohort_summary_groups_changed();
CREATE TRIGGER cohort_summary_groups_update AFTER UPDATE ON cohort_day_scores
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cohort_summary_groups_changed();
CREATE TRIGGER cohort_summary_groups_delete AFTER DELETE ON cohort_day_scores
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION cohort_summary_groups_changed();
CREATE TRIGGER cohort_summary_groups_truncate AFTER TRUNCATE ON cohort_day_scores
    FOR EACH STATEMENT EXECUTE FUNCTION cohort_summary_groups_truncated();
CREATE TRIGGER cohort_summary_patients_update AFTER UPDATE ON patients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cohort_summary_patients_changed();

-- Existing data.
SELECT cohort_summary_rebuild();

-- Readers: the statistics service, under the caseload rule (a therapist: their own rows).
GRANT SELECT ON cohort_summary_scores TO ghostly_statistics;
REVOKE SELECT ON cohort_day_scores FROM ghostly_statistics;
ALTER TABLE cohort_summary_scores ENABLE ROW LEVEL SECURITY;
CREATE POLICY cohort_summary_scores_read_caseload ON cohort_summary_scores FOR SELECT
    TO ghostly_statistics
    USING ((SELECT current_setting('ghostly.role', true)) IN ('researcher', 'admin', 'service')
           OR ((SELECT current_setting('ghostly.role', true)) = 'therapist'
               AND therapist_id IN (SELECT t.id FROM therapists t
                                    WHERE t.user_id::text = current_setting('ghostly.user_id', true))));
