"""One place rule (issue 27): the place filters are written once, in ``ranger._place_of``
(what each key of a place filter matches on a sensor; ``ranger._places()``: every sensor's)
and ``ranger._sensor_ids`` (the sensors that pass a place filter), and every ranger function
that filters by place takes them as one ``p_place jsonb`` (an object of lists:
``{"sites": ["Forest"], "quadrants": ["N"]}``), its p_sensors/p_sites/p_quadrants merged in.

Adding a parameter changes a function's signature, so the upgrade drops the old signatures of
``_sensor_ids``, ``search_vector``, ``search_labels``, ``search``, ``filtered_windows``,
``search_classifier``, ``_classify_batch`` and ``search_speech``, then re-applies
sql/search.sql, sql/classify.sql, sql/classifiers.sql and sql/speech.sql. Results do not change.

Downgrade drops the new signatures, ``_places`` and ``_place_of`` and restores the bodies of
before (sql/frozen/0028_downgrade.sql).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

#: the place filters as text[] arguments, and the time filters, in the functions' order
_PLACE = "text[], text[], text[]"
_TIME = "time, time, date, date, timestamptz, timestamptz"

#: the functions 0028 changes, by their signature before it (without p_place / place)
OLD = (
    f"ranger._sensor_ids({_PLACE})",
    f"ranger.search_vector(integer, vector, integer, {_PLACE}, {_TIME}, real, bigint, text, "
    "integer, integer)",
    f"ranger.search_labels(integer, integer[], integer, {_PLACE}, {_TIME}, real, boolean)",
    "ranger.search(text, integer, text, text, text, time, time, date, date)",
    f"ranger.filtered_windows(integer, {_PLACE}, {_TIME})",
    f"ranger.search_classifier(text, text, integer, {_PLACE}, {_TIME}, real, integer, text, "
    "boolean)",
    f"ranger._classify_batch(integer, bigint, bigint, boolean, {_PLACE}, {_TIME})",
    f"ranger.search_speech(text, integer, {_PLACE}, {_TIME}, boolean, real)",
)


def _new(signature: str) -> str:
    """The signature after 0028: p_place jsonb as the last argument."""
    return signature[:-1] + ", jsonb)"


def upgrade() -> None:
    for signature in OLD:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("classify.sql"))
    op.execute(read_sql("classifiers.sql"))
    op.execute(read_sql("speech.sql"))


def downgrade() -> None:
    for signature in OLD:
        op.execute(f"DROP FUNCTION IF EXISTS {_new(signature)}")
    op.execute("DROP FUNCTION IF EXISTS ranger._places()")
    op.execute("DROP FUNCTION IF EXISTS ranger._place_of(public.sensors)")
    op.execute(read_sql("frozen/0028_downgrade.sql"))
