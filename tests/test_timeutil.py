"""Tests for soundscape.timeutil: file-name start times, ISO parsing, DST-correct window times."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from soundscape.timeutil import localize, parse_iso_start, parse_start_time, window_times

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ----------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # AudioMoth: whole stem, UTC
        ("20240331_013000.WAV", _utc(2024, 3, 31, 1, 30, 0)),
        ("20240331_013000.wav", _utc(2024, 3, 31, 1, 30, 0)),
        ("/data/moth1/20231231_235959.WAV", _utc(2023, 12, 31, 23, 59, 59)),
        ("20240331_013000", _utc(2024, 3, 31, 1, 30, 0)),
        # Song Meter: PREFIX_YYYYMMDD_HHMMSS[_...], recorder local time (naive)
        ("SM4A1234_20240331_013000.wav", datetime(2024, 3, 31, 1, 30, 0)),
        ("S4A07069_20190416_043000_Left.wav", datetime(2019, 4, 16, 4, 30, 0)),
        ("S4A07069_20190416_043000_0+1_extra.flac", datetime(2019, 4, 16, 4, 30, 0)),
        ("SMM-07247_20210721_000000.wav", datetime(2021, 7, 21, 0, 0, 0)),
        ("site3_20240331_013000.flac", datetime(2024, 3, 31, 1, 30, 0)),
        # ISO-like
        ("2024-03-31T01:30:00Z.wav", _utc(2024, 3, 31, 1, 30, 0)),
        ("2024-03-31T01-30-00.wav", datetime(2024, 3, 31, 1, 30, 0)),
        ("2024-03-31_01-30-00.flac", datetime(2024, 3, 31, 1, 30, 0)),
        ("2024-03-31 013000.mp3", datetime(2024, 3, 31, 1, 30, 0)),
        ("20240331T013000Z.ogg", _utc(2024, 3, 31, 1, 30, 0)),
        ("20240331T013000.ogg", datetime(2024, 3, 31, 1, 30, 0)),
        ("site3_2024-03-31T01-30-00.flac", datetime(2024, 3, 31, 1, 30, 0)),
        ("rec_2024-03-31T03-30-00+0200_site.wav", _utc(2024, 3, 31, 1, 30, 0)),
        ("2024-03-31T03:30:00+02:00.wav", _utc(2024, 3, 31, 1, 30, 0)),
        ("2024-03-30T20:30:00-05:00.wav", _utc(2024, 3, 31, 1, 30, 0)),
        ("2024-03-31T01:30:00.250Z.wav", datetime(2024, 3, 31, 1, 30, 0, 250000, tzinfo=UTC)),
        ("C:\\rec\\site1\\20240331_013000.WAV", _utc(2024, 3, 31, 1, 30, 0)),
    ],
)
def test_parse_start_time_patterns(name: str, expected: datetime) -> None:
    got = parse_start_time(name)
    assert got is not None, name
    assert got == expected
    if expected.tzinfo is None:
        assert got.tzinfo is None, f"{name} should be naive (local time)"
    else:
        assert got.utcoffset() == timedelta(0), f"{name} should be aware UTC"


@pytest.mark.parametrize(
    "name",
    [
        "20241331_013000.WAV",  # month 13
        "20240230_013000.WAV",  # Feb 30
        "SM4A1234_20240331_253000.wav",  # hour 25
        "2024-03-31T01:61:00Z.wav",  # minute 61
        "2024-02-30T01-30-00.flac",
        "recording.wav",
        "forest_dawn_chorus.mp3",
        "20240331.wav",  # date only
        "120240331_0130001.wav",  # embedded in longer digit runs
        "",
    ],
)
def test_parse_start_time_rejects(name: str) -> None:
    assert parse_start_time(name) is None


def test_audiomoth_must_be_whole_stem() -> None:
    # with a suffix it is not an AudioMoth name: treated as local time, not UTC
    got = parse_start_time("20240331_013000_trigger.WAV")
    assert got == datetime(2024, 3, 31, 1, 30) and got.tzinfo is None


# ----------------------------------------------------------------------------- --start-time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-31T01:30:00Z", _utc(2024, 3, 31, 1, 30)),
        ("2024-03-31T03:30:00+02:00", _utc(2024, 3, 31, 1, 30)),
        ("2024-03-31T03:30:00+0200", _utc(2024, 3, 31, 1, 30)),
        ("20240331T013000Z", _utc(2024, 3, 31, 1, 30)),
        ("2024-03-31 01:30:00", datetime(2024, 3, 31, 1, 30)),
        ("2024-03-31T01:30", datetime(2024, 3, 31, 1, 30)),
        ("  2024-03-31 013000 ", datetime(2024, 3, 31, 1, 30)),
    ],
)
def test_parse_iso_start(text: str, expected: datetime) -> None:
    got = parse_iso_start(text)
    assert got == expected
    assert (got.tzinfo is None) == (expected.tzinfo is None)


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-13-01T00:00:00", "2024-03-31T25:00", "31/03/2024"]
)
def test_parse_iso_start_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_iso_start(text)


# ----------------------------------------------------------------------------- localize


def test_localize_regular_time() -> None:
    got = localize(datetime(2024, 6, 1, 12, 0), BERLIN)
    assert got.tzinfo is BERLIN
    assert got.utcoffset() == timedelta(hours=2)
    assert got.astimezone(UTC) == _utc(2024, 6, 1, 10, 0)


def test_localize_nonexistent_time_is_shifted_forward() -> None:
    # 2024-03-31 02:30 does not exist in Berlin (02:00 CET -> 03:00 CEST)
    got = localize(datetime(2024, 3, 31, 2, 30), BERLIN)
    assert got.replace(tzinfo=None) == datetime(2024, 3, 31, 3, 30)
    assert got.utcoffset() == timedelta(hours=2)
    assert got.astimezone(UTC) == _utc(2024, 3, 31, 1, 30)
    # New York: 2024-03-10 02:15 does not exist -> 03:15 EDT
    ny = localize(datetime(2024, 3, 10, 2, 15), NEW_YORK)
    assert ny.replace(tzinfo=None) == datetime(2024, 3, 10, 3, 15)
    assert ny.astimezone(UTC) == _utc(2024, 3, 10, 7, 15)


def test_localize_ambiguous_time_takes_first_occurrence() -> None:
    # 2024-10-27 02:30 happens twice in Berlin: first in CEST (+2), then in CET (+1)
    got = localize(datetime(2024, 10, 27, 2, 30), BERLIN)
    assert got.fold == 0
    assert got.utcoffset() == timedelta(hours=2)
    assert got.astimezone(UTC) == _utc(2024, 10, 27, 0, 30)
    # New York: 2024-11-03 01:30 happens twice: first in EDT (-4)
    ny = localize(datetime(2024, 11, 3, 1, 30), NEW_YORK)
    assert ny.astimezone(UTC) == _utc(2024, 11, 3, 5, 30)


def test_localize_aware_is_converted_to_utc() -> None:
    aware = datetime(2024, 3, 31, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    got = localize(aware, NEW_YORK)
    assert got == _utc(2024, 3, 31, 1, 30)
    assert got.utcoffset() == timedelta(0)


# ----------------------------------------------------------------------------- window_times


def test_window_times_spring_forward_berlin() -> None:
    start = _utc(2024, 3, 31, 0, 59, 50)
    got = window_times(start, [0.0, 10.0, 20.0], BERLIN)
    assert [t for t, _, _ in got] == [
        _utc(2024, 3, 31, 0, 59, 50),
        _utc(2024, 3, 31, 1, 0, 0),
        _utc(2024, 3, 31, 1, 0, 10),
    ]
    assert [lt for _, _, lt in got] == [time(1, 59, 50), time(3, 0, 0), time(3, 0, 10)]
    assert all(d == date(2024, 3, 31) for _, d, _ in got)
    assert all(t.utcoffset() == timedelta(0) for t, _, _ in got)


def test_window_times_fall_back_berlin() -> None:
    # 00:00 UTC = 02:00 CEST; 01:00 UTC = 02:00 CET: local 02:00-03:00 is seen twice
    start = _utc(2024, 10, 26, 23, 30)
    offsets = np.arange(0, 3 * 3600, 600, dtype=np.float64)  # every 10 min for 3 h
    got = window_times(start, offsets, BERLIN)
    instants = [t for t, _, _ in got]
    assert all(b - a == timedelta(minutes=10) for a, b in zip(instants, instants[1:], strict=False))
    local = [lt for _, _, lt in got]
    assert local[0] == time(1, 30)
    assert local.count(time(2, 30)) == 2  # the ambiguous hour repeats in local time
    i1, i2 = (i for i, lt in enumerate(local) if lt == time(2, 30))
    assert instants[i1] == _utc(2024, 10, 27, 0, 30)
    assert instants[i2] == _utc(2024, 10, 27, 1, 30)
    assert local[-1] == time(3, 20)


def test_window_times_new_york_and_local_midnight() -> None:
    # 2024-07-01 03:59:00 UTC = 2024-06-30 23:59:00 EDT
    got = window_times(_utc(2024, 7, 1, 3, 59), np.array([0.0, 30.0, 60.0, 90.5]), NEW_YORK)
    assert [(d, lt) for _, d, lt in got] == [
        (date(2024, 6, 30), time(23, 59, 0)),
        (date(2024, 6, 30), time(23, 59, 30)),
        (date(2024, 7, 1), time(0, 0, 0)),
        (date(2024, 7, 1), time(0, 0, 30, 500000)),
    ]
    assert got[-1][0] == _utc(2024, 7, 1, 4, 0, 30) + timedelta(microseconds=500000)


def test_window_times_from_naive_recorder_time() -> None:
    # Song Meter name (local time) -> localize -> window times, across the Berlin spring gap
    naive = parse_start_time("SM4A1234_20240331_015950.wav")
    start = localize(naive, BERLIN)
    got = window_times(start, [0, 5, 10], BERLIN)
    assert [lt for _, _, lt in got] == [time(1, 59, 50), time(1, 59, 55), time(3, 0, 0)]
    assert got[0][0] == _utc(2024, 3, 31, 0, 59, 50)


def test_window_times_accepts_any_aware_start_and_rejects_naive() -> None:
    start = datetime(2024, 1, 1, 12, 0, tzinfo=BERLIN)
    got = window_times(start, [0], NEW_YORK)
    assert got[0][0] == _utc(2024, 1, 1, 11, 0) and got[0][0].utcoffset() == timedelta(0)
    assert got[0][2] == time(6, 0)
    with pytest.raises(ValueError, match="aware"):
        window_times(datetime(2024, 1, 1), [0], BERLIN)
    assert window_times(start, [], BERLIN) == []
