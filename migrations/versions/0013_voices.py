"""Who says it (issue 12): enrolled speakers for the ``voice`` model. The ``ranger`` objects of
this family (views ``speakers``, ``speaker_examples``) live in ``sql/speakers.sql``.

- ``speakers``: a named voice in one space of the ``voice`` model (its window and hop): the
  centroid of the voice prints of every speech window of its examples (L2-normalised mean),
  and how many windows and seconds of speech it was made from. ``search --speaker NAME`` ranks
  windows by cosine to the centroid; ``speakers who`` assigns speech windows to it.
- ``speaker_examples``: each enrolled example (file, its SHA-256, the span used), its number of
  speech windows, seconds of speech, and the mean of its windows' voice prints; enrolling the
  same span of the same file again adds nothing.

Voice windows themselves are ordinary ``segments`` of the voice space (HNSW index and all):
no schema change was needed for them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE speakers (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    space_id    integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    centroid    vector NOT NULL,
    n_windows   integer NOT NULL CHECK (n_windows > 0),
    speech_s    real NOT NULL CHECK (speech_s >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE speaker_examples (
    id          serial PRIMARY KEY,
    speaker_id  integer NOT NULL REFERENCES speakers (id) ON DELETE CASCADE,
    path        text NOT NULL,
    sha256      text NOT NULL,
    start_s     real NOT NULL CHECK (start_s >= 0),
    end_s       real NOT NULL CHECK (end_s > start_s),
    n_windows   integer NOT NULL CHECK (n_windows > 0),
    speech_s    real NOT NULL CHECK (speech_s >= 0),
    embedding   vector NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (speaker_id, sha256, start_s, end_s)
);
CREATE INDEX speaker_examples_speaker ON speaker_examples (speaker_id);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("speakers.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.speaker_examples")
    op.execute("DROP VIEW IF EXISTS ranger.speakers")
    op.execute("DROP TABLE IF EXISTS speaker_examples")
    op.execute("DROP TABLE IF EXISTS speakers")
