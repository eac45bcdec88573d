-- FROZEN: not a current definition (see sql/README.md). Used only by the downgrade of
-- migration 0009 (classifiers): ranger.detections and ranger.activity_by_hour as search.sql
-- defined them before 0009 added classifier detections and the label and source columns.
-- Never edit; never apply from an upgrade.

-- Every window where a concept was detected, with place and local time.
CREATE OR REPLACE VIEW ranger.detections AS
SELECT c.name          AS concept,
       d.score,
       d.segment_id,
       g.recording_id,
       s.name          AS sensor,
       s.site,
       s.quadrant,
       g.local_date,
       g.local_time,
       g.starts_at,
       r.path,
       g.start_s,
       g.end_s
  FROM detections d
  JOIN concepts c ON c.id = d.concept_id
  JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id
  JOIN recordings r ON r.id = g.recording_id
  JOIN sensors s ON s.id = g.sensor_id;

-- Detections per concept, site/quadrant, local day and local hour.
CREATE OR REPLACE VIEW ranger.activity_by_hour AS
SELECT concept, site, quadrant, local_date AS day,
       extract(hour FROM local_time)::integer AS hour,
       count(*) AS detections,
       max(score) AS best_score
  FROM ranger.detections
 WHERE local_date IS NOT NULL
 GROUP BY concept, site, quadrant, local_date, extract(hour FROM local_time);
