"""What a search ranks by (``Query``: a space and a vector, a label set or a classifier) and
where and when it looks (``Filters``: sensors, sites, quadrants, local times and dates).

These are the plain types the search, concepts, classifiers, classify and annotations modules
share; building them from user input is ``soundscape.search``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import SoundscapeError
from soundscape.spaces import Space

#: the place filters: each field of ``Filters`` and the column of ``sensors`` it matches (by
#: name: ``check_filter_names`` and ``Filters.where``; by id: ``ranger._sensor_ids``)
PLACE_COLUMNS = {"sensors": "name", "sites": "site", "quadrants": "quadrant"}
#: the time filters and their SQL types (the arguments of ``ranger.in_time_filter``, in order)
TIME_TYPES = {
    "time_from": "time",
    "time_to": "time",
    "date_from": "date",
    "date_to": "date",
    "at_from": "timestamptz",
    "at_to": "timestamptz",
}
#: the SQL type of each filter: every ranger function that filters takes them as arguments
#: named p_<key> (p_sensors, p_sites, ..., p_at_to: sql/search.sql)
FILTER_TYPES = {**dict.fromkeys(PLACE_COLUMNS, "text[]"), **TIME_TYPES}

#: the filters as named SQL arguments (``p_sensors => CAST(:sensors AS text[]), ...``), for a
#: call such as ``ranger.filtered_windows(:space, {FILTER_ARGS})`` (arguments after them must
#: be named too); bound by ``Filters.params()``
FILTER_ARGS = ", ".join(f"p_{k} => CAST(:{k} AS {t})" for k, t in FILTER_TYPES.items())


@dataclass
class Filters:
    """Where and when. Times of day and dates are local to each sensor.

    The rule that turns them into SQL lives in one place: ``ranger.in_time_filter``
    (sql/search.sql) for the times, ``ranger._sensor_ids`` for the place. The ranger functions
    take them as arguments (``FILTER_ARGS`` with ``params()``); a query built here gets its
    conditions from ``where()``, which calls the same SQL function. A new place filter (a
    column of ``sensors``) is a field here, an entry of ``PLACE_COLUMNS`` and an argument of
    ``ranger._sensor_ids``; a new time filter, a field, ``TIME_TYPES`` and
    ``ranger.in_time_filter``."""

    sensors: list[str] | None = None
    sites: list[str] | None = None
    quadrants: list[str] | None = None
    time_from: time | None = None
    time_to: time | None = None
    date_from: date | None = None
    date_to: date | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None
    min_score: float | None = None

    def params(self) -> dict[str, Any]:
        """The filters as bound parameters (named like their fields; empty lists as None)."""
        place = {k: getattr(self, k) or None for k in PLACE_COLUMNS}
        return {**place, **{k: getattr(self, k) for k in TIME_TYPES}, "min_score": self.min_score}

    def where(
        self,
        alias: str,
        *,
        place: str | None = None,
        sensor: str = "sensor",
        times: bool = True,
    ) -> tuple[list[str], dict[str, Any]]:
        """WHERE conditions (and their parameters, named ``f_*``) for rows ``alias`` with
        ``local_time``, ``local_date`` and ``starts_at`` columns, whose place columns
        (``sensor``: the sensor's name, ``site``, ``quadrant``) are those of ``place`` (default:
        ``alias``). ``times=False``: the rows have a local date only (no time of day or instant:
        a time or instant filter is then an error of the caller). ``min_score`` is not a
        condition here."""
        place = place or alias
        where: list[str] = []
        params: dict[str, Any] = {}
        for key, column in PLACE_COLUMNS.items():
            values = getattr(self, key)
            if values:
                column = sensor if column == "name" else column
                where.append(f"{place}.{column} = ANY(:f_{key})")
                params[f"f_{key}"] = list(values)
        when = {k: getattr(self, k) for k in TIME_TYPES}
        if any(v is not None for v in when.values()):
            if not times and any(v is not None for k, v in when.items() if "date" not in k):
                raise SoundscapeError(
                    "these rows have a local date only: filter them by dates (--from/--to)"
                )
            columns = (
                f"{alias}.local_time, {alias}.local_date, {alias}.starts_at"
                if times
                else f"NULL::time, {alias}.local_date, NULL::timestamptz"
            )
            args = ", ".join(f"CAST(:f_{k} AS {t})" for k, t in TIME_TYPES.items())
            where.append(f"ranger.in_time_filter({columns}, {args})")
            params.update({f"f_{k}": v for k, v in when.items()})
        return where, params


def check_filter_names(conn: Connection, filters: Filters) -> None:
    """Unknown sensor/site/quadrant names are errors (with the known ones), not empty results."""
    for key, column in PLACE_COLUMNS.items():
        values, what = getattr(filters, key), key.removesuffix("s")
        if not values:
            continue
        known = set(
            conn.execute(
                sa.text(f"SELECT DISTINCT {column} FROM sensors WHERE {column} IS NOT NULL")
            ).scalars()
        )
        missing = [v for v in values if v not in known]
        if missing:
            raise SoundscapeError(
                f"unknown {what} {', '.join(map(repr, missing))}; known: "
                f"{', '.join(sorted(known)) or 'none'}"
            )


@dataclass
class Query:
    """What to rank by, in which space."""

    space: Space
    description: str
    vector: np.ndarray | None = None
    label_ids: list[int] | None = None
    exclude: int | None = None
    kind: str = "text"
    #: a score floor implied by the query (a concept's threshold)
    min_score: float | None = None
    #: kind "classifier": (name, version, label) of a trained classifier (soundscape.classifiers)
    classifier: tuple[str, int, str] | None = None

    @property
    def is_labels(self) -> bool:
        return self.label_ids is not None
