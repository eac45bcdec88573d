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

from datetime import date, datetime, time, timezone
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import annotations, classifiers, species
from soundscape import search as search_mod
from soundscape import zeroshot as zeroshot
from soundscape.queries import FILTER_ARGS, Filters, Query
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
