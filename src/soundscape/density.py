"""Call density: the fraction of windows that hold a call, per site or day, with a 95% interval
(the agile-modelling step that turns validated hits into an ecological number; "call density"
in Navine et al. 2024, arXiv 2402.15360).

1. ``draw_sample`` scores every window a classifier label or concept can see under the filters
   (sites, dates, times), cuts the scores into bins at quantiles (by default the top half,
   quarter, eighth and sixteenth each get a bin of their own, where the calls are) and draws a
   seeded random sample of ``per_bin`` windows from each stratum (site x bin). The sample, the
   population's size per stratum and day and each sampled window are stored (tables of
   migration 0031; ``ranger.density_samples``, ``ranger.density_windows``): the stored sample is
   what a review queue or a Raven batch (``review.write_batch``) works through.
2. Reviewers say yes / no on the sampled windows: annotations with the sample's label (the
   classifier label, or the concept's name), on the web page or imported from the batch.
3. ``estimate`` reads ``ranger.call_density`` (sql/density.sql): a stratified estimate with a
   Beta posterior per stratum and a 95% interval; the rule lives there only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.db import register_vector
from soundscape.errors import BadOption, SoundscapeError
from soundscape.queries import FILTER_ARGS, Filters
from soundscape.results import Hit

#: quantiles of the scores that bound the bins: 0-50%, 50-75%, 75-87.5%, 87.5-93.75%, the top
#: 6.25% (the notebook's geometric bins: calls are rare, and the high scores hold most of them)
DEFAULT_QUANTILES: tuple[float, ...] = (0.0, 0.5, 0.75, 0.875, 0.9375, 1.0)
#: how the estimate may be grouped (``ranger.call_density``'s p_by)
GROUPS = ("site", "day", "site_day", "all")
#: what ``estimate`` returns per group
ESTIMATE_COLUMNS = [
    "site", "day", "windows", "sampled", "reviewed", "yes", "density", "low", "high",
]  # fmt: skip
#: what ``list_samples`` returns per sample
SAMPLE_COLUMNS = [
    "name", "source", "label", "space", "windows", "sampled", "per_bin", "seed", "created_at",
]  # fmt: skip


class DensityError(SoundscapeError):
    """A call-density sample that cannot be drawn or read (the message says what to do)."""


def check_quantiles(quantiles: Sequence[float]) -> list[float]:
    """Bin bounds as quantiles: increasing, from 0 to 1, at least one bin."""
    qs = [float(q) for q in quantiles]
    if (
        len(qs) < 2
        or qs[0] != 0.0
        or qs[-1] != 1.0
        or any(not math.isfinite(q) for q in qs)
        or any(b <= a for a, b in zip(qs, qs[1:], strict=False))
    ):
        raise BadOption(
            f"{','.join(map(str, qs))}: bin bounds are increasing quantiles from 0 to 1, "
            "e.g. 0,0.5,0.75,0.875,0.9375,1",
            "--quantiles",
        )
    return qs


def _score_source(
    conn: Connection, classifier: str | None, label: str | None, concept: str | None
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(the sample's columns, the SQL expression of a window ``g``'s score, its parameters)."""
    if (classifier is None) == (concept is None):
        raise DensityError("give a classifier and its label, or a concept")
    if classifier is not None:
        if not label:
            raise DensityError(f"classifier {classifier!r} needs a label (--label)")
        try:
            row = conn.execute(
                sa.text("SELECT * FROM ranger._classifier_label(:c, :l)"),
                {"c": classifier, "l": label},
            ).one()
        except sa.exc.DBAPIError as exc:  # no such classifier or label: its message says so
            raise DensityError(str(exc.orig).splitlines()[0]) from exc
        columns = {"source": "classifier", "label": label, "classifier_id": row.classifier_id}
        columns |= {"concept_id": None, "space_id": row.space_id}
        # the classifier's probability (classifiers.LabelModel.score): sigmoid(w.x + b)
        expr = "1 / (1 + exp(-((-(g.embedding <#> CAST(:w AS vector))) + :b)))"
        return columns, expr, {"w": row.weights, "b": float(row.bias)}
    found = conn.execute(
        sa.text("SELECT id, space_id, embedding, label_ids FROM concepts WHERE name = :n"),
        {"n": concept},
    ).fetchone()
    if found is None:
        raise DensityError(f"no concept named {concept!r} (see `soundscape concepts list`)")
    columns = {"source": "concept", "label": concept, "classifier_id": None}
    columns |= {"concept_id": found.id, "space_id": found.space_id}
    if found.label_ids is not None:  # a label concept: the best of its classes' scores
        expr = (
            "coalesce((SELECT max(sc.score) FROM segment_scores sc WHERE sc.space_id = "
            "g.space_id AND sc.segment_id = g.id AND sc.label_id = ANY(:labels)), 0)"
        )
        return columns, expr, {"labels": list(found.label_ids)}
    return columns, "1 - (g.embedding <=> CAST(:q AS vector))", {"q": found.embedding}


def _filters_json(filters: Filters) -> str:
    params = filters.params()
    params.pop("min_score", None)
    if params.get("place"):
        params["place"] = json.loads(params["place"])
    return json.dumps({k: v for k, v in params.items() if v is not None}, default=str)


def draw_sample(
    conn: Connection,
    name: str,
    *,
    classifier: str | None = None,
    label: str | None = None,
    concept: str | None = None,
    filters: Filters | None = None,
    per_bin: int = 10,
    seed: int = 0,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    replace: bool = False,
) -> dict[str, Any]:
    """Draw and store sample ``name``: ``per_bin`` random windows of each stratum (site x
    score bin) of the windows that pass ``filters``, reproducibly for a ``seed``. Returns the
    sample's row of ``ranger.density_samples``."""
    if not name.strip():
        raise DensityError("a call-density sample needs a name")
    if per_bin < 1:
        raise BadOption(f"{per_bin}: at least one window per bin", "--per-bin")
    qs = check_quantiles(quantiles)
    filters = filters or Filters()
    register_vector(conn)
    columns, score, score_params = _score_source(conn, classifier, label, concept)
    if replace:
        conn.execute(sa.text("DELETE FROM density_samples WHERE name = :n"), {"n": name})
    elif conn.execute(
        sa.text("SELECT 1 FROM density_samples WHERE name = :n"), {"n": name}
    ).first():
        raise DensityError(f"sample {name!r} exists; use --replace to draw it again")
    params = {k: v for k, v in filters.params().items() if k != "min_score"}
    conn.execute(sa.text("DROP TABLE IF EXISTS pg_temp.density_population"))
    conn.execute(
        sa.text(
            "CREATE TEMP TABLE density_population ON COMMIT DROP AS "
            "SELECT g.id AS segment_id, g.recording_id, g.start_s, g.end_s, "
            "coalesce(s.site, s.name) AS site, g.local_date, "
            f"CAST({score} AS double precision) AS score "
            f"FROM ranger.filtered_windows(:space, {FILTER_ARGS}) f "
            "JOIN segments g ON g.space_id = :space AND g.id = f.segment_id "
            "JOIN sensors s ON s.id = g.sensor_id"
        ),
        {**params, **score_params, "space": columns["space_id"]},
    )
    found = conn.execute(
        sa.text(
            "SELECT count(*) AS n, percentile_cont(CAST(:q AS double precision[])) "
            "WITHIN GROUP (ORDER BY score) AS bounds FROM density_population "
            "WHERE score = score"  # NaN scores (a zero vector) fall in no bin
        ),
        {"q": qs},
    ).one()
    if not found.n:
        raise DensityError(
            "no windows pass these filters in the space of "
            f"{columns['source']} {classifier or concept!r}; widen the sites or dates"
        )
    bounds = sorted(set(float(b) for b in found.bounds))
    if len(bounds) == 1:
        bounds = bounds * 2  # every score equal: one bin
    sample_id = conn.execute(
        sa.text(
            "INSERT INTO density_samples (name, source, label, classifier_id, concept_id, "
            "space_id, bounds, per_bin, seed, filters) VALUES (:name, :source, :label, :classifier_id, "
            ":concept_id, :space_id, :bounds, :per_bin, :seed, CAST(:filters AS jsonb)) RETURNING id"
        ),
        {
            **columns,
            "name": name,
            "bounds": bounds,
            "per_bin": per_bin,
            "seed": seed,
            "filters": _filters_json(filters),
        },
    ).scalar_one()
    _store_strata_and_windows(conn, sample_id, bounds, columns["space_id"], seed, per_bin)
    conn.execute(sa.text("DROP TABLE pg_temp.density_population"))
    return get_sample(conn, name)


def _store_strata_and_windows(
    conn: Connection, sample_id: int, bounds: list[float], space_id: int, seed: int, per_bin: int
) -> None:
    """From ``density_population``: the windows per site, day and score bin, and the seeded
    random ``per_bin`` windows of each site and bin."""
    binned = (
        "SELECT *, least(greatest(width_bucket(score, CAST(:bounds AS double precision[])), 1), "
        ":nbins) AS bin FROM density_population WHERE score = score"
    )
    keys = {"id": sample_id, "bounds": bounds, "nbins": len(bounds) - 1}
    conn.execute(
        sa.text(
            "INSERT INTO density_strata (sample_id, site, local_date, bin, n_windows) "
            f"SELECT :id, site, local_date, bin, count(*) FROM ({binned}) b "
            "GROUP BY site, local_date, bin"
        ),
        keys,
    )
    # a seeded order that does not depend on the server: md5 of the seed and the window id
    conn.execute(
        sa.text(
            "INSERT INTO density_windows (sample_id, space_id, segment_id, recording_id, "
            "start_s, end_s, site, local_date, bin, score, rank) "
            "SELECT :id, :space, segment_id, recording_id, start_s, end_s, site, local_date, "
            "bin, score, row_number() OVER (ORDER BY md5(:seed || ':rank:' || segment_id)) "
            f"FROM (SELECT *, row_number() OVER (PARTITION BY site, bin "
            f"ORDER BY md5(:seed || ':' || segment_id)) AS k FROM ({binned}) b) s "
            "WHERE k <= :per_bin"
        ),
        {**keys, "space": space_id, "seed": str(seed), "per_bin": per_bin},
    )


def get_sample(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(
        sa.text(
            f"SELECT {', '.join(SAMPLE_COLUMNS)}, bounds FROM ranger.density_samples WHERE name = :n"
        ),
        {"n": name},
    ).fetchone()
    if row is None:
        raise DensityError(f"no call-density sample named {name!r} (see `soundscape density list`)")
    return dict(row._mapping)


def list_samples(conn: Connection) -> list[dict[str, Any]]:
    """Every stored sample, newest first."""
    rows = conn.execute(
        sa.text(
            f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM ranger.density_samples "
            "ORDER BY created_at DESC, name"
        )
    )
    return [dict(r._mapping) for r in rows]


def remove_sample(conn: Connection, name: str) -> None:
    get_sample(conn, name)
    conn.execute(sa.text("DELETE FROM density_samples WHERE name = :n"), {"n": name})


def estimate(conn: Connection, name: str, by: str = "site") -> list[dict[str, Any]]:
    """The call density of sample ``name`` per ``by`` (site, day, site_day or all) with its
    95% interval (``ranger.call_density``, whose comment gives the estimator)."""
    if by not in GROUPS:
        raise BadOption(f"{by!r}: group by one of {', '.join(GROUPS)}", "--by")
    get_sample(conn, name)
    rows = conn.execute(
        sa.text(f"SELECT {', '.join(ESTIMATE_COLUMNS)} FROM ranger.call_density(:n, :by)"),
        {"n": name, "by": by},
    )
    return [dict(r._mapping) for r in rows]


def sample_windows(conn: Connection, name: str, *, unreviewed: bool = False) -> list[Hit]:
    """The sampled windows in their seeded review order (``rank``), as hits labelled with the
    sample's label (what ``review.write_batch`` writes); ``unreviewed``: only those without a
    yes / no verdict yet."""
    sample = get_sample(conn, name)
    rows = conn.execute(
        sa.text(
            "SELECT w.segment_id, w.score, w.recording_id, w.path, s.name AS sensor, s.site, "
            "s.quadrant, w.start_s, w.end_s, g.starts_at, g.local_date, g.local_time "
            "FROM ranger.density_windows w JOIN recordings r ON r.id = w.recording_id "
            "JOIN sensors s ON s.id = r.sensor_id "
            "LEFT JOIN segments g ON g.space_id = w.space_id AND g.id = w.segment_id "
            "WHERE w.sample = :n AND (NOT :u OR w.verdict IS NULL) ORDER BY w.rank"
        ),
        {"n": name, "u": unreviewed},
    )
    return [
        Hit(
            int(r.segment_id),
            float(r.score),
            int(r.recording_id),
            r.path,
            r.sensor,
            r.site,
            r.quadrant,
            float(r.start_s),
            float(r.end_s),
            r.starts_at,
            r.local_date,
            r.local_time,
            label=sample["label"],
            method="density",
        )  # fmt: skip
        for r in rows
    ]
