-- The speakers family of the `ranger` schema (current definitions; see sql/README.md):
-- voices enrolled for the `voice` model (`soundscape speakers enrol`). Applied by migration
-- 0013 (its tables: speakers, speaker_examples).
--
-- A speaker's centroid is the L2-normalised mean voice print of its examples' speech windows,
-- in the space it was enrolled in; rank that space's windows by it with
--   SELECT * FROM ranger.search_vector(
--     (SELECT space_id FROM ranger.speakers WHERE name = 'guest'),
--     (SELECT centroid FROM ranger.speakers WHERE name = 'guest'), 10);

-- One row per enrolled speaker.
CREATE OR REPLACE VIEW ranger.speakers AS
SELECT k.name, sp.name AS space, k.space_id, k.n_windows, k.speech_s,
       (SELECT count(*) FROM speaker_examples e WHERE e.speaker_id = k.id) AS n_examples,
       k.centroid, k.created_at, k.updated_at
  FROM speakers k
  JOIN spaces sp ON sp.id = k.space_id;

-- The examples each speaker was enrolled from.
CREATE OR REPLACE VIEW ranger.speaker_examples AS
SELECT k.name AS speaker, e.path, e.sha256, e.start_s, e.end_s, e.n_windows, e.speech_s,
       e.created_at
  FROM speaker_examples e
  JOIN speakers k ON k.id = e.speaker_id;
