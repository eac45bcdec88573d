"""The filter options (``--sensor``, ``--site``, ``--quadrant``, ``--time``, ``--from``,
``--to``, ``--sun``), declared once for every command that filters: ``@filter_options`` adds them and hands
the command one argument, ``filters`` (``FilterOptions``: what was given; ``.build()`` makes
the ``queries.Filters``, a bad value being a usage error naming the option).

A new place filter (a field of ``queries.Filters`` and a key of ``ranger._place_of``) is one
more line of ``PLACE_OPTIONS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from soundscape.queries import Filters

#: the place filter options: (flags, the ``Filters`` field they fill, help); each repeatable
PLACE_OPTIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("-s", "--sensor"), "sensors", "Only this sensor (repeatable)."),
    (("--site",), "sites", "Only this site (repeatable)."),
    (("--quadrant",), "quadrants", "Only this quadrant (repeatable)."),
)

#: the time filter options (parsed by ``search.parse_filters``)
_TIME_OPTIONS = (
    click.option(
        "--time",
        "time_range",
        metavar="HH:MM-HH:MM",
        help="Local time of day at each sensor; may cross midnight (22:00-04:00).",
    ),
    click.option(
        "--from",
        "date_from",
        metavar="WHEN",
        help="From a local date (YYYY-MM-DD, today, 7d) or an ISO time with offset.",
    ),
    click.option(
        "--to",
        "date_to",
        metavar="WHEN",
        help="To a local date (inclusive) or an ISO time with offset (exclusive).",
    ),
    click.option(
        "--sun",
        "sun",
        metavar="PERIOD",
        help="Relative to the sun at each sensor (needs its --lat/--lon): dawn, sunrise, day, "
        "sunset, dusk, night, or a range such as sunrise-30m..sunrise+2h.",
    ),
)
_TIME_NAMES = ("time_range", "date_from", "date_to", "sun")


@dataclass(frozen=True)
class FilterOptions:
    """The filter options as given (a command's ``filters`` argument)."""

    #: each place option's values by its ``Filters`` field (``sensors``: ("north-1",), ...)
    place: Mapping[str, Sequence[str]]
    time_range: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    sun: str | None = None

    def build(self, min_score: float | None = None) -> Filters:
        """The options as ``Filters`` (see ``build_filters``)."""
        return build_filters(
            self.place, self.time_range, self.date_from, self.date_to, min_score, self.sun
        )


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the filter options to the command ``f``, which gets them as ``filters``
    (``FilterOptions``)."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        place = {field: kwargs.pop(field) for _, field, _ in PLACE_OPTIONS}
        times = {name: kwargs.pop(name) for name in _TIME_NAMES}
        return f(*args, filters=FilterOptions(place, **times), **kwargs)

    options = [
        click.option(*flags, field, multiple=True, help=text)
        for flags, field, text in PLACE_OPTIONS
    ]
    for option in reversed([*options, *_TIME_OPTIONS]):
        command = option(command)
    return command


def build_filters(
    place: Mapping[str, Sequence[str]],
    time_range: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    min_score: float | None = None,
    sun: str | None = None,
) -> Filters:
    """The filter options as ``Filters``: ``place`` by ``Filters`` field (``search.parse_filters``
    for the rest; a bad value is a usage error naming the option)."""
    from soundscape.search import parse_filters

    given = (("--time", time_range), ("--from", date_from), ("--to", date_to), ("--sun", sun))
    for option, value in given:
        if value is not None and not value.strip():  # was ignored: an unfiltered search
            raise click.BadParameter(
                "empty; give a value (e.g. --time 22:00-04:00, --from 7d) or leave the option out",
                param_hint=option,
            )
    flag = {field: flags[-1] for flags, field, _ in PLACE_OPTIONS}
    for field, names in place.items():
        if any(not (n or "").strip() for n in names or ()):
            raise click.BadParameter(
                "empty; name one or leave the option out", param_hint=flag.get(field, field)
            )
    filters = parse_filters(None, None, None, time_range, date_from, date_to, min_score, sun)
    given_place: dict[str, Any] = {f: list(names or []) or None for f, names in place.items()}
    return replace(filters, **given_place)
