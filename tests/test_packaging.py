"""A non-editable install (a built wheel) carries migrations/ and sql/ and can migrate."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (whl,) = out.glob("soundscape-*.whl")
    return whl


def test_wheel_ships_migrations_and_sql(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "soundscape/_migrations/env.py" in names
    assert "soundscape/_migrations/versions/0001_initial.py" in names
    assert "soundscape/_sql/catalog.sql" in names
    assert "soundscape/_sql/frozen/0006_downgrade.sql" in names
    # the web page's templates and static files (soundscape serve)
    assert {"soundscape/web/templates/search.html", "soundscape/web/static/app.js"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


@pytest.mark.slow
def test_installed_wheel_migrates_a_database(wheel, tmp_path, admin_url):
    """Install the wheel (not editable) into a target dir and run `db upgrade` from it,
    outside the source tree, so only the packaged migrations can be found."""
    import psycopg
    import sqlalchemy as sa

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS wheel_db WITH (FORCE)")
        conn.execute("CREATE DATABASE wheel_db")
    url = sa.engine.make_url(admin_url).set(database="wheel_db").render_as_string(False)
    env = {**os.environ, "PYTHONPATH": str(target), "SOUNDSCAPE_DATABASE_URL": url}
    code = (
        "import soundscape.resources as r, soundscape.cli as c; print(r.migrations_dir()); c.main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(proc.stdout).startswith(str(target)), proc.stdout
    from soundscape.db import head_revision

    assert f"at revision {head_revision()}" in proc.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM ranger.recordings").fetchone()[0] == 0
