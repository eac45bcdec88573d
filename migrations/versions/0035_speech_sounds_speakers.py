"""Podcast search (issue 26): words found when Whisper mishears them, and who said what.

- ``fuzzystrmatch`` (contrib; the embedded server and the Citus build ship it) gives Double
  Metaphone codes. ``speech_words`` (the vocabulary of 0012) gains ``doubtful`` (the word was
  transcribed with a probability below 0.5 somewhere; such words get a row of their own) and
  ``sound``/``sound_alt``, its codes (stored generated columns, btree indexes). Existing
  utterances' doubted words are added from their words json.
- ``utterances`` gains ``speaker`` (the enrolled speaker, or unknown-N, whose voice windows cover
  most of the utterance; NULL until the recording has voice windows; set by soundscape.speakers).
- ``ranger.search_speech`` gains ``p_speaker`` (before ``p_place``) and the columns ``match``
  (exact|stem|trigram|phonetic), ``matched`` and ``speaker``, and a phonetic route after the
  trigram one: a new signature and result type, so the old one is dropped first, then
  sql/speech.sql re-applied. The view ``ranger.utterances`` moves to its own family,
  sql/utterances.sql (with ``speaker``), applied here.

Downgrade: drops the new function signature and helpers, restores search_speech and the view
as 0028 made them (sql/frozen/0035_downgrade.sql), drops the columns, the doubted words'
rows and the extension.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-08
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None

_ARGS = (
    "text, integer, text[], text[], text[], time, time, date, date, timestamptz, timestamptz, "
    "boolean, real"
)
#: search_speech before 0035, and after (p_speaker added before p_place)
OLD = f"ranger.search_speech({_ARGS}, jsonb)"
NEW = f"ranger.search_speech({_ARGS}, text, jsonb)"

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
ALTER TABLE speech_words
    ADD COLUMN doubtful boolean NOT NULL DEFAULT false,
    ADD COLUMN sound text GENERATED ALWAYS AS (dmetaphone(word)) STORED,
    ADD COLUMN sound_alt text GENERATED ALWAYS AS (dmetaphone_alt(word)) STORED;
CREATE INDEX speech_words_sound_idx ON speech_words (sound) WHERE doubtful;
CREATE INDEX speech_words_sound_alt_idx ON speech_words (sound_alt) WHERE doubtful;
ALTER TABLE utterances ADD COLUMN speaker text;
"""

#: the doubted words of the utterances already stored (the rule: ranger._speech_doubtful)
DOUBTED = """
INSERT INTO speech_words (word, doubtful)
SELECT DISTINCT lower(regexp_replace(w ->> 'w', '[^[:alnum:]]', '', 'g')), true
  FROM utterances u, jsonb_array_elements(u.words) w
 WHERE ranger._speech_doubtful((w ->> 'p')::real)
   AND regexp_replace(w ->> 'w', '[^[:alnum:]]', '', 'g') <> ''
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(f"DROP FUNCTION IF EXISTS {OLD}")
    op.execute("DROP VIEW IF EXISTS ranger.utterances")
    op.execute(read_sql("speech.sql"))
    op.execute(read_sql("utterances.sql"))
    op.execute(DOUBTED)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {NEW}")
    op.execute("DROP FUNCTION IF EXISTS ranger._speech_doubted(jsonb, text)")
    op.execute("DROP FUNCTION IF EXISTS ranger._speech_near_codes(text)")
    op.execute("DROP FUNCTION IF EXISTS ranger._speech_sounds(text)")
    op.execute("DROP VIEW IF EXISTS ranger.utterances")
    op.execute(read_sql("frozen/0035_downgrade.sql"))
    op.execute("DROP FUNCTION IF EXISTS ranger._speech_doubtful(real)")
    op.execute("DELETE FROM speech_words WHERE doubtful")
    op.execute(
        "ALTER TABLE speech_words DROP COLUMN sound_alt, DROP COLUMN sound, DROP COLUMN doubtful"
    )
    op.execute("ALTER TABLE utterances DROP COLUMN speaker")
    op.execute("DROP EXTENSION IF EXISTS fuzzystrmatch")
