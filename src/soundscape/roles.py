"""Database roles other than the owner: the read-only reader that BI tools log in as, and
reviewers, who sign in to the web page and may only insert annotations.

The reader may only read the ``ranger`` schema (SELECT on its views, EXECUTE on its search
functions); it cannot read the tables behind them nor write anything. Reviewers may only insert
annotations. What holds, whatever a hostile session of either does:

- **Privileges, not settings, stop writes.** A session may ``SET default_transaction_read_only =
  off`` (PostgreSQL has no way to forbid it), so nothing depends on it: in the soundscape
  database PUBLIC has no TEMPORARY right (no temp tables, whose size ``temp_file_limit`` does
  not cap), no EXECUTE on the large-object functions (``lo_from_bytea``, ``lo_create``, ...:
  large objects outlive the session) and none on the advisory-lock functions (a reader holding
  ``soundscape.spaces`` would block ingest forever); the database owner keeps the advisory
  locks (:func:`lock_down_database`, also run by migration 0023).
- **Limits re-applied at every login.** Each role's limits (read-only transactions, a statement
  timeout, ``work_mem``, a hard ``temp_file_limit``) are stored in ``reader_settings`` and set
  by a login event trigger, so ``ALTER ROLE ... SET`` by the role itself (which PostgreSQL
  always allows) has no lasting effect. A session can still ``SET`` user-level parameters for
  itself (PostgreSQL has no per-role maximum for ``work_mem`` or ``statement_timeout``); the
  hard limits are the privileges and ``temp_file_limit``, which only a superuser can raise.
- **A role may change its own password**: PostgreSQL always allows ``ALTER ROLE CURRENT_USER
  PASSWORD`` and no privilege or trigger can prevent it (event triggers do not fire for
  roles). It gives no right: the role only locks itself out, and ``db create-reader`` /
  ``db create-reviewer`` sets the password again.
- **Existing roles are never rewritten into another kind**: creating a reader or reviewer with
  the name of a role that is not already a soundscape role of that kind is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import Connection as PgConnection
from psycopg import sql
from sqlalchemy.engine import Engine

from soundscape.db import raw_connection
from soundscape.errors import DatabaseError

READER_ROLE = "soundscape_reader"
REVIEWER_ROLE = "soundscape_reviewer"
LOGIN_TRIGGER = "soundscape_reader_login"
#: ``COMMENT ON ROLE`` of the readers ``create_reader`` made: the mark of a soundscape reader.
READER_COMMENT = "soundscape reader (soundscape db create-reader)"

# Applied to the sessions of readers and reviewers at login; reader_settings(role, setting,
# value) holds each role's limits (the name is older than reviewers' rows in it).
LOGIN_TRIGGER_SQL = f"""
CREATE TABLE IF NOT EXISTS public.reader_settings (
    role     name NOT NULL,
    setting  text NOT NULL,
    value    text NOT NULL,
    PRIMARY KEY (role, setting)
);
REVOKE ALL ON public.reader_settings FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.{LOGIN_TRIGGER}() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    s record;
BEGIN
    IF pg_catalog.to_regclass('public.reader_settings') IS NULL THEN
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

# What PUBLIC may not do in the soundscape database (run by migration 0023 and by every
# create-reader / create-reviewer, since CREATE DATABASE ... TEMPLATE and restores do not copy
# a database's own privileges): create temporary tables, use large objects, take advisory
# locks. The owner keeps the advisory locks (ingest serialises with them); a superuser needs
# no grant. Function privileges can only be changed by a superuser (pg_catalog's owner).
LOCKDOWN_SQL = r"""
DO $lockdown$
DECLARE
    f regprocedure;
    v_owner regrole;
    v_owner_super boolean;
    v_super boolean;
BEGIN
    SELECT d.datdba::regrole, o.rolsuper INTO v_owner, v_owner_super
      FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles o ON o.oid = d.datdba
     WHERE d.datname = current_database();
    SELECT rolsuper INTO v_super FROM pg_catalog.pg_roles WHERE rolname = current_user;
    IF v_super OR pg_catalog.pg_has_role(current_user, v_owner::oid, 'MEMBER') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END IF;
    IF NOT v_super THEN
        RETURN;
    END IF;
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace
                AND (p.proname ~ '^lo_' OR p.proname IN ('loread', 'lowrite')
                     OR p.proname ~ '^pg_(try_)?advisory_')
                AND has_function_privilege('public', p.oid, 'EXECUTE') LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    IF NOT v_owner_super THEN
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND p.proname ~ '^pg_(try_)?advisory_' LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, v_owner);
        END LOOP;
    END IF;
END
$lockdown$;
"""

# What migration 0023's downgrade restores: PostgreSQL's defaults (lo_import / lo_export stay
# revoked from PUBLIC, as PostgreSQL ships them).
UNLOCK_SQL = r"""
DO $unlock$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'pg_catalog'::regnamespace
                AND ((p.proname ~ '^lo_' AND p.proname NOT IN ('lo_import', 'lo_export'))
                     OR p.proname IN ('loread', 'lowrite')
                     OR p.proname ~ '^pg_(try_)?advisory_') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END
$unlock$;
"""


def lock_down_database(raw: PgConnection) -> list[str]:
    """Take from PUBLIC, in the current database, what no reader or reviewer may have
    (temporary tables, large objects, advisory locks); returns warnings for what could not be
    taken (a non-superuser cannot change the privileges of PostgreSQL's own functions)."""
    raw.execute(LOCKDOWN_SQL)
    row = raw.execute(
        "SELECT has_database_privilege('public', current_database(), 'TEMPORARY'), "
        "has_function_privilege('public', 'pg_catalog.lo_from_bytea(oid, bytea)', 'EXECUTE'), "
        "has_function_privilege('public', 'pg_catalog.pg_advisory_lock(bigint)', 'EXECUTE'), "
        "current_setting('lo_compat_privileges')::boolean"
    ).fetchone()
    assert row is not None
    temp, large_objects, advisory, compat = row
    warnings = []
    if temp:
        warnings.append(
            "every role may still create temporary tables here (only the database owner can "
            "revoke it): run this as the owner or a superuser"
        )
    if large_objects or advisory:
        warnings.append(
            "every role may still store large objects and take advisory locks here (a reader "
            "could then block ingest): only a superuser can revoke EXECUTE on PostgreSQL's "
            "own functions; run `soundscape db upgrade` (migration 0023) as a superuser"
        )
    if compat:
        warnings.append(
            "lo_compat_privileges is on, so large objects skip privilege checks: set it off "
            "in postgresql.conf"
        )
    return warnings


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


@dataclass(frozen=True)
class ReviewerLimits:
    """Session limits of a reviewer role: a verdict is one short insert."""

    statement_timeout: str = "10s"
    work_mem: str = "16MB"
    temp_file_limit: str = "64MB"
    idle_in_transaction_session_timeout: str = "1min"

    def settings(self) -> dict[str, str]:
        return {
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


RoleKind = Literal["reader", "reviewer", "powerful", "other"]

_KIND_SQL = """
SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls,
       r.rolname = %(group)s
       OR coalesce(pg_has_role(r.oid, to_regrole(%(group)s)::oid, 'MEMBER'), false),
       r.rolname = %(reader)s
       OR coalesce(shobj_description(r.oid, 'pg_authid'), '') = %(comment)s
       OR EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                   WHERE s.setrole = r.oid AND d.datname = current_database()
                     AND 'default_transaction_read_only=on' = ANY (s.setconfig))
  FROM pg_roles r WHERE r.rolname = %(name)s
"""


def role_kind(raw: PgConnection, name: str) -> RoleKind | None:
    """What role ``name`` is to soundscape (None: no such role): a reader (made by
    ``create_reader``), a reviewer (a member of ``soundscape_reviewer``, or the group itself),
    ``powerful`` (superuser, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS) or ``other``."""
    row = raw.execute(
        _KIND_SQL,
        {"group": REVIEWER_ROLE, "reader": READER_ROLE, "comment": READER_COMMENT, "name": name},
    ).fetchone()
    if row is None:
        return None
    powerful, reviewer, reader = row
    if powerful:
        return "powerful"
    if reviewer:
        return "reviewer"
    return "reader" if reader else "other"


def _refuse_other_kind(name: str, kind: RoleKind | None, want: RoleKind) -> None:
    if kind is None or kind == want:
        return
    what = {
        "powerful": "a superuser or a role that may create roles, databases or replicate",
        "reader": "a soundscape reader",
        "reviewer": "a soundscape reviewer",
        "other": "a role soundscape did not make",
    }[kind]
    option = "--name" if want == "reader" else "NAME"
    raise DatabaseError(
        f"role {name} exists and is not a {want} (it is {what}); nothing was changed: "
        f"choose another {option} (a {want} role must be used for nothing else)"
    )


def _check_settings(raw: PgConnection, settings: dict[str, str]) -> None:
    """Reject bad values before changing anything."""
    for setting, value in settings.items():
        raw.execute("SAVEPOINT check_setting")
        try:
            raw.execute("SELECT set_config(%s, %s, true)", [setting, value])
        except psycopg.DataError as exc:  # class 22: an invalid value
            raise DatabaseError(f"invalid {setting} {value!r}: {exc}") from exc
        finally:
            raw.execute("ROLLBACK TO SAVEPOINT check_setting")


def _apply_limits(
    raw: PgConnection, name: str, dbname: str, settings: dict[str, str], superuser: bool
) -> list[str]:
    """The role's limits as its defaults in this database and, where possible, re-applied at
    every login by the event trigger (so the role cannot keep other values)."""
    role = sql.Identifier(name)
    for setting, value in settings.items():
        raw.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                role, sql.Identifier(dbname), sql.Identifier(setting), sql.Literal(value)
            )
        )
    version = raw.execute("SELECT current_setting('server_version_num')::int").fetchone()
    if superuser and version is not None and version[0] >= 170000:
        _install_login_trigger(raw, name, settings)
        return []
    return [
        "the role's limits are its defaults, which it could change itself with ALTER "
        "ROLE: enforcing them at every login needs a login event trigger "
        "(PostgreSQL 17 or later, created by a superuser)"
    ]


def _caller(raw: PgConnection, settings: dict[str, str], warnings: list[str]) -> tuple[bool, str]:
    """(whether the caller is a superuser, the database's name); ``settings`` checked, less
    ``temp_file_limit`` (with a warning) when only a superuser could set it."""
    row = raw.execute(
        "SELECT rolsuper, current_database() FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    superuser, dbname = row
    if not superuser:
        settings.pop("temp_file_limit")
        warnings.append("temp_file_limit not set: only a superuser may set it")
    _check_settings(raw, settings)
    return bool(superuser), str(dbname)


def create_reader(
    engine: Engine,
    password: str,
    name: str = READER_ROLE,
    *,
    limits: ReaderLimits | None = None,
    revoke_other_databases: bool = False,
) -> list[str]:
    """Create (or update) the read-only login role ``name``; returns warnings to show.

    An existing role is updated only if it is a soundscape reader already: a superuser, a
    reviewer, the owner or any other role is refused with nothing changed.
    ``revoke_other_databases`` revokes CONNECT from PUBLIC on the server's other databases
    (right for a server that only holds soundscape, such as the embedded one); without it, the
    databases the role could still connect to are named in a warning.
    """
    _check_name(name)
    if name == REVIEWER_ROLE:
        raise DatabaseError(f"{name} is the reviewers' group role; give the reader another name")
    if not password:
        raise DatabaseError("the reader role needs a password (it logs in with scram-sha-256)")
    settings = (limits or ReaderLimits()).settings()
    warnings: list[str] = []
    role = sql.Identifier(name)
    try:
        with engine.begin() as conn:
            raw = raw_connection(conn)
            superuser, dbname = _caller(raw, settings, warnings)
            kind = role_kind(raw, name)
            _refuse_other_kind(name, kind, "reader")
            if kind is None:
                raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            raw.execute(
                sql.SQL(
                    "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS PASSWORD {}"
                ).format(role, sql.Literal(password))
            )
            raw.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(READER_COMMENT))
            )
            warnings += lock_down_database(raw)
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
            warnings += _apply_limits(raw, name, dbname, settings, superuser)
            warnings += _other_databases(raw, name, dbname, revoke_other_databases)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot create the reader {name}: {exc}. Run it as the database owner with "
            "CREATEROLE, or as a superuser"
        ) from exc
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
#: What the reviewer group may do, and nothing else: insert annotations (the columns a
#: validated hit has; migration 0014's trigger then sets author and source), read back the new
#: row's id (INSERT ... RETURNING id), draw ids from the table's sequence, and take back their
#: own web verdicts (``public.retract_verdict``, migration 0030).
REVIEWER_GRANTS = (
    "GRANT CONNECT ON DATABASE {db} TO {g}",
    "GRANT USAGE ON SCHEMA public TO {g}",
    "GRANT INSERT (recording_id, start_s, end_s, low_hz, high_hz, label, verdict, author, "
    "source, note, segment_id) ON public.annotations TO {g}",
    "GRANT SELECT (id) ON public.annotations TO {g}",
    "GRANT USAGE ON SEQUENCE public.annotations_id_seq TO {g}",
    # the review queue's undo: deletes the caller's own web verdicts only (migration 0030)
    "GRANT EXECUTE ON FUNCTION public.retract_verdict(bigint) TO {g}",
)


def create_reviewer(
    engine: Engine,
    name: str,
    password: str,
    *,
    statement_timeout: str = ReviewerLimits.statement_timeout,
    limits: ReviewerLimits | None = None,
    revoke_other_databases: bool = False,
) -> list[str]:
    """Create (or update the password of) the reviewer login role ``name``: a member of the
    group role ``soundscape_reviewer``, which may insert annotations and nothing else (it reads
    no table; ``soundscape serve`` signs reviewers in with this role and writes their verdicts
    through it). Its limits (``limits``; ``statement_timeout`` overrides theirs) are
    re-applied at every login. Returns warnings to show.

    An existing role that is not a reviewer is refused: this never turns the owner, the reader
    or another role into a reviewer.
    """
    _check_name(name)
    if name in (REVIEWER_ROLE, READER_ROLE):
        raise DatabaseError(f"{name} is a group/service role; give the reviewer's own name")
    if not password:
        raise DatabaseError("a reviewer needs a password (to sign in to the web page)")
    settings = (limits or ReviewerLimits()).settings()
    settings["statement_timeout"] = statement_timeout
    group, role = sql.Identifier(REVIEWER_ROLE), sql.Identifier(name)
    warnings: list[str] = []
    try:
        with engine.begin() as conn:
            raw = raw_connection(conn)
            superuser, dbname = _caller(raw, settings, warnings)
            if not raw.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", [REVIEWER_ROLE]
            ).fetchone():
                raw.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
            for stmt in REVIEWER_GRANTS:
                raw.execute(sql.SQL(stmt).format(db=sql.Identifier(dbname), g=group))
            kind = role_kind(raw, name)
            if kind == "reviewer" and not _member_of_group(raw, name):
                kind = "other"  # (the group itself is refused above)
            _refuse_other_kind(name, kind, "reviewer")
            if kind is None:
                raw.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            raw.execute(
                sql.SQL(
                    "ALTER ROLE {} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOREPLICATION NOBYPASSRLS PASSWORD {}"
                ).format(role, sql.Literal(password))
            )
            raw.execute(sql.SQL("GRANT {} TO {}").format(group, role))
            warnings += lock_down_database(raw)
            warnings += _apply_limits(raw, name, dbname, settings, superuser)
            warnings += _other_databases(raw, name, dbname, revoke_other_databases)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot create the reviewer {name}: {exc}. Run it as the database owner with "
            "CREATEROLE, or as a superuser"
        ) from exc
    return warnings


def _member_of_group(raw: PgConnection, name: str) -> bool:
    row = raw.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", [name, REVIEWER_ROLE]).fetchone()
    return bool(row and row[0])


def is_reviewer(conn: PgConnection) -> bool:
    """Whether the role of a connection is a reviewer (a member of ``soundscape_reviewer``
    that is not a superuser)."""
    row = conn.execute(
        "SELECT CASE WHEN to_regrole(%s) IS NULL OR r.rolsuper THEN false "
        "ELSE pg_has_role(r.oid, %s, 'USAGE') END FROM pg_roles r WHERE r.rolname = current_user",
        [REVIEWER_ROLE, REVIEWER_ROLE],
    ).fetchone()
    return bool(row and row[0])


def is_reviewer_login(conn: PgConnection, name: str) -> bool:
    """Whether ``name`` is a reviewer that may sign in: a login role, member of
    ``soundscape_reviewer``, with none of the powerful attributes. Asked as the server's own
    role, before anything connects as ``name``."""
    if not name or len(name) > 63:
        return False
    row = conn.execute(
        "SELECT r.rolcanlogin FROM pg_roles r WHERE r.rolname = %s", [name]
    ).fetchone()
    if row is None or not row[0] or name == REVIEWER_ROLE:
        return False
    return role_kind(conn, name) == "reviewer"


def refresh_reviewer_limits(raw: PgConnection) -> None:
    """Give reviewers made before their limits were kept (migration 0023) the default limits,
    re-applied at every login (each one's own statement timeout kept). Needs a superuser on
    PostgreSQL 17 or later; does nothing otherwise."""
    row = raw.execute(
        "SELECT rolsuper AND current_setting('server_version_num')::int >= 170000 "
        "AND to_regrole(%s) IS NOT NULL, current_database(), "
        "to_regclass('public.reader_settings') IS NOT NULL "
        "FROM pg_roles WHERE rolname = current_user",
        [REVIEWER_ROLE],
    ).fetchone()
    if row is None or not row[0]:
        return
    dbname, have_table = row[1], row[2]
    reviewers = raw.execute(
        "SELECT r.rolname, (SELECT substr(c, length('statement_timeout=') + 1) "
        "  FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
        "       unnest(s.setconfig) c "
        "  WHERE s.setrole = r.oid AND d.datname = current_database() "
        "    AND c LIKE 'statement\\_timeout=%%') "
        "FROM pg_roles r WHERE r.rolcanlogin AND r.rolname <> %s "
        "AND pg_has_role(r.oid, %s, 'MEMBER') ORDER BY 1",
        [REVIEWER_ROLE, REVIEWER_ROLE],
    ).fetchall()
    for name, timeout in reviewers:
        if role_kind(raw, name) != "reviewer":
            continue
        if (
            have_table
            and raw.execute(
                "SELECT 1 FROM public.reader_settings WHERE role = %s", [name]
            ).fetchone()
        ):
            continue
        settings = ReviewerLimits().settings()
        if timeout:
            settings["statement_timeout"] = timeout
        _apply_limits(raw, name, dbname, settings, True)
