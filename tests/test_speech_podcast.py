"""Podcast search a producer can rely on (issue 26), with the real Whisper tiny.en and voice
models on the shared podcast (truth.json: every sentence's keyword, speaker and times):

- words Whisper misheard found by their sound (the phonetic route: Double Metaphone codes of the
  words it doubted), ranked below exact and trigram matches, with ``match`` and ``matched``;
  a confident word is never matched by sound; precision@5 of the keywords;
- who said what: utterances carry the enrolled speaker, refreshed when enrolments change;
  ``transcript`` (by path), SRT/VTT, ``search --said X --speaker NAME``, SQL, the web page;
- the message when nothing matches says what is true (the recording is transcribed);
- migration 0035 down and up again.

The module ingests the podcast once (whisper and voice) and enrols its three voices.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command

from soundscape.db import alembic_config, make_engine, upgrade
from tests.conftest import SHARED_AUDIO, Cli, recording_id

pytestmark = pytest.mark.slow

PODCAST = SHARED_AUDIO / "podcast" / "podcast.wav"
VOICES = SHARED_AUDIO / "podcast" / "voices"
SENTENCES = json.loads((SHARED_AUDIO / "podcast" / "truth.json").read_text())["sentences"]
ELECTION = next(s for s in SENTENCES if s["keyword"] == "election")  # tiny.en: "Voggers will"


@pytest.fixture(scope="module")
def pod(module_db_url: str) -> Cli:
    run = Cli(module_db_url)
    run("sensors", "add", "studio", "--site", "Studio", "--timezone", "Europe/London")
    run("ingest", PODCAST, "-s", "studio", "-m", "whisper,voice", "-q",
        "--start-time", "2024-05-01T08:00:00")  # fmt: skip
    for speaker in ("host", "guest", "caller"):
        run("speakers", "enrol", speaker, VOICES / f"{speaker}.wav")
    return run


@pytest.fixture(scope="module")
def engine(module_db_url: str):
    eng = make_engine(module_db_url)
    yield eng
    eng.dispose()


def overlaps(hit: dict, sentence: dict) -> bool:
    return hit["start_s"] < sentence["end_s"] and hit["end_s"] > sentence["start_s"]


def truth_speaker(start: float, end: float) -> str | None:
    talk: dict[str, float] = {}
    for s in SENTENCES:
        overlap = min(end, s["end_s"]) - max(start, s["start_s"])
        if overlap > 0:
            talk[s["speaker"]] = talk.get(s["speaker"], 0.0) + overlap
    return max(talk, key=lambda k: talk[k]) if talk else None


# ------------------------------------------------------------------------- phonetic search
def test_a_misheard_word_is_found_by_its_sound(pod):
    """Whisper heard "Voters" as "Voggers" (probability 0.42): neither full text nor trigrams
    (similarity 0.36) find it; its sound does (FTRS / FKRS, one sound apart)."""
    (hit,) = pod.json("search", "--said", "voters", "-n", "1")
    assert overlaps(hit, ELECTION), hit
    assert (hit["method"], hit["match"], hit["matched"]) == ("phonetic", "phonetic", "Voggers")
    assert hit["snippet"].startswith("**Voggers**"), hit
    assert hit["end_s"] - hit["start_s"] < 1.5  # the word, not the sentence
    # without the fuzzy fallbacks it is not found
    assert pod.json("search", "--said", "voters", "--no-fuzzy") == []


def test_text_matches_say_exact_or_stem_and_rank_above_sounds(pod):
    (hit,) = pod.json("search", "--said", "bitcoin", "-n", "1")
    assert (hit["match"], hit["matched"]) == ("exact", "Bitcoin")
    (hit,) = pod.json("search", "--said", "climbers", "-n", "1")  # said: "The climber reached"
    assert (hit["match"], hit["matched"]) == ("stem", "climber")
    hits = pod.json("search", "--said", "coffee or voters", "-n", "5")
    assert [h["match"] for h in hits[:2]] == ["exact", "phonetic"], hits
    assert hits[0]["score"] > 0 and "coffee" in hits[0]["matched"].lower()


def test_a_confident_word_is_never_matched_by_its_sound(pod):
    """ "soap" sounds like "soup" (both SP) but Whisper was sure of "soup": no hit, and the
    message says the recording is transcribed (it used to say to transcribe it)."""
    r = pod("search", "--said", "soap")
    assert r.stdout.count("\n") <= 1, r.stdout  # the header alone, no rows
    assert "nothing said matches 'soap' in 1 transcribed recording" in r.stderr, r.stderr
    assert "--model whisper" not in r.stderr


def test_keywords_recall_and_precision_at_5(pod):
    found, precision = [], []
    for s in SENTENCES:
        hits = pod.json("search", "--said", s["keyword"], "-n", "5")
        good = [overlaps(h, s) for h in hits]
        if good and good[0]:
            found.append(s["keyword"])
        if hits:
            precision.append(sum(good) / len(hits))
    assert len(found) >= 11, found
    assert sum(precision) / len(precision) >= 0.8, precision


def test_sql_has_match_matched_and_speaker(pod, engine):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT match, matched, speaker, method FROM ranger.search_speech('voters', 3, "
                "p_speaker => 'guest')"
            )
        ).all()
        assert [tuple(r) for r in rows] == [("phonetic", "Voggers", "guest", "phonetic")]
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM ranger.search_speech('voters', 3, p_speaker => 'host')"
                )
            ).scalar()
            == 0
        )


# ------------------------------------------------------------------------- who said what
def test_utterances_carry_their_speakers(pod, engine):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT start_s, end_s, speaker FROM ranger.utterances ORDER BY start_s")
        ).all()
    assert len(rows) >= 12
    right = [r for r in rows if r.speaker == truth_speaker(r.start_s, r.end_s)]
    assert len(right) >= len(rows) - 1, [tuple(r) for r in rows]


def test_transcript_by_path_names_the_speakers(pod):
    text = pod("transcript", PODCAST, "--text").stdout.splitlines()
    assert text[0].startswith("host: The price of Bitcoin"), text
    assert text[1].startswith("guest: Tomorrow the weather"), text
    srt = pod("transcript", str(PODCAST), "--srt").stdout
    assert "\nguest: Tomorrow the weather" in srt
    vtt = pod("transcript", PODCAST, "--vtt").stdout
    assert "\n<v guest>Tomorrow the weather" in vtt
    rows = pod.json("transcript", PODCAST)
    assert rows[2]["speaker"] == "caller" and "football" in rows[2]["text"]
    r = pod("transcript", "/nowhere/else.wav", code=1)
    assert "no stored recording is /nowhere/else.wav" in r.stderr + r.stdout


def test_said_with_speaker(pod):
    (hit,) = pod.json("search", "--said", "weather", "--speaker", "guest")
    assert hit["speaker"] == "guest" and "weather" in hit["snippet"].lower()
    assert pod.json("search", "--said", "weather", "--speaker", "host") == []


def test_said_follows_the_sun_filter(pod):
    """What was said follows the one sun rule (ranger.in_sun_filter): the podcast starts at
    08:00 in London on 1 May (sunrise about 05:32 BST), so it is day, not night, and a sun span
    ending inside the podcast keeps only the words said before its end."""
    from datetime import date, datetime, timedelta, timezone

    from soundscape.sun import sun_time

    pod("sensors", "add", "studio", "--site", "Studio", "--timezone", "Europe/London",
        "--lat", "51.5", "--lon", "-0.13", "--update")  # fmt: skip
    said = pod.json("search", "--said", "weather")
    assert said and pod.json("search", "--said", "weather", "--sun", "day") == said
    assert pod.json("search", "--said", "weather", "--sun", "night") == []
    # a whole number of minutes after sunrise that falls 10-70 s into the podcast (07:00 UTC)
    sunrise = sun_time(51.5, -0.13, date(2024, 5, 1), "sunrise")
    assert sunrise is not None
    start = datetime(2024, 5, 1, 7, 0, 0, tzinfo=timezone.utc)
    minutes = -(-(start + timedelta(seconds=10) - sunrise) // timedelta(minutes=1))
    cut = (sunrise + timedelta(minutes=minutes) - start).total_seconds()
    assert 10 <= cut <= 70
    words = "bitcoin or weather or football or soup or elephant or guitar or coffee or chainsaw"
    every = pod.json("search", "--said", words, "-n", "50")
    early = pod.json("search", "--said", words, "-n", "50", "--sun", f"sunrise..sunrise+{minutes}m")
    # the rule holds on the utterance's start: a word before the cut is kept, one in an
    # utterance that starts after it is not (utterances here are under 8 s long)
    starts = {h["start_s"] for h in early}
    assert {h["start_s"] for h in every if h["start_s"] < cut} <= starts
    assert all(s < cut + 8 for s in starts)
    assert any(h["start_s"] >= cut + 8 for h in every)  # so something was left out


def test_speakers_who_takes_a_path(pod, engine):
    turns = pod.json("speakers", "who", PODCAST)
    assert {t["speaker"] for t in turns} == {"host", "guest", "caller"}
    assert turns == pod.json("speakers", "who", recording_id(engine, PODCAST))


def test_the_recording_page_shows_speaker_turns(pod, engine, module_db_url):
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.web import WebConfig, create_app

    rec = recording_id(engine, PODCAST)
    database = open_database(module_db_url)
    try:
        with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database)) as c:
            page = c.get(f"/recordings/{rec}").text
    finally:
        database.engine.dispose()
    assert '<b class="speaker">guest</b> Tomorrow the weather' in page
    assert 'class="turn spk-' in page and "turn-start" in page


def test_a_recording_ingested_after_enrolment_is_labelled_at_ingest(pod, engine):
    """The ingest of a recording with transcript and voice windows labels its utterances
    (here a human reader nobody enrolled: one unknown voice, or the nearest enrolment)."""
    two_cities = SHARED_AUDIO / "podcast" / "two_cities.wav"
    pod("ingest", two_cities, "-s", "studio", "-m", "whisper,voice", "-q")
    rec = recording_id(engine, two_cities)
    with engine.connect() as conn:
        speakers = (
            conn.execute(
                sa.text("SELECT speaker FROM utterances WHERE recording_id = :r"), {"r": rec}
            )
            .scalars()
            .all()
        )
    assert len(speakers) >= 5 and None not in speakers, speakers
    assert len(set(speakers)) <= 2, speakers


def test_speakers_follow_enrolments(pod, engine):
    """Removing a speaker relabels their utterances (another voice or unknown-N); enrolling
    them again brings the name back."""

    def football() -> str:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT speaker FROM utterances WHERE text LIKE '%football%'")
            ).scalar_one()

    assert football() == "caller"
    pod("speakers", "remove", "caller")
    assert football() != "caller"
    pod("speakers", "enrol", "caller", VOICES / "caller.wav")
    assert football() == "caller"


# ------------------------------------------------------------------------- migration 0035
def test_migration_0035_down_and_up(pod, engine):
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0034")
    with engine.connect() as conn:
        columns = set(
            conn.execute(
                sa.text(
                    "SELECT table_name || '.' || column_name FROM information_schema.columns "
                    "WHERE table_name IN ('speech_words', 'utterances')"
                )
            ).scalars()
        )
        assert "utterances.speaker" not in columns and "speech_words.doubtful" not in columns
        hits = conn.execute(sa.text("SELECT * FROM ranger.search_speech('bitcoin', 1)")).all()
        assert len(hits) == 1 and "match" not in hits[0]._mapping
    upgrade(engine, "head")
    with engine.connect() as conn:  # the doubted words come back from the stored utterances
        assert conn.execute(sa.text("SELECT count(*) FROM speech_words WHERE doubtful")).scalar()
    (hit,) = pod.json("search", "--said", "voters", "-n", "1")
    assert hit["matched"] == "Voggers"
