"""Tests for soundscape.audio: streaming decode, windowing, errors and bounded memory."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from soundscape import audio
from soundscape.audio import (
    SUPPORTED_FORMATS,
    AudioInfo,
    WindowBatch,
    WindowStream,
    decode_span,
    is_supported,
    iter_windows,
    probe,
)
from soundscape.errors import AudioError

from .conftest import real_audio

SOUNDSCAPE_MP3 = real_audio("soundscapes/xc563936.mp3")  # 72 s, 48 kHz mono
STEREO_OGG = real_audio("clips/vehicles/emergency/firetruck.ogg")  # 44.1k stereo
REAL_CLIPS = [
    real_audio("clips/space/apollo_lander.ogg"),  # 5 kHz
    real_audio("clips/household/toilet.ogg"),  # 8 kHz
    real_audio("clips/naturalforces/lightningbolt.ogg"),  # 11025 Hz
    real_audio("clips/town/roadsigns/xing_school.ogg"),  # 11127 Hz
    real_audio("clips/military/final-roll-call.ogg"),  # 22050 Hz
    real_audio("clips/seasonal/halloween/ghost.ogg"),  # 22050 Hz stereo
    real_audio("clips/animals/birds/blackbird.ogg"),  # 44.1 kHz
    STEREO_OGG,
    SOUNDSCAPE_MP3,
]


BLOCK_SIZES = [0.7, 1.0, 2.9, 30.0]


# ----------------------------------------------------------------------------- helpers


def _noise(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, channels)) * 0.2).clip(-0.99, 0.99).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def _write(path: Path, data: np.ndarray, sr: int, subtype: str = "FLOAT", **kw) -> Path:
    sf.write(str(path), data, sr, subtype=subtype, **kw)
    return path


def _reference(path: Path, sr: int) -> np.ndarray:
    """Whole-file decode + mean over channels + one-shot soxr resample."""
    x, native = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    return mono if native == sr else soxr.resample(mono, native, sr)


def _expected_starts(n: int, w: int, h: int) -> list[int]:
    """Emission rule spelled out independently: window 0 always; k>0 iff k*h < n and the
    previous window (k-1)*h + w does not already reach the end."""
    starts = [0]
    k = 1
    while k * h < n and (k - 1) * h + w < n:
        starts.append(k * h)
        k += 1
    return starts


def _collect(stream_or_iter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(stream_or_iter)
    for b in batches:
        assert isinstance(b, WindowBatch)
        assert b.samples.dtype == np.float32 and b.samples.ndim == 2
        assert b.start_s.dtype == np.float64 and b.end_s.dtype == np.float64
        assert len(b.samples) == len(b.start_s) == len(b.end_s) == len(b)
    return (
        np.concatenate([b.samples for b in batches]),
        np.concatenate([b.start_s for b in batches]),
        np.concatenate([b.end_s for b in batches]),
    )


def _check_against_reference(samples: np.ndarray, ref: np.ndarray, w: int, h: int) -> None:
    """Each window equals the reference slice, zero-padded; exact."""
    for k, row in enumerate(samples):
        seg = ref[k * h : k * h + w]
        np.testing.assert_array_equal(row[: len(seg)], seg, err_msg=f"window {k}")
        assert not row[len(seg) :].any(), f"window {k} padding is not zero"


# ----------------------------------------------------------------------------- API basics


def test_supported_formats_and_is_supported() -> None:
    assert SUPPORTED_FORMATS == ("wav", "flac", "ogg", "mp3")
    for name in ["a.wav", "b.WAV", "c.Flac", "d.ogg", "e.MP3", "/x/y/rec.2024.wav"]:
        assert is_supported(name), name
    for name in ["a.aiff", "b.txt", "noext", "c.wav.bak", "d.m4a"]:
        assert not is_supported(name), name
    assert is_supported(Path("x.flac"))


def test_probe_reports_native_properties(tmp_path: Path) -> None:
    p = _write(tmp_path / "s.wav", _noise(22050 * 2 + 7, channels=2), 22050, subtype="PCM_16")
    info = probe(p)
    assert info == AudioInfo(
        path=p,
        format="wav",
        sample_rate=22050,
        channels=2,
        frames=22050 * 2 + 7,
        duration_s=(22050 * 2 + 7) / 22050,
    )


def test_probe_format_comes_from_the_container(tmp_path: Path) -> None:
    # a FLAC stream misnamed .wav: libsndfile sniffs the real container
    p = _write(tmp_path / "really_flac.wav", _noise(8000), 8000, subtype="PCM_16", format="FLAC")
    assert probe(p).format == "flac"
    q = _write(tmp_path / "x.OGG", _noise(8000), 8000, subtype="VORBIS")
    assert probe(q).format == "ogg"


def test_probe_real_files() -> None:
    info = probe(SOUNDSCAPE_MP3)
    assert (info.format, info.sample_rate, info.channels) == ("mp3", 48000, 1)
    assert info.duration_s == pytest.approx(71.983, abs=0.01)
    info = probe(STEREO_OGG)
    assert (info.format, info.sample_rate, info.channels) == ("ogg", 44100, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0.0, "hop_s": 1.0},
        {"window_s": -3.0, "hop_s": 1.0},
        {"window_s": 3.0, "hop_s": 0.0},
        {"window_s": 3.0, "hop_s": -1.0},
        {"window_s": float("nan"), "hop_s": 1.0},
        {"window_s": 3.0, "hop_s": float("inf")},
    ],
)
def test_window_and_hop_must_be_positive(tmp_path: Path, kwargs: dict) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000), 16000)
    with pytest.raises(ValueError, match="window_s|hop_s"):
        WindowStream(p, 16000, **kwargs)


def test_other_parameters_are_validated(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000), 16000)
    with pytest.raises(ValueError, match="batch_size"):
        WindowStream(p, 16000, 3.0, 1.0, batch_size=0)
    with pytest.raises(ValueError, match="block_s"):
        WindowStream(p, 16000, 3.0, 1.0, block_s=0)
    with pytest.raises(ValueError, match="sample_rate"):
        WindowStream(p, 0, 3.0, 1.0)


# ----------------------------------------------------------------------------- windowing

# (duration_s, window_s, hop_s, expected starts, expected ends)
WINDOW_CASES = {
    "exact_multiple": (12.0, 3.0, 3.0, [0, 3, 6, 9], [3, 6, 9, 12]),
    "partial_tail": (10.0, 3.0, 3.0, [0, 3, 6, 9], [3, 6, 9, 10]),
    "shorter_than_window": (1.3, 3.0, 1.0, [0], [1.3]),
    "overlap_partial_tail": (10.0, 3.0, 2.0, [0, 2, 4, 6, 8], [3, 5, 7, 9, 10]),
    # the window at 6 s ends exactly at 9 s: no redundant window at 8 s
    "overlap_exact_end": (9.0, 3.0, 2.0, [0, 2, 4, 6], [3, 5, 7, 9]),
    "hop_equals_window": (7.5, 2.5, 2.5, [0, 2.5, 5.0], [2.5, 5.0, 7.5]),
    "hop_greater_than_window": (10.0, 2.0, 3.0, [0, 3, 6, 9], [2, 5, 8, 10]),
    "one_sample_past": (9.0 + 1 / 16000, 3.0, 3.0, [0, 3, 6, 9], [3, 6, 9, 9 + 1 / 16000]),
}


@pytest.mark.parametrize("case", list(WINDOW_CASES))
def test_window_offsets_and_samples_same_rate(tmp_path: Path, case: str) -> None:
    duration, window_s, hop_s, exp_starts, exp_ends = WINDOW_CASES[case]
    sr = 16000
    n = round(duration * sr)
    p = _write(tmp_path / f"{case}.wav", _noise(n), sr)
    w, h = round(window_s * sr), round(hop_s * sr)
    assert [s / sr for s in _expected_starts(n, w, h)] == pytest.approx(exp_starts)
    ref = _reference(p, sr)

    first = None
    for block_s in BLOCK_SIZES:
        for batch_size in (1, 3, 32):
            ws = WindowStream(p, sr, window_s, hop_s, batch_size=batch_size, block_s=block_s)
            assert ws.duration_s is None and ws.n_windows is None
            samples, starts, ends = _collect(ws)
            assert samples.shape == (len(exp_starts), w)
            np.testing.assert_allclose(starts, exp_starts, atol=1e-12)
            np.testing.assert_allclose(ends, exp_ends, atol=1e-12)
            assert ws.n_windows == len(exp_starts)
            assert ws.duration_s == n / sr
            assert ends[-1] == ws.duration_s
            assert np.all(ends > starts)
            _check_against_reference(samples, ref, w, h)
            if first is None:
                first = samples
            else:  # identical whatever the block and batch sizes
                np.testing.assert_array_equal(samples, first)


def test_shorter_than_window_is_zero_padded(tmp_path: Path) -> None:
    x = _noise(16000)  # 1 s
    p = _write(tmp_path / "short.wav", x, 16000)
    samples, starts, ends = _collect(WindowStream(p, 16000, 3.0, 1.0))
    assert samples.shape == (1, 48000)
    np.testing.assert_array_equal(samples[0, :16000], x)
    assert not samples[0, 16000:].any()
    assert (starts[0], ends[0]) == (0.0, 1.0)


@pytest.mark.parametrize("native", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("target", [16000, 48000])
def test_resampled_windows_match_whole_file_reference(
    tmp_path: Path, native: int, target: int
) -> None:
    n = round(10.37 * native)
    p = _write(tmp_path / f"r{native}.flac", _noise(n, seed=native), native, subtype="PCM_16")
    ref = _reference(p, target)
    w, h = 3 * target, 2 * target
    results = []
    for block_s in (0.7, 3.0, 30.0):
        ws = WindowStream(p, target, 3.0, 2.0, batch_size=4, block_s=block_s)
        samples, starts, ends = _collect(ws)
        # streaming soxr is bit-identical to one-shot soxr.resample, at any chunking
        assert ws.n_samples == len(ref)
        assert len(samples) == len(_expected_starts(len(ref), w, h))
        _check_against_reference(samples, ref, w, h)
        np.testing.assert_allclose(starts, np.arange(len(samples)) * 2.0)
        assert ws.duration_s == pytest.approx(n / native, abs=1e-12)
        assert ends[-1] == pytest.approx(n / native, abs=1e-12)
        results.append(samples)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_stereo_is_mixed_to_mono_by_mean(tmp_path: Path) -> None:
    x = _noise(16000 * 4, channels=2, seed=3)
    x[:, 1] = -0.5 * x[:, 1] + 0.25
    p = _write(tmp_path / "st.wav", x, 16000)
    samples, _, _ = _collect(WindowStream(p, 16000, 1.0, 1.0, block_s=0.3))
    assert samples.shape == (4, 16000)
    np.testing.assert_allclose(samples.ravel(), (x[:, 0] + x[:, 1]) / 2, rtol=0, atol=1e-7)


def test_iter_windows_wrapper(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000 * 5), 16000)
    a = _collect(iter_windows(p, 16000, 2.0, 1.0, batch_size=2, block_s=0.5))
    b = _collect(WindowStream(p, 16000, 2.0, 1.0))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a[0]) == 4  # 0,1,2,3 (window at 3 s ends exactly at 5 s)


def test_batches_have_requested_size(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000 * 20), 16000)
    sizes = [len(b) for b in WindowStream(p, 16000, 1.0, 0.5, batch_size=8, block_s=1.3)]
    assert sizes == [8, 8, 8, 8, 7]  # 39 windows: 0, 0.5, ..., 19.0


def test_stream_can_be_iterated_twice(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000 * 5), 16000)
    ws = WindowStream(p, 8000, 2.0, 1.0)
    a, b = _collect(ws), _collect(ws)
    np.testing.assert_array_equal(a[0], b[0])
    assert ws.n_windows == 4
    assert ws.info is not None and ws.info.sample_rate == 16000


def test_silent_file_gives_zero_windows(tmp_path: Path) -> None:
    p = _write(tmp_path / "silence.wav", np.zeros(16000 * 7, dtype=np.int16), 16000, "PCM_16")
    ws = WindowStream(p, 48000, 3.0, 2.0, block_s=1.0)
    samples, starts, ends = _collect(ws)
    assert samples.shape == (3, 144000)  # 0-3, 2-5, 4-7
    assert not samples.any()
    np.testing.assert_allclose(starts, [0, 2, 4])
    np.testing.assert_allclose(ends, [3, 5, 7])


def test_nan_and_inf_samples_become_zero(tmp_path: Path) -> None:
    x = _noise(16000 * 2, channels=2)
    x[100, 0] = np.nan
    x[200, 1] = np.inf
    x[300, :] = -np.inf
    p = _write(tmp_path / "bad.wav", x, 16000)  # 32-bit float wav keeps NaN/inf
    for target in (16000, 48000):
        samples, _, _ = _collect(WindowStream(p, target, 1.0, 1.0))
        assert np.isfinite(samples).all()
    samples, _, _ = _collect(WindowStream(p, 16000, 1.0, 1.0))
    flat = samples.ravel()
    assert flat[100] == pytest.approx(x[100, 1] / 2)
    assert flat[200] == pytest.approx(x[200, 0] / 2)
    assert flat[300] == 0.0
    assert flat[301] == pytest.approx(x[301].mean())


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.name)
@pytest.mark.parametrize("target", [16000, 48000])
def test_real_files_decode_with_matching_duration(path: Path, target: int) -> None:
    assert path.exists(), path
    ws = WindowStream(path, target, 3.0, 1.0, block_s=1.1)
    samples, starts, ends = _collect(ws)
    info = sf.info(str(path))
    assert ws.duration_s == pytest.approx(info.duration, abs=0.005)
    assert ws.n_samples / target == pytest.approx(info.duration, abs=0.005)
    assert len(samples) == ws.n_windows == len(_expected_starts(ws.n_samples, 3 * target, target))
    assert ends[-1] == pytest.approx(info.duration, abs=0.005)
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0.01  # real sound, not zeros


@pytest.mark.parametrize("path", [STEREO_OGG, REAL_CLIPS[0], REAL_CLIPS[3]], ids=lambda p: p.name)
def test_real_ogg_windows_exact_against_reference(path: Path) -> None:
    ref = _reference(path, 48000)
    results = []
    for block_s in (0.7, 4.0, 30.0):
        samples, _, _ = _collect(WindowStream(path, 48000, 3.0, 1.0, block_s=block_s))
        _check_against_reference(samples, ref, 144000, 48000)
        results.append(samples)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_real_mp3_windows_match_reference() -> None:
    """libsndfile's mp3 decoder (mpg123) is not bit-stable across read sizes: samples after a
    read boundary may differ by ~1 ulp (<2e-7), so compare with a tiny tolerance."""
    ref = _reference(SOUNDSCAPE_MP3, 16000)
    w, h = 48000, 32000
    results = []
    for block_s in (0.7, 30.0):
        ws = WindowStream(SOUNDSCAPE_MP3, 16000, 3.0, 2.0, block_s=block_s)
        samples, starts, ends = _collect(ws)
        assert ws.n_samples == len(ref) == round(3455179 / 3)
        assert len(samples) == 36  # starts 0..70 s, the last one padded to 71.98 s
        assert starts[-1] == 70.0 and ends[-1] == pytest.approx(71.98289583, abs=1e-6)
        for k, row in enumerate(samples):
            seg = ref[k * h : k * h + w]
            np.testing.assert_allclose(row[: len(seg)], seg, rtol=0, atol=1e-6)
            assert not row[len(seg) :].any()
        results.append(samples)
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- decode_span


def test_decode_span_same_rate_is_exact(tmp_path: Path) -> None:
    x = _noise(16000 * 6)
    p = _write(tmp_path / "a.wav", x, 16000)
    np.testing.assert_array_equal(decode_span(p, 16000, 1.5, 2.25), x[24000:36000])
    np.testing.assert_array_equal(decode_span(p, 16000), x)
    np.testing.assert_array_equal(decode_span(p, 16000, 5.0, 99.0), x[80000:])
    assert decode_span(p, 16000, 1.0, 2.0).dtype == np.float32


def test_decode_span_resampled_matches_windows(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.flac", _noise(44100 * 12, channels=2), 44100, subtype="PCM_24")
    samples, starts, ends = _collect(WindowStream(p, 48000, 3.0, 2.0))
    for k in (0, 3, len(samples) - 1):
        span = decode_span(p, 48000, starts[k], ends[k])
        assert len(span) == round((ends[k] - starts[k]) * 48000)
        np.testing.assert_allclose(span, samples[k, : len(span)], rtol=0, atol=1e-6)


def test_decode_span_mp3_seeks() -> None:
    ref = _reference(SOUNDSCAPE_MP3, 32000)
    span = decode_span(SOUNDSCAPE_MP3, 32000, 33.3, 36.3)
    assert len(span) == 96000
    np.testing.assert_allclose(span, ref[round(33.3 * 32000) : round(36.3 * 32000)], atol=1e-6)


def test_decode_span_validates_range(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(16000), 16000)
    with pytest.raises(ValueError, match="end_s"):
        decode_span(p, 16000, 0.5, 0.5)
    with pytest.raises(ValueError, match="start_s"):
        decode_span(p, 16000, -1.0)
    with pytest.raises(ValueError, match="past the end"):
        decode_span(p, 16000, 2.0, 3.0)


# ----------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    for fn in (probe, lambda p: list(WindowStream(p, 16000, 3, 1)), lambda p: decode_span(p, 8000)):
        with pytest.raises(AudioError, match="not found"):
            fn(tmp_path / "nope.wav")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.touch()
    with pytest.raises(AudioError, match=r"empty \(0 bytes\)"):
        probe(p)
    with pytest.raises(AudioError, match="empty"):
        list(WindowStream(p, 16000, 3.0, 1.0))


@pytest.mark.parametrize("ext", ["wav", "mp3", "ogg", "flac"])
def test_text_file_renamed_as_audio(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"notes.{ext}"
    p.write_text("this is not audio\n" * 50)
    with pytest.raises(AudioError, match="not an audio file") as exc:
        probe(p)
    assert str(p) in str(exc.value)
    assert "wav, flac, ogg, mp3" in str(exc.value)
    with pytest.raises(AudioError, match="not an audio file"):
        list(WindowStream(p, 16000, 3.0, 1.0))


@pytest.mark.parametrize("name", ["song.aiff", "notes.txt", "noext", "x.m4a"])
def test_unsupported_extension_lists_supported_formats(tmp_path: Path, name: str) -> None:
    # raised before opening: the file does not even need to exist
    with pytest.raises(AudioError, match="unsupported file extension") as exc:
        probe(tmp_path / name)
    assert "wav, flac, ogg, mp3" in str(exc.value)
    with pytest.raises(AudioError, match="unsupported file extension"):
        list(WindowStream(tmp_path / name, 16000, 3.0, 1.0))


def test_real_aiff_is_rejected_by_extension(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.aiff", _noise(8000), 8000, subtype="PCM_16")  # libsndfile reads it
    with pytest.raises(AudioError, match=r"'\.aiff'.*wav, flac, ogg, mp3"):
        probe(p)


def test_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioError, match="not a regular file"):
        probe(tmp_path / "dir.wav")


def test_unreadable_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path / "a.wav", _noise(8000), 8000)
    monkeypatch.setattr(audio, "_readable", lambda path: False)
    with pytest.raises(AudioError, match="permission denied"):
        probe(p)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.wav", _noise(8000), 8000)
    p.chmod(0)
    try:
        with pytest.raises(AudioError, match="permission denied"):
            probe(p)
    finally:
        p.chmod(0o644)


def test_header_only_wav_has_no_frames(tmp_path: Path) -> None:
    p = _write(tmp_path / "hdr.wav", np.zeros(0, dtype=np.int16), 16000, "PCM_16")
    assert p.stat().st_size > 0
    with pytest.raises(AudioError, match="no audio frames"):
        probe(p)
    with pytest.raises(AudioError, match="no audio frames"):
        list(WindowStream(p, 16000, 3.0, 1.0))


def test_truncated_wav_is_an_error_unless_allowed(tmp_path: Path) -> None:
    """libsndfile clamps the frame count of a WAV whose data chunk claims more bytes than the
    file holds and decodes the available samples without error; soundscape reads the data
    chunk's declared size itself and calls the file truncated, unless told to keep what is
    there (allow_truncated), which then decodes exactly the available samples."""
    x = _noise(16000 * 5)
    p = _write(tmp_path / "t.wav", x, 16000, "PCM_16")
    data = p.read_bytes()
    header = len(data) - 2 * len(x)
    cut = header + 2 * (16000 * 3 + 1234)  # keep 3.077 s of samples
    p.write_bytes(data[:cut])
    info = probe(p)
    assert info.frames == 16000 * 3 + 1234
    with pytest.raises(AudioError, match="data chunk declares 160000 bytes"):
        _collect(WindowStream(p, 16000, 1.0, 1.0, block_s=0.4))
    ws = WindowStream(p, 16000, 1.0, 1.0, block_s=0.4, allow_truncated=True)
    samples, _, ends = _collect(ws)
    assert ws.truncated and "data chunk" in ws.truncated
    assert ws.duration_s == (16000 * 3 + 1234) / 16000
    assert ends[-1] == ws.duration_s
    assert len(samples) == 4
    full = sf.read(str(_write(tmp_path / "full.wav", x, 16000, "PCM_16")), dtype="float32")[0]
    np.testing.assert_array_equal(samples.ravel()[: 16000 * 3 + 1234], full[: 16000 * 3 + 1234])


def test_truncated_wav_in_header_raises(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.wav", _noise(16000), 16000, "PCM_16")
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(AudioError, match="not an audio file"):
        probe(p)


def test_truncated_flac_raises_audio_error_mid_stream(tmp_path: Path) -> None:
    """libsndfile's FLAC decoder raises ("lost sync") when it reaches the cut: wrapped."""
    p = _write(tmp_path / "t.flac", _noise(16000 * 20), 16000, "PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert probe(p).frames == 16000 * 20  # the header still claims the full length
    got = []
    with pytest.raises(AudioError, match=r"truncated or corrupt.*after \d+\.\d+ s") as exc:
        for batch in WindowStream(p, 16000, 1.0, 1.0, batch_size=1, block_s=1.0):
            got.append(batch)
    assert str(p) in str(exc.value)
    assert 3 <= len(got) < 10  # the decodable first part was yielded before the error


def test_truncated_mp3_is_an_error_unless_allowed(tmp_path: Path) -> None:
    """mp3 frame counts come from the Xing header: a truncated file still claims 72 s but
    decodes to what is there: an error by default; with allow_truncated, duration_s reflects
    the decoded samples."""
    data = SOUNDSCAPE_MP3.read_bytes()
    p = tmp_path / "half.mp3"
    p.write_bytes(data[: len(data) // 2])
    assert probe(p).duration_s == pytest.approx(71.98, abs=0.01)
    with pytest.raises(AudioError, match=r"truncated: decoded 3\d\.\d\d s of the 71\.98 s"):
        _collect(WindowStream(p, 16000, 3.0, 3.0))
    ws = WindowStream(p, 16000, 3.0, 3.0, allow_truncated=True)
    samples, _, ends = _collect(ws)
    assert 30.0 < ws.duration_s < 40.0
    assert ends[-1] == ws.duration_s
    assert len(samples) == ws.n_windows == int(np.ceil(ws.n_samples / 48000))


def test_corrupt_flac_middle_raises_audio_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "c.flac", _noise(16000 * 30), 16000, "PCM_16")
    data = bytearray(p.read_bytes())
    mid = len(data) // 3
    data[mid : mid + 4000] = np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes()
    p.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="truncated or corrupt"):
        list(WindowStream(p, 16000, 3.0, 1.0))


# ----------------------------------------------------------------------------- bounded memory


@pytest.mark.slow
def test_one_hour_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    sr_in, minutes = 16000, 60
    p = tmp_path / "hour.wav"
    block = (_noise(sr_in * 60, seed=7) * 32767 * 0.5).astype(np.int16)
    with sf.SoundFile(str(p), "w", samplerate=sr_in, channels=1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write(block)
    del block
    assert probe(p).duration_s == 3600.0

    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        ws = WindowStream(p, 48000, 3.0, 2.0)
        n = 0
        peak_abs = 0.0
        for batch in ws:
            n += len(batch)
            peak_abs = max(peak_abs, float(np.abs(batch.samples[:, ::997]).max()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0

    assert n == ws.n_windows == 1800  # 0, 2, ..., 3598 s (the last one padded from 3600 s)
    assert ws.duration_s == 3600.0 and ws.n_samples == 3600 * 48000
    assert peak_abs > 0.1
    # the whole file at 48 kHz float32 would be ~690 MB
    assert peak < 64 * 2**20, f"peak traced memory {peak / 2**20:.1f} MB"
    assert elapsed < 60, f"streaming 1 h took {elapsed:.1f} s"
