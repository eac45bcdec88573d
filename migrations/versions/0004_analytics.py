"""Analytics: stored anomaly runs and scores, the ranger anomaly/duplicate functions and views.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = """
-- One row per `soundscape anomalies` run: whose windows were scored against which baseline.
CREATE TABLE anomaly_runs (
    id                serial PRIMARY KEY,
    sensor_id         integer NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    space_id          integer NOT NULL REFERENCES spaces (id) ON DELETE CASCADE,
    k                 integer NOT NULL CHECK (k > 0),
    params            jsonb NOT NULL DEFAULT '{}',   -- period, baseline and time-of-day bounds
    baseline_windows  bigint,
    scale             real,            -- the baseline's typical k-NN distance (score 1)
    method            text,            -- exact | hnsw
    n_windows         bigint,
    max_score         real,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX anomaly_runs_sensor_idx ON anomaly_runs (sensor_id, created_at);

-- Every window of a run's period with its k-NN distance to the baseline and its score.
CREATE TABLE anomaly_scores (
    run_id      integer NOT NULL REFERENCES anomaly_runs (id) ON DELETE CASCADE,
    space_id    integer NOT NULL,
    segment_id  bigint NOT NULL,
    distance    real NOT NULL,
    score       real NOT NULL,
    rank        integer NOT NULL,
    PRIMARY KEY (run_id, segment_id),
    FOREIGN KEY (space_id, segment_id) REFERENCES segments (space_id, id) ON DELETE CASCADE
);
CREATE INDEX anomaly_scores_rank_idx ON anomaly_scores (run_id, rank);
CREATE INDEX anomaly_scores_segment_idx ON anomaly_scores (space_id, segment_id);
"""

# Views created after `soundscape db create-reader` are covered by its ALTER DEFAULT
# PRIVILEGES when the same role runs the migration; grant explicitly too, in case it did not.
GRANT_READER = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'soundscape_reader') THEN
        GRANT SELECT ON ranger.anomalies, ranger.anomaly_runs TO soundscape_reader;
    END IF;
END
$$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(read_sql("analytics.sql"))
    op.execute(GRANT_READER)


def downgrade() -> None:
    for kind, name in (
        ("VIEW", "ranger.anomalies"),
        ("VIEW", "ranger.anomaly_runs"),
        ("FUNCTION", "ranger.duplicate_pairs"),
        ("FUNCTION", "ranger.similar_windows"),
        ("FUNCTION", "ranger.anomaly_scores"),
        ("FUNCTION", "ranger._knn_distance_sql"),
        ("TABLE", "anomaly_scores"),
        ("TABLE", "anomaly_runs"),
    ):
        op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
