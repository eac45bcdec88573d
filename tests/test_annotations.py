"""Annotations end to end: real audio ingested with the spectral model into a real PostgreSQL,
then add / hit / list / remove, imports of Raven (BirdNET-Analyzer's and soundscape's own),
Audacity and CSV files, every bad-row case, re-import, lossless round trips, the SQL view and
the reader role.

The recordings: a fire truck on north-1 (Europe/Berlin) starting five seconds before local
midnight, a lightning bolt on north-1 at 03:00, a violin on south-1 at noon, and two different
files both named ``dog.ogg`` (one a dog, one a crow) of unknown start time.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date, time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from soundscape import annotations as ann
from soundscape.cli import cli
from soundscape.cli.annotate import os_user
from soundscape.db import make_engine
from soundscape.errors import AnnotationError, AnnotationImportError
from soundscape.formats import tables
from soundscape.search import Filters

from .reserve import EXAMPLES

SENSORS = {"north-1": ("Marsh", "N"), "south-1": ("Forest", "S")}
# (folder/name, source clip, sensor, local start or None)
FILES = [
    ("north/firetruck.ogg", "firetruck.ogg", "north-1", "2024-05-01T23:59:55+02:00"),
    ("north/lightningbolt.ogg", "lightningbolt.ogg", "north-1", "2024-05-01T03:00:00+02:00"),
    ("south/violin.ogg", "violin.ogg", "south-1", "2024-05-01T12:00:00+02:00"),
    ("a/dog.ogg", "dog.ogg", "south-1", None),
    ("b/dog.ogg", "crow.ogg", "south-1", None),
]


@pytest.fixture(scope="module")
def world(module_db_url, tmp_path_factory):
    """The five recordings ingested once (spectral model); returns (db url, {name: recording})."""
    folder = tmp_path_factory.mktemp("audio")
    runner = CliRunner()
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    for name, (site, quadrant) in SENSORS.items():
        r = runner.invoke(
            cli,
            ["sensors", "add", name, "--site", site, "--quadrant", quadrant]
            + ["--timezone", "Europe/Berlin"],
            env=env,
        )
        assert r.exit_code == 0, r.output
    for rel, clip, sensor, start in FILES:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / clip, target)
        args = ["ingest", str(target), "-s", sensor, "-m", "spectral", "-q"]
        if start:
            args += ["--start-time", start]
        r = runner.invoke(cli, args, env=env)
        assert r.exit_code == 0, r.output
    engine = make_engine(module_db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, path, duration_s, sample_rate FROM recordings"))
        recs = {str(Path(r.path).relative_to(folder)): r for r in rows}
    engine.dispose()
    assert len(recs) == len(FILES)
    return module_db_url, recs


@pytest.fixture
def db(world, monkeypatch):
    """The module database for one test (the CLI points at it); annotations wiped after."""
    url, recs = world
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", url)
    engine = make_engine(url)
    yield engine, recs
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM annotations"))
    engine.dispose()


def _all(engine) -> list[ann.Annotation]:
    with engine.connect() as conn:
        return ann.list_annotations(conn)


def _json(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def _segments(engine, recording_id: int) -> list[tuple[int, float, float]]:
    with engine.connect() as conn:
        return [
            (int(r.id), float(r.start_s), float(r.end_s))
            for r in conn.execute(
                sa.text(
                    "SELECT id, start_s, end_s FROM segments WHERE recording_id = :r "
                    "ORDER BY start_s"
                ),
                {"r": recording_id},
            )
        ]


# ----------------------------------------------------------------------------- add / remove
def test_add_list_remove(db, run_cli):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    r = run_cli(
        "annotate", "add", "--recording", truck.id, "--start", "6", "--end", "8.5",
        "--label", " siren ", "--verdict", "no", "--author", "ana", "--note", "far away",
        "--low-hz", "500", "--high-hz", "4000", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    [row] = _json(r)
    assert row["label"] == "siren" and row["verdict"] == "no" and row["author"] == "ana"
    assert (row["start_s"], row["end_s"], row["low_hz"], row["high_hz"]) == (6, 8.5, 500, 4000)
    assert row["sensor"] == "north-1" and row["source"] == "cli"
    # 23:59:55 + 6 s = 00:00:01 local on 2 May
    assert row["local"] == "2024-05-02 00:00:01" and row["recording_id"] == truck.id

    # the author defaults to the OS user name
    r = run_cli(
        "annotate", "add", "--recording", truck.id, "--start", "0", "--end", "1", "--label", "x"
    )
    assert r.exit_code == 0, r.output
    assert {a.author for a in _all(engine)} == {"ana", os_user()}

    # errors say what is wrong; nothing is stored
    for args, message in (
        (("--recording", 999999, "--start", "0", "--end", "1"), "no recording with id 999999"),
        (("--recording", truck.id, "--start", "5", "--end", "99"), "beyond the end"),
        (("--recording", truck.id, "--start", "-1", "--end", "1"), "negative"),
        (("--recording", truck.id, "--start", "3", "--end", "2"), "not after start"),
    ):
        r = run_cli("annotate", "add", *args, "--label", "siren")
        assert r.exit_code == 1 and message in r.stderr, r.output
    r = run_cli(
        "annotate", "add", "--recording", truck.id, "--start", "0", "--end", "1", "--label", "  "
    )
    assert r.exit_code == 1 and "empty label" in r.stderr
    r = run_cli(
        "annotate", "add", "--recording", truck.id, "--start", "0", "--end", "1",
        "--label", "x", "--verdict", "maybe",
    )  # fmt: skip
    assert r.exit_code == 2
    assert len(_all(engine)) == 2

    ids = [a.id for a in _all(engine)]
    r = run_cli("annotate", "remove", ids[0], 987654)
    assert r.exit_code == 1 and "no annotation with id 987654" in r.stderr
    assert len(_all(engine)) == 2  # all or nothing
    r = run_cli("annotate", "remove", *ids)
    assert r.exit_code == 0 and "removed 2" in r.stderr
    assert _all(engine) == []


def test_library_checks(db):
    engine, recs = db
    violin = recs["south/violin.ogg"]
    with engine.begin() as conn:
        # an end a hair past the duration (rounded times) is clipped to it
        i = ann.add_annotation(conn, violin.id, 1.0, violin.duration_s + 0.004, "violin")
        [a] = ann.list_annotations(conn, ids=[i])
        assert a.end_s == pytest.approx(violin.duration_s)
        with pytest.raises(AnnotationError, match="unknown verdict 'maybe'"):
            ann.add_annotation(conn, violin.id, 0, 1, "violin", verdict="maybe")
        with pytest.raises(AnnotationError, match="not above low frequency"):
            ann.add_annotation(conn, violin.id, 0, 1, "violin", low_hz=500, high_hz=400)
        assert ann.normalize_verdict(" N ") == "no" and ann.normalize_verdict("?") == "unsure"


# ----------------------------------------------------------------------------- hits
def test_annotate_hit(db, run_cli):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    segs = _segments(engine, truck.id)
    last_id, last_start, last_end = segs[-1]
    assert last_end > truck.duration_s  # the last window is zero-padded past the file's end
    r = run_cli("annotate", "hit", last_id, "--label", "siren", "--author", "bo", "--json")
    assert r.exit_code == 0, r.output
    [row] = _json(r)
    assert row["segment_id"] == last_id and row["verdict"] == "yes"
    assert row["start_s"] == pytest.approx(last_start)
    assert row["end_s"] == pytest.approx(truck.duration_s)  # clipped to the recording
    # validating the same window again corrects the verdict instead of adding a second row
    r = run_cli("annotate", "hit", last_id, "--label", "siren", "--verdict", "no", "--author", "bo")
    assert r.exit_code == 0, r.output
    [a] = _all(engine)
    assert a.id == row["id"] and a.verdict == "no"
    # another author's judgement is another annotation
    r = run_cli("annotate", "hit", last_id, "--label", "siren", "--author", "cy")
    assert r.exit_code == 0 and len(_all(engine)) == 2
    r = run_cli("annotate", "hit", 99999999, "--label", "siren")
    assert r.exit_code == 1 and "no window with id 99999999" in r.stderr


# ----------------------------------------------------------------------------- list filters
def test_list_filters(db, run_cli):
    engine, recs = db
    truck, bolt = recs["north/firetruck.ogg"], recs["north/lightningbolt.ogg"]
    violin, dog = recs["south/violin.ogg"], recs["a/dog.ogg"]
    with engine.begin() as conn:
        before = ann.add_annotation(conn, truck.id, 1, 3, "siren")  # 23:59:56 on 1 May
        after = ann.add_annotation(conn, truck.id, 7, 9, "siren", verdict="no")  # 00:00:02
        night = ann.add_annotation(conn, bolt.id, 0.5, 2, "thunder")  # 03:00:00.5
        noon = ann.add_annotation(conn, violin.id, 0, 2, "violin")  # 12:00
        unknown = ann.add_annotation(conn, dog.id, 0, 0.9, "dog", author="ana")  # no start time

    def ids(*args: str) -> list[int]:
        r = run_cli("annotate", "list", *args, "--json")
        assert r.exit_code == 0, r.output
        return [row["id"] for row in _json(r)]

    # time order, unknown start last
    assert ids() == [night, noon, before, after, unknown]
    assert ids("--sensor", "north-1") == [night, before, after]
    assert ids("--site", "Forest") == [noon, unknown]
    assert ids("--quadrant", "N", "--label", "siren", "--verdict", "no") == [after]
    # across midnight: 23:59:56 and 00:00:02 are in, 03:00 and noon are not
    assert ids("--time", "23:00-01:00") == [before, after]
    assert ids("--time", "02:00-04:00") == [night]
    assert ids("--from", "2024-05-02") == [after]  # local dates
    assert ids("--to", "2024-05-01") == [night, noon, before]
    assert ids("--from", "2024-05-01T22:00:00Z") == [after]  # an instant: 00:00:02 CEST
    assert ids("--author", "ana") == [unknown]
    assert ids("--recording", truck.id, "-n", "1") == [before]
    r = run_cli("annotate", "list", "--sensor", "nobody")
    assert r.exit_code == 1 and "unknown sensor 'nobody'" in r.stderr
    r = run_cli("annotate", "list", "--time", "25:00-02:00")
    assert r.exit_code == 2

    # the library takes search's Filters
    with engine.connect() as conn:
        got = ann.list_annotations(
            conn, Filters(time_from=time(23), time_to=time(1)), label="siren"
        )
        assert [a.id for a in got] == [before, after]
        assert got[1].local_date == date(2024, 5, 2) and got[1].local_time == time(0, 0, 2)
        # CSV output and the per-label summary
    r = run_cli("annotate", "list", "--csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 5 and {"id", "label", "verdict", "path", "recording_id"} <= set(rows[0])
    r = run_cli("annotate", "labels", "--json")
    summary = {row["label"]: row for row in _json(r)}
    assert summary["siren"]["yes"] == 1 and summary["siren"]["no"] == 1


def test_windows_labelled(db):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    segs = {round(s): i for i, s, _ in _segments(engine, truck.id)}  # start -> id (3 s / 2 s)
    with engine.begin() as conn:
        a1 = ann.add_annotation(conn, truck.id, 4.5, 5.5, "siren")  # windows 2-5 and 4-7
        a2 = ann.add_annotation(conn, truck.id, 5.0, 6.0, "dog", verdict="no")  # 4-7 only
        rows = ann.windows_labelled(conn, "spectral")
        assert [(w.segment_id, w.label, w.verdict, w.annotation_id) for w in rows] == sorted(
            [
                (segs[2], "siren", "yes", a1),
                (segs[4], "dog", "no", a2),
                (segs[4], "siren", "yes", a1),
            ]
        )
        overlaps = {w.segment_id: w.overlap_s for w in rows if w.annotation_id == a1}
        assert overlaps == {segs[2]: 0.5, segs[4]: 1.0}
        assert [w.segment_id for w in ann.windows_labelled(conn, "spectral", ["dog"])] == [segs[4]]
        assert ann.windows_labelled(conn, "spectral", verdicts="yes")[0].label == "siren"
        # a short sound must lie half inside a window at min_overlap 0.5: 4.5-5.5 is half in
        # both 2-5 and 4-7; at 0.6 only 4-7 (it holds the whole second) remains
        assert len(ann.windows_labelled(conn, "spectral", "siren", min_overlap=0.5)) == 2
        assert [w.segment_id for w in ann.windows_labelled(conn, "spectral", "siren", min_overlap=0.6)] == [segs[4]]  # fmt: skip


# ----------------------------------------------------------------------------- imports
def _birdnet_table(rows: list[tuple], begin_path: bool = True) -> str:
    """BirdNET-Analyzer's Raven output, as Raven saves it back: each selection in a
    Spectrogram row and a Waveform row."""
    head = [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
        "High Freq (Hz)", "Common Name", "Species Code", "Confidence",
    ] + (["Begin Path", "File Offset (s)"] if begin_path else [])  # fmt: skip
    lines = ["\t".join(head)]
    for n, (path, begin, end, name, code, conf, offset) in enumerate(rows, start=1):
        for view in ("Spectrogram 1", "Waveform 1"):
            cells = [n, view, 1, begin, end, 0, 15000, name, code, conf]
            if begin_path:
                cells += [path, offset]
            lines.append("\t".join(str(c) for c in cells))
    return "\n".join(lines) + "\n"


def test_import_birdnet_raven_tables(db, run_cli, tmp_path):
    engine, recs = db
    truck, violin = recs["north/firetruck.ogg"], recs["south/violin.ogg"]
    # a combined table: Begin Time runs across files, File Offset is the time in each file
    combined = tmp_path / "BirdNET_SelectionTable.txt"
    combined.write_text(
        _birdnet_table(
            [
                (truck.path, 0.0, 3.0, "Siren", "siren1", 0.91, 0.0),
                (truck.path, 6.0, 9.0, "Siren", "siren1", 0.85, 6.0),
                (violin.path, 10.32, 13.32, "Human whistle", "whistl", 0.31, 0.0),
            ]
        )
    )
    # a per-file table without Begin Path: the file name names the recording
    per_file = tmp_path / "violin.BirdNET.selection.table.txt"
    per_file.write_text(
        _birdnet_table([(None, 0.0, 3.0, "Eurasian Blackbird", "eurbla", 0.5, None)], False)
    )
    r = run_cli("annotate", "import", combined, per_file, "--author", "birdnet", "--json")
    assert r.exit_code == 0, r.output
    assert [(row["imported"], row["duplicates"]) for row in _json(r)] == [(3, 0), (1, 0)]
    got = sorted(
        (a.recording_id, a.start_s, a.end_s, a.label, a.low_hz, a.high_hz) for a in _all(engine)
    )
    assert got == sorted(
        [
            (truck.id, 0.0, 3.0, "Siren", 0.0, 15000.0),
            (truck.id, 6.0, 9.0, "Siren", 0.0, 15000.0),
            (violin.id, 0.0, 3.0, "Human whistle", 0.0, 15000.0),
            (violin.id, 0.0, 3.0, "Eurasian Blackbird", 0.0, 15000.0),
        ]
    )
    assert {(a.verdict, a.source, a.author) for a in _all(engine)} == {("yes", "import", "birdnet")}


def test_raven_views_of_one_selection_count_once(db, run_cli, tmp_path):
    """Raven's Waveform row may come first; the Spectrogram row holds the drawn band."""
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    table = tmp_path / "firetruck.Table.1.selections.txt"
    table.write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
        "High Freq (Hz)\tAnnotation\n"
        "1\tWaveform 1\t1\t1.5\t2.5\t0\t22050\tsiren\n"
        "1\tSpectrogram 1\t1\t1.5\t2.5\t900\t4100\tsiren\n"
        "2\tSpectrogram 1\t1\t3\t4\t0\t22050\tsiren\n"
        "2\tWaveform 1\t1\t3\t4\t0\t22050\tsiren\n"
    )
    r = run_cli("annotate", "import", table, "--json")
    assert r.exit_code == 0, r.output
    assert (_json(r)[0]["imported"], _json(r)[0]["duplicates"]) == (2, 0)
    got = [(a.recording_id, a.start_s, a.low_hz, a.high_hz) for a in _all(engine)]
    assert got == [(truck.id, 1.5, 900.0, 4100.0), (truck.id, 3.0, None, None)]


def test_import_search_raven_output(db, run_cli, tmp_path):
    """soundscape's own `search --raven` tables: Begin Path, Window ID, padded last windows."""
    engine, recs = db
    out = tmp_path / "raven"
    r = run_cli(
        "search", "--audio", EXAMPLES / "firetruck.ogg", "--space", "spectral", "-n", "8",
        "--raven", out, "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    hits = _json(r)
    tables = sorted(out.glob("*.selections.txt"))
    assert len(tables) == len({h["recording_id"] for h in hits}) >= 2
    r = run_cli("annotate", "import", *tables, "--label", "siren")
    assert r.exit_code == 0, r.output
    got = {a.segment_id: a for a in _all(engine)}
    assert set(got) == {h["segment_id"] for h in hits}
    durations = {rec.id: rec.duration_s for rec in recs.values()}
    for h in hits:
        a = got[h["segment_id"]]
        assert a.label == "siren" and a.verdict == "yes" and a.recording_id == h["recording_id"]
        assert a.start_s == pytest.approx(h["start_s"], abs=1e-3)
        # windows past the end of a file (zero-padded) are clipped to the recording
        assert a.end_s == pytest.approx(min(h["end_s"], durations[a.recording_id]), abs=1e-3)
        assert a.low_hz is None and a.high_hz is None  # full band = no band
    # without --label, the table's Common Name column (the query) is the label
    table_labels = {row["Common Name"] for row in csv.DictReader(tables[0].open(), delimiter="\t")}
    assert table_labels and all(label.startswith("audio firetruck.ogg") for label in table_labels)
    r = run_cli("annotate", "import", tables[0])
    assert r.exit_code == 0, r.output
    assert {a.label for a in _all(engine)} == {"siren"} | table_labels


def test_import_review_batch_verdicts(db, run_cli, tmp_path):
    """A review batch: a Raven table with a Verdict column; rows left empty are unreviewed."""
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    segs = _segments(engine, truck.id)
    table = tmp_path / "review.txt"
    lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tBegin Path\tLabel\t"
             "Verdict\tWindow ID"]  # fmt: skip
    for n, (verdict, (seg, start, end)) in enumerate(zip(["yes", "No", "", "?"], segs), 1):
        lines.append(f"{n}\tSpectrogram 1\t1\t{start}\t{end}\t{truck.path}\tsaw\t{verdict}\t{seg}")
    table.write_text("\n".join(lines) + "\n")
    r = run_cli("annotate", "import", table)  # a Verdict column: source review
    assert r.exit_code == 0, r.output
    assert "1 unreviewed" in r.stderr
    r = run_cli("annotate", "import", table, "--json")  # again: nothing new
    assert _json(r)[0] == {
        "file": str(table), "format": "raven", "source": "review", "imported": 0,
        "duplicates": 3, "unreviewed": 1,
    }  # fmt: skip
    got = [(a.segment_id, a.verdict, a.source) for a in _all(engine)]
    assert got == [(segs[0][0], "yes", "review"), (segs[1][0], "no", "review"),
                   (segs[3][0], "unsure", "review")]  # fmt: skip


def test_import_audacity(db, run_cli, tmp_path):
    engine, recs = db
    truck, bolt = recs["north/firetruck.ogg"], recs["north/lightningbolt.ogg"]
    # Audacity's own export: label lines, and a "\" line with the spectral selection
    track = tmp_path / "firetruck.txt"
    track.write_text(
        "1.000000\t2.500000\tsiren\n"
        "\\\t300.000000\t3000.000000\n"
        "4.000000\t5.000000\tsiren [no]\n"
        "6.000000\t7.000000\tsong [type A]\n"
    )
    other = tmp_path / "labels-from-anna.txt"  # a name that names no recording
    other.write_text("0.5\t1.5\tthunder\n")
    r = run_cli("annotate", "import", track, other)
    assert r.exit_code == 1
    assert "labels-from-anna" in r.stderr and "--recording" in r.stderr
    r = run_cli("annotate", "import", other, "--recording", bolt.id)
    assert r.exit_code == 0, r.output
    got = sorted(
        (a.recording_id, a.start_s, a.end_s, a.label, a.verdict, a.low_hz, a.high_hz)
        for a in _all(engine)
    )
    assert got == [
        (truck.id, 1.0, 2.5, "siren", "yes", 300.0, 3000.0),
        (truck.id, 4.0, 5.0, "siren", "no", None, None),
        (truck.id, 6.0, 7.0, "song [type A]", "yes", None, None),
        (bolt.id, 0.5, 1.5, "thunder", "yes", None, None),
    ]


def test_import_csv_and_file_names(db, run_cli, tmp_path):
    engine, recs = db
    truck, dog_a, dog_b = recs["north/firetruck.ogg"], recs["a/dog.ogg"], recs["b/dog.ogg"]
    good = tmp_path / "good.csv"
    good.write_text(
        "path,start_s,end_s,label,verdict,author,note\n"
        f'{truck.path},1,2,siren,yes,ana,"close, loud"\n'
        "firetruck.ogg,3,4,siren,unsure,,\n"  # a file name only one recording has
        f"{dog_a.path},0,0.5,dog,no,,\n"  # the full path of one of two dog.ogg
    )
    plain = tmp_path / "plain.csv"  # no author column: --author is the author
    plain.write_text(f"path,start_s,end_s,label\n{truck.path},5,6,horn\n")
    ambiguous = tmp_path / "ambiguous.csv"
    ambiguous.write_text("path,start_s,end_s,label\nfiretruck.ogg,0,1,siren\ndog.ogg,0,0.5,dog\n")
    r = run_cli("annotate", "import", good, ambiguous, plain, "--author", "zed")
    assert r.exit_code == 1
    assert "line 3:" in r.stderr and "'dog.ogg' is ambiguous: 2 stored recordings" in r.stderr
    assert "give the full path" in r.stderr and str(dog_b.path) in r.stderr
    assert "2 file(s) imported, 1 failed" in r.stderr
    got = sorted(
        ((a.recording_id, a.start_s, a.verdict, a.author, a.note) for a in _all(engine)), key=repr
    )
    expected = [
        (truck.id, 1.0, "yes", "ana", "close, loud"),
        (truck.id, 3.0, "unsure", None, None),  # an empty author cell: unknown author
        (dog_a.id, 0.0, "no", None, None),
        (truck.id, 5.0, "yes", "zed", None),
    ]
    assert got == sorted(expected, key=repr)


def test_reimport_skips_duplicates(db, run_cli, tmp_path):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    f = tmp_path / "a.csv"
    f.write_text(
        f"path,start_s,end_s,label,verdict\n{truck.path},1,2,siren,yes\n"
        f"{truck.path},1,2,siren,yes\n"  # repeated in the file
        f"{truck.path},1,2,siren,no\n"  # another verdict: another annotation
    )
    r = run_cli("annotate", "import", f, "--json")
    assert r.exit_code == 0 and _json(r)[0]["imported"] == 2 and _json(r)[0]["duplicates"] == 1
    r = run_cli("annotate", "import", f, "--json")
    assert r.exit_code == 0, r.output
    assert (_json(r)[0]["imported"], _json(r)[0]["duplicates"]) == (0, 3)
    assert "imported 0 annotation(s) (csv), skipped 3 already stored" in r.stderr
    assert len(_all(engine)) == 2


BAD_ROWS = {
    # case: (bad row, message)
    "unknown recording": ("/nowhere/x.wav,1,2,siren,yes", "no stored recording has the path"),
    "negative time": ("{truck},-1,2,siren,yes", "start -1 s is negative"),
    "end before start": ("{truck},3,2,siren,yes", "end 2 s is not after start 3 s"),
    "end beyond the recording": ("{truck},3,30,siren,yes", "end 30 s is beyond the end"),
    "unknown verdict": ("{truck},1,2,siren,maybe", "unknown verdict 'maybe'"),
    "empty label": ("{truck},1,2,  ,yes", "empty label"),
    "not a number": ("{truck},one,2,siren,yes", "start_s 'one' is not a number"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_row_rejects_the_whole_file(case, db, run_cli, tmp_path):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    row, message = BAD_ROWS[case]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "path,start_s,end_s,label,verdict\n"
        f"{truck.path},0,1,fine,yes\n"
        "\n"  # blank lines are skipped but counted
        f"{truck.path},1,2,fine,no\n" + row.format(truck=truck.path) + "\n"
    )
    good = tmp_path / "good.csv"
    good.write_text(f"path,start_s,end_s,label\n{truck.path},5,6,other\n")
    r = run_cli("annotate", "import", bad, good)
    assert r.exit_code == 1, r.output
    assert f"{bad}: not imported, 1 bad row(s)" in r.stderr
    assert f"line 5: {message}" in r.stderr or ("line 5:" in r.stderr and message in r.stderr)
    assert "1 file(s) imported, 1 failed" in r.stderr
    assert [a.label for a in _all(engine)] == ["other"]  # nothing of bad.csv


def test_bad_rows_in_raven_and_audacity_have_their_line_numbers(db, run_cli, tmp_path):
    engine, recs = db
    truck = recs["north/firetruck.ogg"]
    raven = tmp_path / "firetruck.Table.1.selections.txt"
    raven.write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
        "1\tSpectrogram 1\t1\t1.0\t2.0\tsiren\n"
        "1\tWaveform 1\t1\t1.0\t2.0\tsiren\n"
        "2\tSpectrogram 1\t1\t-1.0\t2.0\tsiren\n"
        "3\tSpectrogram 1\t1\t4.0\t50.0\tsiren\n"
    )
    track = tmp_path / "firetruck.txt"
    track.write_text("1\t2\tsiren\n3\t3\tpoint label\n")
    r = run_cli("annotate", "import", raven, track)
    assert r.exit_code == 1
    assert "2 bad row(s)" in r.stderr
    assert "line 4: start -1 s is negative" in r.stderr
    assert "line 5: end 50 s is beyond the end of recording" in r.stderr
    assert "line 2: end 3 s is not after start 3 s" in r.stderr
    assert _all(engine) == []
    # fixed, the Raven table's two views of selection 1 are one annotation
    raven.write_text("\n".join(raven.read_text().splitlines()[:3]) + "\n")
    r = run_cli("annotate", "import", raven)
    assert r.exit_code == 0, r.output
    assert [(a.recording_id, a.start_s, a.label) for a in _all(engine)] == [
        (truck.id, 1.0, "siren")
    ]


def test_import_file_library_error(db, tmp_path):
    engine, recs = db
    f = tmp_path / "x.csv"
    f.write_text("path,start_s,end_s,label\nnowhere.wav,0,1,a\nnowhere.wav,0,1,b\n")
    with engine.begin() as conn, pytest.raises(AnnotationImportError) as info:
        tables.import_file(conn, f)
    assert [line for line, _ in info.value.problems] == [2, 3]
    f = tmp_path / "x.txt"
    f.write_text("what is this\n")
    with engine.begin() as conn, pytest.raises(AnnotationError, match="cannot tell its format"):
        tables.import_file(conn, f)
    with engine.begin() as conn, pytest.raises(AnnotationError, match="cannot read it"):
        tables.import_file(conn, tmp_path / "missing.txt")
    # Raven on Windows saves in the system code page, not UTF-8
    truck = recs["north/firetruck.ogg"]
    f = tmp_path / "firetruck.Table.1.selections.txt"
    f.write_bytes(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
        "1\tSpectrogram 1\t1\t1\t2\tMésange\n".encode("cp1252")
    )
    with engine.begin() as conn:
        result = tables.import_file(conn, f, author="x")
        assert (result.format, result.imported) == ("raven", 1)
        [a] = ann.list_annotations(conn)
        assert (a.recording_id, a.label) == (truck.id, "Mésange")
        # windows_labelled takes a space id too
        space_id = conn.execute(sa.text("SELECT id FROM spaces WHERE name = 'spectral'")).scalar()
        assert [w.annotation_id for w in ann.windows_labelled(conn, space_id)] == [a.id]
        with pytest.raises(AnnotationError, match="no space with id"):
            ann.windows_labelled(conn, 9999)


# ----------------------------------------------------------------------------- round trips
def _seed(engine, recs) -> None:
    truck, violin, dog_a = recs["north/firetruck.ogg"], recs["south/violin.ogg"], recs["a/dog.ogg"]
    last_seg = _segments(engine, truck.id)[-1][0]
    with engine.begin() as conn:
        ann.add_annotation(conn, truck.id, 0.25, 1.125, "siren", author="ana", note="n1")
        ann.add_annotation(
            conn, truck.id, 2, 3.3333333, "siren", verdict="no", low_hz=120.5, high_hz=8000
        )
        ann.add_annotation(conn, truck.id, 2, 3.3333333, "horn", verdict="unsure", author="bo")
        ann.annotate_hit(conn, last_seg, "siren", "yes", author="cy")
        ann.add_annotation(conn, violin.id, 0, violin.duration_s, "violin, solo", note='a, "b"; c')
        ann.add_annotation(conn, dog_a.id, 0.1, 0.9, "dog", low_hz=0.1, high_hz=2000.7)


@pytest.mark.parametrize("fmt", tables.FORMATS)
def test_round_trip_is_lossless(fmt, db, run_cli, tmp_path):
    engine, recs = db
    _seed(engine, recs)
    carried = {
        "raven": ("author", "note", "segment_id"),
        "csv": ("author", "note", "segment_id"),
        "audacity": (),  # times, band, label and verdict only
    }[fmt]

    def state() -> list[tuple]:
        return sorted(
            (
                (
                    a.recording_id, round(a.start_s, 9), round(a.end_s, 9), a.low_hz, a.high_hz,
                    a.label, a.verdict, *(getattr(a, c) for c in carried),
                )
                for a in _all(engine)
            ),
            key=repr,
        )  # fmt: skip

    before = state()
    out = tmp_path / "out"
    r = run_cli("annotate", "export", "--format", fmt, out)
    assert r.exit_code == 0, r.output
    files = [Path(p) for p in r.stdout.split()]
    assert len(files) == (1 if fmt == "csv" else 3)
    # read back into an emptied database: the same annotations
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM annotations"))
    r = run_cli("annotate", "import", *files)
    assert r.exit_code == 0, r.output
    assert state() == before
    # read back once more: nothing new
    r = run_cli("annotate", "import", *files, "--json")
    assert r.exit_code == 0, r.output
    assert sum(row["imported"] for row in _json(r)) == 0
    assert sum(row["duplicates"] for row in _json(r)) == len(before)
    # export -> import -> export gives the same files (but for the new ids)
    again = tmp_path / "again"
    assert run_cli("annotate", "export", "--format", fmt, again).exit_code == 0

    def content(folder: Path) -> dict[str, list]:
        """Each file's rows, without the columns a re-import changes (id, source)."""
        if fmt == "audacity":
            return {p.name: p.read_text().splitlines() for p in folder.iterdir()}
        changed = {"id", "source", "Annotation ID", "Source"}
        delimiter = "," if fmt == "csv" else "\t"
        return {
            p.name: [
                {k: v for k, v in row.items() if k not in changed}
                for row in csv.DictReader(p.open(), delimiter=delimiter)
            ]
            for p in folder.iterdir()
        }

    assert content(out) == content(again)


def test_export_filters(db, run_cli, tmp_path):
    engine, recs = db
    _seed(engine, recs)
    r = run_cli(
        "annotate", "export", "--format", "csv", tmp_path, "--sensor", "north-1",
        "--verdict", "yes",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "annotations.csv").open()))
    assert {(row["sensor"], row["verdict"]) for row in rows} == {("north-1", "yes")}
    assert len(rows) == 2
    r = run_cli("annotate", "export", "--format", "excel", tmp_path)
    assert r.exit_code == 2


# ----------------------------------------------------------------------------- SQL
def test_view_and_reader_role(db, world, run_cli):
    engine, recs = db
    _seed(engine, recs)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT label, verdict, sensor, site, quadrant, local_date, local_time, "
                "starts_at, path, low_hz FROM ranger.annotations WHERE label = 'horn'"
            )
        ).fetchall()
    assert len(rows) == 1
    horn = rows[0]
    assert (horn.sensor, horn.site, horn.quadrant) == ("north-1", "Marsh", "N")
    assert horn.local_date == date(2024, 5, 1) and horn.local_time == time(23, 59, 57)

    r = run_cli("db", "create-reader", "--password", input="pw-reader\npw-reader\n")
    assert r.exit_code == 0, r.output
    url = (
        sa.engine.make_url(world[0])
        .set(drivername="postgresql", username="soundscape_reader", password="pw-reader")
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM ranger.annotations").fetchone()[0]
        assert n == len(_all(engine)) == 6
    with psycopg.connect(url) as conn, pytest.raises(psycopg.Error):
        conn.execute(
            "INSERT INTO annotations (recording_id, start_s, end_s, label) VALUES (%s, 0, 1, 'x')",
            [recs["a/dog.ogg"].id],
        )
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM annotations")


def test_migration_downgrade_and_upgrade(db_url):
    """0008 down (with whatever depends on it) and up again."""
    from alembic import command

    from soundscape.db import alembic_config, upgrade

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0007")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('annotations')")).scalar() is None
            assert (
                conn.execute(sa.text("SELECT to_regclass('ranger.annotations')")).scalar() is None
            )
        upgrade(engine, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM ranger.annotations")).scalar() == 0
    finally:
        engine.dispose()


def test_awkward_file_names_and_a_path_stored_twice(db_url, cli_env, run_cli, tmp_path):
    """A name with a space, '_' and '%' (LIKE wildcards; soundscape slugs it in file names)
    and a path whose file changed between two ingests."""
    assert run_cli("sensors", "add", "s1").exit_code == 0
    odd = tmp_path / "dawn chorus_1%.ogg"
    shutil.copy(EXAMPLES / "crow.ogg", odd)
    same = tmp_path / "same.ogg"
    shutil.copy(EXAMPLES / "owl.ogg", same)
    for path in (odd, same):
        assert run_cli("ingest", path, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    shutil.copy(EXAMPLES / "cuckoo.ogg", same)  # the file changes and is ingested again
    assert run_cli("ingest", same, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ids = dict(
                conn.execute(
                    sa.text("SELECT path, array_agg(id ORDER BY id) FROM recordings GROUP BY path")
                ).fetchall()
            )
        [odd_id] = ids[str(odd)]
        assert len(ids[str(same)]) == 2

        f = tmp_path / "odd.csv"
        f.write_text(f"path,start_s,end_s,label\n{odd.name},0,1,crow\n")
        r = run_cli("annotate", "import", f)
        assert r.exit_code == 0, r.output
        out = tmp_path / "out"
        assert run_cli("annotate", "export", "--format", "audacity", out).exit_code == 0
        [track] = out.iterdir()
        assert track.name == "dawn-chorus_1.txt"  # slugged
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM annotations"))
        r = run_cli("annotate", "import", track, "--json")
        assert r.exit_code == 0, r.output
        with engine.connect() as conn:
            assert [(a.recording_id, a.label) for a in ann.list_annotations(conn)] == [
                (odd_id, "crow")
            ]

        f = tmp_path / "same.csv"
        f.write_text(f"path,start_s,end_s,label\n{same},0,0.5,owl\n")
        r = run_cli("annotate", "import", f)
        assert r.exit_code == 1
        assert "line 2: 2 stored recordings have the path" in r.stderr
        assert "--recording ID" in r.stderr
        r = run_cli("annotate", "import", f, "--recording", ids[str(same)][0])
        assert r.exit_code == 0, r.output
    finally:
        engine.dispose()
