-- The species family of the `ranger` schema (current definitions; see sql/README.md):
-- species-level facts ("which species, where, which days") from a model's stored class scores
-- above a per-label threshold and from classifier detections, with BirdNET's location/season
-- filter. Applied by migration 0011 (its tables: label_thresholds, occurrence_sensors,
-- occurrence).
--
-- Plausibility: BirdNET's occurrence model gives, for a sensor's latitude and longitude and a
-- week of its 48-week year (ranger.birdnet_week, search.sql), the classes likely there and
-- then; soundscape stores those above a threshold (default 0.03, BirdNET-Analyzer's) per
-- sensor and week, plus the whole-year list as week -1 for windows without a date. A class is
-- plausible for a window when the window's sensor has no list (no coordinates: nothing is
-- filtered) or the list of the window's week holds the class; non-species classes (Dog,
-- Siren, ...) are in every list with a NULL probability, so they are never filtered out.

-- Per-label thresholds people have set (every other label of a space counts from 0.5).
CREATE OR REPLACE VIEW ranger.label_thresholds AS
SELECT sp.name AS space, coalesce(l.common, l.name) AS label, l.scientific, t.threshold,
       t.updated_at
  FROM label_thresholds t
  JOIN spaces sp ON sp.id = t.space_id
  JOIN space_labels l ON l.space_id = t.space_id AND l.label_id = t.label_id;

-- The classes BirdNET's occurrence model finds plausible at each sensor and week (one row per
-- space of the model, so the names are the space's labels); probability NULL: not a species.
CREATE OR REPLACE VIEW ranger.occurrence AS
SELECT s.name AS sensor, s.site, s.quadrant, sp.name AS space, o.week,
       coalesce(l.common, l.name) AS label, l.scientific, o.probability, os.latitude,
       os.longitude, os.threshold, os.computed_at
  FROM occurrence o
  JOIN occurrence_sensors os ON os.model = o.model AND os.sensor_id = o.sensor_id
  JOIN sensors s ON s.id = o.sensor_id
  JOIN spaces sp ON sp.model = o.model
  JOIN space_labels l ON l.space_id = sp.id AND l.label_id = o.label_id;

-- Per label, sensor and local date: how many windows detected it (a model's class score at
-- or above the label's threshold, default 0.5; or a classifier's stored detection, newest
-- scored version), the local start times of the first and last of them, and the best score.
-- source 'model' (detector: the space, e.g. birdnet) or 'classifier' (detector: its name);
-- plausible: false when BirdNET's occurrence model finds the class unlikely at that sensor
-- and week. Windows overlap (BirdNET: 3 s every 2 s), so one call may count in two windows.
-- Windows without a known start time have a NULL local_date.
CREATE OR REPLACE VIEW ranger.species_daily_all AS
SELECT d.label, d.scientific, d.sensor, d.site, d.quadrant, d.local_date, d.detections,
       d.first_time, d.last_time, d.best_score, 'model'::text AS source, d.detector,
       (NOT EXISTS (SELECT 1 FROM occurrence_sensors os
                     WHERE os.model = d.model AND os.sensor_id = d.sensor_id)
        OR EXISTS (SELECT 1 FROM occurrence o
                    WHERE o.model = d.model AND o.sensor_id = d.sensor_id
                      AND o.week = ranger.birdnet_week(d.local_date)
                      AND o.label_id = d.label_id)) AS plausible
  FROM (SELECT sp.name AS detector, sp.model, sc.label_id,
               coalesce(l.common, l.name) AS label, l.scientific,
               s.id AS sensor_id, s.name AS sensor, s.site, s.quadrant, g.local_date,
               count(*) AS detections, min(g.local_time) AS first_time,
               max(g.local_time) AS last_time, max(sc.score) AS best_score
          FROM segment_scores sc
          JOIN spaces sp ON sp.id = sc.space_id
          JOIN space_labels l ON l.space_id = sc.space_id AND l.label_id = sc.label_id
          LEFT JOIN label_thresholds t
                 ON t.space_id = sc.space_id AND t.label_id = sc.label_id
          JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id
          JOIN sensors s ON s.id = g.sensor_id
         WHERE sc.score >= coalesce(t.threshold, 0.5)
           -- a constant lower bound (the lowest threshold set, else 0.5), checked while
           -- scanning the scores, before the per-label join
           AND sc.score >= (SELECT least(0.5, min(t2.threshold)) FROM label_thresholds t2)
         GROUP BY sp.name, sp.model, sc.label_id, l.common, l.name, l.scientific, s.id,
                  s.name, s.site, s.quadrant, g.local_date) d
UNION ALL
SELECT d.label, NULL::text, d.sensor, d.site, d.quadrant, d.local_date, count(*),
       min(d.local_time), max(d.local_time), max(d.score), 'classifier'::text, d.concept,
       true
  FROM ranger.detections d
 WHERE d.source = 'classifier'
 GROUP BY d.concept, d.label, d.sensor, d.site, d.quadrant, d.local_date;

-- The same without the classes BirdNET's occurrence model finds unlikely at the sensor and
-- week (what `soundscape species daily` shows unless --all-species): "which species per site
-- per day" is SELECT DISTINCT site, local_date, label FROM ranger.species_daily.
CREATE OR REPLACE VIEW ranger.species_daily AS
SELECT label, scientific, sensor, site, quadrant, local_date, detections, first_time,
       last_time, best_score, source, detector
  FROM ranger.species_daily_all
 WHERE plausible;
