-- Annotations (the people's ground truth): what a BI tool reads. Idempotent (CREATE OR
-- REPLACE); applied by migration 0008 and by any later migration that changes this family.

-- One row per annotation with the place (sensor, site, quadrant) and the time of its start:
-- the absolute instant (NULL when the recording's start is unknown) and the local date and
-- wall-clock time at the sensor (its IANA timezone, DST-correct), like ranger.windows.
CREATE OR REPLACE VIEW ranger.annotations AS
SELECT a.id                                                        AS annotation_id,
       a.label,
       a.verdict,
       a.author,
       a.source,
       a.note,
       s.name                                                      AS sensor,
       s.site,
       s.quadrant,
       r.path,
       a.recording_id,
       a.start_s,
       a.end_s,
       a.low_hz,
       a.high_hz,
       ((r.started_at + make_interval(secs => a.start_s)) AT TIME ZONE s.timezone)::date
                                                                   AS local_date,
       ((r.started_at + make_interval(secs => a.start_s)) AT TIME ZONE s.timezone)::time
                                                                   AS local_time,
       r.started_at + make_interval(secs => a.start_s)             AS starts_at,
       a.segment_id,
       a.created_at
  FROM annotations a
  JOIN recordings r ON r.id = a.recording_id
  JOIN sensors s ON s.id = r.sensor_id;
