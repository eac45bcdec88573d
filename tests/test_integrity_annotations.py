"""Annotations that were silently wrong or lost (issue 24, items 11 and 12): export then import
doubled them, notes with tabs or line breaks did not round-trip, a file that is not UTF-8 was
read as Windows-1252 without a word, exports wrote spreadsheet formulas unescaped; spans past
the recording's end, windows of other recordings, bands above Nyquist and 50 MB notes were
stored, whoever wrote them (the database now refuses them too: migration 0025)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from soundscape import annotations as ann
from soundscape.errors import AnnotationError, AnnotationImportError
from soundscape.formats import tables
from soundscape.formats.rows import table_cell
from soundscape.output import emit, from_spreadsheet
from tests.conftest import Cli, real_audio

DOG, CROW = real_audio("firetruck.ogg"), real_audio("crow.ogg")

#: what OWASP lists as CSV injection payloads, and text around them
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1+1)*cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "'=quoted"]


@pytest.fixture(scope="module")
def db(module_db_url: str, tmp_path_factory) -> tuple[Cli, sa.Engine, int, int]:
    """Two recordings (dog, crow) in the spectral space; their ids."""
    run = Cli(module_db_url)
    folder = tmp_path_factory.mktemp("audio")
    for clip in (DOG, CROW):
        shutil.copy(clip, folder / clip.name)
    run("sensors", "add", "s1")
    run("ingest", folder, "-s", "s1", "-m", "spectral", "-q")
    engine = sa.create_engine(module_db_url)
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT path, id FROM recordings")).all())
    dog = next(i for p, i in ids.items() if p.endswith("firetruck.ogg"))
    crow = next(i for p, i in ids.items() if p.endswith("crow.ogg"))
    yield run, engine, dog, crow
    engine.dispose()


@pytest.fixture
def conn(db):
    """A connection whose changes are rolled back after the test."""
    _, engine, _, _ = db
    with engine.connect() as c:
        tx = c.begin()
        yield c
        tx.rollback()


def _count(conn) -> int:
    return conn.execute(sa.text("SELECT count(*) FROM annotations")).scalar()


@pytest.mark.parametrize("fmt", ["raven", "csv", "audacity"])
def test_export_then_import_adds_nothing(db, conn, tmp_path: Path, fmt: str) -> None:
    """A web verdict exported and imported back came in as source review/import: doubled."""
    _, _, dog, _ = db
    ann.add_annotation(conn, dog, 0.5, 1.5, "dog", source="web", author="ana")
    ann.add_annotation(conn, dog, 1.0, 2.0, "bark", verdict="no", source="cli")
    before = _count(conn)
    written = tables.export(conn, fmt, tmp_path).written
    for f in written:
        result = tables.import_file(conn, f, source=None)
        assert result.imported == 0 and result.duplicates == 2
    assert _count(conn) == before


def test_notes_with_tabs_and_line_breaks_round_trip(db, conn, tmp_path: Path) -> None:
    _, _, dog, _ = db
    note = "first line\tafter a tab\nsecond line\\n not an escape\r\nthird"
    ann.add_annotation(conn, dog, 0.0, 1.0, "dog", note=note, author="ana")
    for fmt in ("raven", "csv"):
        folder = tmp_path / fmt
        files = tables.export(conn, fmt, folder).written
        conn.execute(sa.text("DELETE FROM annotations"))
        for f in files:
            tables.import_file(conn, f)
        (got,) = conn.execute(sa.text("SELECT note FROM annotations")).scalars()
        assert got == note, fmt


@pytest.mark.parametrize("label", ["saw\tblade", "two\nlines", "bell\x07", "x" * 201])
def test_a_label_is_one_short_line(db, conn, label: str) -> None:
    _, _, dog, _ = db
    with pytest.raises(AnnotationError, match="label"):
        ann.add_annotation(conn, dog, 0.0, 1.0, label)


def test_a_file_that_is_not_utf8_is_said(db, tmp_path: Path) -> None:
    run, engine, dog, _ = db
    f = tmp_path / "latin.csv"
    f.write_bytes(f"path,start_s,end_s,label\n{DOG.name},0,1,Grünspecht\n".encode("latin-1"))
    result = run("annotate", "import", f)
    assert "warning" in result.stderr and "not UTF-8" in result.stderr
    assert "Windows-1252" in result.stderr
    with engine.begin() as conn:
        labels = conn.execute(sa.text("SELECT label FROM annotations")).scalars().all()
        conn.execute(sa.text("DELETE FROM annotations"))
    assert labels == ["Grünspecht"]
    f.write_bytes(b"path,start_s,end_s,label\n" + DOG.name.encode() + b",0,1,bad\x81byte\n")
    result = run("annotate", "import", f, code=1)
    assert "neither UTF-8 nor Windows-1252" in result.stderr


def test_exports_escape_formulas_and_import_undoes_it(db, conn, tmp_path: Path) -> None:
    _, _, dog, _ = db
    for i, text in enumerate(FORMULAS):
        ann.add_annotation(conn, dog, i * 0.5, i * 0.5 + 0.5, text, author=text, note=text)
    want = sorted(
        conn.execute(sa.text("SELECT start_s, label, author, note FROM annotations")).all()
    )
    for fmt in ("csv", "raven"):
        files = tables.export(conn, fmt, tmp_path / fmt).written
        text = "".join(f.read_text() for f in files)
        if fmt == "csv":
            rows = list(csv.DictReader(files[0].open()))
            cells = [r[c] for r in rows for c in ("label", "author", "note")]
        else:
            lines = [line.split("\t") for line in text.splitlines()[1:]]
            cells = [c for line in lines for c in (line[9], line[11], line[12])]
        # no cell a spreadsheet would run: each starts with the quote OWASP recommends
        assert cells and all(c.startswith("'") for c in cells), cells
        conn.execute(sa.text("DELETE FROM annotations"))
        for f in files:
            tables.import_file(conn, f)
        got = sorted(
            conn.execute(sa.text("SELECT start_s, label, author, note FROM annotations")).all()
        )
        assert got == want, fmt


def test_the_library_refuses_what_does_not_fit_the_recording(db, conn) -> None:
    _, engine, dog, crow = db
    crow_window = conn.execute(
        sa.text("SELECT id FROM segments WHERE recording_id = :r LIMIT 1"), {"r": crow}
    ).scalar()
    with pytest.raises(AnnotationError, match="beyond the end"):
        ann.add_annotation(conn, dog, 0.0, 1e9, "dog")
    with pytest.raises(AnnotationError, match=f"not of recording {dog}"):
        ann.add_annotation(conn, dog, 0.0, 1.0, "dog", segment_id=crow_window)
    with pytest.raises(AnnotationError, match="at most 10000"):
        ann.add_annotation(conn, dog, 0.0, 1.0, "dog", note="x" * 50_000_000)
    rate = conn.execute(sa.text("SELECT sample_rate FROM recordings WHERE id = :r"), {"r": dog})
    nyquist = rate.scalar() / 2
    with pytest.raises(AnnotationError, match="Nyquist|highest frequency"):
        ann.add_annotation(conn, dog, 0.0, 1.0, "dog", low_hz=100, high_hz=nyquist + 5000)


def test_an_import_refuses_a_band_it_used_to_drop(db, conn, tmp_path: Path) -> None:
    """(-5, 1e12) was taken for the full band and dropped silently; a band above Nyquist kept."""
    f = tmp_path / "bands.csv"
    f.write_text(
        "path,start_s,end_s,label,low_hz,high_hz\n"
        f"{DOG.name},0,1,dog,-5,1000000000000\n{DOG.name},0,1,dog,100,90000\n"
    )
    with pytest.raises(AnnotationImportError) as err:
        tables.import_file(conn, f)
    assert [line for line, _ in err.value.problems] == [2, 3]
    assert _count(conn) == 0


@pytest.mark.parametrize(
    "values, message",
    [
        ("0, 1e9, 'dog', NULL, NULL", "beyond the end"),
        ("0, 1, 'dog', repeat('x', 50000), NULL", "annotations_note_length"),
        ("0, 1, repeat('x', 1000000), NULL, NULL", "annotations_label_line"),
        ("0, 1, E'two\\nlines', NULL, NULL", "annotations_label_line"),
        ("0, 1, 'dog', NULL, :crow_window", "is not a window of recording"),
    ],
)
def test_the_database_refuses_them_from_any_client(db, values: str, message: str) -> None:
    """Whatever writes the row (a reviewer in psql, a BI tool), the database checks it."""
    _, engine, dog, crow = db
    with engine.connect() as conn:
        crow_window = conn.execute(
            sa.text("SELECT id FROM segments WHERE recording_id = :r LIMIT 1"), {"r": crow}
        ).scalar()
        with pytest.raises(sa.exc.DBAPIError, match=message):
            conn.execute(
                sa.text(
                    "INSERT INTO annotations (recording_id, start_s, end_s, label, note, "
                    f"segment_id) VALUES (:dog, {values})"
                ),
                {"dog": dog, "crow_window": crow_window},
            )
        conn.rollback()


def test_listings_and_search_tables_escape_formulas(db, conn, tmp_path: Path) -> None:
    """``--csv`` of every listing (one writer: soundscape.output) and the Raven tables of
    search results quote a cell a spreadsheet would run; numbers (a negative score) stay."""
    run, _, dog, _ = db
    for i, text in enumerate(FORMULAS):
        ann.add_annotation(conn, dog, i * 0.5, i * 0.5 + 0.5, text, author=text)
    conn.commit()
    listed = list(csv.DictReader(run("annotate", "list", "--csv").stdout.splitlines()))
    assert len(listed) == len(FORMULAS)
    assert all(r["label"].startswith("'") and r["author"].startswith("'") for r in listed)
    assert sorted(from_spreadsheet(r["label"]) for r in listed) == sorted(FORMULAS)
    conn.execute(sa.text("DELETE FROM annotations"))
    conn.commit()

    assert table_cell("=1+2") == "'=1+2" and table_cell("-0.2500") == "-0.2500"
    assert table_cell("a\tb\nc") == "a b c"
    out = io.StringIO()
    emit([{"label": "@SUM(A1)", "score": -0.5, "n": -3, "meta": {"=": 1}}], "csv", out=out)
    assert out.getvalue().splitlines()[1] == '\'@SUM(A1),-0.5,-3,"{""="": 1}"'
