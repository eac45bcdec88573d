"""Spaces: one row per model configuration, each with its own ``segments`` partition and HNSW
index (see the comment in ``migrations/versions/0001_initial.py`` for why)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.db import register_vector
from soundscape.embedders import Embedder, get_model_class, model_facts
from soundscape.errors import BadOption, SoundscapeError

# HNSW build parameters: pgvector's m, ten times its ef_construction. Real archives are full
# of near-identical windows (nights, rain, a looped or fixed background); a graph built from
# short candidate lists links such windows among themselves and leaves distinct sounds near
# them (a second crow call in another file) without the edges a search needs, and then no
# ef_search finds them: on 10,488 real BirdNET windows (bench/realaudio.py) ef_construction
# 128-256 left a query at recall@10 0.5 at every ef_search up to 400 (m 16, 32, 48 or 64 alike),
# while 600 gave 0.998 mean and 0.9 worst, for about 1.7x the build time of 256 and the same
# size (docs/benchmarks.md, issue 22). Recall is then tuned at query time with ef_search.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 600
# What the HNSW index stores: float16 (pgvector ``halfvec``, the default of new spaces) or
# float32 (``vector``). On 1M 1024-d windows the halfvec index is a third of the size (2.7 vs
# 8.2 GB), so it stays in shared buffers, and was as accurate and 2-4x faster
# (docs/benchmarks.md). Embeddings are always stored as float32 in the table and every
# reported distance is the float32 one: only the candidate order comes from float16.
#
# ``bit`` is the compact index of issue 14: the signs of the embedding minus the space's mean
# (pgvector's ``binary_quantize``; BirdNET's embeddings are non-negative after ReLU, so without
# the centre every bit would be one), searched by Hamming distance. Above 512 dimensions the
# two halves of the centred vector are added first (``bit_length``: 512 bits for a 1024-d
# space), which halves the index for little recall (docs/benchmarks.md). The index only picks
# candidates: searches take ``BIT_CANDIDATES`` x k of them (at least ``hnsw.ef_search``; the
# setting ``soundscape.bit_candidates`` overrides the factor) and re-rank them by the exact
# float32 cosine distance, so scores stay exact (ranger._hnsw_distance_sql,
# ranger._hnsw_candidates_sql). The centre is stored with
# the space (``spaces.index_center``) and formatted as a constant into an IMMUTABLE SQL
# function per space (``bits_function``), which the index expression and every query call:
# PostgreSQL inlines it on both sides, so they match and the planner uses the index. Each
# build of the index recomputes the centre (from a sample of the space's windows) and
# replaces the function in the same transaction as the index swap.
#
# ``pca``: the window's projection on the space's ``PCA_DIMS`` principal axes (from a sample,
# centred on its mean), float16, searched by cosine distance: the same size as 512 bits, and on
# the realistic 1M benchmark set it puts the true top 10 among 400 candidates at recall 0.95
# where the bits need ~4,000 (docs/benchmarks.md). PostgreSQL cannot multiply by a matrix in an
# index expression, so the projection is a per-space IMMUTABLE plpgsql function
# (``projection_function``) of ``PCA_DIMS`` inner products with constant axes: plpgsql is
# compiled once per session and never inlined, so the planner matches the call as it is and a
# query's plan does not parse the ~0.7 MB of constants (an inlined SQL function would). Each
# build recomputes the axes. Candidates are re-ranked as for ``bit``.
INDEX_TYPES = ("halfvec", "vector", "bit", "pca")
COMPACT_TYPES = ("bit", "pca")
DEFAULT_INDEX_TYPE = "halfvec"
#: HNSW m of the bit index: its element tuples are small (512 bits = 64 bytes, after a fixed
#: 72), so the neighbour lists (2m x 6 bytes on layer 0) are much of its size; m = 8 gives
#: ~270 B a window at 512 bits, and its recall is bounded by the bits, not the graph
#: (docs/benchmarks.md)
BIT_M = 8
BIT_EF_CONSTRUCTION = 128
#: candidates per result taken from a bit index before the float32 re-ranking (the SQL
#: default of ranger._hnsw_candidates_sql)
BIT_CANDIDATES = 80
#: dimensions of a ``pca`` index (fewer in a space of fewer dimensions: ``pca_length``); with
#: HNSW m 8 a window costs about as much as 512 bits (docs/benchmarks.md)
PCA_DIMS = 32
PCA_M = 8
PCA_EF_CONSTRUCTION = 128
#: candidates per result taken from a pca index before the float32 re-ranking (the SQL default
#: of ranger._hnsw_candidates_sql)
PCA_CANDIDATES = 60
#: fewer windows than this when a pca index is built: ``index_caution`` suggests a rebuild later
PCA_MIN_WINDOWS = 1000
#: windows sampled to compute a space's centre (and its principal axes)
CENTER_SAMPLE = 20000
#: past this many windows a bit index's recall@10 falls well below halfvec's (0.99 at 100k,
#: 0.74-0.98 at 1M realistic windows: docs/benchmarks.md); ``index_caution`` says so
BIT_RECALL_WINDOWS = 200_000
#: the shortest hop between window starts: 10 windows per second of audio (a BirdNET hop of
#: 0.0001 s would embed 10,000 windows per second and run for hours on a minute of audio)
MIN_HOP_S = 0.1

#: What a space can be picked for when none is named (``pick_space``): search by text, by
#: example, anomalies, duplicates, class labels. Which model's space answers each best is the
#: model's ``preference`` (soundscape.embedders.base).
PURPOSES = ("text", "audio", "anomalies", "duplicates", "labels")


@dataclass(frozen=True)
class Space:
    id: int
    name: str
    model: str
    model_version: str
    dimension: int
    window_s: float
    hop_s: float
    sample_rate: int
    params: dict[str, Any]
    index_type: str = DEFAULT_INDEX_TYPE

    @property
    def partition(self) -> str:
        return partition_name(self.id)


def partition_name(space_id: int) -> str:
    return f"segments_space_{int(space_id)}"


def _row_to_space(row: Any) -> Space:
    m = row._mapping
    return Space(
        id=m["id"],
        name=m["name"],
        model=m["model"],
        model_version=m["model_version"],
        dimension=m["dimension"],
        window_s=float(m["window_s"]),
        hop_s=float(m["hop_s"]),
        sample_rate=m["sample_rate"],
        params=dict(m["params"] or {}),
        index_type=m["index_type"],
    )


_COLUMNS = (
    "id, name, model, model_version, dimension, window_s, hop_s, sample_rate, params, index_type"
)


def list_spaces(conn: Connection) -> list[Space]:
    rows = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM spaces ORDER BY id"))
    return [_row_to_space(r) for r in rows]


def get_space(conn: Connection, name: str) -> Space:
    row = conn.execute(
        sa.text(f"SELECT {_COLUMNS} FROM spaces WHERE name = :n"), {"n": name}
    ).fetchone()
    if row is None:
        names = [s.name for s in list_spaces(conn)]
        raise SoundscapeError(
            f"no space named {name!r}; spaces in this database: {', '.join(names) or 'none'}"
        )
    return _row_to_space(row)


def supports_text(space: Space) -> bool:
    """Whether the space's model has a text encoder that can run here."""
    try:
        cls = get_model_class(space.model)
    except SoundscapeError:
        return False
    return bool(cls.supports_text) and cls.unavailable_reason() is None


def has_labels(conn: Connection, space: Space) -> bool:
    """Whether the space's model stores class labels (BirdNET)."""
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM space_labels WHERE space_id = :s)"),
            {"s": space.id},
        ).scalar()
    )


def _sensor_id(conn: Connection, sensor: str) -> int:
    row = conn.execute(sa.text("SELECT id FROM sensors WHERE name = :n"), {"n": sensor}).fetchone()
    if row is None:
        known = conn.execute(sa.text("SELECT name FROM sensors ORDER BY name")).scalars().all()
        raise SoundscapeError(
            f"unknown sensor {sensor!r}; known: {', '.join(known) or 'none (soundscape sensors add)'}"
        )
    return int(row.id)


def pick_space(
    conn: Connection, name: str | None = None, *, purpose: str, sensor: str | None = None
) -> Space:
    """The space to use: the one named, else the best with stored windows for ``purpose``.

    ``purpose`` is one of ``PURPOSES``: ``"text"`` (a space with a text encoder, else one
    with class labels), ``"audio"`` (search by example), ``"anomalies"``, ``"duplicates"`` or
    ``"labels"`` (a space with class labels).
    With ``sensor``, only spaces holding that sensor's windows count (and a named space must
    hold some).
    """
    if purpose not in PURPOSES:
        raise SoundscapeError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    if sensor is None:
        filled = set(
            conn.execute(sa.text("SELECT DISTINCT space_id FROM recording_spaces")).scalars()
        )
    else:
        filled = set(
            conn.execute(
                sa.text(
                    "SELECT DISTINCT rs.space_id FROM recording_spaces rs "
                    "JOIN recordings r ON r.id = rs.recording_id WHERE r.sensor_id = :s"
                ),
                {"s": _sensor_id(conn, sensor)},
            ).scalars()
        )
    if name:
        space = get_space(conn, name)
        if sensor is not None and space.id not in filled:
            raise SoundscapeError(f"sensor {sensor!r} has no windows in space {name!r}")
        return space

    def rank(s: Space) -> tuple[float, int]:
        """The model's rank for the purpose (unranked models last), then the oldest space."""
        return (model_facts(s.model).preference.get(purpose, math.inf), s.id)

    spaces = sorted((s for s in list_spaces(conn) if s.id in filled), key=rank)
    if not spaces:
        whose = f"sensor {sensor!r} has" if sensor is not None else "this database has"
        raise SoundscapeError(
            f"{whose} no windows yet: ingest some audio first (soundscape ingest)"
        )
    if purpose == "labels":
        labelled = [s for s in spaces if has_labels(conn, s)]
        if not labelled:
            raise SoundscapeError(
                "no space with class labels yet; ingest with --model birdnet first"
            )
        return labelled[0]
    if purpose != "text":
        return spaces[0]
    for s in spaces:
        if supports_text(s):
            return s
    for s in spaces:
        if has_labels(conn, s):
            return s
    raise SoundscapeError(
        "no space here can answer a text query (no text encoder, no class labels); "
        "search with --audio FILE or --like ID, or ingest with --model clap or birdnet"
    )


def resolve_window(
    model: type[Embedder],
    window_s: float | None,
    hop_s: float | None,
    *,
    allow_gaps: bool = False,
) -> tuple[float, float]:
    """The window and hop for a model, applying the user's overrides and checking them.

    Both must be finite; the window within the model's limits (``min_window_s`` ..
    ``max_window_s``, exactly ``default_window_s`` for fixed-window models); the hop at least
    ``MIN_HOP_S`` and, unless ``allow_gaps``, at most the window (a longer hop leaves audio
    between windows that no search can find). Raises ``BadOption`` naming the option; call it
    before creating anything (``ensure_space``).
    """
    window = float(window_s) if window_s is not None else float(model.default_window_s)
    hop = float(hop_s) if hop_s is not None else float(model.default_hop_s)
    for value, option in ((window, "--window"), (hop, "--hop")):
        if not math.isfinite(value) or value <= 0:
            raise BadOption(f"{value:g} is not a positive number of seconds", option)
    if model.fixed_window and abs(window - model.default_window_s) > 1e-6:
        raise BadOption(
            f"model {model.name!r} only accepts {model.default_window_s:g} s windows; "
            "leave --window out (use --hop to change the overlap)",
            "--window",
        )
    if not model.min_window_s <= window <= model.max_window_s:
        raise BadOption(
            f"model {model.name!r} takes windows of {model.min_window_s:g} to "
            f"{model.max_window_s:g} s, not {window:g} s",
            "--window",
        )
    if hop < MIN_HOP_S:
        raise BadOption(f"the hop must be at least {MIN_HOP_S:g} s, not {hop:g} s", "--hop")
    if hop > window + 1e-9 and not allow_gaps:
        raise BadOption(
            f"a hop of {hop:g} s is longer than the {window:g} s window, so {hop - window:g} s "
            "of audio after every window would never be embedded; use a shorter --hop, or "
            "--allow-gaps if that is what you want",
            "--hop",
        )
    return window, hop


def space_name(model: type[Embedder], window: float, hop: float, params: dict[str, Any]) -> str:
    name = model.name
    if (window, hop) != (float(model.default_window_s), float(model.default_hop_s)):
        name += f"-w{window:g}-h{hop:g}"
    if params:
        name += "-" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return name


def ensure_space(
    conn: Connection,
    model: type[Embedder],
    window_s: float,
    hop_s: float,
    params: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> Space:
    """Find or create the space for this model configuration (with its partition and index).

    Safe to call concurrently from several processes and with ingests running: creation takes
    a transaction-level advisory lock, re-checks, then locks recordings and segments in the
    order ingest does (so the partition's creation cannot deadlock with an ingest).
    """
    params = params or {}
    key = {
        "model": model.name,
        "version": str(model.version),
        "window": float(window_s),
        "hop": float(hop_s),
        "params": json.dumps(params, sort_keys=True),
    }
    find = sa.text(
        f"SELECT {_COLUMNS} FROM spaces WHERE model = :model AND model_version = :version "
        "AND window_s = CAST(:window AS real) AND hop_s = CAST(:hop AS real) "
        "AND params = CAST(:params AS jsonb)"
    )
    row = conn.execute(find, key).fetchone()
    if row is not None:
        return _row_to_space(row)

    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('soundscape.spaces'))"))
    row = conn.execute(find, key).fetchone()
    if row is not None:
        return _row_to_space(row)
    # CREATE TABLE ... PARTITION OF segments locks segments and every table its foreign keys
    # join (recordings, segment_scores, ...), one after the other. An ingest running meanwhile
    # holds recordings and then wants segments: each waited for the other (a deadlock in 5 of
    # 8 runs). Take them in the ingest's order first: recordings (EXCLUSIVE: no ingest holds it
    # or starts; plain reads go on), then segments; the ingests wait, then resume.
    conn.execute(sa.text("LOCK TABLE recordings IN EXCLUSIVE MODE"))
    conn.execute(sa.text("LOCK TABLE segments IN ACCESS EXCLUSIVE MODE"))

    name = space_name(model, window_s, hop_s, params)
    taken = conn.execute(sa.text("SELECT 1 FROM spaces WHERE name = :n"), {"n": name}).fetchone()
    if taken:
        name = f"{name}-v{model.version}"
    row = conn.execute(
        sa.text(
            "INSERT INTO spaces (name, model, model_version, dimension, window_s, hop_s, "
            "sample_rate, params, index_type) VALUES (:name, :model, :version, :dim, :window, "
            f":hop, :rate, CAST(:params AS jsonb), :index) RETURNING {_COLUMNS}"
        ),
        {
            **key,
            "name": name,
            "dim": int(model.dimension),
            "rate": int(model.sample_rate),
            "index": DEFAULT_INDEX_TYPE,
        },
    ).fetchone()
    space = _row_to_space(row)
    part = space.partition
    conn.execute(sa.text(f"CREATE TABLE {part} PARTITION OF segments FOR VALUES IN ({space.id})"))
    create_hnsw_index(conn, space)
    if labels:
        _store_labels(conn, space, labels)
    return space


def _store_labels(conn: Connection, space: Space, labels: list[str]) -> None:
    """Store the class labels of a new space's model (``space_labels``), in output order."""
    rows = []
    for i, label in enumerate(labels):
        # BirdNET's "Scientific name_Common name"; other models' tags are common names
        sci, _, common = label.partition("_") if "_" in label else ("", "", label)
        rows.append({"s": space.id, "i": i, "n": label, "sci": sci or None, "c": common or None})
    conn.execute(
        sa.text(
            "INSERT INTO space_labels (space_id, label_id, name, scientific, common) "
            "VALUES (:s, :i, :n, :sci, :c)"
        ),
        rows,
    )


def bit_length(dimension: int) -> int:
    """Bits of a window in a ``bit`` index: the dimension, halved (by adding the two halves of
    the centred vector) above 512 dimensions (as ranger._hnsw_distance_sql)."""
    return dimension // 2 if dimension > 512 and dimension % 2 == 0 else dimension


def bits_function(space: Space) -> str:
    """The per-space SQL function giving a window's bits for the ``bit`` index (schema-qualified:
    index builds run with a restricted search_path)."""
    return f"public.{space.partition}_bits"


def _vector_schema(conn: Connection) -> str:
    schema = conn.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        )
    ).scalar()
    return str(schema or "public")


def _sample(conn: Connection, space: Space) -> str:
    """The TABLESAMPLE clause giving a fixed pseudo-random sample of about ``CENTER_SAMPLE`` of a
    space's windows (every window of a smaller space)."""
    rows = conn.execute(sa.text(f"SELECT count(*) FROM {space.partition}")).scalar() or 0
    percent = min(100.0, 100.0 * CENTER_SAMPLE / max(rows, 1))
    return f"TABLESAMPLE BERNOULLI ({percent:.6f}) REPEATABLE (0)"


def compute_center(conn: Connection, space: Space) -> list[float]:
    """The mean embedding of a space, from a fixed pseudo-random sample of about
    ``CENTER_SAMPLE`` windows (every window of a smaller space); zeros for an empty space."""
    text = conn.execute(
        sa.text(
            f"SELECT avg(embedding::vector({space.dimension}))::text FROM {space.partition} "
            f"{_sample(conn, space)}"
        )
    ).scalar()
    if text is None:
        return [0.0] * space.dimension
    return [float(x) for x in str(text).strip("[]").split(",")]


def create_bits_function(conn: Connection, space: Space, center: list[float]) -> None:
    """(Re)create the space's ``bits_function`` with ``center`` as a constant and store the
    centre with the space. Every bit index of the space must be rebuilt after this (the
    callers do it in the same transaction)."""
    s = _vector_schema(conn)
    dim, bits = space.dimension, bit_length(space.dimension)
    literal = "[" + ",".join(repr(float(x)) for x in center) + "]"
    centred = f"(v OPERATOR({s}.-) '{literal}'::{s}.vector({dim}))"
    if bits < dim:  # the two halves added: sign(x_i - c_i + x_{i+h} - c_{i+h})
        centred = (
            f"{s}.subvector({centred}, 1, {bits}) OPERATOR({s}.+) "
            f"{s}.subvector({centred}, {bits + 1}, {bits})"
        )
    conn.execute(
        sa.text(
            f"CREATE OR REPLACE FUNCTION {bits_function(space)}(v {s}.vector) "
            "RETURNS bit LANGUAGE sql IMMUTABLE PARALLEL SAFE AS "
            f"$$ SELECT {s}.binary_quantize({centred})::bit({bits}) $$"
        )
    )
    conn.execute(
        sa.text("UPDATE spaces SET index_center = CAST(:c AS vector) WHERE id = :id"),
        {"c": literal, "id": space.id},
    )


def pca_length(dimension: int) -> int:
    """Dimensions of a window in a ``pca`` index (as ranger._hnsw_distance_sql)."""
    return min(PCA_DIMS, dimension)


def projection_function(space: Space) -> str:
    """The per-space plpgsql function giving a window's projection for the ``pca`` index."""
    return f"public.{space.partition}_pca"


def compute_projection(conn: Connection, space: Space) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the ``pca_length`` principal axes (columns, largest variance first) of a
    space, from the same sample as ``compute_center``; zeros and the first unit vectors for an
    empty space."""
    dim = space.dimension
    register_vector(conn)
    vectors = [
        np.asarray(v.to_numpy(), dtype=np.float64)
        for v in conn.execute(
            sa.text(
                f"SELECT embedding::vector({dim}) FROM {space.partition} {_sample(conn, space)}"
            )
        ).scalars()
    ]
    n = pca_length(dim)
    if not vectors:
        return np.zeros(dim), np.eye(dim)[:, :n]
    x = np.stack(vectors)
    mean = x.mean(axis=0)
    x -= mean
    _, axes = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
    return mean, axes[:, ::-1][:, :n]


def create_projection_function(
    conn: Connection, space: Space, mean: np.ndarray, axes: np.ndarray
) -> None:
    """(Re)create the space's ``projection_function``: (v - mean) . axis for every axis, as a
    halfvec, with mean and axes as constants; the mean is also stored with the space. Every
    pca index of the space must be rebuilt after this (the callers do it in the same
    transaction)."""
    s = _vector_schema(conn)
    dim = space.dimension

    def literal(v: np.ndarray) -> str:
        return "[" + ",".join(repr(float(np.float32(x))) for x in v) + "]"

    terms = ",\n".join(
        f"{s}.inner_product(v, '{literal(axis)}'::{s}.vector({dim})) - {float(mean @ axis)!r}"
        for axis in axes.T
    )
    conn.execute(
        sa.text(
            f"CREATE OR REPLACE FUNCTION {projection_function(space)}(v {s}.vector) "
            f"RETURNS {s}.halfvec LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS "
            f"$fn$ BEGIN RETURN ARRAY[{terms}]::real[]::{s}.halfvec; END $fn$"
        )
    )
    conn.execute(
        sa.text("UPDATE spaces SET index_center = CAST(:c AS vector) WHERE id = :id"),
        {"c": literal(mean), "id": space.id},
    )


def create_hnsw_index(conn: Connection, space: Space, name: str | None = None) -> None:
    """The HNSW index searches use: cosine distance on the embedding cast to this space's
    index type and dimension (the SQL functions order by the same expression,
    ``ranger._hnsw_distance_sql``). A ``bit`` index is built on the Hamming distance of the
    space's ``bits_function``, whose centre is recomputed first; a ``pca`` index on the cosine
    distance of its ``projection_function``, whose mean and axes are recomputed first."""
    part = space.partition
    kind = space.index_type
    if kind not in INDEX_TYPES:
        raise SoundscapeError(f"index type must be one of {', '.join(INDEX_TYPES)}, not {kind!r}")
    if kind == "bit":
        create_bits_function(conn, space, compute_center(conn, space))
        dim, bits = space.dimension, bit_length(space.dimension)
        conn.execute(
            sa.text(
                f"CREATE INDEX IF NOT EXISTS {name or part + '_hnsw'} ON {part} USING hnsw "
                f"(({bits_function(space)}(embedding::vector({dim}))::bit({bits})) "
                f"bit_hamming_ops) WITH (m = {BIT_M}, ef_construction = {BIT_EF_CONSTRUCTION})"
            )
        )
        return
    if kind == "pca":
        create_projection_function(conn, space, *compute_projection(conn, space))
        dim, dims = space.dimension, pca_length(space.dimension)
        conn.execute(
            sa.text(
                f"CREATE INDEX IF NOT EXISTS {name or part + '_hnsw'} ON {part} USING hnsw "
                f"(({projection_function(space)}(embedding::vector({dim}))::halfvec({dims})) "
                f"halfvec_cosine_ops) WITH (m = {PCA_M}, ef_construction = {PCA_EF_CONSTRUCTION})"
            )
        )
        return
    conn.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {name or part + '_hnsw'} ON {part} USING hnsw "
            f"((embedding::{kind}({space.dimension})) {kind}_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
    )


def set_build_memory(conn: Connection, memory: str) -> None:
    """``maintenance_work_mem`` for an index build in this transaction (e.g. ``"4GB"``); a
    value PostgreSQL does not take is a ``BadOption`` for ``--memory``."""
    try:
        with conn.begin_nested():
            conn.execute(
                sa.text("SELECT set_config('maintenance_work_mem', :m, true)"), {"m": memory}
            )
    except sa.exc.DBAPIError as exc:
        raise BadOption(
            f"{memory!r} is not a PostgreSQL memory size (e.g. 512MB, 4GB): {exc.orig}".strip(),
            option="--memory",
        ) from None


def index_caution(conn: Connection, space: Space, index_type: str) -> str | None:
    """What to know before building an ``index_type`` index on ``space``, or None: a bit index
    on a large space finds fewer of the true nearest windows (measured, docs/benchmarks.md); a
    pca index's axes come from the few windows a young space holds."""
    if index_type == "pca":
        part = space.partition
        few = conn.execute(
            sa.text(f"SELECT count(*) FROM (SELECT 1 FROM {part} LIMIT {PCA_MIN_WINDOWS}) s")
        ).scalar()
        if few is None or few >= PCA_MIN_WINDOWS:
            return None
        return (
            f"space {space.name} holds {few:,} windows: a pca index projects every window, "
            "including those stored later, on the principal axes of the windows stored now; "
            f"build it again (`soundscape spaces index {space.name}`) once there are many more"
        )
    if index_type != "bit":
        return None
    rows = conn.execute(sa.text("SELECT ranger._space_rows(:s)"), {"s": space.id}).scalar() or 0
    if rows <= BIT_RECALL_WINDOWS:
        return None
    return (
        f"space {space.name} holds about {rows:,.0f} windows: a bit index's recall@10 falls "
        f"past ~{BIT_RECALL_WINDOWS:,} (0.74-0.98 measured at 1M, docs/benchmarks.md); "
        f"`soundscape spaces index {space.name} --type pca` is as small and keeps it (0.97-1.0 "
        "at 1M), `--type halfvec` where recall and speed matter more than memory"
    )


def set_index_type(conn: Connection, space: Space, index_type: str) -> tuple[Space, float]:
    """Rebuild a space's HNSW index as ``vector`` (float32), ``halfvec`` (float16), ``bit``
    (one bit per dimension) or ``pca`` (32 principal axes, float16); the compact two re-rank
    their candidates in float32, and a rebuild recomputes their centre (and axes).

    Nothing stored changes but the index, so this can always be undone. The new index is built
    beside the old one (searches go on using the old one; ingest into the space waits), then
    swapped in when the caller's transaction commits (``set_build_memory`` first speeds up a
    large build). Returns the updated space and the build time in seconds.
    """
    if space.dimension > 2000 and index_type == "vector":
        raise SoundscapeError(
            f"pgvector's HNSW indexes 'vector' up to 2,000 dimensions; space {space.name!r} has "
            f"{space.dimension}: use halfvec (up to 4,000)"
        )
    new = replace(space, index_type=index_type)
    part = space.partition
    start = time.perf_counter()
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {part}_hnsw_new"))
    create_hnsw_index(conn, new, name=f"{part}_hnsw_new")  # checks the type
    seconds = time.perf_counter() - start
    conn.execute(
        sa.text("UPDATE spaces SET index_type = :t WHERE id = :id"),
        {"t": index_type, "id": space.id},
    )
    drop_hnsw_index(conn, space)
    conn.execute(sa.text(f"ALTER INDEX {part}_hnsw_new RENAME TO {part}_hnsw"))
    # an old compact index (dropped above) was its function's only user
    if index_type != "bit":
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {bits_function(space)}(vector)"))
    if index_type != "pca":
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {projection_function(space)}(vector)"))
    if index_type not in COMPACT_TYPES:
        conn.execute(
            sa.text("UPDATE spaces SET index_center = NULL WHERE id = :id"), {"id": space.id}
        )
    return new, seconds


def drop_hnsw_index(conn: Connection, space: Space) -> None:
    """For bulk loads: building the index once after loading is much faster than inserting
    into it row by row. Call ``create_hnsw_index`` afterwards."""
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {space.partition}_hnsw"))
