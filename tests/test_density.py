"""Call density (issue 23, item 3): a stratified sample by score bin, verdicts, an estimate per
site and day with a 95% interval. A synthetic store whose truth is known checks the numbers;
the reserve's real audio checks the plumbing (CLI, review batch, SQL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import density
from soundscape.db import make_engine
from soundscape.embedders.base import Embedder
from soundscape.errors import BadOption
from soundscape.queries import Filters
from soundscape.spaces import ensure_space

from .conftest import copy_windows

DIM = 8
SITES = {"Marsh": 2.0, "Forest": 0.0, "Meadow": -1.5}  # shifts of the score distribution
N_DAYS, PER_RECORDING = 4, 400  # 3 sites x 4 days x 400 = 4,800 windows


class _Synthetic(Embedder):
    name = "density-synthetic"
    version = "1"
    dimension = DIM
    sample_rate = 16000
    default_window_s = 3.0
    default_hop_s = 3.0


def _call_chance(cosine: np.ndarray) -> np.ndarray:
    """The known truth: how likely a window of this score holds the call."""
    return 1 / (1 + np.exp(-12 * (cosine - 0.55)))


@pytest.fixture(scope="module")
def synthetic(module_db_url):
    """Windows whose cosine to the concept's vector e1 is drawn per site, each holding the
    call with probability _call_chance(cosine); returns (engine, truth by segment id)."""
    rng = np.random.default_rng(7)
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        space = ensure_space(conn, _Synthetic, 3.0, 3.0)
        for site in SITES:
            conn.execute(
                sa.text("INSERT INTO sensors (name, site) VALUES (:n, :s)"),
                {"n": f"{site.lower()}-1", "s": site},
            )
        sensors = dict(conn.execute(sa.text("SELECT site, id FROM sensors")).all())
        recs = [
            {"s": sensors[site], "p": f"/r/{site}/{d}.wav", "h": f"{site:>32}{d:032d}"}
            for site in SITES
            for d in range(N_DAYS)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 86400)"
            ),
            recs,
        )
        rec_rows = conn.execute(sa.text("SELECT id, sensor_id FROM recordings ORDER BY id")).all()
        site_of = {v: k for k, v in sensors.items()}
        cosines = np.concatenate(
            [
                np.tanh(rng.normal(SITES[site_of[sid]] * 0.3 - 0.2, 0.45, PER_RECORDING))
                for _, sid in rec_rows
            ]
        )
        other = rng.normal(size=(len(cosines), DIM - 1))
        other /= np.linalg.norm(other, axis=1, keepdims=True)
        vectors = np.hstack([cosines[:, None], other * np.sqrt(1 - cosines**2)[:, None]])
        seconds = np.tile(np.arange(PER_RECORDING) * 3.0, len(rec_rows))
        copy_windows(conn, space.id, rec_rows, vectors.astype(np.float32), seconds,
                     PER_RECORDING, N_DAYS)  # fmt: skip
        ids = conn.execute(
            sa.text("SELECT id FROM segments WHERE space_id = :s ORDER BY recording_id, start_s"),
            {"s": space.id},
        ).scalars().all()  # fmt: skip
        truth = dict(zip(ids, rng.random(len(ids)) < _call_chance(cosines), strict=True))
        e1 = np.zeros(DIM, np.float32)
        e1[0] = 1
        conn.execute(
            sa.text(
                "INSERT INTO concepts (name, space_id, kind, query, embedding, threshold) "
                "VALUES ('call', :s, 'audio', 'the call', CAST(:e AS vector), 0.5)"
            ),
            {"s": space.id, "e": "[" + ",".join(map(str, e1)) + "]"},
        )
    yield engine, truth
    engine.dispose()


def _true_density(engine, truth, by: str) -> dict[tuple, float]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT g.id, s.site, g.local_date FROM segments g "
                "JOIN sensors s ON s.id = g.sensor_id WHERE g.id = ANY(:ids)"
            ),
            {"ids": list(truth)},
        ).all()
    groups: dict[tuple, list[bool]] = {}
    for r in rows:
        key = (
            r.site if by in ("site", "site_day") else None,
            r.local_date if by in ("day", "site_day") else None,
        )
        groups.setdefault(key, []).append(bool(truth[r.id]))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _judge(engine, name: str, truth, every: int = 1) -> int:
    """Reviewers' verdicts on the sample's windows (every ``every``-th), from the truth."""
    with engine.begin() as conn:
        hits = density.sample_windows(conn, name)
        rows = [
            {
                "r": h.recording_id, "s": h.start_s, "e": h.end_s, "g": h.segment_id,
                "v": "yes" if truth[h.segment_id] else "no", "l": h.label,
            }
            for h in hits[::every]
        ]  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO annotations (recording_id, start_s, end_s, label, verdict, "
                "source, segment_id) VALUES (:r, :s, :e, :l, :v, 'review', :g)"
            ),
            rows,
        )
    return len(rows)


def test_sample_is_stratified_and_reproducible(synthetic):
    engine, _ = synthetic
    with engine.begin() as conn:
        row = density.draw_sample(conn, "a", concept="call", per_bin=20, seed=3)
        assert row["windows"] == len(SITES) * N_DAYS * PER_RECORDING
        assert len(row["bounds"]) == 6 and row["label"] == "call"
        strata = conn.execute(
            sa.text(
                "SELECT site, bin, count(*) FROM ranger.density_windows WHERE sample = 'a' "
                "GROUP BY 1, 2"
            )
        ).all()
        # every site x bin stratum that has 20 windows gave 20, the others all they had
        assert {n for *_, n in strata} <= set(range(1, 21)) and len(strata) >= 12
        assert sum(n == 20 for *_, n in strata) >= 10
        first = [h.segment_id for h in density.sample_windows(conn, "a")]
        density.draw_sample(conn, "b", concept="call", per_bin=20, seed=3)
        density.draw_sample(conn, "c", concept="call", per_bin=20, seed=4)
        assert [h.segment_id for h in density.sample_windows(conn, "b")] == first
        assert set(h.segment_id for h in density.sample_windows(conn, "c")) != set(first)
        # a site filter samples that site only
        density.draw_sample(conn, "marsh", concept="call", filters=Filters(sites=["Marsh"]))
        sites = conn.execute(
            sa.text("SELECT DISTINCT site FROM ranger.density_windows WHERE sample = 'marsh'")
        ).scalars().all()  # fmt: skip
        assert sites == ["Marsh"]
        with pytest.raises(density.DensityError, match="exists; use --replace"):
            density.draw_sample(conn, "a", concept="call")
        with pytest.raises(density.DensityError, match="no concept named 'nope'"):
            density.draw_sample(conn, "x", concept="nope")
        with pytest.raises(BadOption, match="increasing quantiles"):
            density.draw_sample(conn, "x", concept="call", quantiles=[0, 0.7, 0.5, 1])
        with pytest.raises(BadOption, match="group by one of"):
            density.estimate(conn, "a", "week")
        with pytest.raises(density.DensityError, match="no call-density sample named"):
            density.estimate(conn, "nope")
        # no verdicts yet: a guess of 1/2 and an interval that says so
        for r in density.estimate(conn, "a"):
            assert r["reviewed"] == 0 and r["high"] - r["low"] > 0.4


def test_estimate_covers_the_known_density(synthetic):
    """Verdicts drawn from the known truth: over five seeds the 95% intervals per site cover
    the true fraction of windows with the call (all but one of 15), the estimates are within
    0.05 of it; per day, per site and day and for all, 90% of the intervals cover it."""
    engine, truth = synthetic
    covered, total = 0, 0
    others: list[bool] = []
    for seed in range(5):
        name = f"seed-{seed}"
        with engine.begin() as conn:
            density.draw_sample(conn, name, concept="call", per_bin=30, seed=seed)
        assert _judge(engine, name, truth) > 300
        with engine.connect() as conn:
            for by in ("site", "all") if seed else density.GROUPS:
                true = _true_density(engine, truth, by)
                rows = density.estimate(conn, name, by)
                assert {(r["site"], r["day"]) for r in rows} == set(true)
                for r in rows:
                    t = true[(r["site"], r["day"])]
                    assert 0 < r["low"] < r["density"] < r["high"] < 1
                    if by == "site":
                        covered += r["low"] <= t <= r["high"]
                        total += 1
                        assert abs(r["density"] - t) < 0.05, (seed, r, t)
                        assert r["reviewed"] == r["sampled"]
                    else:  # days and site-days: small groups, the realized fraction varies
                        others.append(r["low"] <= t <= r["high"])
    assert covered >= total - 1, f"{covered} of {total} intervals covered the truth"
    assert sum(others) >= 0.9 * len(others), f"{sum(others)} of {len(others)} covered"
    # the sites really differ, and the estimate sees it
    with engine.connect() as conn:
        by_site = {r["site"]: r for r in density.estimate(conn, "seed-0")}
    assert by_site["Marsh"]["low"] > by_site["Meadow"]["high"]


def test_fewer_verdicts_a_wider_interval_and_unsure_does_not_count(synthetic):
    engine, truth = synthetic
    with engine.begin() as conn:
        density.draw_sample(conn, "half", concept="call", per_bin=30, seed=11)
    _judge(engine, "half", truth, every=4)
    with engine.connect() as conn:
        quarter = {r["site"]: r for r in density.estimate(conn, "half")}
    _judge(engine, "half", truth, every=1)
    with engine.begin() as conn:
        full = {r["site"]: r for r in density.estimate(conn, "half")}
        # a later 'unsure' on a judged window leaves its yes/no in place
        hit = density.sample_windows(conn, "half")[0]
        conn.execute(
            sa.text(
                "INSERT INTO annotations (recording_id, start_s, end_s, label, verdict, source, "
                "segment_id) VALUES (:r, :s, :e, 'call', 'unsure', 'web', :g)"
            ),
            {"r": hit.recording_id, "s": hit.start_s, "e": hit.end_s, "g": hit.segment_id},
        )
        assert {r["site"]: r for r in density.estimate(conn, "half")} == full
        assert density.sample_windows(conn, "half", unreviewed=True) == []
    for site in SITES:
        assert full[site]["reviewed"] > quarter[site]["reviewed"]
        assert full[site]["high"] - full[site]["low"] < quarter[site]["high"] - quarter[site]["low"]


# --------------------------------------------------------------------- real audio: plumbing
@pytest.fixture
def reserve_cli(reserve_url, monkeypatch, run_cli):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", reserve_url)
    r = run_cli("concepts", "add", "siren", "--text", "siren", "--space", "birdnet", "--replace")
    assert r.exit_code == 0, r.output
    return run_cli


def test_cli_sample_batch_verdicts_and_estimate(reserve_cli, reserve_url, tmp_path):
    run = reserve_cli
    out = tmp_path / "batch"
    r = run("density", "sample", "sirens", "--concept", "siren", "--per-bin", "2", "--seed", "1",
            "--out", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["label"] == "siren" and 0 < row["sampled"] <= row["windows"]
    table = (out / "review.txt").read_text().splitlines()
    assert len(table) == row["sampled"] + 1 and "Verdict" in table[0]
    assert len(list(out.glob("*.wav"))) == row["sampled"]

    # fill the batch: yes on the first row, no on the others; import; estimate
    header = table[0].split("\t")
    col = header.index("Verdict")
    filled = [table[0]]
    for k, line in enumerate(table[1:]):
        cells = line.split("\t")
        cells[col] = "yes" if k == 0 else "no"
        filled.append("\t".join(cells))
    (out / "review.txt").write_text("\n".join(filled) + "\n")
    imported = run("annotate", "import", out / "review.txt")
    assert imported.exit_code == 0, imported.output
    est = run("density", "estimate", "sirens", "--json")
    assert est.exit_code == 0, est.output
    rows = [json.loads(x) for x in est.stdout.splitlines()]
    assert {r["site"] for r in rows} == {"Marsh", "Forest"}
    assert sum(r["reviewed"] for r in rows) == row["sampled"]
    assert sum(r["yes"] for r in rows) == 1
    for r in rows:
        assert 0 < r["low"] <= r["density"] <= r["high"] < 1
    days = [json.loads(x) for x in run("density", "estimate", "sirens", "--by", "day",
                                         "--json").stdout.splitlines()]  # fmt: skip
    assert days and all(d["site"] is None and d["day"] for d in days)
    # SQL gives the same numbers
    engine = sa.create_engine(reserve_url)
    with engine.connect() as conn:
        sql = conn.execute(sa.text("SELECT * FROM ranger.call_density('sirens')")).mappings().all()
    engine.dispose()
    assert [r["density"] for r in sql] == [r["density"] for r in rows]

    listed = run("density", "list", "--json")
    assert json.loads(listed.stdout)["name"] == "sirens"
    assert run("density", "sample", "sirens", "--concept", "siren").exit_code == 1
    bad = run("density", "sample", "x", "--concept", "siren", "--quantiles", "0,a,1")
    assert bad.exit_code == 2 and "--quantiles" in bad.stderr
    assert run("density", "sample", "x", "--classifier", "c").exit_code == 2
    none = run("density", "sample", "x", "--concept", "siren", "--from", "2030-01-01")
    assert none.exit_code == 1 and "widen the sites or dates" in none.stderr
    assert run("density", "remove", "sirens").exit_code == 0
    assert run("density", "estimate", "sirens").exit_code == 1


# ------------------------------------------------------------------------------ the web page
def test_density_page_draw_judge_and_estimate(reserve_cli, reserve_url):
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.roles import create_reviewer
    from soundscape.web import WebConfig, create_app

    engine = make_engine(reserve_url)
    create_reviewer(engine, "dens_ana", "a long enough password")
    engine.dispose()
    db = open_database(reserve_url)
    try:
        c = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), db))
        empty = c.get("/density")
        assert empty.status_code == 200 and "No sample yet" in empty.text
        assert "/login?next=/density" in empty.text  # drawing needs a reviewer
        token = empty.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        form = {"name": "web-sirens", "what": "concept:siren", "per_bin": "2", "csrf_token": token}
        assert c.post("/density", data=form).status_code == 401  # not signed in
        r = c.post("/login", data={"name": "dens_ana", "password": "a long enough password",
                                   "csrf_token": token}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303
        token = c.get("/density").text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        bad = c.post("/density", data={**form, "what": "", "csrf_token": token})
        assert bad.status_code == 400 and "pick a concept" in bad.text
        r = c.post("/density", data={**form, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/density?sample=web-sirens"
        page = c.get("/density?sample=web-sirens")
        assert page.status_code == 200
        assert 'id="density-table"' in page.text and page.text.count('class="density-plot"') == 2
        data = c.get("/density?sample=web-sirens&format=json").json()
        n = data["unreviewed"]
        # verdicts given before the draw (this module's batch above) count: the rest is to judge
        reviewed = sum(r["reviewed"] for r in data["sites"])
        yes = sum(r["yes"] for r in data["sites"])
        assert n == data["sample"]["sampled"] - reviewed > 0
        assert {r["site"] for r in data["sites"]} == {"Marsh", "Forest"}
        assert ("No window is judged yet" in page.text) == (reviewed == 0)
        # judge every window on the page (the reviewer's role writes the annotations)
        segments = [int(x.split('"')[0]) for x in page.text.split('name="segment_id" value="')[1:]]
        assert len(segments) == min(n, 12)
        for k, seg in enumerate(segments):
            r = c.post(
                "/annotations",
                data={"segment_id": seg, "label": "siren", "verdict": "yes" if k == 0 else "no"},
                headers={"X-CSRF-Token": token, "Accept": "application/json"},
            )
            assert r.status_code == 200, r.text
        after = c.get("/density?sample=web-sirens&format=json").json()
        assert after["unreviewed"] == n - len(segments)
        assert sum(s["reviewed"] for s in after["sites"]) == reviewed + len(segments)
        assert sum(s["yes"] for s in after["sites"]) == yes + 1
        assert c.get("/density?sample=nope").status_code == 404
    finally:
        db.engine.dispose()
