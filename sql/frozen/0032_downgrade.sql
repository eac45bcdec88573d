-- ranger.recordings as it was before migration 0032 gave it the GUANO columns (device_make,
-- device_model, device_serial, latitude, longitude, guano): 0032's downgrade drops the view and
-- applies this. Never edited, never applied by an upgrade (sql/README.md, "Frozen copies").
CREATE VIEW ranger.recordings AS
SELECT r.id                                   AS recording_id,
       s.name                                 AS sensor,
       s.site,
       s.quadrant,
       s.timezone,
       r.path,
       r.format,
       r.sample_rate,
       r.channels,
       round(r.duration_s::numeric, 3)        AS duration_s,
       r.started_at,
       (r.started_at AT TIME ZONE s.timezone) AS started_local,
       r.ingested_at,
       coalesce((SELECT string_agg(sp.name, ',' ORDER BY sp.name)
                   FROM recording_spaces rs JOIN spaces sp ON sp.id = rs.space_id
                  WHERE rs.recording_id = r.id), '') AS spaces,
       coalesce((SELECT sum(rs.n_segments) FROM recording_spaces rs
                  WHERE rs.recording_id = r.id), 0)  AS n_segments
  FROM recordings r
  JOIN sensors s ON s.id = r.sensor_id;
