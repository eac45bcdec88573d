"""Plumbing of search: parsing filters, merging events, in-memory windowing."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pytest

from soundscape.audio import WindowStream, window_array
from soundscape.export import band_hz, slug
from soundscape.formats.audacity import export_audacity
from soundscape.formats.raven import export_raven
from soundscape.results import Hit, merge_events
from soundscape.search import parse_time_range, parse_when
from soundscape.spaces import Space

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


def _hit(rec, start, end, score, sid, label=None, path=None):
    return Hit(
        sid, score, rec, path or f"/r{rec}.wav", "s", None, None, start, end, None, None, None,
        label=label,
    )  # fmt: skip


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


def test_merge_events_keeps_labels_apart():
    """Issue 10 item 23: a "birdsong" query ranks every bird class; overlapping windows of
    different labels are different events (one label's windows still merge)."""
    hits = [
        _hit(1, 0, 3, 0.9, 1, "Robin"),
        _hit(1, 1.5, 4.5, 0.6, 2, "Wren"),
        _hit(1, 3, 6, 0.8, 3, "Robin"),
        _hit(1, 4.5, 7.5, 0.7, 4, "Wren"),
        _hit(1, 6, 9, 0.5, 5, "Blackbird"),
    ]
    events = merge_events(hits)
    assert [(e.label, e.start_s, e.end_s, e.n_windows, e.segment_id) for e in events] == [
        ("Robin", 0, 6, 2, 1),
        ("Wren", 1.5, 7.5, 2, 4),
        ("Blackbird", 6, 9, 1, 5),
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
    assert {r["Common Name"] for r in rows} == {"text: owl"}
    assert [r["Confidence"] for r in rows] == ["0.7000", "0.9000"]
    # the audio is not there: a warning, and the table is still written
    assert len(result.errors) == 2 and "High Freq" in result.errors[0]
    assert rows[0]["High Freq (Hz)"] == "24000"


def test_raven_columns_are_birdnet_analyzers_and_the_band_is_the_models(tmp_path):
    """Issue 10 item 25: BirdNET-Analyzer's Raven columns first (Common Name, Species Code,
    Confidence), soundscape's after; BirdNET hits span BirdNET's 0-15 kHz band."""
    birdnet = Space(1, "birdnet", "birdnet", "2.4", 1024, 3.0, 3.0, 48000, {})
    spectral = Space(2, "spectral", "spectral", "1", 64, 2.0, 1.0, 16000, {})
    assert band_hz(48000, birdnet) == (0.0, 15000.0)
    assert band_hz(22050, birdnet) == (0.0, 11025.0)  # never above the recording's Nyquist
    assert band_hz(48000, spectral) == (0.0, 24000.0)  # no band of its own: the full band
    assert band_hz(44100) == (0.0, 22050.0)

    hits = [_hit(1, 0.0, 3.0, 0.8, 7, "Dark-eyed Junco")]
    export_raven(hits, tmp_path, "labels junco", birdnet)
    header, row = (tmp_path / "r1.r1.selections.txt").read_text().splitlines()
    columns = header.split("\t")
    assert columns[:12] == [
        "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
        "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path",
        "File Offset (s)",
    ]  # fmt: skip
    assert {"Rank", "Sensor", "Local Time", "Window ID"} <= set(columns)
    cells = dict(zip(columns, row.split("\t")))
    assert (cells["Common Name"], cells["Confidence"]) == ("Dark-eyed Junco", "0.8000")
    assert (cells["Low Freq (Hz)"], cells["High Freq (Hz)"]) == ("0", "15000")


def test_file_names_keep_a_utc_offset(tmp_path):
    """Issue 10 item 25: a ``+0200`` in a recording's name stayed ``-0200`` (another time)."""
    assert slug("20240501_003000+0200") == "20240501_003000+0200"
    assert slug("a b/c%d") == "a-b-c-d"
    hits = [_hit(3, 1.0, 4.0, 0.5, 9, path="/audio/20240501_003000+0200.wav")]
    raven = export_raven(hits, tmp_path / "raven", "q")
    track = export_audacity(hits, tmp_path / "audacity", "q")
    assert [p.name for p in raven.written] == ["20240501_003000+0200.r3.selections.txt"]
    assert [p.name for p in track.written] == ["20240501_003000+0200.txt"]


def test_audacity_label_tracks(tmp_path):
    """One ``<stem>.txt`` per recording, start<TAB>end<TAB>label in time order; recordings
    that share a stem get their id (``<stem>.r<id>.txt``)."""
    hits = [
        _hit(1, 6.0, 9.0, 0.9, 1, "Siren", "/a/dawn.wav"),
        _hit(1, 0.5, 3.5, 0.8, 2, None, "/a/dawn.wav"),
        _hit(2, 1.0, 4.0, 0.7, 3, "Dog", "/b/dawn.wav"),
        _hit(3, 2.0, 5.0, 0.6, 4, "Dog", "/b/dusk.wav"),
    ]
    result = export_audacity(hits, tmp_path, "the query")
    assert sorted(p.name for p in result.written) == ["dawn.r1.txt", "dawn.r2.txt", "dusk.txt"]
    assert (tmp_path / "dawn.r1.txt").read_text() == (
        "0.500\t3.500\tthe query\n6.000\t9.000\tSiren\n"
    )
    assert (tmp_path / "dusk.txt").read_text() == "2.000\t5.000\tDog\n"


def test_hit_rows_keep_full_precision():
    """--json/--csv carry the stored values (issue 10, item 20); only the table rounds."""
    row = _hit(1, 1.23456, 4.23456, 0.876543219, 7).as_row()
    assert (row["start_s"], row["end_s"], row["score"]) == (1.23456, 4.23456, 0.876543219)
