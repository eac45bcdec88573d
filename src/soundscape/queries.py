"""What a search ranks by (``Query``: a space and a vector, a label set or a classifier) and
where and when it looks (``Filters``: sensors, sites, quadrants, local times and dates).

These are the plain types the search, concepts, classifiers, classify and annotations modules
share; building them from user input is ``soundscape.search``'s job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import SoundscapeError
from soundscape.spaces import Space

#: the time filters and their SQL types (the arguments of ``ranger.in_time_filter``, in order)
TIME_TYPES = {
    "time_from": "time",
    "time_to": "time",
    "date_from": "date",
    "date_to": "date",
    "at_from": "timestamptz",
    "at_to": "timestamptz",
}
#: the SQL type of each filter argument: every ranger function that filters takes them as
#: arguments named p_<key>: the place filters as one jsonb object of lists (p_place, see
#: ``ranger._sensor_ids``), the time filters one by one (p_time_from, ..., p_at_to)
FILTER_TYPES = {"place": "jsonb", **TIME_TYPES}

#: the time filters as named SQL arguments (``p_time_from => CAST(:time_from AS time), ...``)
TIME_ARGS = ", ".join(f"p_{k} => CAST(:{k} AS {t})" for k, t in TIME_TYPES.items())
#: the filters as named SQL arguments (``p_place => CAST(:place AS jsonb), p_time_from =>
#: ...``), for a call such as ``ranger.filtered_windows(:space, {FILTER_ARGS})`` (arguments
#: after them must be named too); bound by ``Filters.params()``
FILTER_ARGS = ", ".join(f"p_{k} => CAST(:{k} AS {t})" for k, t in FILTER_TYPES.items())


def place_field() -> Any:
    """A place filter's field of ``Filters`` (a list of names, None: no filter), named like its
    key in ``ranger._place_of``: ``params()`` and ``where()`` pass it to SQL in ``p_place``."""
    return field(default=None, metadata={"place": True})


@dataclass
class Filters:
    """Where and when. Times of day and dates are local to each sensor.

    The rules that turn them into SQL live in one place each: ``ranger._sensor_ids`` (with
    ``ranger._place_of``: sql/search.sql) for the place, ``ranger.in_time_filter`` for the
    times. The ranger functions take them as arguments (``FILTER_ARGS`` with ``params()``: the
    place fields as one jsonb object, ``p_place``); a query built here gets its conditions from
    ``where()``, which calls the same SQL functions. A new place filter is a key of
    ``ranger._place_of`` and a field here declared with ``place_field()``; a new time filter, a
    field, ``TIME_TYPES`` and ``ranger.in_time_filter``."""

    sensors: list[str] | None = place_field()
    sites: list[str] | None = place_field()
    quadrants: list[str] | None = place_field()
    time_from: time | None = None
    time_to: time | None = None
    date_from: date | None = None
    date_to: date | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None
    #: the sun filter (``soundscape.sun``: "dawn", "sunrise-30m..sunrise+2h"), sent to SQL in
    #: ``p_place`` as its key "sun" (``ranger._filter_sql``: ``ranger.in_sun_filter``)
    sun: str | None = None
    min_score: float | None = None

    def place(self) -> dict[str, list[str]]:
        """The place filters given (field name: the names; empty lists left out)."""
        keys = (f.name for f in fields(self) if f.metadata.get("place"))
        return {k: list(v) for k in keys if (v := getattr(self, k))}

    def place_json(self) -> str | None:
        """The place filters as ``ranger._sensor_ids``' ``p_place``, with the sun filter as its
        key "sun" (None: neither)."""
        place: dict[str, Any] = self.place()
        if self.sun:
            place["sun"] = self.sun
        return json.dumps(place) if place else None

    def given(self) -> dict[str, Any]:
        """The filters given (no ``min_score``), by field name: what a run stores."""
        times = {k: v for k in TIME_TYPES if (v := getattr(self, k)) is not None}
        return {**self.place(), **times, **({"sun": self.sun} if self.sun else {})}

    def params(self) -> dict[str, Any]:
        """The filters as the bound parameters of ``FILTER_ARGS`` (``place``: a JSON object of
        the place filters, or None; the time filters by field name) and ``min_score``."""
        times = {k: getattr(self, k) for k in TIME_TYPES}
        return {"place": self.place_json(), **times, "min_score": self.min_score}

    def where(
        self,
        alias: str,
        *,
        place: str | None = None,
        sensor: str = "sensor",
        times: bool = True,
    ) -> tuple[list[str], dict[str, Any]]:
        """WHERE conditions (and their parameters, named ``f_*``) for rows ``alias`` with
        ``local_time``, ``local_date`` and ``starts_at`` columns, whose sensor's name is column
        ``sensor`` of ``place`` (default: ``alias``). ``times=False``: the rows have a local
        date only (no time of day or instant: a time or instant filter is then an error of the
        caller). ``min_score`` is not a condition here."""
        place = place or alias
        where: list[str] = []
        params: dict[str, Any] = {}
        if self.place():
            # the sensors that pass, by the one rule (called once: a scalar subquery)
            where.append(
                f"{place}.{sensor} IN (SELECT ps.name FROM sensors ps WHERE ps.id = ANY(CAST(("
                "SELECT ranger._sensor_ids(p_place => CAST(:f_place AS jsonb))) AS integer[])))"
            )
            params["f_place"] = self.place_json()
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
        if self.sun:
            if not times:
                raise SoundscapeError(
                    "these rows have a local date only: a sun filter needs their times"
                )
            # the sun rule (ranger.in_sun_filter); its periods computed once (an InitPlan)
            where.append(
                f"ranger.in_sun_filter((SELECT ps.id FROM sensors ps WHERE ps.name = "
                f"{place}.{sensor}), {alias}.starts_at, (SELECT ranger.sun_periods("
                "CAST(:f_sun AS text), NULL, CAST(:f_date_from AS date), "
                "CAST(:f_date_to AS date))))"
            )
            params.update(f_sun=self.sun, f_date_from=self.date_from, f_date_to=self.date_to)
        return where, params


#: the place filters: the fields of ``Filters`` declared with ``place_field()``, each a key of
#: ``ranger._place_of``
PLACE_KEYS = tuple(f.name for f in fields(Filters) if f.metadata.get("place"))


def check_filter_names(conn: Connection, filters: Filters) -> None:
    """Unknown sensor/site/quadrant names (any place filter's) are errors (with the known
    ones), not empty results. The known names are the sensors' places (``ranger._places()``)."""
    for key, values in filters.place().items():
        what = key.removesuffix("s")
        known = set(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT p.value FROM ranger._places() x, jsonb_each_text(x.place) p "
                    "WHERE p.key = :key AND p.value IS NOT NULL"
                ),
                {"key": key},
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
