"""Export hits for listening: WAV clips with spectrograms (``search --export``, review
batches), and the band a model listens to (:func:`band_hz`, for Raven tables).

Selection tables and label tracks of hits are :mod:`soundscape.formats` (``raven.export_raven``,
``audacity.export_audacity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import soundfile as sf

from soundscape.audio import decode_span, probe
from soundscape.embedders import model_facts
from soundscape.errors import SoundscapeError, StoredFileChanged
from soundscape.formats.guano import clip_fields, write_guano
from soundscape.formats.rows import ExportResult, slug
from soundscape.media_files import StoredFile, open_stored
from soundscape.plots import spectrogram_png
from soundscape.results import Hit
from soundscape.spaces import Space


def clip_name(rank: int, hit: Hit) -> str:
    when = (
        hit.local.strftime("%Y%m%d-%H%M%S")
        if hit.local
        else f"{Path(hit.path).stem}-{hit.start_s:.1f}s"
    )
    return f"{rank:03d}_{slug(hit.sensor)}_{slug(when)}_{hit.score:.3f}"


def export_clips(
    hits: list[Hit],
    folder: Path,
    stored: Mapping[int, StoredFile],
    pad_s: float = 1.0,
    context: Mapping[int, Mapping[str, object]] | None = None,
) -> ExportResult:
    """Write each hit as a WAV clip (padded by ``pad_s`` on both sides, at the recording's
    own sample rate) and a spectrogram PNG beside it; sets each hit's ``clip``. A recording
    is read by its stored identity only (``stored``: ``media_files.stored_files`` of the
    hits' recordings; ``open_stored`` refuses a file that is not the one ingested).

    Each clip carries GUANO metadata (``formats.guano.clip_fields``: its absolute start with
    UTC offset, the label, the window in the ``soundscape`` namespace) and, per recording,
    ``context`` (``formats.guano.clip_context``: position, recorder), so Kaleidoscope, Raven
    and ``guano`` read where and when the clip was recorded."""
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
        fields = dict((context or {}).get(hit.recording_id, {}))
        fields |= clip_fields(
            hit, start, start + len(audio) / info.sample_rate, info.sample_rate, rank
        )
        write_guano(wav, fields)
        png = folder / f"{name}.png"
        title = f"{hit.sensor}  {hit.local or ''}  score {hit.score:.3f}"
        spectrogram_png(
            audio, info.sample_rate, png, title, mark=(hit.start_s - start, hit.end_s - start)
        )
        hit.clip = str(wav)
        out.written.extend([wav, png])
    return out


def band_hz(sample_rate: float, space: Space | None = None) -> tuple[float, float]:
    """Low and high frequency of a selection: the band of the space's model where it declares
    one (its ``band_hz``: BirdNET 0-15 kHz), else the full band; never above the recording's
    Nyquist frequency (``soundscape annotate import`` stores a full-band selection as no band)."""
    low, high = 0.0, sample_rate / 2
    model_band = model_facts(space.model).band_hz if space is not None else None
    if model_band is not None:
        low, high = model_band[0], min(high, model_band[1])
    return low, high
