"""Streaming audio decode and windowing with bounded memory.

Files are read with libsndfile (``soundfile``) in blocks of ``block_s`` seconds, mixed to mono,
resampled chunk by chunk with ``soxr.ResampleStream`` and cut into overlapping windows. Only one
block plus a carry buffer shorter than a window (and the batch being filled) are held in memory,
whatever the length of the file. Streaming resampling is bit-identical to resampling the whole
file at once, so windows do not depend on ``block_s`` (except for mp3, where libsndfile's mpg123
decoder itself may differ by ~1 ulp depending on read sizes).

Every reader takes a path (a file given by the user: ingest, a query example) or an
``Opened`` file (a stored recording, opened and checked by ``soundscape.media_files
.open_stored``): that one is read from its checked descriptor only, never by its path again.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import soundfile as sf
import soxr

from soundscape.errors import AudioError

__all__ = [
    "SUPPORTED_FORMATS",
    "AudioInfo",
    "Opened",
    "Source",
    "WindowBatch",
    "WindowStream",
    "decode_span",
    "is_supported",
    "iter_windows",
    "probe",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")

_SUPPORTED_MSG = "supported: " + ", ".join(SUPPORTED_FORMATS)
# libsndfile container names -> our format names
_CONTAINERS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "W64": "wav",
    "FLAC": "flac",
    "OGG": "ogg",
    "MP3": "mp3",
    "MPEG": "mp3",
}
# exceptions soundfile/libsndfile raise for bad input
_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, ValueError)
# with --allow-truncated, a failed block is re-read in steps of this many frames
_SALVAGE_FRAMES = 4096
# decode_span starts the resampler this long before the span (soxr HQ latency is ~10-30 ms)
_PREROLL_S = 0.1

PathLike = str | os.PathLike[str]


@runtime_checkable
class Opened(Protocol):
    """A file already opened and checked (``media_files.OpenedFile``): read only through it."""

    path: Path
    size: int

    def soundfile(self) -> sf.SoundFile: ...

    def pread(self, n: int, offset: int) -> bytes: ...


Source = PathLike | Opened


@dataclass(frozen=True)
class AudioInfo:
    """What libsndfile reports about a file (native rate, channels and frames)."""

    path: Path
    format: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float


@dataclass
class WindowBatch:
    """A batch of mono windows at the target rate with their offsets in the file (seconds)."""

    samples: np.ndarray  # float32 [B, window_samples]
    start_s: np.ndarray  # float64 [B]
    end_s: np.ndarray  # float64 [B], clipped to the decoded duration

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def subset(self, keep: np.ndarray) -> WindowBatch:
        """The windows where the bool mask ``keep`` is true (this batch if all are)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.all():
            return self
        return WindowBatch(self.samples[keep], self.start_s[keep], self.end_s[keep])


def _ext(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def is_supported(path: PathLike) -> bool:
    """True if the file extension is one of SUPPORTED_FORMATS (case-insensitive)."""
    return _ext(Path(path)) in SUPPORTED_FORMATS


def _readable(path: Path) -> bool:
    return os.access(path, os.R_OK)


def _check_path(path: PathLike) -> Path:
    """Cheap checks before libsndfile sees the file; raise AudioError with a clear message."""
    p = Path(path)
    ext = _ext(p)
    if ext not in SUPPORTED_FORMATS:
        shown = f"'.{ext}'" if ext else "(none)"
        raise AudioError(
            f"{p}: unsupported file extension {shown} ({_SUPPORTED_MSG}). "
            "Convert the recording to one of these formats (e.g. with ffmpeg or sox)."
        )
    if not p.exists():
        raise AudioError(f"{p}: file not found. Check the path.")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file. Pass the path of an audio file.")
    if not _readable(p):
        raise AudioError(f"{p}: permission denied. Make the file readable (chmod +r) and retry.")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise AudioError(f"{p}: cannot read file ({e}). Check the file system.") from e
    if size == 0:
        raise AudioError(f"{p}: file is empty (0 bytes). Re-copy or re-export the recording.")
    return p


def _reopener(source: Source) -> Callable[[], sf.SoundFile]:
    """How to open ``source`` (again) with libsndfile."""
    if isinstance(source, Opened):
        return source.soundfile
    return lambda: sf.SoundFile(str(source))


def _open(source: Source) -> tuple[Path, sf.SoundFile]:
    if isinstance(source, Opened):
        p = source.path
        if source.size == 0:
            raise AudioError(f"{p}: file is empty (0 bytes). Re-copy or re-export the recording.")
    else:
        p = _check_path(source)
    try:
        f = _reopener(source if isinstance(source, Opened) else p)()
    except _DECODE_ERRORS as e:
        raise AudioError(
            f"{p}: not an audio file or unsupported encoding ({_SUPPORTED_MSG}; "
            f"libsndfile: {e}). Check the file or convert it to wav/flac."
        ) from e
    return p, f


def _info(p: Path, f: sf.SoundFile) -> AudioInfo:
    fmt = _CONTAINERS.get(str(f.format).upper(), _ext(p))
    sr, frames = int(f.samplerate), int(f.frames)
    if frames <= 0 or sr <= 0:
        raise AudioError(
            f"{p}: contains no audio frames. The recording is empty or its header is broken."
        )
    return AudioInfo(
        path=p,
        format=fmt,
        sample_rate=sr,
        channels=int(f.channels),
        frames=frames,
        duration_s=frames / sr,
    )


def probe(path: Source) -> AudioInfo:
    """Open a file and return its native format, rate, channels, frames and duration.

    Frames are as libsndfile reports them (for mp3 this may come from the Xing header and can
    exceed what a truncated file decodes to).
    """
    p, f = _open(path)
    with f:
        return _info(p, f)


class _MonoDecoder:
    """Yield mono float32 chunks at ``out_rate``; counts native frames decoded."""

    def __init__(
        self,
        p: Path,
        f: sf.SoundFile,
        out_rate: int,
        block_frames: int,
        max_frames: int | None = None,
        allow_truncated: bool = False,
        reopen: Callable[[], sf.SoundFile] | None = None,
    ) -> None:
        self.p, self.f, self.out_rate = p, f, out_rate
        self.reopen = reopen or (lambda: sf.SoundFile(str(p)))
        self.block_frames = max(1, block_frames)
        self.max_frames = max_frames
        self.allow_truncated = allow_truncated
        self.frames_read = 0
        #: why decoding stopped early (only with ``allow_truncated``)
        self.error: str | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        with contextlib.ExitStack() as stack:
            yield from self._decode(stack)

    def _decode(self, stack: contextlib.ExitStack) -> Iterator[np.ndarray]:
        f, in_rate = self.f, int(self.f.samplerate)
        rs = None
        if in_rate != self.out_rate:
            rs = soxr.ResampleStream(in_rate, self.out_rate, 1, dtype="float32")
        buf = np.empty((self.block_frames, f.channels), dtype=np.float32)
        while True:
            want = self.block_frames
            if self.max_frames is not None:
                want = min(want, self.max_frames - self.frames_read)
            if want <= 0:
                break
            try:
                block = f.read(want, dtype="float32", always_2d=True, out=buf)
            except _DECODE_ERRORS as e:
                t = self.frames_read / in_rate
                if self.allow_truncated and self.block_frames > _SALVAGE_FRAMES:
                    # keep what decodes before the damage: reopen (the failed handle may not
                    # seek any more), go back to where we were, read in small steps
                    try:
                        salvage = self.reopen()
                        salvage.seek(self.frames_read)
                    except _DECODE_ERRORS:
                        pass
                    else:
                        stack.enter_context(salvage)
                        f = salvage
                        self.block_frames = _SALVAGE_FRAMES
                        buf = buf[: self.block_frames]
                        continue
                if self.allow_truncated:
                    self.error = f"decoding failed after {t:.2f} s (libsndfile: {e})"
                    break
                raise AudioError(
                    f"{self.p}: truncated or corrupt audio: decoding failed after {t:.2f} s "
                    f"(libsndfile: {e}). Re-copy the file, repair/re-encode it "
                    "(e.g. ffmpeg -i in.ext out.flac), or pass --allow-truncated to store the "
                    "part that decodes."
                ) from e
            n = block.shape[0]
            if n == 0:
                break
            self.frames_read += n
            mono = _mix(block)
            yield mono if rs is None else rs.resample_chunk(mono, last=False)
        if rs is not None:
            yield rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


# --------------------------------------------------------------------------- completeness
# A truncated file often decodes without an error: libsndfile sizes a WAV by the bytes present
# and an Ogg stream by its last page. So the file's own structure is checked: what its header
# declares (WAV data chunk, mp3 Xing/LAME frame count) and whether an Ogg stream ends with its
# end-of-stream page.
_TAIL_BYTES = 1 << 16


def _head_tail(source: Source) -> tuple[bytes, bytes, int]:
    """The first and last ``_TAIL_BYTES`` of a file and its size."""
    if isinstance(source, Opened):
        size = source.size
        return (
            source.pread(_TAIL_BYTES, 0),
            source.pread(_TAIL_BYTES, max(0, size - _TAIL_BYTES)),
            size,
        )
    with open(source, "rb") as fh:
        head = fh.read(_TAIL_BYTES)
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - _TAIL_BYTES))
        return head, fh.read(), size


def incomplete(source: Source, info: AudioInfo, frames_read: int) -> str | None:
    """Why a file that decoded to ``frames_read`` frames is incomplete, or None."""
    try:
        head, tail, size = _head_tail(source)
    except OSError as e:
        return f"cannot re-read the file ({e})"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        reason = _wav_shortfall(head, size)
        if reason:
            return reason
    if head[:4] == b"OggS":
        reason = _ogg_shortfall(tail, size)
        if reason:
            return reason
    # Whatever the format: fewer frames than the header declares (mp3 Xing/LAME counts).
    slack = max(round(0.05 * info.sample_rate), 2304)
    if frames_read + slack < info.frames:
        return (
            f"decoded {frames_read / info.sample_rate:.2f} s of the "
            f"{info.duration_s:.2f} s its header declares"
        )
    return None


def _wav_shortfall(head: bytes, size: int) -> str | None:
    """A WAV whose data chunk declares more bytes than the file holds."""
    pos, data_size64 = 12, None
    while pos + 8 <= len(head):
        cid, n = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if cid == b"ds64" and pos + 24 <= len(head):  # RF64: the real 64-bit sizes
            data_size64 = int.from_bytes(head[pos + 16 : pos + 24], "little")
        if cid == b"data":
            declared = data_size64 if n == 0xFFFFFFFF and data_size64 else n
            if declared in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return None
            present = size - (pos + 8)
            if present < declared:
                return (
                    f"its data chunk declares {declared} bytes but the file holds {present} "
                    f"({100 * present / declared:.0f} %)"
                )
            return None
        pos += 8 + n + (n & 1)
    return None


def _ogg_shortfall(tail: bytes, size: int) -> str | None:
    """An Ogg stream must end with a complete page flagged end-of-stream."""
    at = tail.rfind(b"OggS")
    while at >= 0:
        page = tail[at:]
        if len(page) >= 27 and page[4] == 0:  # a plausible page header (version 0)
            nseg = page[26]
            if len(page) >= 27 + nseg:
                length = 27 + nseg + sum(page[27 : 27 + nseg])
                if length == len(page):
                    return None if page[5] & 0x04 else "its last Ogg page is not end-of-stream"
                if length > len(page):
                    return "its last Ogg page is cut off"
        at = tail.rfind(b"OggS", 0, at)
    return "no complete Ogg page at its end"


def _mean(block: np.ndarray) -> np.ndarray:
    if block.shape[1] == 1:
        return block[:, 0].copy()
    return block.mean(axis=1, dtype=np.float32)


def _mix(block: np.ndarray) -> np.ndarray:
    """Mean over channels as a new contiguous float32 array; NaN/inf become 0."""
    mono = _mean(block)
    if not np.isfinite(mono).all():
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        mono = _mean(block)
    return mono


def _window_params(sample_rate: int, window_s: float, hop_s: float) -> tuple[int, int]:
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"hop_s must be > 0 seconds, got {hop_s!r}")
    w, h = round(window_s * sample_rate), round(hop_s * sample_rate)
    if w < 1 or h < 1:
        raise ValueError(
            f"window_s={window_s} and hop_s={hop_s} must each be at least one sample "
            f"at {sample_rate} Hz"
        )
    return w, h


class WindowStream:
    """Iterate WindowBatch objects over a file; after iteration `duration_s` (exact, from samples
    decoded) and `n_windows` are set.

    Window k starts at sample k*H (H = round(hop_s*sr), W = round(window_s*sr)). Window 0 is
    always emitted; window k>0 iff k*H < N and (k-1)*H + W < N (N = resampled samples), so the
    tail is covered by at most one zero-padded window. If libsndfile fails mid-file, AudioError
    is raised after the batches decoded so far have been yielded.
    """

    def __init__(
        self,
        path: Source,
        sample_rate: int,
        window_s: float,
        hop_s: float,
        *,
        batch_size: int = 32,
        block_s: float = 30.0,
        allow_truncated: bool = False,
    ) -> None:
        self.window_samples, self.hop_samples = _window_params(sample_rate, window_s, hop_s)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not (math.isfinite(block_s) and block_s > 0):
            raise ValueError(f"block_s must be > 0 seconds, got {block_s!r}")
        self.source: Source = path if isinstance(path, Opened) else Path(path)
        self.path = path.path if isinstance(path, Opened) else Path(path)
        self.sample_rate = int(sample_rate)
        self.window_s = float(window_s)
        self.hop_s = float(hop_s)
        self.batch_size = int(batch_size)
        self.block_s = float(block_s)
        self.allow_truncated = allow_truncated
        #: why the file is incomplete, when ``allow_truncated`` kept what decodes
        self.truncated: str | None = None
        self.info: AudioInfo | None = None  # set when iteration opens the file
        self.duration_s: float | None = None
        self.n_windows: int | None = None
        self.n_samples: int | None = None  # N: resampled samples decoded

    def __iter__(self) -> Iterator[WindowBatch]:
        self.duration_s = self.n_windows = self.n_samples = None
        self.truncated = None
        p, f = _open(self.source)
        with f:
            self.info = info = _info(p, f)
            yield from self._run(p, f, info)

    def _run(self, p: Path, f: sf.SoundFile, info: AudioInfo) -> Iterator[WindowBatch]:
        sr, w, h, bs = self.sample_rate, self.window_samples, self.hop_samples, self.batch_size
        in_rate = int(f.samplerate)
        dec = _MonoDecoder(
            p,
            f,
            sr,
            round(self.block_s * in_rate),
            allow_truncated=self.allow_truncated,
            reopen=_reopener(self.source),
        )

        # carry buffer: resampled samples [buf_start, n) not yet consumed by a complete window
        buf = np.zeros(0, dtype=np.float32)
        buf_start = 0  # absolute index of buf[0] == start of the next window k*H
        n = 0  # resampled samples received
        k = 0  # next window index
        rows: np.ndarray | None = None  # batch being filled, allocated on first use
        starts: list[int] = []

        def put(x: np.ndarray) -> None:
            """Append one window (zero-padded to W) to the batch being filled."""
            nonlocal rows
            if rows is None:
                rows = np.empty((bs, w), dtype=np.float32)
            row = rows[len(starts)]
            row[: x.size] = x
            row[x.size :] = 0.0
            starts.append(k * h)

        def flush(duration_s: float) -> WindowBatch:
            nonlocal rows, starts
            assert rows is not None
            b = len(starts)
            st = np.asarray(starts, dtype=np.float64)
            end = np.minimum((st + w) / sr, duration_s)
            batch = WindowBatch(
                samples=rows if b == bs else rows[:b].copy(), start_s=st / sr, end_s=end
            )
            rows, starts = None, []
            return batch

        for chunk in dec:
            if chunk.size == 0:
                continue
            pos, n = n, n + chunk.size
            if buf_start > pos:  # hop > window: skip the gap between windows
                chunk = chunk[buf_start - pos :]
            buf = np.concatenate((buf, chunk)) if buf.size else chunk
            off = 0
            while off + w <= buf.size:
                put(buf[off : off + w])
                k += 1
                off += h
                if len(starts) == bs:
                    # the decoded length is not known yet: clip to the header's duration
                    yield flush(info.duration_s)
            buf_start += off
            # keep only the unconsumed tail (< W samples); copy so the block can be freed
            buf = buf[off:].copy() if off < buf.size else np.zeros(0, dtype=np.float32)

        total = n
        duration_s = self._end_of_file(p, dec, info, in_rate, total)
        if k == 0 or (k * h < total and (k - 1) * h + w < total):
            put(buf[:w])
            k += 1
        if starts:
            yield flush(duration_s)
        self.n_windows = k

    def _end_of_file(
        self, p: Path, dec: _MonoDecoder, info: AudioInfo, in_rate: int, total: int
    ) -> float:
        """Note what was decoded (samples, duration, truncation); refuse a file that gave no
        audio, or stopped short without ``allow_truncated``. Returns the decoded duration."""
        self.n_samples = total
        self.duration_s = duration_s = dec.frames_read / in_rate
        if dec.frames_read == 0:
            raise AudioError(
                f"{p}: no audio could be decoded. The file is empty, truncated or corrupt."
            )
        shortfall = dec.error or incomplete(self.source, info, dec.frames_read)
        if shortfall and not self.allow_truncated:
            raise AudioError(
                f"{p}: truncated: {shortfall}. Re-copy the file, or pass --allow-truncated to "
                "store the part that decodes."
            )
        self.truncated = shortfall
        return duration_s


def n_windows(n_samples: int, window: int, hop: int) -> int:
    """How many windows cover ``n_samples``: window 0 always (zero-padded if short); window k>0
    while k*hop < n and the previous window ended before the end, so the tail is kept
    without redundant windows (the rule WindowStream applies while streaming)."""
    if n_samples <= window:
        return 1
    # full windows, then one padded tail window if the last full one stops short of the end
    full = (n_samples - window) // hop + 1
    tail = full * hop < n_samples and (full - 1) * hop + window < n_samples
    return full + int(tail)


def window_array(
    samples: np.ndarray, sample_rate: int, window_s: float, hop_s: float
) -> WindowBatch:
    """Window an in-memory mono signal (e.g. a short query span) exactly like WindowStream."""
    w, h = _window_params(sample_rate, window_s, hop_s)
    x = np.asarray(samples, dtype=np.float32).ravel()
    count = n_windows(len(x), w, h)
    out = np.zeros((count, w), dtype=np.float32)
    for k in range(count):
        seg = x[k * h : k * h + w]
        out[k, : len(seg)] = seg
    starts = np.arange(count, dtype=np.float64) * h / sample_rate
    duration = len(x) / sample_rate
    return WindowBatch(out, starts, np.minimum(starts + w / sample_rate, duration))


def iter_windows(
    path: PathLike,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    *,
    batch_size: int = 32,
    block_s: float = 30.0,
) -> Iterator[WindowBatch]:
    """Convenience wrapper: iterate the batches of a WindowStream."""
    return iter(
        WindowStream(path, sample_rate, window_s, hop_s, batch_size=batch_size, block_s=block_s)
    )


def decode_span(
    path: Source, sample_rate: int, start_s: float = 0.0, end_s: float | None = None
) -> np.ndarray:
    """Decode [start_s, end_s) of a file as mono float32 at ``sample_rate``, seeking to the span.

    Returns output samples round(start_s*sr) .. round(end_s*sr) of the resampled file (fewer if
    the file ends first; ``end_s=None`` means to the end). The resampler is started on the
    output sample grid a little before the span, so the result matches the windows of
    WindowStream up to float rounding instead of showing resampler edge transients.
    """
    if not (isinstance(sample_rate, int | np.integer) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"start_s must be >= 0, got {start_s!r}")
    if end_s is not None and not end_s > start_s:
        raise ValueError(
            f"end_s must be greater than start_s, got start_s={start_s}, end_s={end_s}"
        )
    out_rate = int(sample_rate)
    p, f = _open(path)
    with f:
        info = _info(p, f)
        r = info.sample_rate
        if round(start_s * r) >= info.frames:
            raise ValueError(
                f"{p}: start_s={start_s} is at or past the end of the file "
                f"(duration {info.duration_s:.3f} s)"
            )
        i0 = round(start_s * out_rate)
        i1 = None if end_s is None else round(end_s * out_rate)
        if r == out_rate:
            j0 = a0 = i0
            b = i1
        else:
            # start on a native frame that falls exactly on the output grid, with pre-roll
            g = math.gcd(r, out_rate)
            step_in, step_out = r // g, out_rate // g
            margin = math.ceil(_PREROLL_S * out_rate)
            j0 = max(0, i0 - margin) // step_out * step_out
            a0 = j0 // step_out * step_in
            b = None if i1 is None else math.ceil((i1 + margin) * r / out_rate)
        # ``b`` bounds the decoding even past the header's frames: a header may understate
        # (an upload claiming seconds that holds hours), and a file that ends first (an mp3
        # header may overstate its length) simply stops at its real end.
        if a0 > 0:
            try:
                f.seek(a0)
            except _DECODE_ERRORS as e:
                raise AudioError(
                    f"{p}: cannot seek to {start_s:.3f} s (libsndfile: {e}). "
                    "The file may be truncated or corrupt; re-copy or re-encode it."
                ) from e
        max_frames = None if b is None else b - a0
        dec = _MonoDecoder(
            p, f, out_rate, round(30.0 * r), max_frames=max_frames, reopen=_reopener(path)
        )
        parts = [c for c in dec if c.size]
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return out[i0 - j0 : None if i1 is None else i1 - j0].copy()
