"""Initial schema: sensors, recordings, spaces, segments (partitioned by space), class scores,
ingest errors, and the first ``ranger`` views.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Vectors of different dimensions coexist in ONE ``segments`` table whose ``embedding`` column
# is an undimensioned ``vector``. The table is LIST-partitioned by ``space_id``: each space
# (one model configuration) gets its own partition, created by the application together with
# an HNSW *expression* index ``((embedding::vector(N)) vector_cosine_ops)`` of that space's
# dimension (see ``soundscape.spaces``). Why partitions rather than partial indexes on one
# heap: a query for one space touches only that space's heap and index, the planner keeps
# separate statistics per space (so filter selectivity estimates are per model), and dropping
# a space is a cheap DROP TABLE. Queries must order by ``embedding::vector(N) <=> q`` and
# filter ``space_id = K`` so partition pruning picks the partition and its HNSW index.
SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE sensors (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    site        text,
    quadrant    text,
    latitude    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision CHECK (longitude BETWEEN -180 AND 180),
    timezone    text NOT NULL DEFAULT 'UTC',
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sensors_site_idx ON sensors (site);
CREATE INDEX sensors_quadrant_idx ON sensors (quadrant);

CREATE TABLE recordings (
    id           bigserial PRIMARY KEY,
    sensor_id    integer NOT NULL REFERENCES sensors (id),
    path         text NOT NULL,
    sha256       text NOT NULL UNIQUE CHECK (length(sha256) = 64),
    size_bytes   bigint NOT NULL,
    format       text NOT NULL,
    sample_rate  integer NOT NULL,
    channels     smallint NOT NULL,
    duration_s   double precision NOT NULL,
    started_at   timestamptz,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    metadata     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX recordings_sensor_started_idx ON recordings (sensor_id, started_at);
CREATE INDEX recordings_path_idx ON recordings (path);

CREATE TABLE spaces (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    model          text NOT NULL,
    model_version  text NOT NULL,
    dimension      integer NOT NULL CHECK (dimension BETWEEN 1 AND 2000),
    window_s       real NOT NULL CHECK (window_s > 0),
    hop_s          real NOT NULL CHECK (hop_s > 0),
    sample_rate    integer NOT NULL,
    params         jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, model_version, window_s, hop_s, params)
);

-- Which spaces a recording has been fully embedded in (written in the same transaction as
-- its segments, so a row here means the segments are complete).
CREATE TABLE recording_spaces (
    recording_id  bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    space_id      integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    n_segments    integer NOT NULL,
    embedded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recording_id, space_id)
);
CREATE INDEX recording_spaces_space_idx ON recording_spaces (space_id);

CREATE SEQUENCE segments_id_seq AS bigint;
CREATE TABLE segments (
    id            bigint NOT NULL DEFAULT nextval('segments_id_seq'),
    space_id      integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    recording_id  bigint NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    start_s       real NOT NULL,
    end_s         real NOT NULL,
    starts_at     timestamptz,           -- absolute start, NULL when the recording's start is unknown
    local_date    date,                  -- date at the sensor (its IANA timezone, DST-correct)
    local_time    time,                  -- local wall-clock time of day at the sensor
    embedding     vector NOT NULL,
    PRIMARY KEY (space_id, id)
) PARTITION BY LIST (space_id);
ALTER SEQUENCE segments_id_seq OWNED BY segments.id;
CREATE INDEX segments_recording_idx ON segments (recording_id, start_s);
CREATE INDEX segments_starts_at_idx ON segments (starts_at);
CREATE INDEX segments_local_date_idx ON segments (local_date);
CREATE INDEX segments_local_time_idx ON segments (local_time);

-- Class labels of spaces whose model is also a classifier (BirdNET's 6,522 classes).
CREATE TABLE space_labels (
    space_id    integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    label_id    integer NOT NULL,
    name        text NOT NULL,
    scientific  text,
    common      text,
    PRIMARY KEY (space_id, label_id)
);

-- Each window's top class scores (top-k above a floor), for label search.
CREATE TABLE segment_scores (
    space_id    integer NOT NULL,
    segment_id  bigint NOT NULL,
    label_id    integer NOT NULL,
    score       real NOT NULL,
    PRIMARY KEY (space_id, segment_id, label_id),
    FOREIGN KEY (space_id, segment_id) REFERENCES segments (space_id, id) ON DELETE CASCADE
);
CREATE INDEX segment_scores_label_idx ON segment_scores (space_id, label_id, score DESC);

CREATE TABLE ingest_errors (
    id           bigserial PRIMARY KEY,
    path         text NOT NULL,
    sha256       text,
    sensor       text,
    models       text,
    error        text NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);
CREATE INDEX ingest_errors_path_idx ON ingest_errors (path);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("catalog.sql"))


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS ranger CASCADE")
    for table in (
        "ingest_errors",
        "segment_scores",
        "space_labels",
        "segments",
        "recording_spaces",
        "spaces",
        "recordings",
        "sensors",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
