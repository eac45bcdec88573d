-- Acoustic indices (issue 25): the named values of the `indices` model's windows and their
-- statistics per sensor, local day and hour. Applied by migration 0034.
--
-- A window of the `indices` model stores its nine indices as a unit vector: each index
-- standardised with the model's fixed constants (z = (f(x) - centre) / scale, f = ln(1 + x)
-- for ACI, identity otherwise), then a constant anchor component (1.0), then L2-normalised
-- (src/soundscape/embedders/indices.py). So z_i = v_i / v_10 and the named values are read
-- back from the vector here, whichever way the window was stored (ingest, backfill, resumed
-- checkpoints, the job queue). The constants below are the model's `SCALE` of version 1
-- (tests/test_indices.py keeps them equal); a new version of the model gets its own columns.

CREATE OR REPLACE VIEW ranger.acoustic_indices AS
SELECT g.id AS segment_id, sp.name AS space, g.recording_id, s.name AS sensor, s.site,
       s.quadrant, g.local_date, g.local_time, g.starts_at, g.start_s, g.end_s,
       (exp(5.8 + 0.3 * e.v[1] / e.v[10]) - 1)::real AS aci,
       (1.9 + 0.5 * e.v[2] / e.v[10])::real AS adi,
       (0.4 + 0.25 * e.v[3] / e.v[10])::real AS aei,
       (130.0 + 100.0 * e.v[4] / e.v[10])::real AS bi,
       (0.0 + 0.6 * e.v[5] / e.v[10])::real AS ndsi,
       (0.9 + 0.1 * e.v[6] / e.v[10])::real AS ht,
       (0.6 + 0.18 * e.v[7] / e.v[10])::real AS hf,
       (0.5 + 0.18 * e.v[8] / e.v[10])::real AS h,
       (-30.0 + 20.0 * e.v[9] / e.v[10])::real AS level_db
  FROM segments g
  JOIN spaces sp ON sp.id = g.space_id AND sp.model = 'indices' AND sp.model_version = '1'
  JOIN sensors s ON s.id = g.sensor_id
  CROSS JOIN LATERAL (SELECT g.embedding::real[] AS v) e;

COMMENT ON VIEW ranger.acoustic_indices IS
    'Each window of an indices space with its acoustic indices by name (ACI, ADI, AEI, BI, '
    'NDSI, Ht, Hf, H, level in dBFS; docs/analytics.md)';

-- Per space, sensor, local day and local hour, for each index: the windows, the median and
-- the quartiles (continuous percentiles). Windows without a known start (no local date) are
-- left out. "Nights where ACI at north-1 dropped below its 30-day median": docs/analytics.md.
CREATE OR REPLACE VIEW ranger.indices_daily AS
SELECT a.space, a.sensor, a.site, a.quadrant, a.local_date,
       extract(hour FROM a.local_time)::integer AS hour, x.index,
       count(*) AS windows,
       percentile_cont(0.25) WITHIN GROUP (ORDER BY x.value) AS q1,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY x.value) AS median,
       percentile_cont(0.75) WITHIN GROUP (ORDER BY x.value) AS q3
  FROM ranger.acoustic_indices a
  CROSS JOIN LATERAL (VALUES ('aci', a.aci), ('adi', a.adi), ('aei', a.aei), ('bi', a.bi),
                             ('ndsi', a.ndsi), ('ht', a.ht), ('hf', a.hf), ('h', a.h),
                             ('level_db', a.level_db)) x (index, value)
 WHERE a.local_date IS NOT NULL
 GROUP BY a.space, a.sensor, a.site, a.quadrant, a.local_date, 6, x.index;

COMMENT ON VIEW ranger.indices_daily IS
    'Median and quartiles of each acoustic index per space, sensor, local day and hour';
