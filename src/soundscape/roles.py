"""Database roles other than the owner: the read-only reader that BI tools log in as, and
reviewers, who sign in to the web page and may only insert annotations.

The reader may only read the ``ranger`` schema (SELECT on its views, EXECUTE on its search
functions); it cannot read the tables behind them nor write anything. Its session limits
(read-only transactions, a statement timeout, ``work_mem``, a hard ``temp_file_limit``) are
stored in ``reader_settings`` and applied by a login event trigger at every login, so that
``ALTER ROLE ... SET`` by the reader itself has no lasting effect (PostgreSQL lets any role
change its own defaults). A session can still ``SET`` user-level parameters for itself:
PostgreSQL has no per-role maximum for ``work_mem`` or ``statement_timeout``; the hard limits
are the privileges and ``temp_file_limit``, which only a superuser can raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import Connection as PgConnection
from psycopg import sql
from sqlalchemy.engine import Engine

from soundscape.db import raw_connection
from soundscape.errors import DatabaseError

READER_ROLE = "soundscape_reader"
LOGIN_TRIGGER = "soundscape_reader_login"

# Applied to reader sessions at login; reader_settings(role, setting, value) holds them.
LOGIN_TRIGGER_SQL = f"""
CREATE TABLE IF NOT EXISTS public.reader_settings (
    role     name NOT NULL,
    setting  text NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (role, setting)
);
REVOKE ALL ON public.reader_settings FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.{LOGIN_TRIGGER}() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $fn$
DECLARE
    s record;
BEGIN
    IF to_regclass('public.reader_settings') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT r.setting, r.value FROM public.reader_settings r
              WHERE r.role = session_user LOOP
        PERFORM pg_catalog.set_config(s.setting, s.value, false);
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION public.{LOGIN_TRIGGER}() FROM PUBLIC;
"""


@dataclass(frozen=True)
class ReaderLimits:
    """Session limits of a reader role (PostgreSQL units: ``60s``, ``64MB``, ``1GB``)."""

    statement_timeout: str = "60s"
    work_mem: str = "64MB"
    temp_file_limit: str = "1GB"
    idle_in_transaction_session_timeout: str = "10min"

    def settings(self) -> dict[str, str]:
        return {
            "default_transaction_read_only": "on",
            "statement_timeout": self.statement_timeout,
            "work_mem": self.work_mem,
            "temp_file_limit": self.temp_file_limit,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_session_timeout,
        }


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise DatabaseError(
            f"role name {name!r} must start with a letter and hold only letters, digits and "
            "underscores"
        )


def create_reader(
    engine: Engine,
    password: str,
    name: str = READER_ROLE,
    *,
    limits: ReaderLimits | None = None,
    revoke_other_databases: bool = False,
) -> list[str]:
    """Create (or update) the read-only login role ``name``; returns warnings to show.

    ``revoke_other_databases`` revokes CONNECT from PUBLIC on the server's other databases
    (right for a server that only holds soundscape, such as the embedded one); without it, the
    databases the role could still connect to are named in a warning.
    """
    _check_name(name)
    if not password:
        raise DatabaseError("the reader role needs a password (it logs in with scram-sha-256)")
    settings = (limits or ReaderLimits()).settings()
    warnings: list[str] = []
    role = sql.Identifier(name)
    with engine.begin() as conn:
        raw = raw_connection(conn)
        row = raw.execute(
            "SELECT rolsuper, current_setting('server_version_num')::int, current_database() "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row is not None
        superuser, version, dbname = row
        if not superuser:
            settings.pop("temp_file_limit")
            warnings.append("temp_file_limit not set: only a superuser may set it")
        for setting, value in settings.items():  # reject bad values before changing anything
            raw.execute("SAVEPOINT check_setting")
            try:
                raw.execute("SELECT set_config(%s, %s, true)", [setting, value])
            except psycopg.DataError as exc:  # class 22: an invalid value
                raise DatabaseError(f"invalid {setting} {value!r}: {exc}") from exc
            finally:
                raw.execute("ROLLBACK TO SAVEPOINT check_setting")
        exists = raw.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
        if not exists:
            raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        raw.execute(
            sql.SQL(
                "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ).format(role, sql.Literal(password))
        )
        for stmt in (
            "GRANT CONNECT ON DATABASE {db} TO {r}",
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {r}",
            "GRANT USAGE ON SCHEMA ranger TO {r}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA ranger TO {r}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ranger TO {r}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA ranger GRANT SELECT ON TABLES TO {r}",
            "ALTER ROLE {r} SET default_transaction_read_only = on",
        ):
            raw.execute(sql.SQL(stmt).format(db=sql.Identifier(dbname), r=role))
        # Internal helpers (``_name``, run by the SECURITY DEFINER search functions as the
        # owner) and the functions that write (``refresh_*``) are not the reader's to call.
        internal = raw.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ranger' "
            r"AND (p.proname LIKE '\_%' OR p.proname LIKE 'refresh\_%')"
        ).fetchall()
        for (signature,) in internal:
            raw.execute(
                sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC, {}").format(
                    sql.SQL(signature), role
                )
            )
        for setting, value in settings.items():
            raw.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    role, sql.Identifier(dbname), sql.Identifier(setting), sql.Literal(value)
                )
            )
        if superuser and version >= 170000:
            _install_login_trigger(raw, name, settings)
        else:
            warnings.append(
                "the role's limits are its defaults, which it could change itself with ALTER "
                "ROLE: enforcing them at every login needs a login event trigger "
                "(PostgreSQL 17 or later, created by a superuser)"
            )
        warnings += _other_databases(raw, name, dbname, revoke_other_databases)
    return warnings


def _install_login_trigger(raw: PgConnection, name: str, settings: dict[str, str]) -> None:
    raw.execute(LOGIN_TRIGGER_SQL)
    raw.execute("DELETE FROM public.reader_settings WHERE role = %s", [name])
    for setting, value in settings.items():
        raw.execute(
            "INSERT INTO public.reader_settings (role, setting, value) VALUES (%s, %s, %s)",
            [name, setting, value],
        )
    present = raw.execute(
        "SELECT 1 FROM pg_event_trigger WHERE evtname = %s", [LOGIN_TRIGGER]
    ).fetchone()
    if not present:
        raw.execute(
            sql.SQL("CREATE EVENT TRIGGER {} ON login EXECUTE FUNCTION public.{}()").format(
                sql.Identifier(LOGIN_TRIGGER), sql.Identifier(LOGIN_TRIGGER)
            )
        )


def _other_databases(raw: PgConnection, name: str, dbname: str, revoke: bool) -> list[str]:
    """Databases other than ours the role can connect to; revoked from PUBLIC if asked."""
    query = (
        "SELECT datname FROM pg_database WHERE datname <> %s AND datallowconn "
        "AND has_database_privilege(%s, oid, 'CONNECT') ORDER BY datname"
    )
    others = [r[0] for r in raw.execute(query, [dbname, name]).fetchall()]
    if not others:
        return []
    if revoke:
        for other in others:
            raw.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                    sql.Identifier(other), sql.Identifier(name)
                )
            )
        others = [r[0] for r in raw.execute(query, [dbname, name]).fetchall()]
        if not others:
            return []
    return [
        f"role {name} can also connect to database(s) {', '.join(others)} (CONNECT granted "
        "to PUBLIC there): revoke it with REVOKE CONNECT ON DATABASE <name> FROM PUBLIC, or "
        "rerun with --revoke-other-databases"
    ]


# ------------------------------------------------------------------------------ reviewers
REVIEWER_ROLE = "soundscape_reviewer"

#: What the reviewer group may do, and nothing else: insert annotations (the columns a
#: validated hit has; migration 0014's trigger then sets author and source), read back the new
#: row's id (INSERT ... RETURNING id) and draw ids from the table's sequence.
REVIEWER_GRANTS = (
    "GRANT CONNECT ON DATABASE {db} TO {g}",
    "GRANT USAGE ON SCHEMA public TO {g}",
    "GRANT INSERT (recording_id, start_s, end_s, low_hz, high_hz, label, verdict, author, "
    "source, note, segment_id) ON public.annotations TO {g}",
    "GRANT SELECT (id) ON public.annotations TO {g}",
    "GRANT USAGE ON SEQUENCE public.annotations_id_seq TO {g}",
)


def create_reviewer(
    engine: Engine,
    name: str,
    password: str,
    *,
    statement_timeout: str = "10s",
    revoke_other_databases: bool = False,
) -> list[str]:
    """Create (or update the password of) the reviewer login role ``name``: a member of the
    group role ``soundscape_reviewer``, which may insert annotations and nothing else (it reads
    no table; ``soundscape serve`` signs reviewers in with this role and writes their verdicts
    through it). Returns warnings to show.

    An existing role that is not a reviewer is refused: this never turns the owner, the reader
    or another role into a reviewer.
    """
    _check_name(name)
    if name in (REVIEWER_ROLE, READER_ROLE):
        raise DatabaseError(f"{name} is a group/service role; give the reviewer's own name")
    if not password:
        raise DatabaseError("a reviewer needs a password (to sign in to the web page)")
    group, role = sql.Identifier(REVIEWER_ROLE), sql.Identifier(name)
    with engine.begin() as conn:
        raw = raw_connection(conn)
        dbname = raw.execute("SELECT current_database()").fetchone()
        assert dbname is not None
        raw.execute("SAVEPOINT check_setting")
        try:
            raw.execute("SELECT set_config('statement_timeout', %s, true)", [statement_timeout])
        except psycopg.DataError as exc:
            raise DatabaseError(f"invalid statement timeout {statement_timeout!r}: {exc}") from exc
        finally:
            raw.execute("ROLLBACK TO SAVEPOINT check_setting")
        if not raw.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [REVIEWER_ROLE]).fetchone():
            raw.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
        for stmt in REVIEWER_GRANTS:
            raw.execute(sql.SQL(stmt).format(db=sql.Identifier(dbname[0]), g=group))
        existing = raw.execute(
            "SELECT r.rolsuper OR NOT pg_has_role(r.oid, %s, 'MEMBER') FROM pg_roles r "
            "WHERE r.rolname = %s",
            [REVIEWER_ROLE, name],
        ).fetchone()
        if existing is not None and existing[0]:
            raise DatabaseError(
                f"role {name} exists and is not a reviewer; choose another name (a reviewer "
                "role must be used for nothing else)"
            )
        if existing is None:
            raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        raw.execute(
            sql.SQL(
                "ALTER ROLE {} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS PASSWORD {}"
            ).format(role, sql.Literal(password))
        )
        raw.execute(sql.SQL("GRANT {} TO {}").format(group, role))
        raw.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET statement_timeout = {}").format(
                role, sql.Identifier(dbname[0]), sql.Literal(statement_timeout)
            )
        )
        return _other_databases(raw, name, dbname[0], revoke_other_databases)


def is_reviewer(conn: PgConnection) -> bool:
    """Whether the role of a connection is a reviewer (a member of ``soundscape_reviewer``
    that is not a superuser)."""
    row = conn.execute(
        "SELECT CASE WHEN to_regrole(%s) IS NULL OR r.rolsuper THEN false "
        "ELSE pg_has_role(r.oid, %s, 'USAGE') END FROM pg_roles r WHERE r.rolname = current_user",
        [REVIEWER_ROLE, REVIEWER_ROLE],
    ).fetchone()
    return bool(row and row[0])
