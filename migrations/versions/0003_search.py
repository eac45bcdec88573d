"""Search: segments.sensor_id (so every search filter sits on the segment row the HNSW scan
returns), stored concepts and their detections, and the ranger search functions and views.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = """
-- Denormalised from recordings: filters by sensor/site/quadrant become a condition on the row
-- the index scan produces, which pgvector's iterative scan can check while it walks the graph.
ALTER TABLE segments ADD COLUMN sensor_id integer REFERENCES sensors (id);
UPDATE segments g SET sensor_id = r.sensor_id FROM recordings r WHERE r.id = g.recording_id;
ALTER TABLE segments ALTER COLUMN sensor_id SET NOT NULL;
CREATE INDEX segments_sensor_idx ON segments (sensor_id, local_date);

CREATE TABLE concepts (
    id            serial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    space_id      integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('text', 'audio', 'window', 'labels')),
    query         text NOT NULL,
    embedding     vector,
    label_ids     integer[],
    threshold     real,
    created_at    timestamptz NOT NULL DEFAULT now(),
    refreshed_at  timestamptz,
    CHECK ((embedding IS NULL) <> (label_ids IS NULL))
);

CREATE TABLE detections (
    concept_id  integer NOT NULL REFERENCES concepts (id) ON DELETE CASCADE,
    space_id    integer NOT NULL,
    segment_id  bigint NOT NULL,
    score       real NOT NULL,
    PRIMARY KEY (concept_id, segment_id),
    FOREIGN KEY (space_id, segment_id) REFERENCES segments (space_id, id) ON DELETE CASCADE
);
CREATE INDEX detections_segment_idx ON detections (space_id, segment_id);
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    # The current search family: its plpgsql bodies also read spaces.index_type (0006), which
    # plpgsql only resolves when called; everything CREATE validates exists at this point.
    op.execute(read_sql("search.sql"))


def downgrade() -> None:
    for kind, name in (
        ("VIEW", "ranger.windows"),
        ("VIEW", "ranger.sensors"),
        ("VIEW", "ranger.activity_by_hour"),
        ("VIEW", "ranger.detections"),
        ("VIEW", "ranger.concepts"),
        ("FUNCTION", "ranger.refresh_detections"),
        ("FUNCTION", "ranger.search"),
        ("FUNCTION", "ranger.search_labels"),
        ("FUNCTION", "ranger.search_vector"),
        ("FUNCTION", "ranger._sensor_ids"),
        ("FUNCTION", "ranger._filter_sql"),
        ("FUNCTION", "ranger._search_vector_sql"),
        ("FUNCTION", "ranger._space_rows"),
        ("FUNCTION", "ranger._hnsw_distance_sql"),
        ("FUNCTION", "ranger._check_query"),
        ("FUNCTION", "ranger._check_int"),
        ("TABLE", "detections"),
        ("TABLE", "concepts"),
    ):
        op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
    op.execute("ALTER TABLE segments DROP COLUMN sensor_id")
