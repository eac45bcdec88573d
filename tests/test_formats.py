"""The file formats room (issue 27, item 2): one Raven column set, Raven's own columns first,
for annotation exports, search results and review batches; the writers write those headers
and the reader reads those names."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import date, time
from pathlib import Path

import pytest

import soundscape.formats
from soundscape import annotations
from soundscape.formats import raven
from soundscape.results import Hit


def _hit(rec: int, start: float, end: float, sid: int) -> Hit:
    return Hit(
        sid, 0.5, rec, f"/a/r{rec}.wav", "north-1", None, None, start, end, None,
        date(2024, 5, 1), time(3, 0), label="=x",
    )  # fmt: skip


@pytest.mark.parametrize(
    "columns", [raven.ANNOTATION_COLUMNS, raven.SEARCH_COLUMNS, raven.REVIEW_COLUMNS]
)
def test_every_raven_table_starts_with_ravens_own_columns(columns):
    assert columns[: len(raven.BASE_COLUMNS)] == raven.BASE_COLUMNS
    assert len(set(columns)) == len(columns)


def test_search_and_review_tables_write_the_shared_columns(tmp_path: Path):
    hits = [_hit(1, 0.0, 3.0, 7), _hit(1, 3.0, 6.0, 8)]
    written = raven.export_raven(hits, tmp_path / "search", "q").written
    review = raven.write_review_table(
        tmp_path / "review.txt", hits, "saw", "top", {"/a/r1.wav": 8000}
    )
    for table, columns, high in (
        (written[0], raven.SEARCH_COLUMNS, "24000"),  # no audio at /a: 48 kHz assumed
        (review, raven.REVIEW_COLUMNS, "8000"),  # the band the review was given
    ):
        header, *rows = table.read_text().splitlines()
        assert header.split("\t") == columns
        assert [len(r.split("\t")) for r in rows] == [len(columns)] * 2
        cells = dict(zip(columns, rows[0].split("\t")))
        assert cells[raven.LOCAL_TIME] == "2024-05-01 03:00:00"
        assert cells[raven.HIGH_FREQ] == high
    # the reader finds a review table's columns by the same names: its Verdict is empty
    assert raven.has_verdict_column(review.read_text())


def test_a_row_without_one_of_the_columns_is_an_error(tmp_path: Path):
    with pytest.raises(KeyError):
        raven.write_table(tmp_path / "t.txt", raven.BASE_COLUMNS, [{raven.SELECTION: 1}])


def test_the_records_hold_no_file_format():
    for name in ("import_file", "export", "detect_format", "RAVEN_COLUMNS", "CSV_COLUMNS"):
        assert not hasattr(annotations, name)
    for info in pkgutil.iter_modules(soundscape.formats.__path__):
        module = importlib.import_module(f"soundscape.formats.{info.name}")
        assert module.__doc__, f"soundscape.formats.{info.name} says what it holds"
