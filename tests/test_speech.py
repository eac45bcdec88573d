"""What is said (issue 12): the real Whisper tiny.en model on real speech, VAD on a real forest
soundscape, utterances in PostgreSQL, ``search --said``, ``transcript`` and the SQL function.

The module ingests once: the podcast (12 topic sentences, truth.json), the opening of "A Tale
of Two Cities" and the forest soundscape (no speech), then every test reads that database.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape import speech
from soundscape.db import make_engine
from soundscape.transcribers import Utterance, Word, get_transcriber_class, load_transcriber
from tests.conftest import ROOT, SHARED_AUDIO, Cli, recording_id

pytestmark = pytest.mark.slow

PODCAST = SHARED_AUDIO / "podcast" / "podcast.wav"
TWO_CITIES = SHARED_AUDIO / "podcast" / "two_cities.wav"
GUEST = SHARED_AUDIO / "podcast" / "voices" / "guest.wav"
FOREST = ROOT / "examples" / "audio" / "xc563936.mp3"
TRUTH = json.loads((SHARED_AUDIO / "podcast" / "truth.json").read_text())


@pytest.fixture(scope="module")
def said(module_db_url: str) -> Cli:
    run = Cli(module_db_url)
    run("sensors", "add", "studio", "--site", "Studio", "--quadrant", "E",
        "--timezone", "Europe/Berlin")  # fmt: skip
    run("sensors", "add", "library", "--site", "Library", "--quadrant", "W",
        "--timezone", "America/New_York")  # fmt: skip
    run("sensors", "add", "forest-1", "--site", "Wood", "--timezone", "Europe/Berlin")
    # The podcast starts 20 s before local midnight: its sentences fall on two local days.
    run("ingest", PODCAST, "-s", "studio", "-m", "whisper", "-q",
        "--start-time", "2024-05-01T23:59:40")  # fmt: skip
    run("ingest", TWO_CITIES, "-s", "library", "-m", "whisper", "-q",
        "--start-time", "2024-05-03T10:00:00-04:00")  # fmt: skip
    run("ingest", FOREST, "-s", "forest-1", "-m", "spectral,whisper", "-q")
    return run


@pytest.fixture(scope="module")
def engine(module_db_url: str):
    eng = make_engine(module_db_url)
    yield eng
    eng.dispose()


def overlaps(hit: dict, sentence: dict) -> bool:
    return hit["start_s"] < sentence["end_s"] and hit["end_s"] > sentence["start_s"]


# ------------------------------------------------------------------------------ search
def test_every_podcast_keyword_is_found_in_its_sentence(said):
    found = []
    for sentence in TRUTH["sentences"]:
        hits = said.json("search", "--said", sentence["keyword"], "--sensor", "studio", "-n", "3")
        if hits and overlaps(hits[0], sentence):
            found.append(sentence["keyword"])
            # word precision: the hit is the keyword, not the whole sentence
            assert hits[0]["end_s"] - hits[0]["start_s"] < 2.0, hits[0]
            assert "**" in hits[0]["snippet"], hits[0]
    assert len(found) >= 11, f"found only {found}"


def test_a_hit_has_word_times_absolute_and_local_time(said):
    (hit,) = said.json("search", "--said", "bitcoin", "-n", "1")
    bitcoin = TRUTH["sentences"][0]
    assert bitcoin["start_s"] <= hit["start_s"] < hit["end_s"] <= bitcoin["end_s"] + 0.5
    assert hit["snippet"].count("**") == 2 and "**bitcoin**" in hit["snippet"].lower()
    assert hit["method"] == "fulltext" and hit["model"].startswith("whisper ")
    assert hit["local"].startswith("2024-05-01 23:59:4")  # 23:59:40 + ~2 s, Berlin time
    assert hit["starts_at"].startswith("2024-05-01T21:59:4")  # UTC


def test_a_phrase_in_real_read_speech(said, engine):
    hits = said.json("search", "--said", '"best of times"')
    assert hits, "the phrase was not found"
    hit = hits[0]
    assert hit["sensor"] == "library" and hit["method"] == "fulltext"
    assert "**best**" in hit["snippet"].lower() and "**times**" in hit["snippet"].lower()
    # the span is the phrase (three words), not the utterance
    assert 0.3 < hit["end_s"] - hit["start_s"] < 2.5, hit
    with engine.connect() as conn:
        text = " ".join(
            conn.execute(sa.text("SELECT text FROM utterances WHERE sensor_id = "
                                 "(SELECT id FROM sensors WHERE name = 'library') "
                                 "ORDER BY start_s")).scalars()
        ).lower()  # fmt: skip
    assert "worst of times" in text


def test_fuzzy_fallback_finds_a_word_written_apart(said):
    hits = said.json("search", "--said", "bit coin", "-n", "3")
    assert hits and hits[0]["method"] == "fuzzy"
    assert overlaps(hits[0], TRUTH["sentences"][0])
    assert "**bitcoin**" in hits[0]["snippet"].lower()
    assert said.json("search", "--said", "bit coin", "--no-fuzzy") == []
    # a misspelt word: found through the vocabulary of stored words
    (typo,) = said.json("search", "--said", "guitarr", "-n", "1")
    assert typo["method"] == "fuzzy" and overlaps(typo, TRUTH["sentences"][5])
    assert "**guitar**" in typo["snippet"].lower()


def test_exclusions_and_or(said):
    assert said.json("search", "--said", "weather -rainy", "--no-fuzzy") == []
    hits = said.json("search", "--said", "football -rainy", "--no-fuzzy")
    assert len(hits) == 1 and overlaps(hits[0], TRUTH["sentences"][2])
    both = said.json("search", "--said", "football or elephant", "--no-fuzzy")
    assert len(both) == 2


def test_filters_place_time_across_midnight_and_dates(said):
    # podcast utterances before local midnight: bitcoin (23:59:41); after: elephant (00:00:07)
    def keywords(*args: str) -> set[str]:
        out = set()
        for kw in ("bitcoin", "elephant"):
            if said.json("search", "--said", kw, "--no-fuzzy", *args):
                out.add(kw)
        return out

    assert keywords("--time", "23:00-00:01") == {"bitcoin", "elephant"}  # crosses midnight
    assert keywords("--time", "00:00-01:00") == {"elephant"}
    assert keywords("--time", "23:00-23:59:59") == {"bitcoin"}
    assert keywords("--from", "2024-05-02") == {"elephant"}
    assert keywords("--to", "2024-05-01") == {"bitcoin"}
    assert keywords("--site", "Library") == set()
    assert keywords("--quadrant", "E") == {"bitcoin", "elephant"}
    assert said.json("search", "--said", "times", "--sensor", "studio", "--no-fuzzy") == []
    assert said.json("search", "--said", "times", "--sensor", "library")
    said("search", "--said", "bitcoin", "--sensor", "nobody", code=1)


def test_outputs_events_and_clips(said, tmp_path):
    csv_out = said("search", "--said", "the", "--csv", "-n", "5").stdout
    assert csv_out.splitlines()[0].startswith("rank,score,sensor")
    events = said.json("search", "--said", "times", "--events", "-n", "5")
    assert events and all(e["n_windows"] >= 1 for e in events)
    hits = said.json("search", "--said", "football", "-n", "1", "--export", tmp_path / "clips")
    clip = Path(hits[0]["clip"])
    info = sf.info(clip)
    assert clip.exists() and info.duration < 5  # the word and 1 s each side
    table = said("search", "--said", "football").stdout
    assert "**football**" in table.lower()
    said("search", "--said", "x", "--audio", PODCAST, code=2)
    said("search", "football", "--said", "football", code=2)


def test_search_request_searches_what_was_said(said, engine):
    """Issue 27: ``--said`` is a field of ``SearchRequest``, so every entry point that runs
    ``search()`` (CLI, web page, review, concepts) can search what was said, with the hits
    and rows the CLI shows."""
    from soundscape.errors import InvalidRequest
    from soundscape.search import SearchRequest, search

    with engine.connect() as conn:
        found = search(conn, SearchRequest(said="bitcoin", limit=1))
    assert found.is_speech and found.space_name is None and not found.is_labels
    assert found.description == "what was said: 'bitcoin'"
    (hit,) = found.hits
    assert isinstance(hit, speech.SpeechHit) and "**bitcoin**" in hit.snippet.lower()
    (row,) = said.json("search", "--said", "bitcoin", "-n", "1")
    assert row["utterance_id"] == hit.segment_id and row["snippet"] == hit.snippet
    rows, columns = speech.said_rows(found.hits, events=False, full=False)
    assert columns == speech.SAID_COLUMNS and rows[0]["utterance_id"] == hit.segment_id
    for wrong in (
        SearchRequest(said="x", text="bitcoin"),
        SearchRequest(said="x", space="spectral"),
    ):
        with pytest.raises(InvalidRequest):
            wrong.check()
    with pytest.raises(InvalidRequest):
        _ = found.query  # no vector or labels ranked it


def test_the_web_page_searches_what_was_said(said, module_db_url):
    """Issue 27: speech search runs through ``SearchRequest``, so the web page offers it: a
    ``said`` field, hits as spans of their recording (no "more like this" or window clip:
    an utterance is not a window), the same hits as the CLI."""
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.web import WebConfig, create_app

    database = open_database(module_db_url)
    try:
        with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database)) as c:
            got = c.get("/search", params={"said": "bitcoin", "limit": 3, "format": "json"})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["space"] is None and body["query"] == "what was said: 'bitcoin'"
            want = said.json("search", "--said", "bitcoin", "-n", "3")
            assert [h["utterance_id"] for h in body["hits"]] == [h["utterance_id"] for h in want]
            page = c.get("/search", params={"said": "bitcoin", "limit": 3})
            assert page.status_code == 200
            assert 'name="said"' in page.text and "in what was said" in page.text
            rec = want[0]["recording_id"]
            assert f"/recordings/{rec}/clip.wav?start=" in page.text
            assert "more like this" not in page.text and "/clips/" not in page.text
    finally:
        database.engine.dispose()


def test_sql_function_for_bi_tools(said, engine):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT sensor, start_s, snippet, method FROM ranger.search_speech("
                    "'elephant', 5, p_sites => ARRAY['Studio'])")
        ).all()  # fmt: skip
        assert rows and rows[0].sensor == "studio" and rows[0].method == "fulltext"
        assert overlaps({"start_s": rows[0].start_s, "end_s": rows[0].start_s + 0.1},
                        TRUTH["sentences"][4])  # fmt: skip
        n = conn.execute(sa.text("SELECT count(*) FROM ranger.utterances")).scalar_one()
        assert n >= 12
        with pytest.raises(sa.exc.DBAPIError, match="p_k"):
            conn.execute(sa.text("SELECT * FROM ranger.search_speech('x', 0)")).all()


# ------------------------------------------------------------------------------ ingest
def test_forest_soundscape_yields_no_utterances_and_costs_one_vad_pass(said, engine):
    rec = recording_id(engine, FOREST)
    with engine.connect() as conn:
        t = conn.execute(
            sa.text(
                "SELECT model, speech_s, n_utterances FROM transcripts WHERE recording_id = :r"
            ),
            {"r": rec},
        ).one()
        n_windows = conn.execute(
            sa.text("SELECT count(*) FROM segments WHERE recording_id = :r"), {"r": rec}
        ).scalar_one()
    assert t.model == "whisper" and t.n_utterances == 0 and t.speech_s < 1.0
    assert n_windows > 30  # spectral windows stored by the same ingest (--model spectral,whisper)
    out = said("transcript", rec, "--text").stdout
    assert out == ""


def test_ingest_is_idempotent_and_replace_redoes(said, engine):
    again = said("ingest", FOREST, "-s", "forest-1", "-m", "whisper", "--json", "-q")
    assert json.loads(again.stdout)["summary"]["skipped"] == 1
    rec = recording_id(engine, FOREST)
    query = sa.text("SELECT id FROM transcripts WHERE recording_id = :r")
    with engine.connect() as conn:
        before = conn.execute(query, {"r": rec}).scalar_one()
    redo = said("ingest", FOREST, "-s", "forest-1", "-m", "whisper", "--replace", "--json", "-q")
    assert json.loads(redo.stdout)["summary"]["stored"] == 1
    with engine.connect() as conn:
        assert conn.execute(query, {"r": rec}).scalar_one() != before


def test_job_queue_workers_transcribe(said, engine):
    said("enqueue", GUEST, "-s", "studio", "-m", "whisper")
    said("worker", "--once", "-q")
    rec = recording_id(engine, GUEST)
    with engine.connect() as conn:
        n = conn.execute(
            sa.text("SELECT n_utterances FROM transcripts WHERE recording_id = :r"), {"r": rec}
        ).scalar_one()
    assert n >= 1


def test_backfill_adds_transcripts_to_stored_recordings(said, engine):
    host = SHARED_AUDIO / "podcast" / "voices" / "host.wav"
    said("ingest", host, "-s", "studio", "-m", "spectral", "-q")
    rec = recording_id(engine, host)
    out = said("backfill", "-m", "whisper", "-s", "studio", "--json", "-q").stdout
    assert json.loads(out)["summary"]["failed"] == 0
    with engine.connect() as conn:
        n = conn.execute(
            sa.text("SELECT n_utterances FROM transcripts WHERE recording_id = :r"), {"r": rec}
        ).scalar_one()
    assert n >= 1
    again = said("backfill", "-m", "whisper", "-s", "studio", "--json", "-q").stdout
    assert json.loads(again)["summary"]["stored"] == 0  # nothing left to do


# ------------------------------------------------------------------------------ transcripts
def test_transcript_formats(said, engine):
    rec = recording_id(engine, PODCAST)
    text = said("transcript", rec, "--text").stdout
    assert "bitcoin" in text.lower() and "elephant" in text.lower()
    assert len(text.splitlines()) >= 11
    srt = said("transcript", rec, "--srt").stdout
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    vtt = said("transcript", rec, "--vtt").stdout
    assert vtt.startswith("WEBVTT\n\n00:00:0")
    rows = said.json("transcript", rec)
    assert rows[0]["words"][0].keys() >= {"w", "s", "e"}
    starts = [r["start_s"] for r in rows]
    assert starts == sorted(starts)
    table = said("transcript", rec).stdout
    assert "start_s" in table.splitlines()[0]
    said("transcript", 999999, code=1)


# ------------------------------------------------------------------------------ units
def test_chunk_times_map_back_to_the_recording():
    chunk = speech.Chunk(np.zeros(16000 * 5, np.float32), [(0.0, 10.0, 2.0), (2.3, 50.0, 1.5)])
    assert chunk.to_recording(1.0) == 11.0
    assert chunk.to_recording(2.1) == 50.0 and chunk.to_recording(2.1, end=True) == 12.0
    assert chunk.to_recording(3.3) == pytest.approx(51.0)
    placed = speech.place(
        [Utterance(0.5, 3.0, "a b", [Word("a", 0.5, 1.0), Word("b", 2.5, 3.0)])], chunk
    )
    assert [(u.text, u.start_s) for u in placed] == [("a", 10.5), ("b", 50.2)]


def test_pack_keeps_chunks_within_the_model_limit():
    sr = 16000
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, sr * 100).astype(np.float32)
    regions = [(0.0, 45.0), (50.0, 60.0), (62.0, 70.0), (80.0, 99.0)]
    chunks = list(speech.pack(x, sr, 1000.0, regions, 30.0))
    assert all(c.samples.size <= 30 * sr for c in chunks)
    assert sum(c.speech_s for c in chunks) == pytest.approx(45 + 10 + 8 + 19, abs=0.01)
    assert chunks[0].pieces[0][1] == 1000.0


def test_long_file_streams_in_bounded_memory(tmp_path):
    """Ten minutes of noise with speech at the start and at the end: the buffer never holds
    more than about three minutes, and both stretches of speech are found."""
    sr = 16000
    voice, _ = sf.read(GUEST, dtype="float32")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.002, sr * 600).astype(np.float32)
    x[sr * 5 : sr * 5 + voice.size] += voice
    x[-sr * 20 : -sr * 20 + voice.size] += voice
    path = tmp_path / "long.wav"
    sf.write(path, x, sr)
    stream = speech.SpeechStream(path)
    chunks = list(stream)
    assert stream.peak_buffer <= (speech.BUFFER_S + speech.BLOCK_S + speech.MAX_CARRY_S) * sr
    starts = [p[1] for c in chunks for p in c.pieces]
    assert min(starts) < 10 and max(starts) > 570
    assert stream.speech_s < 40 and stream.duration_s == pytest.approx(600, abs=0.01)


def test_whisper_unavailable_says_what_to_install(monkeypatch):
    import importlib.util

    from soundscape.transcribers import whisper

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "faster_whisper" else real(name, *a),
    )  # fmt: skip
    reason = get_transcriber_class("whisper").unavailable_reason()
    assert reason and "pip install 'soundscape[speech]'" in reason
    with pytest.raises(Exception, match=r"soundscape\[speech\]"):
        load_transcriber("whisper")
    assert whisper.weights_path() is not None


def test_models_list_shows_whisper(said):
    rows = {r["name"]: r for r in said.json("models", "list")}
    assert rows["whisper"]["available"] is True and rows["whisper"]["sample_rate"] == 16000
