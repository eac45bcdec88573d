-- The catalog family of the `ranger` schema (current definitions; see sql/README.md): the
-- schema itself, the overview of recordings and the files that failed to ingest, the spaces,
-- their labels and the windows' vectors (the ids and vectors the search functions take).
-- Applied by migrations 0001, 0010, 0015, 0022 and 0032. Applied first (by 0001): only 0001's
-- tables and columns here.
-- The `ranger` schema is what a BI tool (or a person with psql) reads. Views only depend on the
-- tables, so they can be replaced by later migrations without touching data.
CREATE SCHEMA IF NOT EXISTS ranger;

-- One row per recording: where and when it was made, how long, which spaces embedded it; what
-- the file's own GUANO metadata says (read at ingest into recordings.metadata, migration 0032):
-- the recorder's make, model and serial, the file's position (NULL without GUANO: the
-- sensor's is in ranger.sensors) and the whole GUANO block as JSON ({"Key": "text", ...}).
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
                  WHERE rs.recording_id = r.id), 0)  AS n_segments,
       r.metadata -> 'device' ->> 'make'     AS device_make,
       r.metadata -> 'device' ->> 'model'    AS device_model,
       r.metadata -> 'device' ->> 'serial'   AS device_serial,
       (r.metadata -> 'position' ->> 'latitude')::double precision  AS latitude,
       (r.metadata -> 'position' ->> 'longitude')::double precision AS longitude,
       r.metadata -> 'guano'                 AS guano
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

-- The newest recall check (`soundscape spaces check`, soundscape.recall; table index_checks of
-- migration 0022) of the HNSW index a space has now: none if it was never checked, or was
-- rebuilt or dropped since. guard: what the check asks auto to do until the index measures
-- well again: 'none', 'ef' (search with at least guard_ef as ef_search: the smallest that
-- measured well) or 'exact' (no ef measured well: scan exactly). The reader may call it.
-- plpgsql, so that this file can be applied before the table exists (migration 0001); it
-- answers nothing then.
CREATE OR REPLACE FUNCTION ranger.index_recall(p_space integer)
RETURNS TABLE (checked_at timestamptz, index_type text, n_windows bigint, n_queries integer,
               recall real, recall_worst_decile real, guard text, guard_ef integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
BEGIN
    IF to_regclass('public.index_checks') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.checked_at, c.index_type, c.n_windows, c.n_queries, c.recall,
               c.recall_worst_decile, c.guard, c.guard_ef
          FROM index_checks c
         WHERE c.space_id = p_space
           AND c.index_oid = to_regclass(format('public.segments_space_%s_hnsw', p_space))::oid
         ORDER BY c.checked_at DESC, c.id DESC
         LIMIT 1;
END
$fn$;

-- One row per space (a model configuration): the space_id that ranger.search_vector,
-- search_labels, similar_windows, duplicate_pairs and filtered_windows take, with what a
-- query vector must match (dimension) and how much the space holds, and the newest
-- recall check of its index (ranger.index_recall).
CREATE OR REPLACE VIEW ranger.spaces AS
SELECT sp.id            AS space_id,
       sp.name,
       sp.model,
       sp.model_version,
       sp.dimension,
       sp.window_s,
       sp.hop_s,
       sp.sample_rate,
       sp.params,
       sp.created_at,
       (SELECT count(*) FROM space_labels l WHERE l.space_id = sp.id) AS n_labels,
       (SELECT count(*) FROM recording_spaces rs WHERE rs.space_id = sp.id) AS n_recordings,
       coalesce((SELECT sum(rs.n_segments) FROM recording_spaces rs
                  WHERE rs.space_id = sp.id), 0) AS n_windows,
       c.recall            AS recall_at_10,
       c.recall_worst_decile,
       c.checked_at        AS recall_checked_at,
       c.guard             AS recall_guard
  FROM spaces sp
  LEFT JOIN LATERAL ranger.index_recall(sp.id) c ON true;

-- The classes of classifier spaces (BirdNET's 6,522): label_id is what
-- ranger.search_labels(space_id, ARRAY[label_id, ...]) takes; label is the name hits carry.
CREATE OR REPLACE VIEW ranger.labels AS
SELECT l.space_id,
       sp.name                    AS space,
       l.label_id,
       coalesce(l.common, l.name) AS label,
       l.common,
       l.scientific,
       l.name
  FROM space_labels l
  JOIN spaces sp ON sp.id = l.space_id;

-- Each window's vector, to search for more like it: ranger.search_vector(space_id, embedding,
-- ...) or ranger.similar_windows(space_id, ARRAY[embedding]). Select windows by segment_id
-- (ranger.windows, a hit): a whole space's vectors is a lot of data.
CREATE OR REPLACE VIEW ranger.window_vectors AS
SELECT g.id      AS segment_id,
       g.space_id,
       sp.name   AS space,
       g.recording_id,
       g.embedding
  FROM segments g
  JOIN spaces sp ON sp.id = g.space_id;
