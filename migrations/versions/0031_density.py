"""Call density and concepts kept current (issue 23).

Concepts: the rule of a detection moves from ``ranger.refresh_detections`` into
``ranger._detect_concept(concept, recording)``, which computes one concept's detections for all
windows or for one recording's; ``ranger.refresh_recording_detections(recording)`` runs it for
every concept, and ingest, backfill and the worker call it in the transaction that stores a
recording's windows, so detections include new audio without ``concepts refresh``. The
search family (sql/search.sql) is re-applied.

Call density: tables ``density_samples`` (a stratified random sample of a classifier label's or
concept's windows: its label, score-bin bounds, seed, filters), ``density_strata`` (the
population: windows per site, local date and score bin) and ``density_windows`` (the sampled
windows, with their stratum and score); the new family sql/density.sql (views
``ranger.density_samples``, ``ranger.density_windows``, function ``ranger.call_density``).

Search by example: table ``search_examples`` keeps the audio examples uploaded to the web page,
so that such a search has a URL (``/search?example=ID``) that can be shared and reloaded.

Downgrade drops them, ``refresh_recording_detections`` and ``_detect_concept``, and restores
``refresh_detections`` as it was (sql/frozen/0031_downgrade.sql).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-08
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE density_samples (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name <> ''),
    source         text NOT NULL CHECK (source IN ('classifier', 'concept')),
    label          text NOT NULL CHECK (label <> ''),
    classifier_id  integer REFERENCES classifiers (id) ON DELETE CASCADE,
    concept_id     integer REFERENCES concepts (id) ON DELETE CASCADE,
    space_id       integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    bounds         double precision[] NOT NULL CHECK (cardinality(bounds) >= 2),
    per_bin        integer NOT NULL CHECK (per_bin >= 1),
    seed           integer NOT NULL,
    filters        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((source = 'classifier') = (classifier_id IS NOT NULL)),
    CHECK ((source = 'concept') = (concept_id IS NOT NULL))
);

CREATE TABLE density_strata (
    sample_id   integer NOT NULL REFERENCES density_samples (id) ON DELETE CASCADE,
    site        text NOT NULL,
    local_date  date,
    bin         smallint NOT NULL,
    n_windows   bigint NOT NULL CHECK (n_windows > 0)
);
CREATE INDEX density_strata_sample_idx ON density_strata (sample_id);

-- No foreign key to segments (as classifier_scored): a re-ingested window leaves its row,
-- and its verdict is read by recording and span as well.
CREATE TABLE density_windows (
    sample_id     integer NOT NULL REFERENCES density_samples (id) ON DELETE CASCADE,
    space_id      integer NOT NULL,
    segment_id    bigint NOT NULL,
    recording_id  bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    start_s       real NOT NULL,
    end_s         real NOT NULL,
    site          text NOT NULL,
    local_date    date,
    bin           smallint NOT NULL,
    score         real NOT NULL,
    rank          integer NOT NULL,
    PRIMARY KEY (sample_id, segment_id)
);

-- Audio examples uploaded to the search page, kept so that a search by example has a URL
-- (/search?example=ID) that can be shared and reloaded; ID: sha256 of name and bytes.
CREATE TABLE search_examples (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    name        text NOT NULL CHECK (name <> ''),
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(read_sql("search.sql"))
    op.execute(SCHEMA)
    op.execute(read_sql("density.sql"))


def downgrade() -> None:
    for kind, name in (
        ("FUNCTION", "ranger.call_density(text, text)"),
        ("VIEW", "ranger.density_windows"),
        ("VIEW", "ranger.density_samples"),
        ("TABLE", "density_windows"),
        ("TABLE", "density_strata"),
        ("TABLE", "density_samples"),
        ("TABLE", "search_examples"),
    ):
        op.execute(f"DROP {kind} IF EXISTS {name}")
    op.execute(read_sql("frozen/0031_downgrade.sql"))
    op.execute("DROP FUNCTION IF EXISTS ranger.refresh_recording_detections(bigint)")
    op.execute("DROP FUNCTION IF EXISTS ranger._detect_concept(integer, bigint)")
