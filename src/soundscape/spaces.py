"""Spaces: one row per model configuration, each with its own ``segments`` partition and HNSW
index (see the comment in ``migrations/versions/0001_initial.py`` for why)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.embedders import Embedder
from soundscape.errors import SoundscapeError

# HNSW build parameters (pgvector defaults); recall is tuned at query time with ef_search.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


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
    )


_COLUMNS = "id, name, model, model_version, dimension, window_s, hop_s, sample_rate, params"


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


def resolve_window(
    model: type[Embedder], window_s: float | None, hop_s: float | None
) -> tuple[float, float]:
    """The window and hop for a model, applying the user's overrides and checking them."""
    window = float(window_s) if window_s is not None else float(model.default_window_s)
    hop = float(hop_s) if hop_s is not None else float(model.default_hop_s)
    if model.fixed_window and abs(window - model.default_window_s) > 1e-6:
        raise SoundscapeError(
            f"model {model.name!r} only accepts {model.default_window_s:g} s windows; "
            "leave --window out (use --hop to change the overlap)"
        )
    if window <= 0 or hop <= 0:
        raise SoundscapeError("--window and --hop must be positive numbers of seconds")
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

    Safe to call concurrently from several processes: creation takes a transaction-level
    advisory lock and re-checks.
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

    name = space_name(model, window_s, hop_s, params)
    taken = conn.execute(sa.text("SELECT 1 FROM spaces WHERE name = :n"), {"n": name}).fetchone()
    if taken:
        name = f"{name}-v{model.version}"
    row = conn.execute(
        sa.text(
            "INSERT INTO spaces (name, model, model_version, dimension, window_s, hop_s, "
            "sample_rate, params) VALUES (:name, :model, :version, :dim, :window, :hop, :rate, "
            f"CAST(:params AS jsonb)) RETURNING {_COLUMNS}"
        ),
        {**key, "name": name, "dim": int(model.dimension), "rate": int(model.sample_rate)},
    ).fetchone()
    space = _row_to_space(row)
    part = space.partition
    conn.execute(sa.text(f"CREATE TABLE {part} PARTITION OF segments FOR VALUES IN ({space.id})"))
    create_hnsw_index(conn, space)
    if labels:
        rows = []
        for i, label in enumerate(labels):
            sci, _, common = label.partition("_")
            rows.append(
                {"s": space.id, "i": i, "n": label, "sci": sci or None, "c": common or None}
            )
        conn.execute(
            sa.text(
                "INSERT INTO space_labels (space_id, label_id, name, scientific, common) "
                "VALUES (:s, :i, :n, :sci, :c)"
            ),
            rows,
        )
    return space


def create_hnsw_index(conn: Connection, space: Space) -> None:
    """The HNSW index searches use: cosine distance on the embedding cast to this space's
    dimension (queries must use the same expression to get it)."""
    part = space.partition
    conn.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {part}_hnsw ON {part} USING hnsw "
            f"((embedding::vector({space.dimension})) vector_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
        )
    )


def drop_hnsw_index(conn: Connection, space: Space) -> None:
    """For bulk loads: building the index once after loading is much faster than inserting
    into it row by row. Call ``create_hnsw_index`` afterwards."""
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {space.partition}_hnsw"))
