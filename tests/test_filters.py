"""One filter rule, every entry point (issue 27): the same place and time filters give the same
windows through the exact vector search, speech search, zero-shot classify's window list,
a trained classifier's ranking and scoring, the annotation list and species counts.

The reserve of real audio (tests/reserve.py: a recording across local midnight, one on each
DST night) is ingested once with the spectral model. Each window then gets an utterance, an
annotation and a class score of its own at its place and time, so that every entry point can
answer with windows; the expected windows come from the stored local times by the rule
written out here in Python.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import annotations, classifiers, species
from soundscape import search as search_mod
from soundscape import zeroshot as zeroshot
from soundscape.errors import SoundscapeError
from soundscape.queries import (
    FILTER_ARGS,
    PLACE_KEYS,
    Filters,
    Query,
    check_filter_names,
    place_field,
)
from soundscape.spaces import get_space

from . import reserve

UTC = timezone.utc
LABEL = "probe"

CASES = {
    # a range of the time of day across local midnight (the 23:59:30 recording)
    "across midnight": Filters(time_from=time(23, 59, 50), time_to=time(0, 0, 20)),
    "sensor, night hour, dates": Filters(
        sensors=["north-1"], time_from=time(2), time_to=time(3), date_to=date(2024, 5, 31)
    ),
    "site": Filters(sites=["Forest"]),
    "quadrant, from a date": Filters(quadrants=["N"], date_from=date(2024, 5, 2)),
    "instants": Filters(
        at_from=datetime(2024, 5, 1, 0, 30, 20, tzinfo=UTC),
        at_to=datetime(2024, 5, 1, 0, 30, 50, tzinfo=UTC),
    ),
    # the fall-back night: 02:00-02:01 local happens twice; both pass
    "a DST night's repeated hour": Filters(
        time_from=time(2),
        time_to=time(2, 1),
        date_from=date(2024, 10, 27),
        date_to=date(2024, 10, 27),
    ),  # fmt: skip
    "until a time of day": Filters(time_to=time(0, 0, 10), date_from=date(2024, 5, 2)),
    "nothing": Filters(),
}


def expected(windows: list[dict[str, Any]], f: Filters) -> set[int]:
    """The windows that pass ``f``, by the rule as the documentation states it."""

    def passes(w: dict[str, Any]) -> bool:
        t = w["local_time"]
        if f.time_from is not None and f.time_to is not None:
            if f.time_from <= f.time_to:
                in_time = f.time_from <= t < f.time_to
            else:  # crosses midnight
                in_time = t >= f.time_from or t < f.time_to
        else:
            in_time = (f.time_from is None or t >= f.time_from) and (
                f.time_to is None or t < f.time_to
            )
        return (
            in_time
            and (not f.sensors or w["sensor"] in f.sensors)
            and (not f.sites or w["site"] in f.sites)
            and (not f.quadrants or w["quadrant"] in f.quadrants)
            and (f.date_from is None or w["local_date"] >= f.date_from)
            and (f.date_to is None or w["local_date"] <= f.date_to)
            and (f.at_from is None or w["starts_at"] >= f.at_from)
            and (f.at_to is None or w["starts_at"] < f.at_to)
        )

    return {w["id"] for w in windows if passes(w)}


@pytest.fixture(scope="module")
def db(module_db_url, tmp_path_factory):
    """The reserve with the spectral model; per window an utterance, an annotation and a score
    of the class 'probe'; a classifier of 'probe'. Returns (engine, windows, classifier)."""
    from click.testing import CliRunner

    from soundscape.cli import cli
    from soundscape.db import make_engine

    folder = tmp_path_factory.mktemp("reserve")
    reserve.build(folder)
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    for name, (site, quadrant, tz) in reserve.SENSORS.items():
        args = ["sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz]
        r = CliRunner().invoke(cli, args, env=env)
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(
            cli, ["ingest", str(folder / name), "-s", name, "-m", "spectral", "-q"], env=env
        )
        assert r.exit_code == 0, r.output
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        space = get_space(conn, "spectral")
        for statement in (
            "INSERT INTO transcripts (recording_id, model, model_version) "
            "SELECT id, 'test', '1' FROM recordings",
            "INSERT INTO utterances (transcript_id, recording_id, sensor_id, start_s, end_s, "
            "starts_at, local_date, local_time, text) "
            "SELECT t.id, g.recording_id, g.sensor_id, g.start_s, g.end_s, g.starts_at, "
            "g.local_date, g.local_time, 'a probe sound' FROM segments g "
            "JOIN transcripts t ON t.recording_id = g.recording_id",
            "INSERT INTO annotations (recording_id, start_s, end_s, label, author) "
            "SELECT recording_id, start_s, end_s, :label, 'test' FROM segments",
            "INSERT INTO space_labels (space_id, label_id, name, common) "
            "VALUES (:space, 0, :label, :label)",
            "INSERT INTO segment_scores (space_id, segment_id, label_id, score) "
            "SELECT space_id, id, 0, 0.9 FROM segments",
        ):
            conn.execute(sa.text(statement), {"label": LABEL, "space": space.id})
        windows = [
            dict(r._mapping)
            for r in conn.execute(
                sa.text(
                    "SELECT g.id, g.recording_id, g.start_s, g.starts_at, g.local_date, "
                    "g.local_time, s.name AS sensor, s.site, s.quadrant "
                    "FROM segments g JOIN sensors s ON s.id = g.sensor_id"
                )
            )
        ]
        rng = np.random.default_rng(0)
        model = classifiers.LabelModel(
            LABEL, rng.standard_normal(space.dimension).astype(np.float32), 0.0, 0.5, 1, 1
        )
        clf = classifiers._store(conn, "probe-clf", 1, space, [model], {}, [])
    yield engine, windows, clf
    engine.dispose()


def test_the_cases_mean_something(db):
    """Each case leaves out windows and keeps some (but 'nothing'), and the midnight case keeps
    windows on both sides of midnight."""
    _, windows, _ = db
    for name, f in CASES.items():
        kept = expected(windows, f)
        assert kept, name
        assert (len(kept) == len(windows)) == (name == "nothing"), name
    midnight = [w for w in windows if w["id"] in expected(windows, CASES["across midnight"])]
    assert {w["local_date"] for w in midnight} == {date(2024, 5, 1), date(2024, 5, 2)}
    # local 02:00 on the fall-back night is 01:00 UTC (CET), after the clocks went back
    dst = [w for w in windows if w["id"] in expected(windows, CASES["a DST night's repeated hour"])]
    assert min(w["starts_at"] for w in dst) >= datetime(2024, 10, 27, 1, tzinfo=UTC)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_entry_point_gives_the_same_windows(db, case):
    engine, windows, clf = db
    f = CASES[case]
    want = expected(windows, f)
    by_place = {(w["recording_id"], round(w["start_s"], 3)): w["id"] for w in windows}
    got: dict[str, set[int]] = {}
    with engine.begin() as conn:
        space = get_space(conn, "spectral")
        vector = np.ones(space.dimension, np.float32) / np.sqrt(space.dimension)
        hits = search_mod.run(
            conn, Query(space, "probe", vector=vector), f, limit=10000, strategy="exact"
        )
        got["search (exact)"] = {h.segment_id for h in hits}
        rows = conn.execute(
            sa.text(
                f"SELECT recording_id, start_s FROM ranger.search_speech(:q, :k, {FILTER_ARGS})"
            ),
            {**f.params(), "q": LABEL, "k": 10000},
        )
        got["speech"] = {by_place[(r.recording_id, round(r.start_s, 3))] for r in rows}
        got["classify (zero-shot windows)"] = set(
            conn.execute(
                sa.text(f"SELECT segment_id FROM {zeroshot._FILTERED}"),
                {**f.params(), "space": space.id},
            ).scalars()
        )
        ranked = classifiers.ranked(conn, clf, LABEL, f, 10000, order="margin")
        got["classifier ranking"] = {h.segment_id for h in ranked}
        listed = annotations.list_annotations(conn, f, label=LABEL)
        got["annotations list"] = {by_place[(a.recording_id, round(a.start_s, 3))] for a in listed}
        scored = classifiers.classify(conn, clf, f).scored
        (top,) = species.top_labels(conn, space, f, min_score=0.5)
    assert got == {name: want for name in got}
    assert scored == len(want), "classifier scoring"
    assert top["windows"] == len(want), "species (top labels)"


def test_the_rule_folds_to_plain_comparisons(db):
    """ranger.in_time_filter is inlined and, its bounds known, folded to the comparisons the
    indexes serve: no call left in the plan (a STRICT or SECURITY DEFINER function, or one
    in plpgsql, would be an opaque call on every row)."""
    engine, _, _ = db
    with engine.connect() as conn:
        plan = "\n".join(
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT g.id FROM segments g WHERE g.sensor_id = 1 AND "
                    "ranger.in_time_filter(g.local_time, g.local_date, g.starts_at, "
                    "CAST(:a AS time), CAST(:b AS time), NULL, CAST(:d AS date), NULL, NULL)"
                ),
                {"a": time(23), "b": time(1), "d": date(2024, 5, 31)},
            ).scalars()
        )
    assert "in_time_filter" not in plan and "CASE" not in plan, plan
    assert "local_time >= '23:00:00'" in plan and "local_time < '01:00:00'" in plan, plan
    assert "local_date <= '2024-05-31'" in plan, plan


# ------------------------------------------------------------------------- the place rule
#: every ranger function that filters by place, called with a place filter ({place}: its
#: arguments), one row per window (utterance) that passes; a new one must be added here
PLACE_CALLS = {
    "search_vector": "SELECT segment_id FROM ranger.search_vector(:space, (SELECT g.embedding "
    "FROM segments g WHERE g.space_id = :space ORDER BY g.id LIMIT 1), 10000, {place})",
    "search_labels": "SELECT segment_id FROM ranger.search_labels(:space, ARRAY[0], 10000, {place})",
    "search_classifier": "SELECT segment_id FROM ranger.search_classifier(:clf_name, :label, "
    "10000, {place})",
    "_classify_batch": "SELECT s FROM ranger._classify_batch(:clf, 0, 9223372036854775807, "
    "false, {place}) b, generate_series(1, b.scored) s",
    "filtered_windows": "SELECT segment_id FROM ranger.filtered_windows(:space, {place})",
    "search_speech": "SELECT utterance_id FROM ranger.search_speech(:label, 10000, {place})",
    # a stored concept: its filters are single names, without the p_ prefix
    "search": "SELECT segment_id FROM ranger.search('probe-concept', 10000, {place})",
}

#: the same place filter given as the text[] arguments BI users call by name, and as p_place
PLACES = {
    "site": ("p_sites => ARRAY['Forest']", """p_place => '{"sites": ["Forest"]}'"""),
    "sensors and quadrant": (
        "p_sensors => ARRAY['north-1', 'south-1'], p_quadrants => ARRAY['N']",
        """p_place => '{"sensors": ["north-1", "south-1"], "quadrants": ["N"]}'""",
    ),
    "both ways at once": (
        "p_sensors => ARRAY['north-1'], p_sites => ARRAY['Marsh']",
        """p_sensors => ARRAY['north-1'], p_place => '{"sites": ["Marsh"]}'""",
    ),
    "no sensor passes": ("p_sites => ARRAY['Nowhere']", """p_place => '{"sites": []}'"""),
}
#: ranger.search's names for the same filters
CONCEPT_PLACES = {
    "site": ("site_name => 'Forest'", """place => '{"sites": ["Forest"]}'"""),
    "sensors and quadrant": (
        "sensor_name => 'north-1', quadrant_name => 'N'",
        """place => '{"sensors": ["north-1"], "quadrants": ["N"]}'""",
    ),
    "both ways at once": (
        "sensor_name => 'north-1', site_name => 'Marsh'",
        """sensor_name => 'north-1', place => '{"sites": ["Marsh"]}'""",
    ),
    "no sensor passes": ("site_name => 'Nowhere'", """place => '{"sites": []}'"""),
}


@pytest.fixture
def conn(db):
    """A connection in a transaction that is rolled back (with a label concept of 'probe')."""
    engine, _, _ = db
    with engine.connect() as c, c.begin() as tx:
        c.execute(
            sa.text(
                "INSERT INTO concepts (name, space_id, kind, query, label_ids, threshold) "
                "SELECT 'probe-concept', id, 'labels', 'probe', ARRAY[0], 0.5 FROM spaces "
                "WHERE name = 'spectral'"
            )
        )
        yield c
        tx.rollback()


def _rows(conn, name: str, place: str, db) -> list[int]:
    _, _, clf = db
    space = get_space(conn, "spectral")
    sql = PLACE_CALLS[name].format(place=place)
    params = {"space": space.id, "clf": clf.id, "clf_name": clf.name, "label": LABEL}
    with conn.begin_nested() as sp:  # _classify_batch writes: undo it
        rows = sorted(conn.execute(sa.text(sql), params).scalars())
        sp.rollback()
    return rows


def test_every_place_filtering_function_goes_through_the_one_helper(conn):
    """The functions that take p_sensors are exactly those that take p_place (and are all in
    PLACE_CALLS); each calls ranger._sensor_ids, and no function restates the place rule."""
    functions = conn.execute(
        sa.text(
            # the input arguments' names (proargnames also holds a TABLE's columns)
            "SELECT p.proname, ARRAY(SELECT a.n FROM unnest(p.proargnames, p.proargmodes) "
            "a(n, m) WHERE coalesce(m, 'i') IN ('i', 'b', 'v')), p.prosrc FROM pg_proc p "
            "WHERE p.pronamespace = 'ranger'::regnamespace"
        )
    ).all()
    by_sensors = {f for f, args, _ in functions if "p_sensors" in args} - {"_sensor_ids"}
    by_place = {f for f, args, _ in functions if "p_place" in args} - {"_sensor_ids"}
    assert by_sensors == by_place == PLACE_CALLS.keys() - {"search"}
    assert {f for f, args, _ in functions if "place" in args} == {"search"}
    src = {f: s for f, _, s in functions}
    for name in by_place:
        assert "ranger._sensor_ids(p_sensors, p_sites, p_quadrants, p_place)" in src[name] or (
            "p_place => p_place" in src[name]  # search_classifier's top windows: search_vector
        ), name
    assert "p_place => place" in src["search"]
    restated = re.compile(r"\b(name|site|quadrant)\s*=\s*ANY", re.I)
    assert [f for f, s in src.items() if restated.search(s)] == []


@pytest.mark.parametrize("case", sorted(PLACES))
def test_a_place_filter_as_p_place_gives_the_same_windows(db, conn, case):
    everything = {
        name: _rows(
            conn, name, "time_from => NULL" if name == "search" else "p_time_from => NULL", db
        )
        for name in PLACE_CALLS
    }
    for name in PLACE_CALLS:
        legacy, place = (CONCEPT_PLACES if name == "search" else PLACES)[case]
        by_args, by_place = _rows(conn, name, legacy, db), _rows(conn, name, place, db)
        assert by_args == by_place, (name, case)
        if case == "no sensor passes":
            assert by_place == [], name
        else:  # the filter keeps some and leaves out others
            assert 0 < len(by_place) < len(everything[name]), (name, len(by_place))


@pytest.mark.parametrize(
    "place,message",
    [
        ("""'{"site": ["Forest"]}'""", "p_place has no place filter site; the place filters are "
         "quadrants, sensors, sites"),
        ("""'{"sites": "Forest"}'""", "sites must be a list of names"),
        ("""'{"sites": [1]}'""", "sites must be a list of names"),
        ("""'["Forest"]'""", "p_place must be a JSON object of lists"),
    ],
)  # fmt: skip
def test_a_bad_place_filter_is_refused(conn, place, message):
    space = get_space(conn, "spectral")
    with pytest.raises(sa.exc.DBAPIError, match=re.escape(message)) as err:
        conn.execute(
            sa.text(f"SELECT * FROM ranger.filtered_windows(:space, p_place => {place})"),
            {"space": space.id},
        )
    assert err.value.orig.sqlstate == "22023"


def test_a_place_filter_given_twice_is_refused(conn):
    with pytest.raises(sa.exc.DBAPIError, match="the place filter sites is given twice"):
        conn.execute(
            sa.text(
                "SELECT * FROM ranger.search_speech('probe', 5, p_sites => ARRAY['Forest'], "
                """p_place => '{"sites": ["Marsh"]}')"""
            )
        )


def test_python_passes_the_place_only_as_p_place(conn):
    """``FILTER_ARGS`` carries the place in p_place alone; ``Filters.where`` asks
    ``ranger._sensor_ids``; the dataclass's place fields are ``ranger._place_of``'s keys."""
    assert "p_place => CAST(:place AS jsonb)" in FILTER_ARGS
    assert not re.search(r"p_(sensors|sites|quadrants)\b", FILTER_ARGS)
    f = Filters(sites=["Forest"], quadrants=[], time_from=time(1))
    assert json.loads(f.params()["place"]) == {"sites": ["Forest"]}
    assert Filters().params()["place"] is None
    where, params = f.where("v")
    assert "ranger._sensor_ids(p_place => CAST(:f_place AS jsonb))" in where[0]
    assert not re.search(r"\b(site|quadrant)\b", " ".join(where))
    # the helper runs once per query (an InitPlan), not once per sensor or row
    plan = "\n".join(
        conn.execute(
            sa.text(f"EXPLAIN VERBOSE SELECT * FROM ranger.annotations v WHERE {where[0]}"), params
        ).scalars()
    )
    assert "InitPlan" in plan and plan.count("_sensor_ids") == 1, plan
    keys = conn.execute(sa.text("SELECT jsonb_object_keys(ranger._place_of(NULL::sensors))"))
    assert set(PLACE_KEYS) == set(keys.scalars())


def test_a_new_place_filter_is_one_sql_pair_and_one_field(db, conn):
    """The recipe of docs/architecture.md ("Add a filter"), done in a rolled-back transaction:
    a recorder model from the sensors' metadata, as one more pair of ``ranger._place_of`` and
    one more field of a ``Filters``, reaches the ranger functions (through p_place, with no
    new argument) and soundscape's own queries, with the usual unknown-name error."""
    _, windows, clf = db
    conn.execute(
        sa.text(
            'UPDATE sensors SET metadata = metadata || \'{"model": "AudioMoth"}\' '
            "WHERE name = 'north-1'"
        )
    )
    source = conn.execute(
        sa.text("SELECT pg_get_functiondef('ranger._place_of(public.sensors)'::regprocedure)")
    ).scalar_one()
    pair = "'quadrants', s.quadrant"
    assert pair in source
    conn.execute(sa.text(source.replace(pair, f"{pair}, 'models', s.metadata ->> 'model'")))

    @dataclass
    class WithModel(Filters):
        models: list[str] | None = place_field()

    f = WithModel(models=["AudioMoth"], date_from=date(2024, 5, 1))
    want = {w["id"] for w in windows if w["sensor"] == "north-1" and w["local_date"] >= date(2024, 5, 1)}  # fmt: skip
    space = get_space(conn, "spectral")
    vector = np.ones(space.dimension, np.float32) / np.sqrt(space.dimension)
    hits = search_mod.run(conn, Query(space, "p", vector=vector), f, limit=10000, strategy="exact")
    assert {h.segment_id for h in hits} == want
    filtered = conn.execute(
        sa.text(f"SELECT segment_id FROM {zeroshot._FILTERED}"), {**f.params(), "space": space.id}
    )
    assert set(filtered.scalars()) == want
    assert {h.segment_id for h in classifiers.ranked(conn, clf, LABEL, f, 10000)} == want
    listed = annotations.list_annotations(conn, f, label=LABEL)
    assert len(listed) == len(want) and {a.sensor for a in listed} == {"north-1"}
    with pytest.raises(SoundscapeError, match="unknown model 'Song Meter'; known: AudioMoth"):
        check_filter_names(conn, WithModel(models=["Song Meter"]))
