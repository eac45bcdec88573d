"""Sensors (recorders): where and in which timezone recordings are made."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import SoundscapeError
from soundscape.occurrence import sensor_changed


@dataclass(frozen=True)
class Sensor:
    id: int
    name: str
    site: str | None
    quadrant: str | None
    latitude: float | None
    longitude: float | None
    timezone: str
    metadata: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "id, name, site, quadrant, latitude, longitude, timezone, metadata"


def _from_row(row: Any) -> Sensor:
    m = dict(row._mapping)
    m["metadata"] = dict(m["metadata"] or {})
    return Sensor(**m)


def check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        close = sorted(z for z in available_timezones() if tz.lower() in z.lower())[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SoundscapeError(
            f"unknown timezone {tz!r}{hint}; use an IANA name such as Europe/Berlin or UTC"
        ) from exc
    return tz


#: how deeply a sensor's metadata may nest (objects and arrays); PostgreSQL's jsonb and every
#: reader after it would otherwise have to cope with JSON nested thousands deep
MAX_METADATA_DEPTH = 32


def check_metadata(metadata: Any) -> dict[str, Any]:
    """A sensor's extra fields: a JSON object, nested at most ``MAX_METADATA_DEPTH`` deep,
    without NUL characters (PostgreSQL's text and jsonb cannot hold them)."""
    if not isinstance(metadata, dict):
        raise SoundscapeError('sensor metadata must be a JSON object, e.g. \'{"owner": "NABU"}\'')
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise SoundscapeError(
                    f"sensor metadata is nested more than {MAX_METADATA_DEPTH} levels deep; "
                    "flatten it"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    raise SoundscapeError("sensor metadata keys must not contain NUL (\\u0000)")
                stack.append((item, depth + 1))
        elif isinstance(value, str) and "\x00" in value:
            raise SoundscapeError("sensor metadata values must not contain NUL (\\u0000)")
        elif isinstance(value, float) and not math.isfinite(value):
            raise SoundscapeError(
                f"sensor metadata holds {value}, which JSON (and PostgreSQL's jsonb) cannot "
                "store; use a number, null or a string"
            )
    return metadata


def check_name(name: str) -> str:
    """A sensor name: not empty or blank, no NUL, at most 200 characters."""
    if not name or not name.strip():
        raise SoundscapeError("a sensor needs a name, e.g. `soundscape sensors add AM-01`")
    if "\x00" in name or len(name) > 200:
        raise SoundscapeError(
            f"sensor name {name[:40]!r}... is not usable (NUL or over 200 characters)"
        )
    return name


def add_sensor(
    conn: Connection,
    name: str,
    *,
    site: str | None = None,
    quadrant: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    timezone: str = "UTC",
    metadata: dict[str, Any] | None = None,
    update: bool = False,
) -> Sensor:
    """Create a sensor (or, with ``update``, change an existing one's fields)."""
    check_name(name)
    check_timezone(timezone)
    check_metadata(metadata if metadata is not None else {})
    if latitude is not None and not -90 <= latitude <= 90:
        raise SoundscapeError(f"latitude {latitude} is out of range (-90..90)")
    if longitude is not None and not -180 <= longitude <= 180:
        raise SoundscapeError(f"longitude {longitude} is out of range (-180..180)")
    params = {
        "name": name,
        "site": site,
        "quadrant": quadrant,
        "lat": latitude,
        "lon": longitude,
        "tz": timezone,
        "meta": json.dumps(metadata or {}),
    }
    conflict = (
        "DO UPDATE SET site = EXCLUDED.site, quadrant = EXCLUDED.quadrant, "
        "latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, "
        "timezone = EXCLUDED.timezone, metadata = EXCLUDED.metadata"
        if update
        else "DO NOTHING"
    )
    row = conn.execute(
        sa.text(
            "INSERT INTO sensors (name, site, quadrant, latitude, longitude, timezone, metadata) "
            "VALUES (:name, :site, :quadrant, :lat, :lon, :tz, CAST(:meta AS jsonb)) "
            f"ON CONFLICT (name) {conflict} RETURNING {_COLUMNS}"
        ),
        params,
    ).fetchone()
    if row is None:
        raise SoundscapeError(
            f"sensor {name!r} already exists; use `soundscape sensors add --update` to change it"
        )
    sensor = _from_row(row)
    if update:
        # Local dates and times of stored windows follow the sensor's (possibly new) timezone.
        conn.execute(
            sa.text(
                "UPDATE segments g SET local_date = (g.starts_at AT TIME ZONE :tz)::date, "
                "local_time = (g.starts_at AT TIME ZONE :tz)::time "
                "FROM recordings r WHERE r.id = g.recording_id AND r.sensor_id = :sid "
                "AND g.starts_at IS NOT NULL "
                "AND g.local_time IS DISTINCT FROM (g.starts_at AT TIME ZONE :tz)::time"
            ),
            {"tz": timezone, "sid": sensor.id},
        )
        # ... and so do those of transcribed speech (soundscape.speech)
        conn.execute(
            sa.text(
                "UPDATE utterances u SET local_date = (u.starts_at AT TIME ZONE :tz)::date, "
                "local_time = (u.starts_at AT TIME ZONE :tz)::time "
                "WHERE u.sensor_id = :sid AND u.starts_at IS NOT NULL "
                "AND u.local_time IS DISTINCT FROM (u.starts_at AT TIME ZONE :tz)::time"
            ),
            {"tz": timezone, "sid": sensor.id},
        )
    # BirdNET's location/season filter follows the sensor's coordinates (soundscape.occurrence)
    sensor_changed(conn, sensor.id, sensor.latitude, sensor.longitude)
    return sensor


def get_sensor(conn: Connection, name: str) -> Sensor:
    row = conn.execute(
        sa.text(f"SELECT {_COLUMNS} FROM sensors WHERE name = :n"), {"n": name}
    ).fetchone()
    if row is None:
        raise SoundscapeError(
            f"no sensor named {name!r}; create it with `soundscape sensors add {name} "
            "--site SITE --quadrant Q --timezone Area/City`"
        )
    return _from_row(row)


def list_sensors(conn: Connection) -> list[Sensor]:
    return [
        _from_row(r) for r in conn.execute(sa.text(f"SELECT {_COLUMNS} FROM sensors ORDER BY name"))
    ]
