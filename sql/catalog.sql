-- The catalog family of the `ranger` schema (current definitions; see sql/README.md): the
-- schema itself, the overview of recordings and the files that failed to ingest. Applied by
-- migrations 0001 and 0010.
-- The `ranger` schema is what a BI tool (or a person with psql) reads. Views only depend on the
-- tables, so they can be replaced by later migrations without touching data.
CREATE SCHEMA IF NOT EXISTS ranger;

-- One row per recording: where and when it was made, how long, which spaces embedded it.
CREATE OR REPLACE VIEW ranger.recordings AS
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

-- One row per failure to ingest a file (ingest, backfill or a queue job that failed for good):
-- the reason, when, and whether a later ingest of the same file succeeded (resolved_at).
CREATE OR REPLACE VIEW ranger.ingest_errors AS
SELECT e.id                        AS error_id,
       e.path,
       e.sensor,
       s.site,
       s.quadrant,
       e.models,
       e.error,
       e.sha256,
       e.occurred_at,
       e.resolved_at,
       e.resolved_at IS NOT NULL   AS resolved
  FROM ingest_errors e
  LEFT JOIN sensors s ON s.name = e.sensor;
