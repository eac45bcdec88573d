"""Plumbing of search: parsing filters, merging events, in-memory windowing."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pytest

from soundscape.audio import WindowStream, window_array
from soundscape.search import Hit, merge_events, parse_time_range, parse_when

from .conftest import real_audio


def test_parse_time_range():
    assert parse_time_range("02:00-04:00") == (time(2), time(4))
    assert parse_time_range("22:00-4") == (time(22), time(4))
    assert parse_time_range("23:30-24:00") == (time(23, 30), time(23, 59, 59, 999999))
    for bad in ("2-", "25:00-03:00", "03:00-03:00", "noon-night", "1:00-2:00-3:00"):
        with pytest.raises(ValueError):
            parse_time_range(bad)


def test_parse_when():
    today = date(2024, 5, 10)
    assert parse_when("2024-05-01", today=today) == date(2024, 5, 1)
    assert parse_when("today", today=today) == today
    assert parse_when("yesterday", today=today) == date(2024, 5, 9)
    assert parse_when("7d", today=today) == date(2024, 5, 3)
    assert parse_when("2w", today=today) == date(2024, 4, 26)
    assert parse_when("2024-05-01T03:00:00Z") == datetime(2024, 5, 1, 3, tzinfo=timezone.utc)
    assert parse_when("2024-05-01T05:00:00+02:00").utcoffset() == timedelta(hours=2)
    for bad in ("2024-05-01T03:00", "last week", "2024-13-01"):
        with pytest.raises(ValueError):
            parse_when(bad)


def _hit(rec, start, end, score, sid):
    return Hit(sid, score, rec, f"/r{rec}.wav", "s", None, None, start, end, None, None, None)


def test_merge_events_joins_overlapping_and_touching_windows_only():
    hits = [
        _hit(1, 0, 3, 0.5, 1),
        _hit(1, 2, 5, 0.9, 2),
        _hit(1, 4, 7, 0.6, 3),  # one event 0-7
        _hit(1, 7, 10, 0.4, 4),  # touches: same event
        _hit(1, 12, 15, 0.8, 5),  # a gap: new event
        _hit(2, 2, 5, 0.7, 6),  # another recording
    ]
    events = merge_events(hits)
    assert [
        (e.recording_id, e.start_s, e.end_s, e.n_windows, e.score, e.segment_id) for e in events
    ] == [
        (1, 0, 10, 4, 0.9, 2),
        (1, 12, 15, 1, 0.8, 5),
        (2, 2, 5, 1, 0.7, 6),
    ]


def test_window_array_matches_the_stream():
    path = real_audio("clips/vehicles/emergency/firetruck.ogg")
    stream = list(WindowStream(path, 16000, 3.0, 2.0))
    streamed = np.concatenate([b.samples for b in stream])
    from soundscape.audio import decode_span

    batch = window_array(decode_span(path, 16000), 16000, 3.0, 2.0)
    assert batch.samples.shape == streamed.shape
    assert np.allclose(batch.samples, streamed, atol=1e-6)
    assert np.allclose(batch.start_s, np.concatenate([b.start_s for b in stream]))
    assert np.allclose(batch.end_s, np.concatenate([b.end_s for b in stream]), atol=1e-3)


def test_raven_tables_group_by_recording_and_survive_a_missing_file(tmp_path):
    from soundscape.search import export_raven

    hits = [_hit(1, 6.0, 9.0, 0.9, 7), _hit(2, 0.0, 3.0, 0.8, 8), _hit(1, 2.0, 5.0, 0.7, 9)]
    result = export_raven(hits, tmp_path, "text: owl")
    assert sorted(p.name for p in result.written) == [
        "r1.r1.selections.txt",
        "r2.r2.selections.txt",
    ]
    lines = (tmp_path / "r1.r1.selections.txt").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
    # time order within the file, ranks kept from the result list
    assert [(r["Selection"], r["Begin Time (s)"], r["Rank"]) for r in rows] == [
        ("1", "2.000", "3"),
        ("2", "6.000", "1"),
    ]
    assert {r["Label"] for r in rows} == {"text: owl"}
    # the audio is not there: a warning, and the table is still written
    assert len(result.errors) == 2 and "High Freq" in result.errors[0]
    assert rows[0]["High Freq (Hz)"] == "24000"
