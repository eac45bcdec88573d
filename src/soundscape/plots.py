"""Pictures for people who would rather look than read a table (matplotlib, Agg, no display).

- ``activity_heatmap``: detections of a concept per local hour (x) and local day (y), one
  panel per quadrant, site or sensor.
- ``indices_heatmap``: an acoustic index's median per local hour (x) and local day (y), one
  panel per sensor, site or quadrant (the false-colour day/hour view of soundscape ecology).
- ``recording_plot``: the spectrogram of a recording (or a span of it) with the concept
  detections above it and the anomaly scores of the newest run below it; drawn from the
  recording's stored overview (``soundscape.overview_images``) when it is fine enough.
- ``spectrogram_png``: the clip spectrogram ``search --export`` writes.

Long spans never sit in memory: beyond ``MAX_DIRECT_S`` the spectrogram is built column by
column from the decoded stream (each column the mean power of the frames it covers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.anomalies import latest_run
from soundscape.audio import Opened, WindowStream, decode_span, probe
from soundscape.embedders.indices import Indices
from soundscape.errors import AudioError, SoundscapeError
from soundscape.media_files import open_stored, stored_file
from soundscape.overview_images import ensure_overview, load_overview
from soundscape.queries import Filters

GROUPS = ("quadrant", "site", "sensor")
#: spans up to this long are decoded at once; longer ones are streamed column by column
MAX_DIRECT_S = 600.0
#: highest sample rate a plot decodes at (11 kHz of spectrum is plenty to see sounds)
PLOT_RATE = 22050
DPI = 100
#: fewest columns of a stored overview in a span for the plot to use it (else it decodes)
MIN_COLUMNS = 200
#: anomaly score from which a window is shaded on the recording plot
ANOMALY_THRESHOLD = 3.0


@dataclass
class PlotResult:
    path: Path
    width: int
    height: int
    details: dict[str, Any]


def _pyplot():
    # deferred: matplotlib takes ~0.5 s to import and only drawing needs it (start-up time of
    # every command that merely imports this module, e.g. through soundscape.export)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    """Write a figure as a 256-colour PNG: exactly width x height pixels, and a few times
    smaller than a true-colour PNG of a spectrogram."""
    from PIL import Image  # deferred with matplotlib (it comes with it)

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    image = Image.fromarray(rgba[..., :3].copy()).quantize(colors=256)
    image.save(path, format="PNG", optimize=True)


def _union(spans: Any) -> list[tuple[float, float]]:
    """Merge overlapping or touching (start, end) spans."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1e-6:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _fft_size(sample_rate: int) -> int:
    return 1024 if sample_rate >= 16000 else 512


def spectrogram_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-power spectrogram in dB, ``[frequency bins, frames]`` (Hann, n_fft/4 hop)."""
    n_fft = _fft_size(sample_rate)
    hop = n_fft // 4
    x = np.asarray(audio, np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return 10 * np.log10(np.maximum(power, 1e-10)).T


def _draw_spectrogram(ax: Any, db: np.ndarray, t0: float, t1: float, sample_rate: int) -> None:
    ax.imshow(
        db,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(t0, t1, 0, sample_rate / 2000),
        vmin=db.max() - 80,
        vmax=db.max(),
        interpolation="nearest",
    )
    ax.set_ylabel("kHz")


def spectrogram_png(
    audio: np.ndarray,
    sample_rate: int,
    path: Path,
    title: str = "",
    mark: tuple[float, float] | None = None,
) -> None:
    """A log-power spectrogram image of a clip, with an optional span marked (cyan lines)."""
    plt = _pyplot()
    db = spectrogram_db(audio, sample_rate)
    n = max(len(audio), _fft_size(sample_rate))
    fig, ax = plt.subplots(figsize=(8, 3), dpi=DPI)
    _draw_spectrogram(ax, db, 0, n / sample_rate, sample_rate)
    if mark is not None:
        for t in mark:
            ax.axvline(t, color="cyan", linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def long_spectrogram(
    path: str | Path | Opened, start_s: float, end_s: float, columns: int
) -> tuple[np.ndarray, int]:
    """The spectrogram of ``[start_s, end_s)`` of a file with at most about ``columns`` time
    columns, in bounded memory. Returns (dB ``[bins, columns]``, sample rate used)."""
    info = probe(path)
    rate = min(info.sample_rate, PLOT_RATE)
    span = end_s - start_s
    if span <= MAX_DIRECT_S:
        audio = decode_span(path, rate, start_s, end_s)
        db = spectrogram_db(audio, rate)
        factor = -(-db.shape[1] // columns)
        if factor > 1:  # mean power over equal runs of frames (the last one edge-padded)
            power = 10 ** (db / 10)
            pad = (-power.shape[1]) % factor
            power = np.pad(power, ((0, 0), (0, pad)), mode="edge")
            db = 10 * np.log10(power.reshape(power.shape[0], -1, factor).mean(axis=2))
        return db, rate
    n_fft = _fft_size(rate)
    col_s = max(span / columns, n_fft / rate)
    cols: list[np.ndarray] = []
    for batch in WindowStream(path, rate, col_s, col_s, batch_size=8):
        for samples, s in zip(batch.samples, batch.start_s):
            if s + col_s <= start_s or s >= end_s:
                continue
            power = 10 ** (spectrogram_db(samples, rate) / 10)
            cols.append(10 * np.log10(power.mean(axis=1)))
    if not cols:
        shown = path.path if isinstance(path, Opened) else path
        raise SoundscapeError(f"{shown}: nothing to plot between {start_s:g} and {end_s:g} s")
    return np.stack(cols, axis=1), rate


# ------------------------------------------------------------------------------ heatmap
def activity_counts(
    conn: Connection,
    concept: str,
    by: str = "quadrant",
    date_from: date | None = None,
    date_to: date | None = None,
) -> dict[str, dict[tuple[date, int], int]]:
    """Detections of a concept per group, local day and local hour (from ranger.detections)."""
    if by not in GROUPS:
        raise SoundscapeError(f"--by must be one of {', '.join(GROUPS)}")
    known = conn.execute(sa.text("SELECT name FROM concepts ORDER BY name")).scalars().all()
    if concept not in known:
        raise SoundscapeError(
            f"no concept named {concept!r}; concepts: "
            f"{', '.join(known) or 'none (soundscape concepts add)'}"
        )
    dates, params = Filters(date_from=date_from, date_to=date_to).where("d")
    rows = conn.execute(
        sa.text(
            f"SELECT coalesce(d.{by}, '(none)') AS grp, d.local_date AS day, "
            "extract(hour FROM d.local_time)::integer AS hour, count(*) AS n "
            "FROM ranger.detections d WHERE d.concept = :c AND d.local_date IS NOT NULL "
            + "".join(f"AND {c} " for c in dates)
            + "GROUP BY 1, 2, 3"
        ),
        {**params, "c": concept},
    )
    out: dict[str, dict[tuple[date, int], int]] = {}
    for r in rows:
        out.setdefault(r.grp, {})[(r.day, r.hour)] = int(r.n)
    return out


def activity_heatmap(
    conn: Connection,
    concept: str,
    path: Path,
    by: str = "quadrant",
    date_from: date | None = None,
    date_to: date | None = None,
    width: int = 1000,
    height: int | None = None,
) -> PlotResult:
    """Heatmap of a concept's detections: local hour 0-23 across, local days down, one panel
    per group (``by``), one shared colour scale."""
    counts = activity_counts(conn, concept, by, date_from, date_to)
    if not counts:
        raise SoundscapeError(
            f"concept {concept!r} has no detections with a known local time"
            + (" in these dates" if date_from or date_to else "")
            + " (after ingesting more audio: soundscape concepts refresh)"
        )
    days_seen = [d for c in counts.values() for d, _ in c]
    first, last = min(days_seen), max(days_seen)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    groups = sorted(counts)
    grids = []
    for g in groups:
        grid = np.zeros((len(days), 24))
        for (d, h), n in counts[g].items():
            grid[index[d], h] = n
        grids.append(grid)
    vmax = max(float(g.max()) for g in grids)
    if height is None:
        height = int(min(2400, max(320, 150 + 16 * len(days))))
    plt = _pyplot()
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width / DPI, height / DPI),
        dpi=DPI,
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, g, grid in zip(axes.flat, groups, grids):
        image = ax.imshow(
            np.ma.masked_equal(grid, 0),
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=vmax,
            extent=(-0.5, 23.5, len(days) - 0.5, -0.5),
            interpolation="nearest",
        )
        ax.set_facecolor("#f2f2f2")
        ax.set_title(f"{by} {g}", fontsize=9)
        ax.set_xticks(range(0, 24, 3))
        ax.set_xlabel("local hour")
        step = max(1, len(days) // 12)
        ax.set_yticks(range(0, len(days), step))
        ax.set_yticklabels([days[i].isoformat() for i in range(0, len(days), step)], fontsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle(f"{concept}: detections per local hour and day", fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label="detections", aspect=30)
    _save(fig, path)
    plt.close(fig)
    total = sum(sum(c.values()) for c in counts.values())
    return PlotResult(
        Path(path),
        width,
        height,
        {"groups": groups, "days": len(days), "detections": total},
    )


# ------------------------------------------------------------------------------ indices
def indices_medians(
    conn: Connection,
    index: str,
    by: str = "sensor",
    filters: Filters | None = None,
    space: str | None = None,
) -> dict[str, dict[tuple[date, int], float]]:
    """An acoustic index's median per group, local day and local hour (ranger.acoustic_indices,
    the windows that pass ``filters``), in one ``indices`` space."""

    if by not in GROUPS:
        raise SoundscapeError(f"--by must be one of {', '.join(GROUPS)}")
    if index not in Indices.NAMES:
        raise SoundscapeError(f"unknown index {index!r}; indices: {', '.join(Indices.NAMES)}")
    spaces = (
        conn.execute(sa.text("SELECT DISTINCT space FROM ranger.acoustic_indices ORDER BY 1"))
        .scalars()
        .all()
    )
    if not spaces:
        raise SoundscapeError(
            "no windows of the indices model yet: soundscape ingest ... --model indices "
            "(or soundscape backfill --model indices)"
        )
    if space is None:
        space = "indices" if "indices" in spaces else spaces[0]
    elif space not in spaces:
        raise SoundscapeError(f"no indices space {space!r}; indices spaces: {', '.join(spaces)}")
    where, params = (filters or Filters()).where("a")
    rows = conn.execute(
        sa.text(
            f"SELECT coalesce(a.{by}, '(none)') AS grp, a.local_date AS day, "
            "extract(hour FROM a.local_time)::integer AS hour, "
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY a.{index}) AS median "
            "FROM ranger.acoustic_indices a WHERE a.space = :space AND a.local_date IS NOT NULL "
            + "".join(f"AND {c} " for c in where)
            + "GROUP BY 1, 2, 3"
        ),
        {**params, "space": space},
    )
    out: dict[str, dict[tuple[date, int], float]] = {}
    for r in rows:
        out.setdefault(r.grp, {})[(r.day, r.hour)] = float(r.median)
    return out


def indices_heatmap(
    conn: Connection,
    index: str,
    path: Path,
    by: str = "sensor",
    filters: Filters | None = None,
    space: str | None = None,
    width: int = 1000,
    height: int | None = None,
) -> PlotResult:
    """Heatmap of an acoustic index: its median per local hour 0-23 across, local days down,
    one panel per group (``by``), one shared colour scale (2nd to 98th percentile)."""
    medians = indices_medians(conn, index, by, filters, space)
    if not medians:
        raise SoundscapeError(
            "no windows of the indices model with a known local time pass these filters "
            "(ingest with a start time, or widen --from/--to and the place filters)"
        )
    days_seen = [d for c in medians.values() for d, _ in c]
    first, last = min(days_seen), max(days_seen)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    row = {d: i for i, d in enumerate(days)}
    groups = sorted(medians)
    grids = []
    for g in groups:
        grid = np.full((len(days), 24), np.nan)
        for (d, h), v in medians[g].items():
            grid[row[d], h] = v
        grids.append(grid)
    values = np.concatenate([g[np.isfinite(g)] for g in grids])
    vmin, vmax = (float(v) for v in np.percentile(values, [2, 98]))
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    if height is None:
        height = int(min(2400, max(320, 150 + 16 * len(days))))
    plt = _pyplot()
    cols = min(len(groups), 4)
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width / DPI, height / DPI),
        dpi=DPI,
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, g, grid in zip(axes.flat, groups, grids):
        image = ax.imshow(
            np.ma.masked_invalid(grid),
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(-0.5, 23.5, len(days) - 0.5, -0.5),
            interpolation="nearest",
        )
        ax.set_facecolor("#f2f2f2")
        ax.set_title(f"{by} {g}", fontsize=9)
        ax.set_xticks(range(0, 24, 3))
        ax.set_xlabel("local hour")
        step = max(1, len(days) // 12)
        ax.set_yticks(range(0, len(days), step))
        ax.set_yticklabels([days[i].isoformat() for i in range(0, len(days), step)], fontsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle(f"{index}: median per local hour and day", fontsize=10)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label=index, aspect=30)
    _save(fig, path)
    plt.close(fig)
    cells = sum(len(c) for c in medians.values())
    return PlotResult(
        Path(path),
        width,
        height,
        {"groups": groups, "days": len(days), "cells": cells, "range": (vmin, vmax)},
    )


# ------------------------------------------------------------------------------ recording
def _recording(conn: Connection, recording_id: int) -> Any:
    row = conn.execute(
        sa.text(
            "SELECT r.id, r.path, r.duration_s, r.started_at, s.name AS sensor, s.timezone "
            "FROM recordings r JOIN sensors s ON s.id = r.sensor_id WHERE r.id = :r"
        ),
        {"r": recording_id},
    ).fetchone()
    if row is None:
        raise SoundscapeError(f"no recording with id {recording_id} (soundscape recordings list)")
    return row


def _checked_span(rec: Any, start_s: float | None, end_s: float | None) -> tuple[float, float]:
    """``[start, end)`` of the recording to plot (default: all of it), clipped to its length."""
    start = float(start_s or 0.0)
    end = float(end_s) if end_s is not None else float(rec.duration_s)
    end = min(end, float(rec.duration_s))
    if start < 0 or end <= start:
        raise SoundscapeError(
            f"--start/--end must satisfy 0 <= start < end <= {rec.duration_s:.1f} s"
        )
    return start, end


def _recording_spectrogram(
    conn: Connection, recording_id: int, start: float, end: float, width: int, backfill: bool
) -> tuple[np.ndarray, float, float, int, str]:
    """The span's spectrogram (dB), the seconds it covers and its sample rate, and where it
    came from: ``"stored"`` (the recording's overview, when it has ``MIN_COLUMNS`` columns in
    the span; ``backfill`` computes and stores a missing one first) or ``"decoded"`` (read by
    the stored identity only, media_files.open_stored)."""
    overview = (ensure_overview if backfill else load_overview)(conn, recording_id)
    if overview is not None and (end - start) / overview.column_s >= MIN_COLUMNS:
        # only while the stored file is the one ingested (StoredFileChanged otherwise, as
        # when decoding it); an unchanged identity costs one fstat
        with open_stored(stored_file(conn, recording_id)):
            pass
        db, t0, t1 = overview.db(start, end)
        return db, t0, t1, overview.sample_rate, "stored"
    try:
        with open_stored(stored_file(conn, recording_id)) as opened:
            db, rate = long_spectrogram(opened, start, end, columns=max(MIN_COLUMNS, width))
            return db, start, end, rate, "decoded"
    except (AudioError, OSError) as exc:
        raise SoundscapeError(f"cannot read recording {recording_id}'s audio: {exc}") from exc


def _span_detections(
    conn: Connection, recording_id: int, start: float, end: float, concepts: list[str] | None
) -> Sequence[sa.Row[Any]]:
    return conn.execute(
        sa.text(
            "SELECT concept, start_s, end_s, score FROM ranger.detections "
            "WHERE recording_id = :r AND end_s > :a AND start_s < :b "
            "AND (CAST(:c AS text[]) IS NULL OR concept = ANY(CAST(:c AS text[]))) "
            "ORDER BY concept, start_s"
        ),
        {"r": recording_id, "a": start, "b": end, "c": concepts or None},
    ).fetchall()


def _span_scores(
    conn: Connection, recording_id: int, start: float, end: float, run_id: int | None
) -> tuple[int | None, Sequence[sa.Row[Any]]]:
    """The anomaly run (``run_id``, default the newest that scored the recording) and its
    windows' scores in the span."""
    if run_id is None:
        run_id = latest_run(conn, recording_id)
    if run_id is None:
        return None, []
    scores = conn.execute(
        sa.text(
            "SELECT start_s, end_s, score FROM ranger.anomalies "
            "WHERE run = :run AND recording_id = :r AND end_s > :a AND start_s < :b "
            "ORDER BY start_s"
        ),
        {"run": run_id, "r": recording_id, "a": start, "b": end},
    ).fetchall()
    return run_id, scores


def _panels(plt: Any, lanes: int, scores: bool, width: int, height: int) -> tuple[Any, list[Any]]:
    """The figure and its stacked axes: detection lanes (when there are ``lanes``), the
    spectrogram, anomaly scores (when there are ``scores``), sharing the time axis."""
    ratios = ([max(0.6, 0.35 * lanes)] if lanes else []) + [4] + ([1.3] if scores else [])
    fig, axes = plt.subplots(
        len(ratios),
        1,
        figsize=(width / DPI, height / DPI),
        dpi=DPI,
        sharex=True,
        gridspec_kw={"height_ratios": ratios},
        squeeze=False,
    )
    return fig, list(axes[:, 0])


def _draw_lanes(
    ax: Any, colours: Any, names: list[str], detections: Sequence[Any], start: float, end: float
) -> None:
    """One lane of bars per concept: its detections, clipped to the span."""
    for i, name in enumerate(names):
        spans = [
            (max(d.start_s, start), min(d.end_s, end) - max(d.start_s, start))
            for d in detections
            if d.concept == name
        ]
        ax.broken_barh(spans, (i + 0.1, 0.8), facecolors=colours(i % 10))
    ax.set_yticks([i + 0.5 for i in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    ax.set_ylim(0, len(names))
    ax.set_title("detections", fontsize=8, loc="left")


def _draw_scores(
    ax: Any, spec: Any, scores: Sequence[Any], threshold: float, run_id: int | None
) -> None:
    """Anomaly scores as bars (red from ``threshold``); windows at or above it framed in cyan
    on the spectrogram ``spec``."""
    # one bar per hop (windows overlap: each bar runs to the next window's start)
    starts = [s.start_s for s in scores]
    widths = [
        min(s.end_s, starts[i + 1]) - s.start_s if i + 1 < len(scores) else s.end_s - s.start_s
        for i, s in enumerate(scores)
    ]
    ys = [s.score for s in scores]
    ax.bar(
        starts,
        ys,
        width=widths,
        align="edge",
        color=["#d62728" if y >= threshold else "#8c8c8c" for y in ys],
    )
    ax.axhline(threshold, color="#d62728", linewidth=0.8, linestyle="--")
    ax.set_ylabel("score", fontsize=8)
    ax.set_title(f"anomaly score (run {run_id})", fontsize=8, loc="left")
    for a, b in _union((s.start_s, s.end_s) for s in scores if s.score >= threshold):
        spec.axvspan(a, b, facecolor="none", edgecolor="cyan", linewidth=1.2)


def _recording_title(rec: Any, start: float) -> str:
    """Sensor, file name and the span's local start time."""
    when = ""
    if rec.started_at is not None:
        local = (rec.started_at + timedelta(seconds=start)).astimezone(ZoneInfo(rec.timezone))
        when = f"  {local:%Y-%m-%d %H:%M:%S %Z}"
    return f"{rec.sensor}  {Path(rec.path).name}{when}"


def recording_plot(
    conn: Connection,
    recording_id: int,
    path: Path,
    start_s: float | None = None,
    end_s: float | None = None,
    concepts: list[str] | None = None,
    run_id: int | None = None,
    threshold: float = ANOMALY_THRESHOLD,
    width: int = 1200,
    height: int = 600,
    backfill: bool = False,
) -> PlotResult:
    """Spectrogram of a recording (or ``[start_s, end_s)``) with detections (all concepts, or
    the named ones) as bars above it and the anomaly scores of run ``run_id`` (default: the
    newest run that scored this recording) below it; windows scoring at least ``threshold``
    are shaded on the spectrogram. The spectrogram comes from the recording's stored overview
    when it is fine enough for the span (``backfill``: compute and store a missing one
    first; the caller commits), else from its audio (``details["spectrogram"]`` says
    which)."""
    rec = _recording(conn, recording_id)
    start, end = _checked_span(rec, start_s, end_s)
    db, t0, t1, rate, source = _recording_spectrogram(
        conn, recording_id, start, end, width, backfill
    )
    detections = _span_detections(conn, recording_id, start, end, concepts)
    run_id, scores = _span_scores(conn, recording_id, start, end, run_id)

    plt = _pyplot()
    names = sorted({d.concept for d in detections})
    fig, axes = _panels(plt, len(names), bool(scores), width, height)
    spec = axes[1] if names else axes[0]
    _draw_spectrogram(spec, db, t0, t1, rate)
    if names:
        _draw_lanes(axes[0], plt.get_cmap("tab10"), names, detections, start, end)
    if scores:
        _draw_scores(axes[-1], spec, scores, threshold, run_id)
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(start, end)
    fig.suptitle(_recording_title(rec, start), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return PlotResult(
        Path(path),
        width,
        height,
        {
            "recording_id": recording_id,
            "start_s": start,
            "end_s": end,
            "detections": len(detections),
            "anomaly_run": run_id if scores else None,
            "anomalous_windows": sum(1 for s in scores if s.score >= threshold),
            "spectrogram": source,
        },
    )
