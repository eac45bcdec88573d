"""Export hits for listening and review: WAV clips with spectrograms, Raven Pro selection
tables (BirdNET-Analyzer's columns) and Audacity label tracks.

``soundscape annotate import`` reads the tables and label tracks back (soundscape.annotations).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import soundfile as sf

from soundscape.audio import decode_span, probe
from soundscape.embedders import model_facts
from soundscape.errors import SoundscapeError, StoredFileChanged
from soundscape.media_files import StoredFile, open_stored
from soundscape.output import spreadsheet_safe
from soundscape.plots import spectrogram_png
from soundscape.results import Hit
from soundscape.spaces import Space


@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: runs of other characters than letters, digits and
    ``. _ + -`` become ``-`` (a ``+0200`` offset stays ``+0200``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def clip_name(rank: int, hit: Hit) -> str:
    when = (
        hit.local.strftime("%Y%m%d-%H%M%S")
        if hit.local
        else f"{Path(hit.path).stem}-{hit.start_s:.1f}s"
    )
    return f"{rank:03d}_{slug(hit.sensor)}_{slug(when)}_{hit.score:.3f}"


def export_clips(
    hits: list[Hit], folder: Path, stored: Mapping[int, StoredFile], pad_s: float = 1.0
) -> ExportResult:
    """Write each hit as a WAV clip (padded by ``pad_s`` on both sides, at the recording's
    own sample rate) and a spectrogram PNG beside it; sets each hit's ``clip``. A recording
    is read by its stored identity only (``stored``: ``media_files.stored_files`` of the
    hits' recordings; ``open_stored`` refuses a file that is not the one ingested)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    for rank, hit in enumerate(hits, start=1):
        name = clip_name(rank, hit)
        try:
            if hit.recording_id not in stored:
                raise StoredFileChanged(f"recording {hit.recording_id} is no longer stored")
            with open_stored(stored[hit.recording_id]) as opened:
                info = probe(opened)
                start = max(0.0, hit.start_s - pad_s)
                end = min(info.duration_s, hit.end_s + pad_s)
                audio = decode_span(opened, info.sample_rate, start, end)
        except (SoundscapeError, OSError, ValueError) as exc:
            out.errors.append(f"{hit.path}: cannot export window {hit.segment_id}: {exc}")
            continue
        wav = folder / f"{name}.wav"
        sf.write(wav, audio, info.sample_rate, subtype="PCM_16")
        png = folder / f"{name}.png"
        title = f"{hit.sensor}  {hit.local or ''}  score {hit.score:.3f}"
        spectrogram_png(
            audio, info.sample_rate, png, title, mark=(hit.start_s - start, hit.end_s - start)
        )
        hit.clip = str(wav)
        out.written.extend([wav, png])
    return out


# Raven Pro selection tables: what bioacousticians open beside a recording to review hits.
# The first twelve columns are BirdNET-Analyzer's (its Raven output); the rest are soundscape's
# and let `soundscape annotate import` find the window again.
RAVEN_COLUMNS = [
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
    "High Freq (Hz)", "Common Name", "Species Code", "Confidence", "Begin Path",
    "File Offset (s)", "Rank", "Sensor", "Local Time", "Window ID",
]  # fmt: skip


def band_hz(sample_rate: float, space: Space | None = None) -> tuple[float, float]:
    """Low and high frequency of a selection: the band of the space's model where it declares
    one (its ``band_hz``: BirdNET 0-15 kHz), else the full band; never above the recording's
    Nyquist frequency (``soundscape annotate import`` stores a full-band selection as no band)."""
    low, high = 0.0, sample_rate / 2
    model_band = model_facts(space.model).band_hz if space is not None else None
    if model_band is not None:
        low, high = model_band[0], min(high, model_band[1])
    return low, high


def _by_recording(hits: list[Hit]) -> dict[int, list[tuple[int, Hit]]]:
    """Hits grouped by recording, each with its rank in ``hits``, in time order."""
    groups: dict[int, list[tuple[int, Hit]]] = {}
    for rank, hit in enumerate(hits, start=1):
        groups.setdefault(hit.recording_id, []).append((rank, hit))
    for ranked in groups.values():
        ranked.sort(key=lambda rh: (rh[1].start_s, rh[0]))
    return groups


def table_cell(value: object) -> str:
    """One cell of a tab-separated table: no tab or line break, no formula a spreadsheet runs."""
    return " ".join(str(spreadsheet_safe(value)).split("\t")).replace("\n", " ")


def export_raven(
    hits: list[Hit], folder: Path, label: str, space: Space | None = None
) -> ExportResult:
    """Write one Raven selection table per recording (``<stem>.r<recording id>.selections.txt``,
    tab-separated) in BirdNET-Analyzer's columns: a selection per hit in time order, the
    hit's class (label queries) or ``label`` as ``Common Name``, its score as ``Confidence``,
    the band of ``space``'s model (``band_hz``), then rank, sensor, local time and window id.
    ``Species Code`` stays empty: soundscape has no eBird taxonomy to look codes up in."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    for recording_id, ranked in _by_recording(hits).items():
        path = ranked[0][1].path
        try:
            low, high = band_hz(float(probe(path).sample_rate), space)
        except (SoundscapeError, OSError) as exc:
            low, high = band_hz(48000.0, space)  # the audio is gone: assume 48 kHz
            out.errors.append(f"{path}: {exc}; High Freq set to {high:g} Hz")
        lines = ["\t".join(RAVEN_COLUMNS)]
        for selection, (rank, hit) in enumerate(ranked, start=1):
            cells = [
                selection, "Spectrogram 1", 1, f"{hit.start_s:.3f}", f"{hit.end_s:.3f}",
                f"{low:g}", f"{high:g}", hit.label or label, "", f"{hit.score:.4f}", path,
                f"{hit.start_s:.3f}", rank, hit.sensor,
                hit.local.isoformat(sep=" ", timespec="seconds") if hit.local else "",
                hit.segment_id,
            ]  # fmt: skip
            lines.append("\t".join(table_cell(c) for c in cells))
        table = folder / f"{slug(PurePath(path).stem)}.r{recording_id}.selections.txt"
        table.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.written.append(table)
    return out


def export_audacity(hits: list[Hit], folder: Path, label: str) -> ExportResult:
    """Write one Audacity label track per recording (``<stem>.txt``; ``<stem>.r<id>.txt`` when
    several exported recordings share a stem): ``start<TAB>end<TAB>label`` lines in time
    order, the label being the hit's class (label queries) or ``label``. Import a track in
    Audacity with File > Import > Labels beside the recording."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    groups = _by_recording(hits)
    stems: dict[str, int] = {}
    for ranked in groups.values():
        stem = slug(PurePath(ranked[0][1].path).stem)
        stems[stem] = stems.get(stem, 0) + 1
    for recording_id, ranked in groups.items():
        stem = slug(PurePath(ranked[0][1].path).stem)
        name = stem if stems[stem] == 1 else f"{stem}.r{recording_id}"
        lines = [
            f"{hit.start_s:.3f}\t{hit.end_s:.3f}\t{table_cell(hit.label or label)}"
            for _, hit in ranked
        ]
        track = folder / f"{name}.txt"
        track.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.written.append(track)
    return out
