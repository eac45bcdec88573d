-- The utterances family of the `ranger` schema (current definitions; see sql/README.md): who
-- said what. Applied by migration 0035 (the `speaker` column it adds to the utterances of
-- 0012; the view was in sql/speech.sql until then, which 0012 applies before that column
-- exists).
--
-- One row per utterance with its recording, sensor, times, text, words (json: w, s, e and
-- Whisper's probability p), language, transcriber and speaker: the enrolled speaker (or
-- unknown-N, a voice no enrolment claims) whose voice windows cover most of it, set when the
-- recording has voice windows and refreshed when enrolments change (soundscape.speakers);
-- NULL when it has none.
CREATE OR REPLACE VIEW ranger.utterances AS
SELECT u.id AS utterance_id, u.recording_id, r.path, s.name AS sensor, s.site, s.quadrant,
       u.start_s, u.end_s, u.starts_at, u.local_date, u.local_time, u.text, u.words,
       u.language, t.model, t.model_version, u.speaker
  FROM utterances u
  JOIN transcripts t ON t.id = u.transcript_id
  JOIN recordings r ON r.id = u.recording_id
  JOIN sensors s ON s.id = u.sensor_id;
