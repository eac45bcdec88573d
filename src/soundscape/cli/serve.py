"""``soundscape serve``: run the web page (soundscape.web) with uvicorn."""

from __future__ import annotations

import click

from soundscape.cli.base import Number, cli, database_option, echo_err, open_db


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--login-to-view/--open-view",
    "view_login",
    default=None,
    help="Whether viewing needs a signed-in reviewer (default: not on 127.0.0.1, yes on any "
    "other address). Writing verdicts always does.",
)
@click.option(
    "--max-upload-mb",
    type=Number(0.1, 2000),
    default=20.0,
    show_default=True,
    help="Largest audio example a search may upload.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Host header to accept (repeatable; default: the loopback names when bound to "
    "loopback, any otherwise).",
)
@click.option(
    "--behind-https",
    is_flag=True,
    help="Served to browsers through an HTTPS reverse proxy on this machine (it must send "
    "X-Forwarded-Proto): the session cookie is marked Secure, and viewing needs sign-in "
    "unless --open-view (give the public name with --allowed-host).",
)
@database_option
def serve(
    host: str,
    port: int,
    view_login: bool | None,
    max_upload_mb: float,
    allowed_hosts: tuple[str, ...],
    behind_https: bool,
    database: str | None,
) -> None:
    """Serve the web page: search, listen, and say yes / no / unsure.

    \b
    Reviewers sign in with a role made by `soundscape db create-reviewer NAME`.
    Examples:
      soundscape serve                      # http://127.0.0.1:8765
      soundscape serve --host 0.0.0.0 --allowed-host rangers.example.org
    """
    try:
        import uvicorn

        from soundscape.web import WebConfig, create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the web page needs the web extra ({exc.name} is missing): "
            "pip install 'soundscape[web]'"
        ) from exc
    if behind_https and view_login is None:
        view_login = True  # a proxy makes a loopback server public: viewing needs sign-in too
    config = WebConfig(
        host=host,
        port=port,
        view_login=view_login,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        allowed_hosts=list(allowed_hosts) or None,
        secure_cookies=behind_https,
    )
    app = create_app(config, open_db(database))
    if not config.loopback and not behind_https:
        echo_err(
            f"warning: listening on {host}: anyone who can reach it can "
            + ("sign in" if config.login_to_view else "view without signing in")
            + "; put it behind HTTPS (a reverse proxy) before using it over a network"
        )
    echo_err(f"soundscape web page on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
