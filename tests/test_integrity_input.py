"""Input that was accepted though meaningless, or crashed the CLI with a traceback (issue 24,
items 9, 13, 15 and the CLI tracebacks): every one is now a usage error (exit 2) or a clear
error (exit 1) naming what to change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import Cli, real_audio

DOG = real_audio("dog.ogg")


@pytest.fixture(scope="module")
def cli(module_db_url: str, tmp_path_factory) -> Cli:
    """A database with one sensor and one short recording in the ``spectral`` space."""
    run = Cli(module_db_url)
    folder = tmp_path_factory.mktemp("audio")
    shutil.copy(DOG, folder / "20240501_120000.ogg")
    run("sensors", "add", "s1", "--timezone", "Europe/Berlin")
    run("ingest", folder / "20240501_120000.ogg", "-s", "s1", "-m", "spectral", "-q")
    return run


def test_ingest_refuses_an_empty_path(cli: Cli, tmp_path: Path, monkeypatch) -> None:
    """``ingest '' -s S`` ingested the current directory."""
    shutil.copy(DOG, tmp_path / "here.ogg")
    monkeypatch.chdir(tmp_path)
    result = cli("ingest", "", "-s", "s1", "-m", "spectral", "-q", code=2)
    assert "empty path" in result.stderr
    with sa.create_engine(cli.url).connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM recordings WHERE path LIKE '%here.ogg'"))
        assert n.scalar() == 0


@pytest.mark.parametrize(
    "args",
    [
        ("search", "--audio", str(DOG), "--start", "nan"),
        ("labels", "top", "--min-score", "nan"),
        ("concepts", "add", "c1", "--like", "1", "--threshold", "nan"),
        ("plot", "recording", "1", "--start", "nan", "-o", "/tmp/data/x.png"),
    ],
)
def test_not_a_number_is_a_usage_error(cli: Cli, args) -> None:
    result = cli(*args, code=2)
    assert "finite" in result.stderr


def test_concept_threshold_outside_the_score_range(cli: Cli) -> None:
    result = cli("concepts", "add", "c2", "--like", "1", "--threshold", "5", code=2)
    assert "--threshold" in result.stderr and "range" in result.stderr


@pytest.mark.parametrize("option", ["--time", "--from", "--to"])
def test_an_empty_filter_is_a_usage_error(cli: Cli, option: str) -> None:
    """``--time ''`` was ignored: the search ran unfiltered."""
    result = cli("search", "--like", "1", option, "", code=2)
    assert option in result.stderr and "empty" in result.stderr


def test_sensor_metadata_refuses_nan(cli: Cli) -> None:
    result = cli("sensors", "add", "s2", "--metadata", '{"a": NaN}', code=2)
    assert "--metadata" in result.stderr and "NaN" in result.stderr


def test_start_time_out_of_range(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "x.ogg"
    shutil.copy(DOG, f)
    result = cli(
        "ingest", f, "-s", "s1", "-m", "spectral", "--start-time", "0001-01-01T00:00:00+14:00",
        code=2,
    )  # fmt: skip
    assert "--start-time" in result.stderr and "year" in result.stderr


def test_an_absurd_hop_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "y.ogg"
    shutil.copy(DOG, f)
    result = cli("ingest", f, "-s", "s1", "-m", "spectral", "--hop", "1e308", "--allow-gaps",
                 "-q", code=2)  # fmt: skip
    assert "--hop" in result.stderr


def test_errors_list_one_row_per_retried_file(cli: Cli, tmp_path: Path) -> None:
    """A file that failed twice was listed twice; now once, with its attempts."""
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file" * 10)
    for _ in range(2):
        cli("ingest", bad, "-s", "s1", "-m", "spectral", "-q", code=1)
    rows = [r for r in cli.json("errors", "list") if r["path"] == str(bad)]
    assert len(rows) == 1 and rows[0]["attempts"] == 2


def test_errors_list_says_when_there_is_nothing(module_db_url: str) -> None:
    """``errors list --unresolved`` printed nothing at all when there was nothing."""
    run = Cli(module_db_url)
    with sa.create_engine(module_db_url).begin() as conn:
        conn.execute(sa.text("UPDATE ingest_errors SET resolved_at = now()"))
    result = run("errors", "list", "--unresolved")
    assert result.stdout == "" and "no unresolved errors" in result.stderr


def test_a_bare_index_rebuild_says_it_keeps_the_type(cli: Cli) -> None:
    """README said the default is halfvec; a bare rebuild keeps the space's chosen type, and
    now says so."""
    cli("spaces", "index", "spectral", "--type", "vector")
    result = cli("spaces", "index", "spectral")
    assert "rebuilding the vector HNSW index" in result.stderr
    assert "current type" in result.stderr
    rows = {r["space"]: r for r in cli.json("spaces", "list")}
    assert rows["spectral"]["index_type"] == "vector"
    assert "keeps the space's current" in " ".join(cli("spaces", "index", "--help").stdout.split())


def test_terminal_escapes_in_names_are_printed_escaped(cli: Cli) -> None:
    """A sensor named with ESC [ ... ] sequences recoloured the terminal of whoever listed it."""
    name = "evil\x1b[31mred\x1b]0;owned\x07"
    cli("sensors", "add", name, "--site", "bad\rsite")
    table = cli("sensors", "list").stdout
    assert "\x1b" not in table and "\x07" not in table and "\r" not in table
    assert "evil\\x1b[31mred" in table
    # JSON keeps the name exactly (escaped by JSON itself)
    assert name in {r["name"] for r in cli.json("sensors", "list")}
    err = cli("ingest", "/nonexistent.wav", "-s", name, "-m", "spectral", "-q", code=1).stderr
    assert "\x1b" not in err


def test_a_stored_file_keeps_its_sensor(cli: Cli, tmp_path: Path) -> None:
    """Re-ingesting a stored file with another --sensor and a new model configuration stored
    the new windows under the other sensor (the recording stayed on its own): now refused,
    naming the stored sensor; with the stored sensor the windows carry it."""
    f = tmp_path / "20240501_120000.ogg"
    shutil.copy(DOG, f)  # the content stored by the fixture, for s1
    cli("sensors", "add", "other", "--timezone", "America/New_York")
    args = ("ingest", f, "-m", "spectral", "--window", "2", "--hop", "2", "-q")
    result = cli(*args, "-s", "other", code=1)
    assert "sensor 's1'" in result.stderr and "-s s1" in result.stderr
    engine = sa.create_engine(cli.url)
    sql = (
        "SELECT count(*) FROM segments g JOIN recordings r ON r.id = g.recording_id "
        "WHERE g.sensor_id <> r.sensor_id"
    )
    with engine.connect() as conn:
        assert conn.execute(sa.text(sql)).scalar() == 0
    cli(*args, "-s", "s1")
    with engine.connect() as conn:
        assert conn.execute(sa.text(sql)).scalar() == 0
        spaces = conn.execute(
            sa.text(
                "SELECT count(DISTINCT g.space_id) FROM segments g JOIN recordings r "
                "ON r.id = g.recording_id WHERE r.path LIKE '%20240501_120000.ogg'"
            )
        ).scalar()
        assert spaces == 2
    engine.dispose()


@pytest.mark.parametrize("labels", ["a,,b", "rain,,music", ",rain,music"])
def test_classify_refuses_an_empty_label(cli: Cli, labels: str) -> None:
    result = cli("classify", "--labels", labels, code=2)
    assert "--labels" in result.stderr and "empty" in result.stderr


def test_a_symlink_loop_is_not_called_dangling(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "loops"
    folder.mkdir()
    (folder / "a.wav").symlink_to(folder / "b.wav")
    (folder / "b.wav").symlink_to(folder / "a.wav")
    (folder / "gone.wav").symlink_to(folder / "nothing.wav")
    err = cli("ingest", folder, "-s", "s1", "-m", "spectral", code=0).stderr
    assert "a.wav: a symbolic link loop" in err and "b.wav: a symbolic link loop" in err
    assert "gone.wav: a dangling symbolic link" in err
    err = cli("ingest", folder / "a.wav", "-s", "s1", "-m", "spectral", "-q", code=1).stderr
    assert "symbolic link loop" in err and "no such file" not in err


def test_a_huge_speech_query_is_refused_fast(cli: Cli) -> None:
    """A 1.2 MB ``search_speech`` query ran 31 s into "stack depth limit exceeded"."""
    import time

    query = "interest rates " * 80_000  # 1.2 MB
    t0 = time.monotonic()
    result = cli("search", "--said", query, code=2)
    assert "--said" in result.stderr and "at most 1000" in result.stderr
    engine = sa.create_engine(cli.url)
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="at most 1000"):
        conn.execute(sa.text("SELECT * FROM ranger.search_speech(:q)"), {"q": query})
    engine.dispose()
    assert time.monotonic() - t0 < 10
