"""Database engine, URL handling and schema migrations (Alembic, run from code).

Alembic itself (0.17 s of CPU to import, a seventh of the CLI's start-up) is imported only when
a migration runs: every command checks the schema revision, which needs no Alembic (the head is
the newest file of migrations/versions, the current revision one row of ``alembic_version``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import sqlalchemy as sa
from pgvector import psycopg as pgvector_psycopg
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from soundscape import cluster, embedded_db
from soundscape.auth import auth_options
from soundscape.errors import DatabaseError
from soundscape.resources import migrations_dir

if TYPE_CHECKING:
    from alembic.config import Config


def normalize_url(url: str) -> str:
    """Accept ``postgres://``, ``postgresql://`` and ``postgresql+psycopg://`` URLs."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(
            f"not a database URL: {mask_url(url)!r}; expected postgresql://user:pass@host/db"
        ) from exc
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise DatabaseError(
        f"soundscape needs PostgreSQL with pgvector; got a {parsed.drivername!r} URL"
    )


def libpq_url(url: str) -> str:
    """The URL in the form libpq (psql, BI tools) accepts: ``postgresql://...``."""
    return (
        make_url(normalize_url(url))
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def mask_url(url: str) -> str:
    """The URL with its password hidden, for messages and ``db url``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


@dataclass
class Database:
    """A connected soundscape database."""

    url: str
    engine: Engine
    embedded: bool

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # only when a migration runs (see the module docstring)

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*(?:"([^"]*)"|None)', re.MULTILINE)


def head_revision() -> str | None:
    """The newest revision of migrations/versions: the one no other migration revises (what
    Alembic's ``ScriptDirectory.get_current_head()`` returns for this linear history; a test
    checks they agree), read from the files without importing Alembic or the migrations."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (migrations_dir() / "versions").glob("*.py"):
        for key, value in _REVISION.findall(path.read_text()):
            (revisions if key == "revision" else revised).add(value)
    heads = sorted(revisions - revised - {""})
    if len(heads) > 1:
        raise DatabaseError(f"the migrations have several heads: {', '.join(heads)}")
    return heads[0] if heads else None


def current_revision(conn: Connection) -> str | None:
    """The schema revision stamped in the database (None before the first migration)."""
    if conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar() is None:
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Migrate the schema to ``revision``; on a Citus coordinator, then lay the tables out over
    the cluster (``soundscape.cluster``). Returns notes for the user (empty on one server)."""
    from alembic import command  # only when a migration runs (see the module docstring)

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return cluster.prepare(engine)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine for ``url`` whose connections refuse cleartext and MD5 password
    requests (``auth_options``; a ``require_auth`` in ``connect_args`` replaces the default,
    one in the URL is overridden); ``kwargs`` go to ``create_engine``."""
    connect_args = {**auth_options(), **kwargs.pop("connect_args", {})}
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(normalize_url(url), connect_args=connect_args, **kwargs)


def open_database(
    url: str | None, *, check: bool = True, upgrade_embedded: bool = True
) -> Database:
    """Connect to ``url`` (or the embedded server, started on demand) and check the schema.

    The embedded database migrates itself; any other database must be at the head revision or
    this raises a ``DatabaseError`` naming the command that fixes it.
    """
    embedded = url is None
    if embedded:
        url = embedded_db.ensure_running_url()
    assert url is not None
    engine = make_engine(url)
    db = Database(url=normalize_url(url), engine=engine, embedded=embedded)
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = (
            "Check the URL given with --database/-d or SOUNDSCAPE_DATABASE_URL (or unset it "
            "to use the embedded database)."
        )
        if "authentication method requirement" in reason:
            hint = (
                "soundscape never sends a password in cleartext or as an MD5 hash: have the "
                "server use scram-sha-256 for this role (pg_hba.conf, and the password set "
                "again with password_encryption = scram-sha-256)."
            )
        raise DatabaseError(f"cannot connect to {db.safe_url}: {reason}. {hint}") from exc
    if check:
        head = head_revision()
        if current != head:
            if embedded and upgrade_embedded:
                upgrade(engine)
            elif current is None:
                raise DatabaseError(
                    f"database {db.safe_url} has no soundscape schema yet; "
                    "create it with `soundscape db upgrade`"
                )
            else:
                raise DatabaseError(
                    f"database {db.safe_url} is at schema revision {current}, this soundscape "
                    f"needs {head}; run `soundscape db upgrade`"
                )
    return db


def raw_connection(conn: Connection) -> psycopg.Connection:
    """The psycopg connection behind a SQLAlchemy connection (for COPY and psycopg.sql)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection), "soundscape needs the psycopg driver"
    return raw


def register_vector(conn: Connection) -> None:
    """Register pgvector's psycopg adapters on the DBAPI connection behind ``conn`` (once)."""
    raw = raw_connection(conn)
    if not getattr(raw, "_soundscape_vector", False):
        pgvector_psycopg.register_vector(raw)
        raw._soundscape_vector = True  # type: ignore[attr-defined]
