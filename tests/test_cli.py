"""CLI conventions: help everywhere, exit codes, output formats, python -m."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from soundscape.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


@pytest.mark.parametrize(
    "path,cmd", list(_commands(cli)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_command_has_help(path, cmd, run_cli):
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
    result = run_cli(*path, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def test_every_command_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for path, cmd in _commands(cli):
        if not isinstance(cmd, click.Group):
            # "soundscape db status|start|..." documents a group's commands on one line
            full = f"soundscape {' '.join(path)}"
            grouped = f"soundscape {' '.join(path[:-1])} " if len(path) > 1 else None
            assert full in readme or (
                grouped
                and any(grouped in line and path[-1] in line for line in readme.splitlines())
            ), path


def test_python_dash_m_and_version():
    proc = subprocess.run(
        [sys.executable, "-m", "soundscape", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "soundscape" in proc.stdout


def test_usage_error_exit_code(run_cli):
    assert run_cli("nosuchcommand").exit_code == 2
    assert run_cli("sensors", "add").exit_code == 2
    assert run_cli("sensors", "add", "x", "--lat", "95").exit_code == 2
    assert run_cli("sensors", "list", "--json", "--csv").exit_code == 2


def test_models_list_formats(run_cli):
    rows = [json.loads(line) for line in run_cli("models", "list", "--json").stdout.splitlines()]
    by_name = {r["name"]: r for r in rows}
    assert by_name["birdnet"]["dimension"] == 1024 and by_name["birdnet"]["available"]
    assert by_name["birdnet"]["sample_rate"] == 48000
    assert by_name["spectral"]["available"]
    table = run_cli("models", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["name", "version", "dimension"]
    parsed = list(csv.DictReader(io.StringIO(run_cli("models", "list", "--csv").stdout)))
    assert {r["name"] for r in parsed} >= {"birdnet", "spectral"}


def test_sensors_roundtrip(cli_env, run_cli):
    add = run_cli(
        "sensors",
        "add",
        "s1",
        "--site",
        "Reserve",
        "--quadrant",
        "N",
        "--lat",
        "1.5",
        "--lon",
        "2.5",
        "--timezone",
        "America/New_York",
        "--metadata",
        '{"card": 7}',
        "--json",
    )
    assert add.exit_code == 0, add.output
    row = json.loads(add.stdout)
    assert row["timezone"] == "America/New_York" and row["metadata"] == {"card": 7}
    upd = run_cli(
        "sensors", "add", "s1", "--site", "Reserve", "--quadrant", "S", "--update", "--json"
    )
    assert json.loads(upd.stdout)["quadrant"] == "S"
    listed = list(csv.DictReader(io.StringIO(run_cli("sensors", "list", "--csv").stdout)))
    assert [(r["name"], r["quadrant"]) for r in listed] == [("s1", "S")]
    bad = run_cli("sensors", "add", "s2", "--metadata", "[1]")
    assert bad.exit_code == 2


def test_spaces_list_and_switch_the_index_type(cli_env, run_cli):
    from tests.conftest import ROOT

    clips = [ROOT / "examples" / "audio" / n for n in ("dog.ogg", "saw.ogg", "owl.ogg")]
    assert run_cli("sensors", "add", "s1").exit_code == 0
    ing = run_cli("ingest", *clips, "-s", "s1", "-m", "spectral", "-q")
    assert ing.exit_code == 0, ing.output
    (row,) = [json.loads(x) for x in run_cli("spaces", "list", "--json").stdout.splitlines()]
    assert row["space"] == "spectral" and row["index_type"] == "halfvec" and row["segments"] > 0

    built = run_cli("spaces", "index", "spectral", "--type", "vector", "--memory", "64MB")
    assert built.exit_code == 0, built.output
    assert "vector" in built.stderr
    (row,) = list(csv.DictReader(io.StringIO(run_cli("spaces", "list", "--csv").stdout)))
    assert row["index_type"] == "vector"
    # search still works (and orders by the float32 index) after the switch
    found = run_cli("search", "--audio", clips[0], "--space", "spectral", "--json", "-n", "3")
    assert found.exit_code == 0, found.output
    hits = [json.loads(x) for x in found.stdout.splitlines()]
    assert hits and hits[0]["path"].endswith("dog.ogg")

    missing = run_cli("spaces", "index", "nope", "--type", "halfvec")
    assert missing.exit_code == 1 and "no space named 'nope'" in missing.stderr
    bad = run_cli("spaces", "index", "spectral", "--type", "float8")
    assert bad.exit_code == 2
    bad = run_cli("spaces", "index", "spectral", "--memory", "lots")
    assert bad.exit_code == 2 and "--memory" in bad.stderr
    # dropped (for a backfill), searches still answer (exactly), then rebuilt as it was
    dropped = run_cli("spaces", "index", "spectral", "--drop")
    assert dropped.exit_code == 0 and "rebuild it with" in dropped.stderr
    (row,) = [json.loads(x) for x in run_cli("spaces", "list", "--json").stdout.splitlines()]
    assert row["index_size"] == "0 bytes"
    found = run_cli("search", "--audio", clips[0], "--space", "spectral", "--json", "-n", "3")
    assert json.loads(found.stdout.splitlines()[0])["path"].endswith("dog.ogg")
    assert run_cli("spaces", "index", "spectral", "--drop", "--type", "vector").exit_code == 2
    again = run_cli("spaces", "index", "spectral")
    assert again.exit_code == 0 and "vector" in again.stderr
    (row,) = [json.loads(x) for x in run_cli("spaces", "list", "--json").stdout.splitlines()]
    assert row["index_type"] == "vector" and row["index_size"] != "0 bytes"


def test_readme_sql_examples_name_sites_the_readme_creates():
    """The README's SQL examples filter by a site its own `sensors add` example creates (the
    site argument of ranger.search said 'Marsh' while the sensor's site is 'North Marsh')."""
    readme = (ROOT / "README.md").read_text()
    sites = set(re.findall(r'--site "([^"]+)"', readme))
    used = re.findall(r"ranger\.search\('[^']*', \d+, (?:NULL|'[^']*'), '([^']+)'", readme)
    assert used, "the README has an SQL example filtering by site"
    assert set(used) <= sites, (used, sites)
