"""Species-level facts (issue 11): per-label thresholds, BirdNET's location/season filter and
``ranger.species_daily``. The ``ranger`` objects of this family live in ``sql/species.sql``.

- ``label_thresholds``: a score threshold per label of a space (default 0.5 where none is
  set); ``soundscape labels threshold NAME VALUE`` sets one.
- ``occurrence_sensors`` / ``occurrence``: BirdNET's species-occurrence ("meta") model run at
  each sensor's latitude and longitude, for every week of BirdNET's 48-week year and for the
  whole year (week -1, for windows without a date): the classes it finds plausible there and
  then (probability >= the threshold, default 0.03 as in BirdNET-Analyzer), keyed by the
  model's class index (the same ``label_id`` in every space of that model). Non-species
  classes (Dog, Siren, ...) are stored with a NULL probability: never filtered out. Filled by
  ``soundscape sensors add`` (when a sensor gets coordinates) and
  ``soundscape labels occurrence --refresh`` (sensors that existed before this revision).

``ranger.search_labels`` (sql/search.sql) gains ``p_all_species`` (default false: classes
implausible at the sensor and week are left out); its old signature is dropped first. The
downgrade restores it from ``sql/frozen/0011_downgrade.sql``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE label_thresholds (
    space_id    integer NOT NULL,
    label_id    integer NOT NULL,
    threshold   real NOT NULL CHECK (threshold > 0 AND threshold <= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (space_id, label_id),
    FOREIGN KEY (space_id, label_id) REFERENCES space_labels (space_id, label_id)
        ON DELETE CASCADE
);

CREATE TABLE occurrence_sensors (
    model        text NOT NULL,
    sensor_id    integer NOT NULL REFERENCES sensors (id) ON DELETE CASCADE,
    latitude     double precision NOT NULL,
    longitude    double precision NOT NULL,
    threshold    real NOT NULL CHECK (threshold > 0 AND threshold < 1),
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, sensor_id)
);

CREATE TABLE occurrence (
    model        text NOT NULL,
    sensor_id    integer NOT NULL,
    week         smallint NOT NULL CHECK (week = -1 OR week BETWEEN 1 AND 48),
    label_id     integer NOT NULL,
    probability  real,
    PRIMARY KEY (model, sensor_id, week, label_id),
    FOREIGN KEY (model, sensor_id) REFERENCES occurrence_sensors (model, sensor_id)
        ON DELETE CASCADE
);
"""

#: ranger.search_labels before p_all_species
OLD_SEARCH_LABELS = (
    "ranger.search_labels(integer, integer[], integer, text[], text[], text[], time, time, "
    "date, date, timestamptz, timestamptz, real)"
)


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(f"DROP FUNCTION IF EXISTS {OLD_SEARCH_LABELS}")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("species.sql"))


def downgrade() -> None:
    for kind, name in (
        ("VIEW", "ranger.species_daily"),
        ("VIEW", "ranger.species_daily_all"),
        ("VIEW", "ranger.occurrence"),
        ("VIEW", "ranger.label_thresholds"),
        (
            "FUNCTION",
            "ranger.search_labels(integer, integer[], integer, text[], text[], text[], time, "
            "time, date, date, timestamptz, timestamptz, real, boolean)",
        ),
        ("FUNCTION", "ranger.birdnet_week(date)"),
        ("TABLE", "occurrence"),
        ("TABLE", "occurrence_sensors"),
        ("TABLE", "label_thresholds"),
    ):
        op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
    op.execute(read_sql("frozen/0011_downgrade.sql"))
