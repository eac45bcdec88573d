"""``soundscape db ...``: the embedded server, migrations, the read-only role."""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa

from soundscape import embedded_db
from soundscape.cli.base import cli, database_option, echo_err, format_options, open_db
from soundscape.errors import BadOption, DatabaseError
from soundscape.output import emit
from soundscape.roles import READER_ROLE, ReaderLimits, create_reader


def _listen_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> embedded_db.Listen | None | str:
    if value is None:
        return embedded_db.KEEP
    try:
        return embedded_db.parse_listen(value)
    except BadOption as exc:
        raise click.BadParameter(str(exc)) from exc


# --------------------------------------------------------------------------------------- db
@cli.group()
def db() -> None:
    """Manage the database (the embedded server and schema migrations)."""


@db.command("status")
@database_option
@format_options
def db_status(database: str | None, fmt: str) -> None:
    """Show where the database is, whether it runs and its schema revision; for the embedded
    server also where it listens on TCP (listen) and where its next start will (listen_setting)."""
    from soundscape.db import current_revision, head_revision, make_engine, mask_url

    info: dict[str, Any] = {"embedded": database is None, "head_revision": head_revision()}
    if database is None:
        st = embedded_db.status()
        setting = embedded_db.listen_setting()
        info.update(
            pgdata=str(st.pgdata),
            initialized=st.initialized,
            running=st.running,
            pid=st.pid,
            listen=str(st.listen) if st.listen else "off" if st.running else None,
            listen_setting=str(setting) if setting else "off",
        )
        url = st.url()
        if st.running and st.socket_dir is not None:
            try:  # never connect through a socket folder another user could meddle with
                embedded_db.check_socket_dir(st.socket_dir)
            except DatabaseError as exc:
                info["error"], url = str(exc), None
    else:
        url = database
        info["running"] = None
    info["url"] = mask_url(url) if url else None
    info["revision"] = None
    if url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                info["revision"] = current_revision(conn)
                info["running"] = True
                info["size_bytes"] = conn.execute(
                    sa.text("SELECT pg_database_size(current_database())")
                ).scalar()
        except sa.exc.OperationalError as exc:
            info["running"] = False
            info["error"] = str(exc.orig).strip().splitlines()[0]
        finally:
            engine.dispose()
    info["up_to_date"] = info["revision"] == info["head_revision"]
    if fmt != "table":
        emit([info], fmt)
        return
    for key, value in info.items():
        click.echo(f"{key:14} {'' if value is None else value}")


@db.command("start")
@click.option(
    "--listen",
    metavar="HOST:PORT|off",
    callback=_listen_option,
    help="Listen on TCP as well, for BI tools (every TCP login needs a password, the superuser "
    "never gets in over TCP): 127.0.0.1:5432, [::1]:5432, 0.0.0.0:5432, *:5432, a port alone "
    "(on 127.0.0.1), or off. Kept for later starts; default: as set before (off at first).",
)
def db_start(listen: embedded_db.Listen | None | str) -> None:
    """Start the embedded PostgreSQL server (and create/upgrade its schema)."""
    from soundscape.db import open_database

    want = embedded_db.listen_setting() if listen == embedded_db.KEEP else listen
    assert want is None or isinstance(want, embedded_db.Listen)
    st = embedded_db.start(listen=want, notify=echo_err)
    database = open_database(None)
    database.engine.dispose()
    echo_err(f"embedded database running: {database.safe_url}")
    if st.listen is None:
        return
    echo_err(
        f"listening on TCP at {st.listen} (every login with its password, scram-sha-256; "
        "no TLS); the URL for BI tools: soundscape db url --tcp"
    )
    if not st.listen.loopback_only:
        echo_err(
            f"warning: {st.listen} is reachable from other machines and the connection is not "
            "encrypted: prefer 127.0.0.1 and an SSH tunnel (docs/bi.md)"
        )
    if not embedded_db.tcp_logins(st):
        echo_err("no role may log in over TCP yet: create one with `soundscape db create-reader`")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server."""
    echo_err("stopped" if embedded_db.stop() else "the embedded database was not running")


@db.command("url")
@click.option(
    "--sqlalchemy", "as_sqlalchemy", is_flag=True, help="Print the SQLAlchemy form (+psycopg)."
)
@click.option(
    "--tcp",
    is_flag=True,
    help="The embedded server's TCP URL for BI tools (needs `db start --listen`), as --user.",
)
@click.option(
    "--user",
    default=READER_ROLE,
    show_default=True,
    help="The role in the --tcp URL (see `db create-reader`).",
)
@database_option
def db_url(as_sqlalchemy: bool, tcp: bool, user: str, database: str | None) -> None:
    """Print the database URL (password hidden), starting the embedded server if needed.

    The default is a libpq URL that psql and BI tools accept; --sqlalchemy prints the form
    SQLAlchemy wants; --tcp the embedded server's TCP address for a role (BI tools)."""
    from soundscape.db import libpq_url, mask_url, normalize_url

    if tcp:
        if database:
            raise click.UsageError(
                "--tcp is for the embedded server; a --database URL is already the one to use"
            )
        url = embedded_db.tcp_url(user)
    else:
        url = database if database else embedded_db.ensure_running_url()
    click.echo(mask_url(normalize_url(url) if as_sqlalchemy else libpq_url(url)))


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(database: str | None, revision: str) -> None:
    """Create or migrate the schema (CREATE EXTENSION vector, tables, indexes, views)."""
    from soundscape.db import current_revision, open_database, upgrade

    database_ = open_database(database, check=False)
    try:
        for note in upgrade(database_.engine, revision):  # Citus: how tables are laid out
            echo_err(note)
        with database_.engine.connect() as conn:
            rev = current_revision(conn)
    finally:
        database_.engine.dispose()
    echo_err(f"{database_.safe_url} is at revision {rev}")


@db.command("create-reader")
@click.option("--name", default="soundscape_reader", show_default=True, help="Role name.")
@click.option(
    "--password",
    prompt=True,
    prompt_required=False,
    hide_input=True,
    confirmation_prompt=True,
    envvar="SOUNDSCAPE_READER_PASSWORD",
    help="The role's password; prompted when given without a value or not at all "
    "(env: SOUNDSCAPE_READER_PASSWORD).",
)
@click.option(
    "--statement-timeout",
    default=ReaderLimits.statement_timeout,
    show_default=True,
    help="Longest query the role may run (PostgreSQL units: 30s, 5min).",
)
@click.option(
    "--work-mem",
    default=ReaderLimits.work_mem,
    show_default=True,
    help="Memory per sort/hash step of the role's queries.",
)
@click.option(
    "--temp-file-limit",
    default=ReaderLimits.temp_file_limit,
    show_default=True,
    help="Hard cap on temporary disk a query may use (only a superuser can raise it).",
)
@click.option(
    "--revoke-other-databases/--keep-other-databases",
    default=None,
    help="Revoke CONNECT from PUBLIC on the server's other databases so the role reaches only "
    "this one (default: yes for the embedded server, else a warning names them).",
)
@database_option
def db_create_reader(
    name: str,
    password: str | None,
    statement_timeout: str,
    work_mem: str,
    temp_file_limit: str,
    revoke_other_databases: bool | None,
    database: str | None,
) -> None:
    """Create a read-only login role for BI tools: it may only read the ranger views and run
    the ranger search functions, in read-only sessions with a statement timeout (limits set
    again at every login; no large objects, temporary tables or advisory locks). Run again to
    change the password; an existing role that is not a reader is refused (docs/security.md)."""
    from sqlalchemy.engine import make_url

    from soundscape.db import libpq_url, mask_url

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    database_ = open_db(database)
    limits = ReaderLimits(
        statement_timeout=statement_timeout, work_mem=work_mem, temp_file_limit=temp_file_limit
    )
    revoke = database_.embedded if revoke_other_databases is None else revoke_other_databases
    for warning in create_reader(
        database_.engine, password, name, limits=limits, revoke_other_databases=revoke
    ):
        echo_err(f"warning: {warning}")
    url = make_url(database_.url).set(username=name, password=password)
    echo_err(
        f"role {name} can read schema ranger (statement timeout {statement_timeout}); "
        f"connect with {mask_url(libpq_url(url.render_as_string(False)))}"
    )
    tcp = embedded_db.status().tcp_url(name) if database_.embedded else None
    if tcp:
        echo_err(f"over TCP (BI tools): {tcp}")


@db.command("create-reviewer")
@click.argument("name")
@click.option(
    "--password",
    prompt=True,
    prompt_required=False,
    hide_input=True,
    confirmation_prompt=True,
    envvar="SOUNDSCAPE_REVIEWER_PASSWORD",
    help="The reviewer's password; prompted when given without a value or not at all "
    "(env: SOUNDSCAPE_REVIEWER_PASSWORD).",
)
@click.option(
    "--statement-timeout",
    default="10s",
    show_default=True,
    help="Longest statement the role may run (PostgreSQL units).",
)
@click.option(
    "--revoke-other-databases/--keep-other-databases",
    default=None,
    help="Revoke CONNECT from PUBLIC on the server's other databases (default: yes for the "
    "embedded server, else a warning names them).",
)
@database_option
def db_create_reviewer(
    name: str,
    password: str | None,
    statement_timeout: str,
    revoke_other_databases: bool | None,
    database: str | None,
) -> None:
    """Create a reviewer NAME for the web page (`soundscape serve`): a login role that may
    insert annotations and nothing else; reviewers sign in with it to say yes / no / unsure.
    Run again to change the password; an existing role that is not a reviewer is refused."""
    from soundscape.roles import create_reviewer

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    database_ = open_db(database)
    revoke = database_.embedded if revoke_other_databases is None else revoke_other_databases
    for warning in create_reviewer(
        database_.engine,
        name,
        password,
        statement_timeout=statement_timeout,
        revoke_other_databases=revoke,
    ):
        echo_err(f"warning: {warning}")
    echo_err(f"reviewer {name} may insert annotations; sign in to `soundscape serve` as {name}")
