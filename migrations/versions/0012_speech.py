"""What is said (issue 12): transcripts and utterances of speech-to-text models (``whisper``),
searchable by full text and by trigram similarity. The ``ranger`` objects of this family
(``search_speech``, views ``utterances`` and ``transcripts``) live in ``sql/speech.sql``.

- ``transcripts``: one row per recording and transcriber version (what recording_spaces is to
  spaces): ingest skips a recording already transcribed by that version, ``--replace`` deletes
  the row (and its utterances) and transcribes again. ``speech_s`` is the speech voice activity
  detection found (0 for a forest soundscape, which then has no utterances).
- ``utterances``: a stretch of speech as the model segmented it: offsets in the recording,
  absolute and local time of its start (like windows: ``starts_at``, ``local_date``,
  ``local_time`` at the sensor), text, words with their times (jsonb
  ``[{"w": word, "s": start_s, "e": end_s, "p": probability}]``), language. ``tsv`` is the
  English ``tsvector`` of the text (GIN index, for ``websearch_to_tsquery``), and a
  ``gin_trgm_ops`` index on the text serves the fuzzy fallback (``pg_trgm``: "bit coin" still
  finds "bitcoin").
- ``speech_words``: every word ever transcribed (lower case, letters and digits), with a
  trigram index: the fuzzy fallback looks the query's spelling up here first (a short list of
  words), then finds their utterances through the tsvector index, so a misspelt common word
  does not send thousands of texts through the trigram recheck. Filled in the ingest
  transaction; no unique key, so that concurrent ingests never wait for each other's
  uncommitted words (a word two of them add at once is stored twice, read DISTINCT); a word of
  a recording later removed stays (it then matches nothing).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE transcripts (
    id              serial PRIMARY KEY,
    recording_id    bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    model           text NOT NULL,
    model_version   text NOT NULL,
    params          jsonb NOT NULL DEFAULT '{}',
    speech_s        real NOT NULL DEFAULT 0,
    n_utterances    integer NOT NULL DEFAULT 0,
    transcribed_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (recording_id, model, model_version)
);

CREATE TABLE utterances (
    id             bigserial PRIMARY KEY,
    transcript_id  integer NOT NULL REFERENCES transcripts (id) ON DELETE CASCADE,
    recording_id   bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    sensor_id      integer NOT NULL REFERENCES sensors (id),
    start_s        real NOT NULL CHECK (start_s >= 0),
    end_s          real NOT NULL CHECK (end_s >= start_s),
    starts_at      timestamptz,
    local_date     date,
    local_time     time,
    text           text NOT NULL,
    words          jsonb NOT NULL DEFAULT '[]',
    language       text,
    tsv            tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED
);
CREATE INDEX utterances_tsv_idx ON utterances USING gin (tsv);
CREATE INDEX utterances_text_trgm_idx ON utterances USING gin (text gin_trgm_ops);
CREATE INDEX utterances_recording_idx ON utterances (recording_id, start_s);
CREATE INDEX utterances_transcript_idx ON utterances (transcript_id);
CREATE INDEX utterances_sensor_time_idx ON utterances (sensor_id, local_time);
CREATE INDEX utterances_local_date_idx ON utterances (local_date);
CREATE INDEX utterances_starts_at_idx ON utterances (starts_at);

CREATE TABLE speech_words (
    word  text NOT NULL
);
CREATE INDEX speech_words_word_idx ON speech_words (word);
CREATE INDEX speech_words_trgm_idx ON speech_words USING gin (word gin_trgm_ops);
"""

#: ranger objects of sql/speech.sql (the downgrade drops them with the tables)
RANGER = """
DROP VIEW IF EXISTS ranger.utterances;
DROP VIEW IF EXISTS ranger.transcripts;
DROP FUNCTION IF EXISTS ranger.search_speech(text, integer, text[], text[], text[], time, time,
    date, date, timestamptz, timestamptz, boolean, real);
DROP FUNCTION IF EXISTS ranger._speech_span(jsonb, text[], text);
DROP FUNCTION IF EXISTS ranger._speech_mark(jsonb, integer, integer);
DROP FUNCTION IF EXISTS ranger._speech_terms(text);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("speech.sql"))


def downgrade() -> None:
    op.execute(RANGER)
    op.execute("DROP TABLE IF EXISTS speech_words")
    op.execute("DROP TABLE IF EXISTS utterances")
    op.execute("DROP TABLE IF EXISTS transcripts")
