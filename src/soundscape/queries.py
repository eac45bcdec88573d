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


@dataclass
class Filters:
    """Where and when. Times of day and dates are local to each sensor."""

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
        return {
            "sensors": self.sensors or None,
            "sites": self.sites or None,
            "quadrants": self.quadrants or None,
            "time_from": self.time_from,
            "time_to": self.time_to,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "at_from": self.at_from,
            "at_to": self.at_to,
            "min_score": self.min_score,
        }


def check_filter_names(conn: Connection, filters: Filters) -> None:
    """Unknown sensor/site/quadrant names are errors (with the known ones), not empty results."""
    for column, values, what in (
        ("name", filters.sensors, "sensor"),
        ("site", filters.sites, "site"),
        ("quadrant", filters.quadrants, "quadrant"),
    ):
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
