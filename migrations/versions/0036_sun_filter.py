"""The sun filter (issue 29): windows relative to civil dawn, sunrise, sunset and civil dusk at
their sensor (NOAA's solar calculator in SQL: ``ranger._sun_minutes``, ``_sun_at``,
``sun_times``), as a plain filter: the key ``"sun"`` of
``p_place`` (``{"sun": "sunrise-30m..sunrise+2h"}``, parsed by ``ranger._sun_spec``), checked
by ``ranger._sensor_ids`` and applied by ``ranger._filter_sql`` (a new last argument, ``p_sun``,
which its callers take from their ``p_place``) as ``ranger.in_sun_filter`` on the periods
``ranger.sun_periods`` computes once per query. ``ranger.windows`` gains
``minutes_from_sunrise`` and ``minutes_from_sunset``.

What was said follows the same rule: ``ranger._speech_filtered`` takes the periods as a new
last argument, which ``ranger.search_speech`` computes from its ``p_place``'s sun.

The upgrade drops the old signatures of ``_filter_sql`` and ``_speech_filtered`` and re-applies
sql/search.sql, sql/classify.sql, sql/classifiers.sql (whose functions now pass ``p_place``'s
sun to ``_filter_sql``) and sql/speech.sql. No public signature changes.

Downgrade drops the new functions and ``_filter_sql``'s new signature, and restores the bodies
of before and the view without the two columns (sql/frozen/0036_downgrade.sql).

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-08
"""

from alembic import op

from soundscape.resources import read_sql

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

_OLD_FILTER_SQL = (
    "ranger._filter_sql(integer[], time, time, date, date, timestamptz, timestamptz, bigint)"
)
_OLD_SPEECH_FILTERED = (
    "ranger._speech_filtered(integer[], time, time, date, date, timestamptz, timestamptz)"
)
#: the functions 0036 adds (and its downgrade drops), after _filter_sql's new signature
_NEW = (
    "ranger._filter_sql(integer[], time, time, date, date, timestamptz, timestamptz, bigint, text)",
    "ranger._speech_filtered(integer[], time, time, date, date, timestamptz, timestamptz, "
    "tstzmultirange[])",
    "ranger.in_sun_filter(integer, timestamptz, tstzmultirange[])",
    "ranger.sun_periods(text, integer[], date, date)",
    "ranger._sun_spec(text)",
    "ranger.sun_times(double precision, double precision, text, date)",
    "ranger.sun_minutes(double precision, double precision, date, text)",
    "ranger._sun_at(double precision, double precision, text, date, text)",
    "ranger._sun_minutes(double precision, double precision, date, double precision, boolean)",
)


def upgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {_OLD_FILTER_SQL}")
    op.execute(f"DROP FUNCTION IF EXISTS {_OLD_SPEECH_FILTERED}")
    op.execute(read_sql("search.sql"))
    op.execute(read_sql("classify.sql"))
    op.execute(read_sql("classifiers.sql"))
    op.execute(read_sql("speech.sql"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS ranger.windows")
    for signature in _NEW:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute(read_sql("frozen/0036_downgrade.sql"))
