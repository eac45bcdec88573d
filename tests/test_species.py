"""Species-level facts on the reserve built from real audio, with real BirdNET: species_daily
against what the stored class scores say (recomputed here in Python from segment_scores),
per-label thresholds, classifier detections, and BirdNET's location/season filter (its real
occurrence model) in label search, `labels top` and species_daily.

The forest soundscape in every reserve recording is North American: BirdNET hears a Dark-eyed
Junco in it. north-1 stands in Berlin, where the occurrence model finds the junco implausible
all year; south-1 stands in Ithaca (New York), where it is plausible in May.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date

import pytest
import sqlalchemy as sa

from soundscape import occurrence
from soundscape.db import make_engine
from soundscape.errors import SoundscapeError
from soundscape.occurrence import birdnet_week, occurrence_model, species_list

from . import reserve

# End-to-end: a reserve through BirdNET and its occurrence model. `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

PLACES = {"north-1": (52.52, 13.40), "south-1": (42.44, -76.50)}  # Berlin, Ithaca
JUNCO = "Dark-eyed Junco"
BLACKBIRD = "Eurasian Blackbird"


@pytest.fixture(scope="module")
def species_db(reserve_url):
    """The reserve with coordinates, ingested once with BirdNET (this module's copy of
    conftest's ``reserve_template``, made birdnet-only with the sensors at PLACES)."""
    reserve.birdnet_only_with_coordinates(
        reserve_url, {name: (str(lat), str(lon)) for name, (lat, lon) in PLACES.items()}
    )
    return reserve_url


@pytest.fixture
def conn(species_db):
    engine = make_engine(species_db)
    with engine.connect() as c:
        yield c
        c.rollback()
    engine.dispose()


@pytest.fixture
def cli(species_db, run_cli, monkeypatch):
    """Run a CLI command on the reserve; with --json, also the parsed rows."""
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", species_db)

    def go(*args):
        result = run_cli(*args)
        rows = []
        if "--json" in args and result.exit_code == 0:
            rows = [json.loads(line) for line in result.stdout.splitlines()]
        return rows, result

    return go


# ---------------------------------------------------------------- the expectation, in Python
def plausible_ids(lat: float | None, lon: float | None, week: int) -> set[int] | None:
    """Class indices BirdNET's occurrence model keeps at a place and week (None: no place),
    straight from the model, plus the non-species classes."""
    if lat is None:
        return None
    labels = occurrence_model().labels
    others = {i for i, lab in enumerate(labels) if lab.split("_")[1] in NON_SPECIES}
    return {p.label_id for p in species_list(lat, lon, week)} | others


NON_SPECIES = {
    "Dog", "Engine", "Environmental", "Fireworks", "Gun", "Human non-vocal", "Human vocal",
    "Human whistle", "Noise", "Power tools", "Siren",
}  # fmt: skip


def expected_daily(conn, thresholds: dict[str, float] | None = None, all_species=False):
    """{(label, sensor, local_date): (detections, first, last, best)} from the raw stored
    scores: every window whose score for a class reaches the class's threshold (0.5 unless
    given), left out where the occurrence model finds the class unlikely (unless all_species)."""
    thresholds = thresholds or {}
    raw = conn.execute(
        sa.text(
            "SELECT sc.label_id, l.common, sc.score, s.name AS sensor, s.latitude, s.longitude, "
            "g.local_date, g.local_time FROM segment_scores sc "
            "JOIN space_labels l ON l.space_id = sc.space_id AND l.label_id = sc.label_id "
            "JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id "
            "JOIN sensors s ON s.id = g.sensor_id"
        )
    ).all()
    cache: dict[tuple, set[int] | None] = {}
    groups: dict[tuple, list] = defaultdict(list)
    for r in raw:
        if r.score < thresholds.get(r.common, 0.5):
            continue
        key = (r.latitude, r.longitude, birdnet_week(r.local_date))
        if key not in cache:
            cache[key] = plausible_ids(*key)
        if not all_species and cache[key] is not None and r.label_id not in cache[key]:
            continue
        groups[(r.common, r.sensor, r.local_date)].append((r.local_time, r.score))
    return {
        k: (len(v), min(t for t, _ in v), max(t for t, _ in v), max(s for _, s in v))
        for k, v in groups.items()
    }


def daily_rows(conn, view="ranger.species_daily", source="model"):
    rows = conn.execute(
        sa.text(
            f"SELECT label, sensor, local_date, detections, first_time, last_time, best_score "
            f"FROM {view} WHERE source = :s"
        ),
        {"s": source},
    ).all()
    out = {(r.label, r.sensor, r.local_date): tuple(r[3:]) for r in rows}
    assert len(out) == len(rows)  # one row per label, sensor and day
    return out


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, (n, first, last, best) in want.items():
        assert got[k][:3] == (n, first, last), k
        assert got[k][3] == pytest.approx(best, abs=1e-6), k


# ------------------------------------------------------------------------------------ tests
def test_birdnet_week():
    assert [birdnet_week(date(2024, m, d)) for m, d in [(1, 1), (1, 7), (1, 8), (1, 22)]] == [
        1, 1, 2, 4,
    ]  # fmt: skip
    assert birdnet_week(date(2024, 1, 31)) == 4 and birdnet_week(date(2024, 12, 31)) == 48
    assert birdnet_week(date(2024, 5, 1)) == 17 and birdnet_week(None) == -1


def test_sql_week_matches_python(conn):
    days = [date(2024, 1, 1), date(2024, 2, 29), date(2024, 3, 31), date(2024, 12, 22)]
    for d in days:
        assert conn.execute(sa.text("SELECT ranger.birdnet_week(:d)"), {"d": d}).scalar() == (
            birdnet_week(d)
        )
    assert conn.execute(sa.text("SELECT ranger.birdnet_week(NULL)")).scalar() == -1


def test_occurrence_model_gives_sensible_answers():
    """The real meta model: a North American bird in the US in its season, not in Berlin in
    June; a European bird the other way round."""

    def prob(name, lat, lon, week):
        found = {p.common: p.probability for p in species_list(lat, lon, week, threshold=0.001)}
        return found.get(name, 0.0)

    ithaca, berlin = PLACES["south-1"], PLACES["north-1"]
    assert prob(JUNCO, *ithaca, 2) > 0.5  # January in New York
    assert prob(JUNCO, *berlin, 23) < 0.03  # June in Berlin
    assert prob(BLACKBIRD, *berlin, 23) > 0.5
    assert prob(BLACKBIRD, *ithaca, 23) < 0.03
    # the whole-year list (week -1) holds more species than one week's
    assert len(species_list(*berlin, -1)) > len(species_list(*berlin, 23)) > 50
    with pytest.raises(SoundscapeError, match="week"):
        species_list(*berlin, 49)


def test_occurrence_stored_when_sensors_get_coordinates(conn, cli):
    stored = conn.execute(
        sa.text(
            "SELECT s.name, o.week, count(*) FILTER (WHERE o.probability IS NULL) AS others, "
            "count(o.probability) AS species FROM occurrence o "
            "JOIN sensors s ON s.id = o.sensor_id GROUP BY s.name, o.week"
        )
    ).all()
    assert {(r.name, r.week) for r in stored} == {(s, w) for s in PLACES for w in occurrence.WEEKS}
    assert {r.others for r in stored} == {len(NON_SPECIES)}
    # the stored Berlin list of a week is the model's own list
    berlin = conn.execute(
        sa.text(
            "SELECT label_id FROM occurrence o JOIN sensors s ON s.id = o.sensor_id "
            "WHERE s.name = 'north-1' AND o.week = 23 AND o.probability IS NOT NULL"
        )
    ).scalars()
    assert set(berlin) == {p.label_id for p in species_list(*PLACES["north-1"], 23)}
    rows, r = cli("labels", "occurrence", "--json")
    assert r.exit_code == 0, r.output
    assert {x["sensor"]: x["status"] for x in rows} == {"north-1": "current", "south-1": "current"}
    rows, r = cli("labels", "occurrence", "-s", "north-1", "--date", "2024-06-10", "--json")
    assert r.exit_code == 0, r.output
    names = [x["label"] for x in rows]
    assert BLACKBIRD in names and JUNCO not in names


def test_species_daily_matches_the_stored_scores(conn):
    want = expected_daily(conn)
    assert_same(daily_rows(conn), want)
    # every inserted siren is there, on its local day (the midnight one on 2 May)
    sirens = {(sensor, day) for (label, sensor, day) in want if label == "Siren"}
    for rec in reserve.RECORDINGS:
        assert any(sensor == rec.sensor for sensor, _ in sirens)
    assert ("north-1", date(2024, 5, 2)) in sirens and ("south-1", date(2024, 5, 1)) in sirens
    # "which species per site per day" is one SELECT
    per_site = conn.execute(
        sa.text("SELECT DISTINCT site, local_date, label FROM ranger.species_daily")
    ).all()
    site = {name: s for name, (s, _, _) in reserve.SENSORS.items()}
    assert {tuple(r) for r in per_site} == {(site[s], d, lab) for lab, s, d in want}


def test_location_filter_in_species_daily(conn):
    everything = daily_rows(conn, "ranger.species_daily_all")
    assert_same(everything, expected_daily(conn, all_species=True))
    junco = {(s, d) for (lab, s, d) in everything if lab == JUNCO}
    # BirdNET hears the junco at both sensors; Berlin's list leaves it out, Ithaca's in May keeps it
    assert {s for s, _ in junco} == {"north-1", "south-1"}
    kept = {(s, d) for (lab, s, d) in daily_rows(conn) if lab == JUNCO}
    assert kept == {(s, d) for s, d in junco if s == "south-1"}
    flags = conn.execute(
        sa.text("SELECT DISTINCT sensor, plausible FROM ranger.species_daily_all WHERE label = :l"),
        {"l": JUNCO},
    ).all()
    assert set(flags) == {("north-1", False), ("south-1", True)}


def test_thresholds_change_the_answer(conn, cli):
    before = daily_rows(conn)
    key = max((k for k in before if k[0] == JUNCO), key=lambda k: before[k][0])
    n, _, _, best = before[key]
    assert n >= 3
    try:
        _, r = cli("labels", "threshold", JUNCO.lower(), f"{best + 0.001:.4f}")
        assert r.exit_code == 0, r.output
        conn.commit()
        higher = daily_rows(conn)
        assert key not in higher
        assert_same(higher, expected_daily(conn, {JUNCO: best + 0.001}))
        _, r = cli("labels", "threshold", "Junco hyemalis", "0.2")
        assert r.exit_code == 0, r.output
        rows, r = cli("labels", "threshold", "--json")
        assert [(x["label"], x["threshold"]) for x in rows] == [(JUNCO, pytest.approx(0.2))]
        conn.commit()
        lower = daily_rows(conn)
        assert lower[key][0] > n
        assert_same(lower, expected_daily(conn, {JUNCO: 0.2}))
    finally:
        _, r = cli("labels", "threshold", JUNCO, "--reset")
        assert r.exit_code == 0, r.output
    conn.commit()
    assert daily_rows(conn) == before
    _, r = cli("labels", "threshold", "junko", "0.3")
    assert r.exit_code == 1 and "did you mean: Dark-eyed Junco" in r.stderr
    _, r = cli("labels", "threshold", JUNCO, "1.5")
    assert r.exit_code == 2 and "at most 1" in r.stderr


def test_classifier_detections_in_species_daily(conn):
    from soundscape.annotations import add_annotation
    from soundscape.classifiers import classify, train

    recs = dict(conn.execute(sa.text("SELECT path, id FROM recordings")).all())
    by_name = {p.rsplit("/", 1)[-1]: i for p, i in recs.items()}
    # "siren" yes on two inserted sirens, no on two quiet stretches; the others are held out
    for name, start, verdict in [
        ("20240501_003000.WAV", 20.0, "yes"),
        ("20240331_005900.WAV", 10.0, "yes"),
        ("20240501_003000.WAV", 5.0, "no"),
        ("20240331_005900.WAV", 40.0, "no"),
    ]:
        add_annotation(conn, by_name[name], start, start + 6, "siren", verdict=verdict)
    clf = train(conn, "sirens", "birdnet", ["siren"], weak_negatives=20)
    result = classify(conn, clf)
    assert result.detected > 0
    raw = conn.execute(
        sa.text(
            "SELECT s.name, g.local_date, g.local_time, d.score FROM classifier_detections d "
            "JOIN segments g ON g.space_id = d.space_id AND g.id = d.segment_id "
            "JOIN sensors s ON s.id = g.sensor_id"
        )
    ).all()
    groups = defaultdict(list)
    for r in raw:
        groups[("siren", r.name, r.local_date)].append((r.local_time, r.score))
    want = {
        k: (len(v), min(t for t, _ in v), max(t for t, _ in v), max(s for _, s in v))
        for k, v in groups.items()
    }
    got = daily_rows(conn, source="classifier")
    assert_same(got, want)
    detector = conn.execute(
        sa.text("SELECT DISTINCT detector FROM ranger.species_daily WHERE source = 'classifier'")
    ).scalars()
    assert list(detector) == ["sirens"]
    # the model's own rows are untouched
    assert_same(daily_rows(conn), expected_daily(conn))
    conn.rollback()


def test_species_daily_cli(cli, conn):
    rows, r = cli("species", "daily", "--site", "Marsh", "--from", "2024-05-01", "--to", "2024-05-02", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    want = {
        k: v
        for k, v in expected_daily(conn).items()
        if k[1] == "north-1" and date(2024, 5, 1) <= k[2] <= date(2024, 5, 2)
    }
    assert {(x["label"], x["sensor"], x["local_date"]) for x in rows} == {
        (lab, s, d.isoformat()) for lab, s, d in want
    }
    assert {x["source"] for x in rows} == {"model"} and all("scientific" in x for x in rows)
    rows, r = cli("species", "daily", "--label", JUNCO, "--all-species", "--json")
    assert r.exit_code == 0, r.output
    assert {(x["sensor"], x["plausible"]) for x in rows} == {("north-1", False), ("south-1", True)}
    rows, r = cli("species", "daily", "--label", JUNCO, "--json")
    assert {x["sensor"] for x in rows} == {"south-1"}
    _, r = cli("species", "daily", "--csv")
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("label,scientific,sensor,")
    _, r = cli("species", "daily", "--time", "02:00-03:00")
    assert r.exit_code == 2 and "whole local days" in r.stderr
    _, r = cli("species", "daily", "--site", "Nowhere")
    assert r.exit_code == 1 and "unknown site 'Nowhere'" in r.stderr


def test_label_search_leaves_out_implausible_species(cli):
    rows, r = cli("search", "junco", "-s", "north-1", "--json")
    assert r.exit_code == 0, r.output
    assert rows == [] and "no windows match" in r.stderr
    rows, r = cli("search", "junco", "-s", "north-1", "--all-species", "--json")
    assert r.exit_code == 0, r.output
    assert len(rows) == 10 and {x["label"] for x in rows} == {JUNCO}
    # in Ithaca the junco is plausible in May; sirens are never filtered, even in Berlin
    rows, _ = cli("search", "junco", "-s", "south-1", "--json")
    assert rows and {x["sensor"] for x in rows} == {"south-1"}
    rows, _ = cli("search", "siren", "-s", "north-1", "--json")
    assert len(rows) == 10 and {x["label"] for x in rows} == {"Siren"}


def test_labels_top_filters_and_all_species(cli, conn):
    rows, r = cli("labels", "top", "-s", "north-1", "--json")
    assert r.exit_code == 0, r.output
    assert JUNCO not in {x["common"] for x in rows} and "Siren" in {x["common"] for x in rows}
    rows, r = cli("labels", "top", "-s", "north-1", "--all-species", "--json")
    assert JUNCO in {x["common"] for x in rows}
    # the counts are the windows of the expectation (threshold 0.5 = the default min score)
    rows, r = cli("labels", "top", "--site", "Forest", "--from", "2024-05-01", "--to", "2024-05-01", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    want = {k[0]: v[0] for k, v in expected_daily(conn).items() if k[1] == "south-1"}
    assert {x["common"]: x["windows"] for x in rows} == want
    rows, r = cli("labels", "top", "-s", "north-1", "--time", "02:00-03:00", "--all-species", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert rows and all(x["windows"] >= 1 for x in rows)
    _, r = cli("labels", "top", "--quadrant", "Z")
    assert r.exit_code == 1 and "unknown quadrant 'Z'" in r.stderr


def test_moving_a_sensor_moves_its_list(cli, conn):
    """sensors add --update with new coordinates recomputes the lists; without coordinates
    nothing is filtered there."""
    try:
        _, r = cli("sensors", "add", "north-1", "--site", "Marsh", "--quadrant", "N", "--timezone", "Europe/Berlin", "--lat", "42.44", "--lon", "-76.50", "--update")  # fmt: skip
        assert r.exit_code == 0, r.output
        rows, _ = cli("search", "junco", "-s", "north-1", "--json")
        assert rows  # plausible in New York
        _, r = cli("sensors", "add", "north-1", "--site", "Marsh", "--quadrant", "N", "--timezone", "Europe/Berlin", "--update")  # fmt: skip
        assert r.exit_code == 0, r.output
        rows, r = cli("labels", "occurrence", "-s", "north-1", "--json")
        assert [x["status"] for x in rows] == ["no coordinates"]
        rows, _ = cli("search", "junco", "-s", "north-1", "--json")
        assert len(rows) == 10
    finally:
        lat, lon = PLACES["north-1"]
        _, r = cli("sensors", "add", "north-1", "--site", "Marsh", "--quadrant", "N", "--timezone", "Europe/Berlin", "--lat", lat, "--lon", lon, "--update")  # fmt: skip
        assert r.exit_code == 0, r.output
    rows, _ = cli("search", "junco", "-s", "north-1", "--json")
    assert rows == []


def test_refresh_fills_sensors_registered_before(cli, conn):
    """A database upgraded to 0011 has no lists yet: `labels occurrence --refresh` adds them."""
    conn.execute(sa.text("DELETE FROM occurrence_sensors"))
    conn.commit()
    try:
        rows, _ = cli("search", "junco", "-s", "north-1", "--json")
        assert len(rows) == 10  # no list: nothing filtered
        rows, r = cli("labels", "occurrence", "--json")
        assert {x["status"] for x in rows} == {"missing"}
    finally:
        rows, r = cli("labels", "occurrence", "--refresh", "--json")
        assert r.exit_code == 0, r.output
    assert {x["status"] for x in rows} == {"computed"}
    assert all(100 < x["classes_per_week"] < 400 for x in rows)
    rows, _ = cli("labels", "occurrence", "--refresh", "--json")
    assert {x["status"] for x in rows} == {"current"}
    rows, _ = cli("search", "junco", "-s", "north-1", "--json")
    assert rows == []
