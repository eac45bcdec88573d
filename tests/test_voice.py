"""Who says it (issue 12): the ``voice`` model (Resemblyzer), enrolled speakers, search by
voice and by speaker, and who speaks when, with the real model on real audio.

The module ingests once: the podcast (three synthetic voices take turns, truth.json gives
every sentence's speaker and times) and the forest soundscape (no speech), and enrols the
three voices from ``voices/<speaker>.wav`` (other sentences of the same voices).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape.db import make_engine
from soundscape.embedders import get_model_class, load_model
from soundscape.embedders.voice import Voice, partial_starts
from soundscape.speakers import Turn, _viterbi, diarize
from tests.conftest import ROOT, SHARED_AUDIO, Cli, recording_id

pytestmark = pytest.mark.slow

PODCAST = SHARED_AUDIO / "podcast" / "podcast.wav"
VOICES = SHARED_AUDIO / "podcast" / "voices"
FOREST = ROOT / "examples" / "audio" / "xc563936.mp3"
TRUTH = json.loads((SHARED_AUDIO / "podcast" / "truth.json").read_text())
SENTENCES = TRUTH["sentences"]


@pytest.fixture(scope="module")
def voices(module_db_url: str) -> Cli:
    run = Cli(module_db_url)
    run("sensors", "add", "studio", "--site", "Studio", "--timezone", "Europe/Berlin")
    run("sensors", "add", "forest-1", "--site", "Wood", "--timezone", "Europe/Berlin")
    run("ingest", PODCAST, "-s", "studio", "-m", "voice", "-q",
        "--start-time", "2024-05-01T10:00:00+02:00")  # fmt: skip
    # the forest gets its voice windows by backfill (the select_windows hook on that path too)
    run("ingest", FOREST, "-s", "forest-1", "-m", "spectral", "-q")
    run("backfill", "--model", "voice", "-q")
    for speaker in ("host", "guest", "caller"):
        run("speakers", "enrol", speaker, VOICES / f"{speaker}.wav")
    return run


@pytest.fixture(scope="module")
def engine(module_db_url: str):
    eng = make_engine(module_db_url)
    yield eng
    eng.dispose()


def speaker_at(start: float, end: float) -> str | None:
    """The truth's speaker who talks most in [start, end), None if nobody does."""
    talk: dict[str, float] = {}
    for s in SENTENCES:
        overlap = min(end, s["end_s"]) - max(start, s["start_s"])
        if overlap > 0:
            talk[s["speaker"]] = talk.get(s["speaker"], 0.0) + overlap
    return max(talk, key=lambda k: talk[k]) if talk else None


def attributed(turns: list[dict], rename: dict[str, str] | None = None) -> float:
    """The fraction of the truth's speech time that the turns give to the right speaker."""
    rename = rename or {}
    total = right = 0.0
    for s in SENTENCES:
        total += s["end_s"] - s["start_s"]
        for t in turns:
            if rename.get(t["speaker"], t["speaker"]) == s["speaker"]:
                right += max(0.0, min(t["end_s"], s["end_s"]) - max(t["start_s"], s["start_s"]))
    return right / total


# ------------------------------------------------------------------------------- the model
def test_voice_model_vectors():
    model = load_model("voice")
    assert get_model_class("voice") is Voice
    assert model.dimension == 256 and model.sample_rate == 16000
    import soundfile as sf

    x, rate = sf.read(VOICES / "guest.wav", dtype="float32")
    assert rate == 16000
    windows = np.stack([x[i * 16000 : i * 16000 + 32000] for i in range(3)])
    v = model.embed_audio(windows)
    assert v.shape == (3, 256) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    # the same voice in consecutive windows: close; silence is still a unit vector
    assert float(v[0] @ v[1]) > 0.7
    silent = model.embed_audio(np.zeros((1, 32000), np.float32))
    assert np.isfinite(silent).all() and abs(np.linalg.norm(silent) - 1) < 1e-5
    # deterministic
    assert np.array_equal(model.embed_audio(windows), v)
    # the VAD keeps speech windows only
    mask = model.select_windows(
        np.concatenate([windows, np.zeros((1, 32000), np.float32)]),
        np.array([0.0, 1.0, 2.0, 10.0]),
    )
    assert mask.tolist() == [True, True, True, False]


def test_partials_cover_the_window():
    assert partial_starts(32000) == [0, 41]  # 2 s: 201 frames, partials of 160
    starts = partial_starts(48000)
    assert starts[0] == 0 and starts[-1] + 160 == 301
    assert all(b - a <= 77 for a, b in zip(starts, starts[1:]))
    assert partial_starts(16000) == [0]


def test_unavailable_says_how_to_install(monkeypatch):
    import soundscape.embedders.voice as voice

    monkeypatch.setattr(voice, "REQUIRED_MODULES", ("no_such_module_xyz",))
    reason = Voice.unavailable_reason()
    assert reason is not None
    assert "pip install 'soundscape[voice]'" in reason
    assert "pip install --no-deps resemblyzer==0.1.4" in reason


# ------------------------------------------------------------------------------- ingest
def test_forest_stores_no_voice_windows_podcast_stores_speech(voices, engine):
    forest = recording_id(engine, FOREST)
    podcast = recording_id(engine, PODCAST)
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.text(
                    "SELECT rs.recording_id, rs.n_segments FROM recording_spaces rs "
                    "JOIN spaces s ON s.id = rs.space_id WHERE s.model = 'voice'"
                )
            ).all()
        )
        spans = conn.execute(
            sa.text("SELECT start_s, end_s FROM segments WHERE recording_id = :r"),
            {"r": podcast},
        ).all()
        index = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_indexes i JOIN spaces s "
                "ON i.tablename = 'segments_space_' || s.id WHERE s.model = 'voice' "
                "AND i.indexdef ILIKE '%hnsw%'"
            )
        ).scalar_one()
    assert counts[forest] == 0  # the forest is complete in the voice space, with no windows
    assert counts[podcast] == len(spans) > 30
    assert index == 1
    # every stored window is speech: it overlaps a sentence by at least half a second
    for start, end in spans:
        assert speaker_at(start - 0.5, end + 0.5) is not None, (start, end)
    # and every sentence has windows
    for s in SENTENCES:
        assert any(min(e, s["end_s"]) - max(b, s["start_s"]) > 1 for b, e in spans), s


# ------------------------------------------------------------------------------- speakers
def test_speakers_list_and_sql_view(voices, engine):
    rows = voices.json("speakers", "list")
    assert [r["name"] for r in rows] == ["caller", "guest", "host"]
    for r in rows:
        assert r["space"] == "voice" and r["examples"] == 1 and r["windows"] >= 5
        assert r["speech_s"] > 5
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM ranger.speaker_examples")).scalar_one()
        assert n == 3
        # BI tools rank windows by a speaker through ranger.search_vector
        hits = conn.execute(
            sa.text(
                "SELECT * FROM ranger.search_vector("
                "(SELECT space_id FROM ranger.speakers WHERE name = 'guest'), "
                "(SELECT centroid FROM ranger.speakers WHERE name = 'guest'), 5)"
            )
        ).all()
    assert len(hits) == 5


def test_enrolling_the_same_example_again_adds_nothing(voices):
    result = voices("speakers", "enrol", "guest", VOICES / "guest.wav")
    assert "already enrolled" in result.stderr
    (row,) = voices.json("speakers", "list")[1:2]
    assert row["name"] == "guest" and row["examples"] == 1


def test_search_by_speaker_finds_the_guest(voices):
    hits = voices.json("search", "--speaker", "guest", "-n", "5")
    assert len(hits) == 5
    right = [speaker_at(h["start_s"], h["end_s"]) == "guest" for h in hits]
    assert sum(right) >= 4, hits
    assert all(h["path"].endswith("podcast.wav") for h in hits)


def test_search_by_voice_example_events_and_filters(voices, tmp_path):
    hits = voices.json("search", "--voice", VOICES / "guest.wav", "-n", "5")
    assert sum(speaker_at(h["start_s"], h["end_s"]) == "guest" for h in hits) >= 4
    # a span of the example; events merge overlapping windows; --export writes clips
    events = voices.json(
        "search", "--voice", VOICES / "guest.wav", "--start", "0", "--end", "4",
        "--events", "-n", "3", "--export", tmp_path,
    )  # fmt: skip
    assert events and all(e["n_windows"] >= 1 for e in events)
    assert len(list(tmp_path.glob("*.wav"))) == len(events)
    # filters: the forest sensor has no voice windows
    assert voices.json("search", "--speaker", "guest", "-s", "forest-1") == []
    csv = voices("search", "--speaker", "host", "-n", "2", "--csv").stdout.splitlines()
    assert csv[0].startswith("rank,") and len(csv) == 3


def test_who_attributes_the_podcast_to_its_speakers(voices, engine):
    podcast = recording_id(engine, PODCAST)
    turns = voices.json("speakers", "who", podcast)
    assert {t["speaker"] for t in turns} <= {"host", "guest", "caller"}
    share = attributed(turns)
    assert share >= 0.9, (share, turns)
    # turns are ordered, within the recording and do not overlap
    for a, b in zip(turns, turns[1:]):
        assert a["end_s"] <= b["start_s"] + 1e-6
    rttm = voices("speakers", "who", podcast, "--rttm").stdout.splitlines()
    assert len(rttm) == len(turns)
    first = rttm[0].split()
    assert first[0] == "SPEAKER" and first[1] == "podcast" and first[7] == turns[0]["speaker"]
    assert float(first[3]) == pytest.approx(turns[0]["start_s"], abs=1e-3)
    csv = voices("speakers", "who", podcast, "--csv").stdout.splitlines()
    assert csv[0] == "speaker,start_s,end_s,duration_s,windows,similarity,enrolled"


def test_who_clusters_a_voice_nobody_enrolled(voices, engine):
    podcast = recording_id(engine, PODCAST)
    voices("speakers", "remove", "guest")
    try:
        turns = voices.json("speakers", "who", podcast)
    finally:
        voices("speakers", "enrol", "guest", VOICES / "guest.wav")
    unknown = {t["speaker"] for t in turns} - {"host", "caller"}
    assert unknown == {"unknown-1"}, turns
    assert attributed(turns, {"unknown-1": "guest"}) >= 0.9
    assert all(not t["enrolled"] for t in turns if t["speaker"] == "unknown-1")


def test_who_with_nobody_enrolled_clusters_everyone(voices, engine):
    from soundscape.speakers import who

    podcast = recording_id(engine, PODCAST)
    with engine.connect() as conn:
        found = who(conn, podcast, threshold=1.0)  # nobody passes: everyone is unknown
    names = {t.speaker for t in found.turns}
    assert names and all(n.startswith("unknown-") for n in names)
    assert found.regions_from == "vad" and found.speech_s > 40


# ------------------------------------------------------------------------------- errors
def test_bad_input_messages(voices, engine, tmp_path):
    r = voices("speakers", "who", 999999, code=1)
    assert "no recording with id 999999" in r.stderr
    forest = recording_id(engine, FOREST)
    r = voices("speakers", "who", forest)
    assert "no speech windows" in r.stderr and r.stdout == ""
    r = voices("search", "--speaker", "nobody", code=1)
    assert "no speaker named 'nobody'" in r.stderr and "guest" in r.stderr
    r = voices("speakers", "remove", "nobody", "guest", code=1)
    assert "nothing was removed" in r.stderr
    assert len(voices.json("speakers", "list")) == 3
    r = voices("speakers", "enrol", "bird", FOREST, code=1)
    assert "no speech found" in r.stderr
    assert "bird" not in {s["name"] for s in voices.json("speakers", "list")}
    r = voices("search", "--voice", FOREST, code=1)
    assert "no speech found" in r.stderr
    r = voices("search", "--speaker", "guest", "--audio", FOREST, code=2)
    assert "exactly one query" in r.stderr
    r = voices("speakers", "enrol", "x", VOICES / "guest.wav", "--start", "3", "--end", "2", code=2)
    r = voices("speakers", "who", "1", "--rttm", "--json", code=2)
    r = voices("search", "--speaker", "guest", "--space", "nope", code=1)
    assert "enrolled in space 'voice'" in r.stderr
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all")
    r = voices("speakers", "enrol", "x", bad, code=1)
    assert "noise.wav" in r.stderr


# ------------------------------------------------------------------------------- units
def test_viterbi_holds_a_speaker_against_small_differences():
    # two similar voices: per-window argmax flickers, the penalty keeps one speaker
    emissions = np.array([[0.90, 0.89, 0.8], [0.88, 0.90, 0.8], [0.91, 0.90, 0.8]])
    assert _viterbi(emissions, 0.0).tolist() == [0, 1, 0]
    assert _viterbi(emissions, 0.1).tolist() == [0, 0, 0]
    # a real change (a margin well above the penalty) still switches
    change = np.array([[0.9, 0.6, 0.8], [0.9, 0.6, 0.8], [0.6, 0.9, 0.8], [0.6, 0.9, 0.8]])
    assert _viterbi(change, 0.1).tolist() == [0, 0, 1, 1]


def test_diarize_turn_times_and_unknown_clusters():
    a, b, c = np.eye(3, dtype=np.float32)
    vectors = np.stack([a, a, a, c, c, b, b])
    starts = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 20.0, 21.0])
    ends = starts + 2
    regions = [(0.0, 4.0), (10.0, 13.0), (20.0, 23.0)]
    turns = diarize(starts, ends, vectors, regions, ["ann", "bob"], np.stack([a, b]))
    assert [(t.speaker, t.start_s, t.end_s, t.n_windows) for t in turns] == [
        ("ann", 0.0, 4.0, 3),
        ("unknown-1", 10.0, 13.0, 2),
        ("bob", 20.0, 23.0, 2),
    ]
    assert isinstance(turns[0], Turn) and turns[0].enrolled and not turns[1].enrolled
    assert turns[0].similarity == pytest.approx(1.0)
