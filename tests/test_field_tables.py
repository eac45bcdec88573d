"""Kaleidoscope id.csv and BirdNET-Analyzer CSV results from search, classify and annotate
export (real audio, BirdNET, a real database), and ``species list`` like BirdNET-Analyzer's."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

import pytest

from soundscape.formats import birdnet_csv, kaleidoscope
from soundscape.formats.rows import Detection
from tests.conftest import Cli, real_audio

#: BirdNET-Analyzer's header, byte for byte (birdnet_analyzer/analyze/utils.py CSV_HEADER)
BIRDNET_HEADER = "Start (s),End (s),Scientific name,Common name,Confidence,File\n"
#: Kaleidoscope Pro's id.csv header, byte for byte
KALEIDOSCOPE_HEADER = (
    "INDIR,FOLDER,IN FILE,CHANNEL,OFFSET,DURATION,OUT FILE FS,OUT FILE ZC,DATE,TIME,HOUR,"
    "DATE-12,TIME-12,HOUR-12,AUTO ID*,PULSES,MATCHING,MATCH RATIO,MARGIN,ALTERNATE 1,"
    "ALTERNATE 2,N,Fc,Sc,Dur,Fmax,Fmin,Fmean,TBC,Fk,Tk,S1,Tc,Qual,FILES,MANUAL ID\n"
)


@pytest.fixture(scope="module")
def run(module_db_url, tmp_path_factory) -> Cli:
    """A database with a real blackbird recording embedded by BirdNET (sensor in Berlin time,
    no position: BirdNET's location filter keeps every class)."""
    cli = Cli(module_db_url)
    cli("sensors", "add", "garden", "--site", "Garden", "--timezone", "Europe/Berlin")
    folder = tmp_path_factory.mktemp("audio") / "night1"
    folder.mkdir()
    audio = folder / "garden_20240501_053000.ogg"
    audio.write_bytes(real_audio("clips/animals/birds/blackbird.ogg").read_bytes())
    cli("ingest", audio, "--sensor", "garden", "--model", "birdnet", "-q")
    cli.audio = audio  # type: ignore[attr-defined]
    return cli


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_search_writes_both_tables(run, tmp_path):
    hits = run.json("search", "Red-winged Blackbird", "--all-species", "-n", "3")
    assert hits and hits[0]["label"] == "Red-winged Blackbird"
    kdir, bdir = tmp_path / "kpro", tmp_path / "bn"
    result = run("search", "Red-winged Blackbird", "--all-species", "-n", "3",
                 "--kaleidoscope", kdir, "--birdnet-csv", bdir)  # fmt: skip
    assert f"wrote {len(hits)} row(s) to {kdir / 'id.csv'}" in result.stderr

    text = (kdir / "id.csv").read_text(encoding="utf-8")
    assert text.startswith(KALEIDOSCOPE_HEADER)
    rows = read_csv(kdir / "id.csv")
    assert len(rows) == len(hits)
    first = min(hits, key=lambda h: h["start_s"])
    row = rows[0]  # time order
    audio = run.audio
    assert (row["INDIR"], row["FOLDER"], row["IN FILE"]) == (
        str(audio.resolve().parent.parent), "night1", audio.name,
    )  # fmt: skip
    assert float(row["OFFSET"]) == pytest.approx(first["start_s"], abs=1e-3)
    assert float(row["DURATION"]) == pytest.approx(first["end_s"] - first["start_s"], abs=1e-3)
    local = datetime.fromisoformat(first["local"])  # 05:30 in Berlin (file name, local)
    assert (row["DATE"], row["TIME"], row["HOUR"]) == (
        local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S"), str(local.hour),
    )  # fmt: skip
    assert (row["DATE-12"], row["HOUR-12"]) == ("2024-04-30", "17")  # the night's date
    assert row["AUTO ID*"] == "Red-winged Blackbird" and row["MANUAL ID"] == ""
    assert float(row["MATCH RATIO"]) == pytest.approx(first["score"], abs=1e-4)

    combined = bdir / "BirdNET_CombinedTable.csv"
    per_file = bdir / "garden_20240501_053000.BirdNET.results.csv"
    assert combined.read_text(encoding="utf-8").startswith(BIRDNET_HEADER)
    assert per_file.read_text(encoding="utf-8") == combined.read_text(encoding="utf-8")
    lines = combined.read_text(encoding="utf-8").splitlines()[1:]
    start = f"{first['start_s']:.1f}"
    assert lines[0] == (
        f"{start},{first['end_s']:.1f},Agelaius phoeniceus,Red-winged Blackbird,"
        f"{first['score']:.4f},{audio.resolve()}"
    )


def test_classify_writes_every_window(run, tmp_path):
    out = run.json("classify", "--labels", "Red-winged Blackbird, Carrion Crow", "-n", "1")
    assert len(out) == 1
    kdir, bdir = tmp_path / "k", tmp_path / "b"
    run("classify", "--labels", "Red-winged Blackbird, Carrion Crow", "-n", "1",
        "--kaleidoscope", kdir, "--birdnet-csv", bdir)  # fmt: skip
    rows = read_csv(kdir / "id.csv")
    windows = run.json("classify", "--labels", "Red-winged Blackbird, Carrion Crow", "-n", "0")
    assert len(rows) == len(windows) > 1  # all windows, not only the row shown
    assert {r["AUTO ID*"] for r in rows} <= {"Red-winged Blackbird", "Carrion Crow"}
    names = {r["Common name"]: r["Scientific name"] for r in read_csv(bdir / birdnet_csv.COMBINED)}
    assert names.get("Red-winged Blackbird", "Agelaius phoeniceus") == "Agelaius phoeniceus"
    assert names.get("Carrion Crow", "Corvus corone") == "Corvus corone"


def test_annotate_export_as_field_tables(run, tmp_path):
    rec = run.json("recordings", "list")[0]["id"]
    run("annotate", "add", "--recording", rec, "--start", "1.5", "--end", "4", "--label",
        "Red-winged Blackbird")  # fmt: skip
    run("annotate", "add", "--recording", rec, "--start", "5", "--end", "6", "--label",
        "Song Thrush", "--verdict", "no")  # fmt: skip
    run("annotate", "export", "--format", "kaleidoscope", tmp_path / "k")
    rows = read_csv(tmp_path / "k" / "id.csv")
    assert [(r["OFFSET"], r["DURATION"], r["AUTO ID*"], r["MANUAL ID"]) for r in rows] == [
        ("1.5", "2.5", "", "Red-winged Blackbird")  # the "no" is no detection
    ]
    run("annotate", "export", "--format", "birdnet-csv", tmp_path / "b")
    text = (tmp_path / "b" / birdnet_csv.COMBINED).read_text(encoding="utf-8")
    assert text == (
        BIRDNET_HEADER
        + f"1.5,4.0,Agelaius phoeniceus,Red-winged Blackbird,1.0000,{run.audio.resolve()}\n"
    )
    # import does not read them: the choice is refused there
    refused = run("annotate", "import", "--format", "kaleidoscope", tmp_path / "k" / "id.csv",
                  code=2)  # fmt: skip
    assert "kaleidoscope" in refused.stderr


def test_writers_keep_the_shape_with_awkward_cells(tmp_path):
    """A label with a comma is quoted (one cell), a formula is defused, no local time leaves
    the date columns empty; the header never changes."""
    d = Detection("/x/y/a,b.wav", 0.0, 3.0, "=cmd, evil", 0.5, None)
    target = kaleidoscope.write([d], tmp_path)
    rows = read_csv(target)
    assert rows[0]["IN FILE"] == "a,b.wav" and rows[0]["DATE"] == ""
    assert rows[0]["AUTO ID*"] == "'=cmd, evil"
    out = birdnet_csv.write([d], tmp_path / "bn")
    assert [p.name for p in out.written] == ["a-b.BirdNET.results.csv", birdnet_csv.COMBINED]
    (row,) = read_csv(out.written[1])
    assert row["Common name"] == row["Scientific name"] == "'=cmd, evil"
    assert row["Start (s)"] == "0.0" and row["File"] == "/x/y/a,b.wav"


# ------------------------------------------------------------------------------ species list
def test_species_list_like_birdnet_analyzer(run, tmp_path):
    """BirdNET-Analyzer's species list for a place and week: its file (``Scientific
    name_Common name`` per line, most likely first), the same classes soundscape stores for a
    sensor there (``labels occurrence``)."""
    rows = run.json("species", "list", "--lat", "52.52", "--lon", "13.40", "--week", "20",
                    "-o", tmp_path)  # fmt: skip
    lines = (tmp_path / "species_list.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows) > 20
    assert lines == [f"{r['scientific']}_{r['common']}" for r in rows]
    assert "Turdus merula_Eurasian Blackbird" in lines
    probs = [r["probability"] for r in rows]
    assert probs == sorted(probs, reverse=True) and min(probs) >= 0.03

    run("sensors", "add", "berlin", "--lat", "52.52", "--lon", "13.40", "--timezone", "UTC")
    stored = run.json("labels", "occurrence", "-s", "berlin", "--week", "20")
    species = {r["scientific"] for r in stored if r["probability"] is not None}
    assert species == {r["scientific"] for r in rows}

    alpha = tmp_path / "alpha.txt"
    run(
        "species",
        "list",
        "--lat",
        "52.52",
        "--lon",
        "13.40",
        "--date",
        "2024-05-10",
        "--sortby",
        "alpha",
        "-o",
        alpha,
    )  # fmt: skip  (May 8-14: week 18)
    assert alpha.read_text(encoding="utf-8").splitlines() == sorted(
        f"{r['scientific']}_{r['common']}"
        for r in run.json("species", "list", "--lat", "52.52", "--lon", "13.40", "--week", "18")
    )
    bad = run("species", "list", "--lat", "52", "--lon", "13", "--week", "49", code=2)
    assert "1..48" in bad.stderr
