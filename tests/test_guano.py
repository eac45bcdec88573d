"""GUANO metadata: read at ingest (start time, position, recorder, the whole block in
``ranger.recordings``) from real audio copied into WAV files that the ``guano`` package tags,
and written on exported clips (readable by ``guano`` again)."""

from __future__ import annotations

import json
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import guano
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape.formats.guano import find_chunk, parse, read_guano
from tests.conftest import real_audio

BLACKBIRD = "clips/animals/birds/blackbird.ogg"


def wav_copy(folder: Path, name: str, source: str = BLACKBIRD) -> Path:
    """A PCM WAV copy of a real recording (what a field recorder writes)."""
    audio, rate = sf.read(real_audio(source), dtype="float32")
    target = folder / name
    sf.write(target, audio, rate, subtype="PCM_16")
    return target


def tag(wav: Path, **fields: object) -> Path:
    """Write GUANO ``fields`` into ``wav`` with the guano package (as a recorder would)."""
    g = guano.GuanoFile(str(wav))
    g["GUANO|Version"] = "1.0"
    for key, value in fields.items():
        g[key.replace("__", "|").replace("_", " ")] = value
    g.write(make_backup=False)
    return wav


def raw_guano(wav: Path, text: bytes) -> Path:
    """Append a ``guan`` chunk of exactly ``text`` (bad GUANO no writer would make)."""
    data = wav.read_bytes()
    pad = b"\0" if len(text) % 2 else b""
    data += b"guan" + struct.pack("<I", len(text)) + text + pad
    data = data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    wav.write_bytes(data)
    return wav


@pytest.fixture
def sensor(cli_env, run_cli):
    """A sensor with a time zone and no position."""
    result = run_cli("sensors", "add", "wa-1", "--site", "Marsh", "--timezone", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    return "wa-1"


def ingest(run_cli, path: Path, sensor: str, *extra: str) -> dict:
    result = run_cli(
        "ingest", path, "--sensor", sensor, "--model", "spectral", "--json", "-q", *extra
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["summary"]["stored"] == 1, out
    return out["files"][0]


def recording(engine, path: Path):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM ranger.recordings WHERE path = :p"), {"p": str(path.resolve())}
        ).one()


# ------------------------------------------------------------------------------- reading
def test_a_tagged_file_ingests_with_its_time_place_and_recorder(sensor, engine, run_cli, tmp_path):
    """No --start-time and a file name without a time: the start, the position and the recorder
    come from GUANO; the sensor without a position gets the file's."""
    wav = tag(
        wav_copy(tmp_path, "blackbird.wav"),
        Timestamp=datetime.fromisoformat("2024-05-01T05:30:00+02:00"),
        Loc_Position=(52.5163, 13.3777),
        Loc_Elevation=34.0,
        Make="Wildlife Acoustics, Inc.",
        Model="Song Meter Mini Bat",
        Serial="SMU01234",
        WA__Song_Meter__Prefix="NORTH1",
    )
    out = ingest(run_cli, wav, sensor)
    assert out["warning"] is None

    rec = recording(engine, wav)
    assert rec.started_at == datetime(2024, 5, 1, 3, 30, tzinfo=timezone.utc)
    assert (rec.device_make, rec.device_model, rec.device_serial) == (
        "Wildlife Acoustics, Inc.",
        "Song Meter Mini Bat",
        "SMU01234",
    )
    assert (rec.latitude, rec.longitude) == pytest.approx((52.5163, 13.3777))
    assert rec.guano["Make"] == "Wildlife Acoustics, Inc."
    assert rec.guano["WA|Song Meter|Prefix"] == "NORTH1"
    assert rec.guano["GUANO|Version"] == "1.0"
    with engine.connect() as conn:
        place = conn.execute(
            sa.text("SELECT latitude, longitude FROM sensors WHERE name = :s"), {"s": sensor}
        ).one()
        first = conn.execute(
            sa.text(
                "SELECT min(starts_at) FROM segments g JOIN recordings r ON r.id = g.recording_id "
                "WHERE r.path = :p"
            ),
            {"p": str(wav.resolve())},
        ).scalar()
    assert (place.latitude, place.longitude) == pytest.approx((52.5163, 13.3777))
    assert first == datetime(2024, 5, 1, 3, 30, tzinfo=timezone.utc)


def test_a_timestamp_without_offset_is_the_sensors_local_time(sensor, engine, run_cli, tmp_path):
    wav = tag(wav_copy(tmp_path, "x.wav"), Timestamp=datetime(2024, 1, 15, 22, 0, 0))
    ingest(run_cli, wav, sensor)
    # Berlin is UTC+1 in January
    assert recording(engine, wav).started_at == datetime(2024, 1, 15, 21, tzinfo=timezone.utc)


def test_start_time_beats_guano_which_beats_the_file_name(sensor, engine, run_cli, tmp_path):
    stamp = datetime.fromisoformat("2024-05-01T05:30:00+00:00")
    named = tag(wav_copy(tmp_path, "20230101_120000.wav"), Timestamp=stamp)
    ingest(run_cli, named, sensor)
    assert recording(engine, named).started_at == stamp

    other = tag(wav_copy(tmp_path, "y.wav", "clips/animals/birds/crow.ogg"), Timestamp=stamp)
    ingest(run_cli, other, sensor, "--start-time", "2024-06-01T00:00:00Z")
    assert recording(engine, other).started_at == datetime(2024, 6, 1, tzinfo=timezone.utc)
    # the block is kept even when its time is not used
    assert recording(engine, other).guano["Timestamp"].startswith("2024-05-01T05:30:00")


def test_a_position_far_from_the_sensors_is_a_warning(cli_env, engine, run_cli, tmp_path):
    run_cli("sensors", "add", "south-2", "--lat", "-33.9", "--lon", "18.4", "--timezone", "UTC")
    wav = tag(wav_copy(tmp_path, "far.wav"), Loc_Position=(52.5163, 13.3777))
    out = ingest(run_cli, wav, "south-2")
    assert "GUANO Loc Position (52.5163 13.3777) is" in out["warning"]
    assert "km from sensor 'south-2' (-33.9 18.4)" in out["warning"]
    with engine.connect() as conn:
        place = conn.execute(
            sa.text("SELECT latitude, longitude FROM sensors WHERE name = 'south-2'")
        ).one()
    assert (place.latitude, place.longitude) == (-33.9, 18.4)  # the sensor keeps its own
    assert (recording(engine, wav).latitude, recording(engine, wav).longitude) == pytest.approx(
        (52.5163, 13.3777)
    )
    # a few metres off (GPS jitter) is not a conflict
    near = tag(wav_copy(tmp_path, "near.wav", "clips/animals/birds/crow.ogg"),
               Loc_Position=(-33.9001, 18.4001))  # fmt: skip
    assert ingest(run_cli, near, "south-2")["warning"] is None


def test_bad_guano_is_a_warning_and_ingest_goes_on(sensor, engine, run_cli, tmp_path):
    wav = raw_guano(
        wav_copy(tmp_path, "20240501_033000.wav"),
        b"GUANO|Version: 1.0\nTimestamp: yesterday at dawn\nLoc Position: north of here\n"
        b"this line has no colon\nMake: Titley\n",
    )
    result = run_cli("ingest", wav, "--sensor", sensor, "--model", "spectral")
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert f"warning: {wav}: stored, but " in err
    assert "its GUANO Timestamp 'yesterday at dawn' is not an ISO 8601" in err
    assert "the start time comes from the file name (or give --start-time)" in err
    assert "GUANO Loc Position 'north of here' is not 'latitude longitude'" in err
    assert "1 GUANO line(s) are not 'Key: value'; skipped" in err
    rec = recording(engine, wav)
    # the AudioMoth-style name (UTC) gave the start; what was readable is kept
    assert rec.started_at == datetime(2024, 5, 1, 3, 30, tzinfo=timezone.utc)
    assert rec.device_make == "Titley" and rec.latitude is None
    assert rec.guano["Timestamp"] == "yesterday at dawn"


def test_files_without_guano(tmp_path):
    assert read_guano(real_audio(BLACKBIRD)) is None  # Ogg: no RIFF chunks
    assert read_guano(wav_copy(tmp_path, "plain.wav")) is None
    cut = tag(wav_copy(tmp_path, "cut.wav"), Make="X")
    data = cut.read_bytes()
    cut.write_bytes(data[:-4])  # the chunk lost its end
    info = read_guano(cut)
    assert info is not None and info.fields == {}
    assert "cut short" in info.warnings[0]
    assert find_chunk(cut)[0] is None


def test_parse_reads_what_guano_writes(tmp_path):
    wav = tag(wav_copy(tmp_path, "t.wav"), Timestamp=datetime(2024, 3, 31, 1, 30),
              Loc_Position=(-1.5, 36.75))  # fmt: skip
    info = read_guano(wav)
    assert info is not None and not info.warnings
    assert info.timestamp == datetime(2024, 3, 31, 1, 30)  # naive: local time
    assert info.position == (-1.5, 36.75)
    assert parse(b"Loc Position: 91 0\n").warnings  # out of range


# ------------------------------------------------------------------------------- writing
def test_exported_clips_carry_guano(sensor, engine, run_cli, tmp_path):
    """``search --export``: each clip's GUANO (read back by the guano package) says when it
    starts (absolute, with the sensor's offset), where, on which recorder, and which window."""
    wav = tag(
        wav_copy(tmp_path, "blackbird.wav"),
        Timestamp=datetime.fromisoformat("2024-05-01T05:30:00+02:00"),
        Loc_Position=(52.5163, 13.3777),
        Make="Wildlife Acoustics, Inc.",
        Model="Song Meter Mini",
    )
    ingest(run_cli, wav, sensor)
    with engine.connect() as conn:
        window = conn.execute(
            sa.text("SELECT id, start_s, starts_at FROM segments ORDER BY start_s DESC LIMIT 1")
        ).one()
    out = tmp_path / "clips"
    result = run_cli("search", "--like", window.id, "-n", "1", "--export", out, "--json")
    assert result.exit_code == 0, result.output
    hit = json.loads(result.stdout.splitlines()[0])  # the window most like it (not itself)
    clip = Path(hit["clip"])
    g = guano.GuanoFile(str(clip))
    pad = min(1.0, hit["start_s"])  # the clip starts a second before the window
    starts_at = datetime.fromisoformat(hit["starts_at"])
    assert g["Timestamp"] == starts_at - timedelta(seconds=pad)
    assert g["Timestamp"].utcoffset() == timedelta(hours=2)  # Berlin in May
    assert g["Loc Position"] == pytest.approx((52.5163, 13.3777))
    assert (g["Make"], g["Model"]) == ("Wildlife Acoustics, Inc.", "Song Meter Mini")
    assert g["Original Filename"] == "blackbird.wav"
    assert g["Samplerate"] == sf.info(str(clip)).samplerate
    assert g["soundscape|Window ID"] == str(hit["segment_id"])
    assert g["soundscape|Sensor"] == sensor
    assert float(g["soundscape|Clip Offset (s)"]) == pytest.approx(hit["start_s"] - pad)
    # the audio is untouched: the clip still reads as audio of the right length
    assert sf.info(str(clip)).duration == pytest.approx(g["Length"], abs=0.01)


def test_review_clips_carry_guano(sensor, engine, run_cli, tmp_path):
    """A review batch's clips carry the label under review, their absolute start and the
    recording's position."""
    wav = tag(wav_copy(tmp_path, "b.wav"), Timestamp=datetime(2024, 5, 1, 5, 30),
              Loc_Position=(48.1, 11.6))  # fmt: skip
    ingest(run_cli, wav, sensor)
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(id) FROM segments")).scalar()
    assert run_cli("concepts", "add", "song", "--like", first).exit_code == 0
    result = run_cli("review", "--concept", "song", "-n", "2", "--out", tmp_path / "batch")
    assert result.exit_code == 0, result.output
    clips = sorted((tmp_path / "batch").glob("*.wav"))
    assert clips
    for clip in clips:
        g = guano.GuanoFile(str(clip))
        assert g["Species Auto ID"] == "song"
        assert g["Timestamp"].utcoffset() == timedelta(hours=2)
        assert g["Timestamp"].date() == datetime(2024, 5, 1).date()
        assert g["soundscape|Sensor"] == sensor
        assert g["Loc Position"] == pytest.approx((48.1, 11.6))
