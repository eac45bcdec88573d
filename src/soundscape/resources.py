"""Locate the files shipped beside the code: Alembic ``migrations/`` and the ``sql/`` scripts.

In a source checkout (editable install) they sit at the top of the repository; in a wheel they
are copied into the package as ``soundscape/_migrations`` and ``soundscape/_sql``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(packaged: str, top_level: str) -> Path:
    inside = _PACKAGE / packaged
    if inside.is_dir():
        return inside
    checkout = _PACKAGE.parent.parent / top_level
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"cannot find soundscape's {top_level}/ directory (broken install?)")


def migrations_dir() -> Path:
    return _find("_migrations", "migrations")


def sql_dir() -> Path:
    return _find("_sql", "sql")


def read_sql(name: str) -> str:
    return (sql_dir() / name).read_text(encoding="utf-8")
