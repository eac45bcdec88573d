-- Call density (issue 23; sql/README.md: the `density` family, applied by migration 0031):
-- the fraction of windows that hold a call, per site or day, estimated from a stratified
-- random sample of windows (strata: site x score bin, tables density_samples,
-- density_strata, density_windows; soundscape.density draws it) and the reviewers' verdicts
-- on the sampled windows (annotations of the sample's label).

-- Every sample with its size and how much of it has a verdict.
CREATE OR REPLACE VIEW ranger.density_samples AS
SELECT d.name, d.source, d.label, sp.name AS space, d.bounds, d.per_bin, d.seed, d.filters,
       d.created_at,
       coalesce(st.n, 0) AS windows, coalesce(w.n, 0) AS sampled
  FROM density_samples d
  JOIN spaces sp ON sp.id = d.space_id
  LEFT JOIN (SELECT sample_id, sum(n_windows) AS n FROM density_strata GROUP BY sample_id) st
         ON st.sample_id = d.id
  LEFT JOIN (SELECT sample_id, count(*) AS n FROM density_windows GROUP BY sample_id) w
         ON w.sample_id = d.id;

-- The windows of every sample, with their stratum (site, score bin), score and verdict: the
-- list a review queue works through (unreviewed first, in a seeded random order: `rank`). A
-- window's verdict is the newest yes/no annotation of the sample's label given on that window
-- (its segment_id), else the newest one whose span covers the window's midpoint (a Raven
-- selection, an event); NULL when none (unsure does not count). call_density reads it here.
CREATE OR REPLACE VIEW ranger.density_windows AS
SELECT d.name AS sample, d.label, w.space_id, w.segment_id, w.recording_id, r.path, w.start_s,
       w.end_s, w.site, w.local_date, w.bin, w.score, w.rank, v.verdict
  FROM density_windows w
  JOIN density_samples d ON d.id = w.sample_id
  JOIN recordings r ON r.id = w.recording_id
  LEFT JOIN LATERAL (
      SELECT a.verdict
        FROM annotations a
       WHERE a.recording_id = w.recording_id AND a.label = d.label
         AND a.verdict IN ('yes', 'no')
         AND (a.segment_id = w.segment_id
              OR (a.start_s <= (w.start_s + w.end_s) / 2.0
                  AND a.end_s > (w.start_s + w.end_s) / 2.0))
       ORDER BY (a.segment_id IS NOT DISTINCT FROM w.segment_id) DESC, a.created_at DESC,
                a.id DESC
       LIMIT 1) v ON true;

-- The call density of a sample, per p_by: 'site' (default), 'day', 'site_day' or 'all'.
-- Stratified estimator: in each stratum c (site x score bin) the chance that a window holds
-- the call has the Beta(yes + 1/2, no + 1/2) posterior (Jeffreys prior) of its verdicts, with
-- mean m_c and variance m_c (1 - m_c) / (n_c + 2); a group's density is sum_c w_c m_c, w_c the
-- share of the group's windows in stratum c (density_strata), with variance sum_c w_c^2 v_c. The
-- 95% interval is the normal interval on the logit scale (delta method), so it stays inside
-- (0, 1). A day's estimate uses its sites' strata (the chance of a call within a site and
-- score bin is taken to be the same every day); a stratum without verdicts counts with mean
-- 1/2 and a wide variance, so its interval says so. windows: the group's windows; reviewed:
-- the verdicts its estimate rests on; yes: those that heard the call.
CREATE OR REPLACE FUNCTION ranger.call_density(p_sample text, p_by text DEFAULT 'site')
RETURNS TABLE (
    site text, day date, windows bigint, sampled bigint, reviewed bigint, yes bigint,
    density double precision, low double precision, high double precision
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $fn$
DECLARE
    v_id integer;
BEGIN
    IF p_by IS NULL OR p_by NOT IN ('site', 'day', 'site_day', 'all') THEN
        RAISE EXCEPTION 'p_by must be site, day, site_day or all, not %', coalesce(p_by, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.id INTO v_id FROM density_samples d WHERE d.name = p_sample;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'no call-density sample named %; see SELECT * FROM ranger.density_samples',
            coalesce(p_sample, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH judged AS (
        SELECT w.site AS c_site, w.bin AS c_bin, w.verdict
          FROM ranger.density_windows w WHERE w.sample = p_sample
    ), cell AS (
        SELECT c_site, c_bin, count(*) AS n_sampled,
               count(*) FILTER (WHERE verdict = 'yes') AS n_yes,
               count(*) FILTER (WHERE verdict = 'no') AS n_no
          FROM judged GROUP BY c_site, c_bin
    ), pop AS (
        SELECT CASE WHEN p_by IN ('site', 'site_day') THEN st.site END AS g_site,
               CASE WHEN p_by IN ('day', 'site_day') THEN st.local_date END AS g_day,
               st.site AS c_site, st.bin AS c_bin, sum(st.n_windows)::double precision AS n
          FROM density_strata st WHERE st.sample_id = v_id
         GROUP BY 1, 2, 3, 4
    ), post AS (
        SELECT p.g_site, p.g_day, p.n, coalesce(c.n_sampled, 0) AS n_sampled,
               coalesce(c.n_yes, 0) AS n_yes, coalesce(c.n_no, 0) AS n_no,
               (coalesce(c.n_yes, 0) + 0.5) / (coalesce(c.n_yes, 0) + coalesce(c.n_no, 0) + 1.0)
                   AS m,
               coalesce(c.n_yes, 0) + coalesce(c.n_no, 0) AS n_judged
          FROM pop p LEFT JOIN cell c ON c.c_site = p.c_site AND c.c_bin = p.c_bin
    ), grp AS (
        SELECT g_site, g_day, sum(n) AS total,
               sum(n_sampled)::bigint AS g_sampled, sum(n_judged)::bigint AS g_judged,
               sum(n_yes)::bigint AS g_yes,
               sum(n * m) / sum(n) AS d,
               sum(n * n * m * (1 - m) / (n_judged + 2)) / (sum(n) * sum(n)) AS var
          FROM post GROUP BY g_site, g_day
    )
    SELECT g.g_site, g.g_day, g.total::bigint, g.g_sampled, g.g_judged, g.g_yes, g.d,
           1 / (1 + exp(-(ln(g.d / (1 - g.d)) - 1.959964 * sqrt(g.var) / (g.d * (1 - g.d))))),
           1 / (1 + exp(-(ln(g.d / (1 - g.d)) + 1.959964 * sqrt(g.var) / (g.d * (1 - g.d)))))
      FROM grp g
     ORDER BY g.g_site NULLS FIRST, g.g_day NULLS FIRST;
END
$fn$;
