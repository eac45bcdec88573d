"""Search end to end on a small reserve built from real audio with known answers.

Sirens (a real fire-truck recording) are mixed into the real forest soundscape at known
offsets, in recordings made by sensors in known places, at known local times that include
a recording across local midnight and one across the spring-forward DST change.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, time
from pathlib import Path

import psycopg
import pytest
import soundfile as sf
import sqlalchemy as sa

from . import reserve
from .reserve import EXAMPLES

SIREN = EXAMPLES / "firetruck.ogg"
SIRENS = [
    (rec.name, ev.offset_s)
    for rec in reserve.RECORDINGS
    for ev in rec.events
    if ev.clip == SIREN.name
]


@pytest.fixture(scope="module")
def reserve_db(reserve_url):
    """The reserve, ingested once with BirdNET and the spectral model (conftest's
    ``reserve_template``: this module's own copy)."""
    return reserve_url


@pytest.fixture
def search(reserve_db, run_cli, monkeypatch):
    """Run `soundscape search ... --json` on the reserve; returns (rows, result)."""
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_db)

    def go(*args):
        result = run_cli("search", *args, "--json")
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        return rows, result

    return go


def recording(row) -> str:
    return Path(row["path"]).name


def test_text_label_search_finds_every_siren(search):
    events, result = search("siren", "--events")
    assert result.exit_code == 0, result.output
    assert "searching space birdnet by labels Siren" in result.stderr
    # each mixed-in siren is one event, starting where the siren was mixed in (within a hop)
    assert len(events) == len(SIRENS)
    for name, offset in SIRENS:
        assert any(recording(e) == name and abs(e["start_s"] - offset) <= 2 for e in events)
    assert all(e["label"] == "Siren" and e["score"] > 0.5 and e["n_windows"] >= 3 for e in events)
    # windows (not events) are ranked by score, best first
    windows, _ = search("siren", "-n", "20")
    scores = [w["score"] for w in windows]
    assert scores == sorted(scores, reverse=True) and len(windows) == 20


def test_place_filters(search):
    north, _ = search("siren", "--events", "--quadrant", "N")
    assert {e["sensor"] for e in north} == {"north-1"} and len(north) == len(SIRENS) - 1
    forest, _ = search("siren", "--events", "--site", "Forest")
    assert [(e["sensor"], recording(e)) for e in forest] == [("south-1", "20240501_100000.WAV")]
    both, _ = search("siren", "--events", "-s", "north-1", "-s", "south-1")
    assert len(both) == len(SIRENS)
    _, bad = search("siren", "--sensor", "nobody")
    assert bad.exit_code == 1 and "unknown sensor 'nobody'" in bad.stderr


def test_time_of_day_date_and_midnight(search):
    # 02:30 local in the north on 1 May; the DST night never has 02:xx local
    night, _ = search("siren", "--events", "--time", "02:00-03:00", "--to", "2024-05-31")
    assert [(recording(e), e["local"]) for e in night] == [
        ("20240501_003000.WAV", "2024-05-01 02:30:20")
    ]
    # a range across midnight finds the siren ten seconds after local midnight, not the others
    midnight, _ = search("siren", "--events", "--time", "23:00-01:00", "--to", "2024-05-31")
    assert [(recording(e), e["local"][:10]) for e in midnight] == [
        ("20240501_215930.WAV", "2024-05-02")
    ]
    # dates are local dates: the midnight recording's siren is on 2 May
    may2, _ = search("siren", "--events", "--from", "2024-05-02", "--to", "2024-05-31")
    assert [recording(e) for e in may2] == ["20240501_215930.WAV"]
    may1, _ = search("siren", "--events", "--from", "2024-05-01", "--to", "2024-05-01")
    assert sorted(recording(e) for e in may1) == ["20240501_003000.WAV", "20240501_100000.WAV"]
    # an ISO instant with an offset filters on absolute time
    inst, _ = search(
        "siren",
        "--events",
        "--from",
        "2024-05-01T11:00:00+02:00",
        "--to",
        "2024-05-01T13:00:00+02:00",
    )
    assert [recording(e) for e in inst] == ["20240501_100000.WAV"]


def test_daylight_saving_night(search):
    """On 2024-03-31 Berlin clocks jump from 02:00 CET to 03:00 CEST: wall-clock filters."""
    day = ("--from", "2024-03-31", "--to", "2024-03-31")
    before, _ = search("siren", "--events", "--time", "01:59-02:00", *day)
    assert [e["local"] for e in before] == ["2024-03-31 01:59:10"]
    after, _ = search("siren", "--events", "--time", "03:00-03:10", *day)
    assert [(e["local"][11:16], round(e["start_s"])) for e in after] == [("03:00", 62)]
    gap, result = search("siren", "--time", "02:00-03:00", *day)
    assert gap == [] and "no windows match" in result.stderr


def test_daylight_saving_fall_back_night(search):
    """On 2024-10-27 Berlin clocks go back from 03:00 CEST to 02:00 CET: 02:xx happens twice."""
    day = ("--from", "2024-10-27", "--to", "2024-10-27")
    second_pass, _ = search("siren", "--events", "--time", "02:00-02:01", *day)
    assert [(e["local"], round(e["start_s"])) for e in second_pass] == [("2024-10-27 02:00:10", 40)]
    # the same wall-clock hour also holds the recording's first 30 s (02:59:30 CEST onwards)
    windows, _ = search(
        "--audio", str(SIREN), "--space", "spectral", "-n", "100", "--time", "02:00-03:00", *day
    )
    times = {w["local"][11:16] for w in windows}
    assert {"02:59", "02:00"} <= times
    # instants stay in order although the wall clock went back
    stamps = sorted((w["start_s"], w["starts_at"]) for w in windows)
    assert [s for _, s in stamps] == sorted(s for _, s in stamps)


def test_audio_example_and_window_queries(search):
    events, result = search("--audio", str(SIREN), "--events", "-n", str(len(SIRENS)))
    assert result.exit_code == 0, result.output
    assert "by audio firetruck.ogg (5 windows)" in result.stderr
    sirens = set(SIRENS)
    top = {(recording(e), e["start_s"]) for e in events}
    # the best events are the sirens (each within one hop of where it was mixed in)
    assert len(top) == len(SIRENS)
    for name, start in top:
        assert any(name == n and abs(start - off) <= 2 for n, off in sirens), (name, start)
    # the same in the spectral space, restricted to the south
    south, _ = search("--audio", str(SIREN), "--space", "spectral", "--quadrant", "S", "-n", "1")
    assert recording(south[0]) == "20240501_100000.WAV" and 8 <= south[0]["start_s"] <= 20

    # a span of the example: the first 3 s only
    span, result = search("--audio", str(SIREN), "--start", "0", "--end", "3", "-n", "3")
    assert "0-3 s (1 windows)" in result.stderr and span

    # a stored window finds the other sirens; itself is excluded
    seed = events[0]["segment_id"]
    like, result = search("--like", str(seed), "--events", "-n", str(len(SIRENS)))
    assert result.exit_code == 0
    assert seed not in {e["segment_id"] for e in like}
    assert {recording(e) for e in like} >= {r.name for r in reserve.RECORDINGS} - {
        recording(events[0])
    }


def test_exactly_one_query_form_and_label_suggestions(search):
    _, none = search()
    assert none.exit_code == 2
    _, two = search("siren", "--audio", str(SIREN))
    assert two.exit_code == 2
    _, typo = search("sirne")
    assert typo.exit_code == 1 and "did you mean" in typo.stderr and "Siren" in typo.stderr
    _, badtime = search("siren", "--time", "25:00-03:00")
    assert badtime.exit_code == 2
    _, naive = search("siren", "--from", "2024-05-01T03:00:00")
    assert naive.exit_code == 2 and "offset" in naive.stderr


def test_field_words_and_bird_labels(search):
    birds, result = search("birdsong", "-n", "5")
    assert result.exit_code == 0 and len(birds) == 5
    assert all(b["label"] not in {"Siren", "Engine", "Dog"} for b in birds)
    junco, _ = search("junco", "-n", "3")
    assert {j["label"] for j in junco} == {"Dark-eyed Junco"}


def test_output_formats_and_export(search, run_cli, reserve_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_db)
    table = run_cli("search", "siren", "-n", "3").stdout.splitlines()
    assert table[0].split()[:4] == ["rank", "score", "label", "sensor"] and len(table) == 5
    rows = list(csv.DictReader(io.StringIO(run_cli("search", "siren", "-n", "3", "--csv").stdout)))
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and rows[0]["label"] == "Siren"

    out = tmp_path / "clips"
    events, result = search("siren", "--events", "-n", "2", "--export", str(out))
    assert result.exit_code == 0
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2 and len(list(out.glob("*.png"))) == 2
    for e in events:
        clip = Path(e["clip"])
        assert clip.exists() and clip.name.startswith(f"{events.index(e) + 1:03d}_north-1_")
        info = sf.info(str(clip))
        # the event span plus one second of padding on each side (clipped at the file's end)
        assert info.duration == pytest.approx(
            min(e["end_s"] + 1, 71.98) - (e["start_s"] - 1), abs=0.05
        )
    assert (out / wavs[0].with_suffix(".png").name).stat().st_size > 10_000

    # Raven Pro selection tables: one per recording, hits in time order, BirdNET's band
    raven = tmp_path / "raven"
    hits, result = search("siren", "-n", "6", "--raven", str(raven))
    assert result.exit_code == 0 and "selection table" in result.stderr
    tables = sorted(raven.glob("*.selections.txt"))
    assert len(tables) == len({h["recording_id"] for h in hits})
    seen = 0
    for table in tables:
        rows = list(csv.DictReader(io.StringIO(table.read_text()), delimiter="\t"))
        assert [r["Selection"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
        begins = [float(r["Begin Time (s)"]) for r in rows]
        assert begins == sorted(begins)
        for r in rows:
            hit = hits[int(r["Rank"]) - 1]
            assert Path(r["Begin Path"]) == Path(hit["path"])
            assert table.name.endswith(f".r{hit['recording_id']}.selections.txt")
            assert float(r["Begin Time (s)"]) == pytest.approx(hit["start_s"], abs=1e-3)
            assert float(r["End Time (s)"]) == pytest.approx(hit["end_s"], abs=1e-3)
            assert r["Common Name"] == "Siren" and r["Species Code"] == ""
            assert float(r["Confidence"]) == pytest.approx(hit["score"], abs=1e-4)
            assert float(r["Low Freq (Hz)"]) == 0
            assert float(r["High Freq (Hz)"]) == min(15000, sf.info(hit["path"]).samplerate / 2)
            assert r["Sensor"] == hit["sensor"] and r["Window ID"] == str(hit["segment_id"])
            seen += 1
    assert seen == len(hits) == 6

    # Audacity label tracks: one <stem>.txt per recording, start/end/label in time order, which
    # `annotate import` reads back onto the same windows
    tracks_dir = tmp_path / "audacity"
    hits, result = search("siren", "-n", "6", "--audacity", str(tracks_dir))
    assert result.exit_code == 0 and "label track" in result.stderr
    tracks = sorted(tracks_dir.glob("*.txt"))
    assert sorted(t.stem for t in tracks) == sorted({Path(h["path"]).stem for h in hits})
    for track in tracks:
        mine = sorted(
            (h["start_s"], h["end_s"]) for h in hits if Path(h["path"]).stem == track.stem
        )
        lines = [line.split("\t") for line in track.read_text().splitlines()]
        got = [float(x) for a, b, _ in lines for x in (a, b)]
        assert got == pytest.approx([x for span in mine for x in span], abs=1e-3)
        assert {label for _, _, label in lines} == {"Siren"}
    imported = run_cli("annotate", "import", *tracks, "--json")
    assert imported.exit_code == 0, imported.output
    assert sum(json.loads(x)["imported"] for x in imported.stdout.splitlines()) == len(hits)


def test_concepts_ranger_sql_and_reader_role(reserve_db, run_cli, monkeypatch, admin_url):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_db)
    add = run_cli("concepts", "add", "siren", "--text", "siren", "--json")
    assert add.exit_code == 0, add.output
    assert json.loads(add.stdout)["detections"] > 0
    add2 = run_cli("concepts", "add", "siren-like", "--audio", str(SIREN), "--threshold", "0.7")
    assert add2.exit_code == 0, add2.output
    dup = run_cli("concepts", "add", "siren", "--text", "siren")
    assert dup.exit_code == 1 and "--replace" in dup.stderr
    listed = [json.loads(x) for x in run_cli("concepts", "list", "--json").stdout.splitlines()]
    assert {c["name"] for c in listed} == {"siren", "siren-like"}

    # The concept also works from the CLI.
    by_concept = run_cli("search", "--concept", "siren", "--events", "--json").stdout.splitlines()
    assert len(by_concept) == len(SIRENS)

    r = run_cli("db", "create-reader", "--password", "s3cret-pw")
    assert r.exit_code == 0, r.output
    assert "s3cret-pw" not in r.stderr + r.stdout
    url = (
        sa.engine.make_url(reserve_db)
        .set(drivername="postgresql", username="soundscape_reader", password="s3cret-pw")
        .render_as_string(False)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT sensor, local_date, local_time, score FROM ranger.search('siren', 10, "
            "'north-1', NULL, NULL, '02:00', '03:00', '2024-05-01', '2024-05-31')"
        ).fetchall()
        assert [(s, d) for s, d, _, _ in rows] == [("north-1", date(2024, 5, 1))] * len(rows)
        assert rows and all(time(2) <= t < time(3) for _, _, t, _ in rows)
        mid = conn.execute(
            "SELECT local_date FROM ranger.search('siren-like', 20, NULL, NULL, 'N', '23:00', "
            "'01:00')"
        ).fetchall()
        assert mid and {d for (d,) in mid} <= {date(2024, 5, 1), date(2024, 5, 2)}
        hours = conn.execute(
            "SELECT site, day, hour, detections FROM ranger.activity_by_hour "
            "WHERE concept = 'siren' ORDER BY day, hour"
        ).fetchall()
        assert ("Marsh", date(2024, 5, 2), 0) in {h[:3] for h in hours}
        assert ("Forest", date(2024, 5, 1), 12) in {h[:3] for h in hours}
        det = conn.execute(
            "SELECT count(*) FROM ranger.detections WHERE concept = 'siren'"
        ).fetchone()
        assert det[0] == json.loads(add.stdout)["detections"]
        assert conn.execute("SELECT count(*) FROM ranger.recordings").fetchone()[0] == len(
            reserve.RECORDINGS
        )
        assert conn.execute("SELECT count(*) FROM ranger.windows").fetchone()[0] > 0
        # ... and nothing else.
        for stmt in (
            "SELECT count(*) FROM segments",
            "SELECT count(*) FROM recordings",
            "INSERT INTO sensors (name) VALUES ('x')",
            "UPDATE sensors SET site = 'x'",
            "DELETE FROM concepts",
            "DROP TABLE segments",
            "DROP VIEW ranger.recordings",
            "SELECT ranger.refresh_detections('siren')",
            "CREATE TABLE ranger.t (x int)",
        ):
            with pytest.raises(psycopg.errors.Error):
                conn.execute(stmt)
    # the tables are intact
    with psycopg.connect(
        admin_url.replace("/postgres?", f"/{sa.engine.make_url(reserve_db).database}?")
    ) as conn:
        assert conn.execute("SELECT count(*) FROM recordings").fetchone()[0] == len(
            reserve.RECORDINGS
        )


INJECTIONS = [
    "'; DROP TABLE segments; --",
    "north-1' OR '1'='1",
    'x"; DELETE FROM recordings; --',
    "$1",
    "%s",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_user_values_never_become_sql(reserve_db, run_cli, monkeypatch, evil):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_db)
    for option in ("--sensor", "--site", "--quadrant"):
        r = run_cli("search", "siren", option, evil)
        assert r.exit_code == 1 and "unknown" in r.stderr
    assert run_cli("search", evil).exit_code in (0, 1)  # a label search, or "no such label"
    assert run_cli("search", "siren", "--time", evil).exit_code == 2
    assert run_cli("search", "siren", "--from", evil).exit_code == 2
    assert run_cli("search", "--concept", evil).exit_code == 1
    engine = sa.create_engine(reserve_db)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT * FROM ranger.search_labels(1, ARRAY[0], 5, ARRAY[:e], ARRAY[:e], "
                "ARRAY[:e])"
            ),
            {"e": evil},
        ).fetchall()
        assert rows == []
        with pytest.raises(sa.exc.DBAPIError, match="no concept named"):
            conn.execute(sa.text("SELECT * FROM ranger.search(:e, 5, :e, :e, :e)"), {"e": evil})
        conn.rollback()
        assert conn.execute(sa.text("SELECT count(*) FROM recordings")).scalar() == len(
            reserve.RECORDINGS
        )
        assert conn.execute(sa.text("SELECT count(*) FROM segments")).scalar() > 0
    engine.dispose()


def test_classify_with_birdnet_classes(reserve_db, run_cli, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_db)
    r = run_cli(
        "classify",
        "--labels",
        "siren, dark-eyed junco, dog",
        "--space",
        "birdnet",
        "--quadrant",
        "S",
        "-n",
        "0",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows and {x["sensor"] for x in rows} == {"south-1"}
    # the south recording has its siren mixed in at 10 s: windows there say "siren"
    siren = [x for x in rows if x["label"] == "siren"]
    assert siren and all(8 <= x["start_s"] <= 20 for x in siren)
    assert max(x["score"] for x in siren) > 0.5
    per = run_cli(
        "classify",
        "--labels",
        "siren, dark-eyed junco",
        "--space",
        "birdnet",
        "--per",
        "recording",
        "--csv",
    )
    recs = list(csv.DictReader(io.StringIO(per.stdout)))
    assert len(recs) == len(reserve.RECORDINGS)
    engine = sa.create_engine(reserve_db)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT label, count(*) FROM ranger.window_labels GROUP BY label")
        ).fetchall()
    engine.dispose()
    assert {label for label, _ in stored} >= {"siren", "dark-eyed junco"}
    bad = run_cli("classify", "--labels", "siren")
    assert bad.exit_code == 1 and "at least two labels" in bad.stderr


@pytest.mark.parametrize("text", ["%", "*", "'", "_"])
def test_a_query_without_letters_matches_no_label(search, run_cli, text):
    """Issue 10 item 11: "%" and "*" matched all 6,522 BirdNET classes."""
    rows, result = search(text)
    assert result.exit_code == 1 and rows == []
    assert "no birdnet label matches" in result.stderr
    concept = run_cli("concepts", "add", "everything", "--text", text)
    assert concept.exit_code == 1 and "no birdnet label matches" in concept.stderr
    assert "everything" not in run_cli("concepts", "list", "--json").stdout


def test_label_suggestions_are_fuzzy(search):
    """Issue 10 item 22: `search junko` suggested "Gun, Dunnock"; the closest label is the
    junco (found through its word "Junco")."""
    _, typo = search("junko")
    assert typo.exit_code == 1 and "did you mean" in typo.stderr
    suggested = typo.stderr.split("did you mean: ")[1].split("?")[0].split(", ")
    assert suggested[0] == "Dark-eyed Junco" and "Gun" not in suggested
    _, typo = search("sirne")
    assert typo.stderr.split("did you mean: ")[1].startswith("Siren")


def test_events_merge_per_label(search):
    """Issue 10 item 23: a "birdsong" query merged windows of different bird classes into one
    long event. Each event is now one label's windows, overlapping or touching."""
    # every bird window of the reserve (one row per window: its best bird class)
    windows, _ = search("birdsong", "-n", "2000")
    events, result = search("birdsong", "--events", "-n", "1000")
    assert result.exit_code == 0 and len(events) < len(windows)
    by_key: dict[tuple, list] = {}
    for w in windows:
        by_key.setdefault((w["recording_id"], w["label"]), []).append((w["start_s"], w["end_s"]))
    overlapping_labels = 0
    for e in events:
        spans = sorted(
            (a, b)
            for a, b in by_key[(e["recording_id"], e["label"])]
            if a >= e["start_s"] - 1e-3 and b <= e["end_s"] + 1e-3
        )
        # the event is covered, without a gap, by windows of its own label
        assert spans and spans[0][0] == pytest.approx(e["start_s"], abs=1e-3)
        reach = spans[0][1]
        for a, b in spans[1:]:
            assert a <= reach + 1e-3
            reach = max(reach, b)
        assert reach == pytest.approx(e["end_s"], abs=1e-3)
        overlapping_labels += any(
            o["recording_id"] == e["recording_id"]
            and o["label"] != e["label"]
            and o["start_s"] < e["end_s"]
            and e["start_s"] < o["end_s"]
            for o in events
        )
    assert overlapping_labels > 0  # the reserve has birds of several classes singing together


def test_library_search_is_the_cli_search(reserve_db, search):
    """Issue 10 item 28: a notebook calls search.search(conn, SearchRequest(...)) and gets what
    the CLI prints; concepts are listed, refreshed and removed through the library."""
    from soundscape import concepts, stats
    from soundscape.errors import InvalidRequest, SoundscapeError
    from soundscape.search import Filters, SearchRequest
    from soundscape.search import search as run_search

    cli_rows, _ = search("siren", "--events", "--quadrant", "N", "-n", "4")
    engine = sa.create_engine(reserve_db)
    try:
        with engine.connect() as conn:
            request = SearchRequest(
                text="siren", filters=Filters(quadrants=["N"]), limit=4, events=True
            )
            found = run_search(conn, request)
            assert found.space.name == "birdnet" and found.query.is_labels
            assert [(h.segment_id, h.start_s, h.end_s, h.n_windows) for h in found.hits] == [
                (r["segment_id"], r["start_s"], r["end_s"], r["n_windows"]) for r in cli_rows
            ]
            for bad in (
                SearchRequest(),
                SearchRequest(text="siren", like=1),
                SearchRequest(text="siren", label="x"),
                SearchRequest(text="siren", start_s=1.0),
            ):
                with pytest.raises(InvalidRequest):
                    run_search(conn, bad)
        with engine.begin() as conn:
            query = run_search(conn, SearchRequest(text="siren", limit=1)).query
            concepts.save_concept(conn, "lib-siren", query)
            listed = {c["name"]: c for c in concepts.list_concepts(conn)}
            assert listed["lib-siren"]["detections"] > 0
            assert (
                concepts.refresh_concepts(conn, ["lib-siren"]) == listed["lib-siren"]["detections"]
            )
            with pytest.raises(SoundscapeError, match="no concept named 'nope'"):
                concepts.remove_concepts(conn, ["lib-siren", "nope"])
            assert concepts.remove_concepts(conn, ["lib-siren"]) == 1
            assert "lib-siren" not in {c["name"] for c in concepts.list_concepts(conn)}
            # what `recordings list` prints comes from the library too
            listed = stats.list_recordings(conn)
            assert [r["id"] for r in listed] == sorted(r["id"] for r in listed)
            assert len(listed) == len(reserve.RECORDINGS)
            south = stats.list_recordings(conn, sensor="south-1")
            assert [r["sensor"] for r in south] == ["south-1"]
            assert len(stats.list_recordings(conn, limit=2)) == 2
    finally:
        engine.dispose()


def test_one_pick_space_for_every_purpose(reserve_db):
    """Issue 10 item 30: one spaces.pick_space(conn, name, purpose=...) replaces the model
    preference lists of search, anomalies and duplicates. The reserve has BirdNET and
    spectral spaces (no CLAP)."""
    from soundscape import anomalies, duplicates, search
    from soundscape.errors import SoundscapeError
    from soundscape.spaces import PURPOSES, pick_space

    engine = sa.create_engine(reserve_db)
    try:
        with engine.connect() as conn:
            picked = {p: pick_space(conn, purpose=p).model for p in PURPOSES}
            assert picked == {
                "text": "birdnet",  # labels answer text (no text encoder here)
                "audio": "birdnet",
                "anomalies": "spectral",
                "duplicates": "birdnet",
                "labels": "birdnet",
            }
            assert pick_space(conn, purpose="anomalies", sensor="south-1").model == "spectral"
            assert pick_space(conn, "birdnet", purpose="anomalies", sensor="north-1").model == (
                "birdnet"
            )
            with pytest.raises(SoundscapeError, match="unknown sensor 'nobody'"):
                pick_space(conn, purpose="anomalies", sensor="nobody")
            with pytest.raises(SoundscapeError, match="no space named 'nope'"):
                pick_space(conn, "nope", purpose="text")
            with pytest.raises(SoundscapeError, match="purpose must be one of"):
                pick_space(conn, purpose="everything")
    finally:
        engine.dispose()
    for module in (search, anomalies, duplicates):
        assert not hasattr(module, "MODEL_PREFERENCE")
        assert getattr(module, "pick_space", pick_space) is pick_space
