"""Near-duplicates on real audio with known answers.

A 19 s "piece" (real fire-truck siren, blackbird and violin recordings back to back) is
copied into other recordings, each over its own stretch of the real forest soundscape, at
start times that are not multiples of the hop, after what copies go through: a gain change,
resampling to 22.05 kHz, mp3 re-encoding at 44.1 kHz, added white noise (10 dB below the
piece), and a copy of only its second half. One recording of other real clips holds none of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from soundscape.duplicates import Pair, group_pairs, refine_offset

# End-to-end: real audio copies through BirdNET. `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "audio"
DATA = ROOT / "tests" / "data"
RATE = 48000
#: recording -> offset (found time = piece time + offset); partial holds piece[8.5:] only
COPIES = {
    "original.wav": 0.0,
    "gain.wav": 6.37,
    "resampled.wav": 4.91,
    "reencoded.mp3": 7.5,
    "noisy.wav": 5.23,
    "partial.wav": 3.3 - 8.5,
}
UNRELATED = "unrelated.wav"


def load(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def peak(x: np.ndarray, level: float = 0.5) -> np.ndarray:
    return x * (level / np.abs(x).max())


def piece() -> np.ndarray:
    return np.concatenate(
        [
            peak(load(EXAMPLES / "firetruck.ogg")[: 8 * RATE]),
            peak(load(EXAMPLES / "blackbird.ogg")),
            peak(load(EXAMPLES / "violin.ogg")),
        ]
    )


def build(folder: Path) -> Path:
    """Write the recordings into ``folder``; returns the piece's own file (the query)."""
    folder.mkdir(parents=True, exist_ok=True)
    forest = load(EXAMPLES / "xc563936.mp3")
    p = piece()
    query = folder.parent / "piece.wav"
    sf.write(query, p, RATE, subtype="PCM_16")

    def host(part: int, x: np.ndarray, at: float) -> np.ndarray:
        bed = forest[part * 12 * RATE : (part + 1) * 12 * RATE] * 0.5  # its own 12 s of forest
        i = int(round(at * RATE))
        return np.concatenate([bed[:i], x, bed[i:]])

    def write(name: str, audio: np.ndarray, rate: int = RATE) -> None:
        audio = np.clip(audio, -1, 1)
        if rate != RATE:
            audio = soxr.resample(audio, RATE, rate)
        if name.endswith(".mp3"):
            sf.write(folder / name, audio, rate, format="MP3")
        else:
            sf.write(folder / name, audio, rate, subtype="PCM_16")

    write("original.wav", p)
    write("gain.wav", host(0, p * 0.2, COPIES["gain.wav"]))
    write("resampled.wav", host(1, p, COPIES["resampled.wav"]), 22050)
    write("reencoded.mp3", host(2, p, COPIES["reencoded.mp3"]), 44100)
    noisy = host(3, p, COPIES["noisy.wav"])
    noise = np.random.default_rng(7).standard_normal(len(noisy)).astype(np.float32)
    write("noisy.wav", noisy + noise * np.sqrt(np.mean(p**2) / 10))
    write("partial.wav", host(4, p[int(8.5 * RATE) :], 3.3))
    others = [EXAMPLES / f"{n}.ogg" for n in ("lightningbolt", "dog", "crow", "cuckoo", "owl")]
    others += [DATA / f"{n}.ogg" for n in ("bee", "final-roll-call", "apollo_lander", "toilet")]
    write(UNRELATED, np.concatenate([peak(load(f)) for f in others]))
    return query


@pytest.fixture(scope="module")
def library(module_db_url, tmp_path_factory):
    from click.testing import CliRunner

    from soundscape.cli import cli

    folder = tmp_path_factory.mktemp("library") / "files"
    query = build(folder)
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    runner = CliRunner()
    assert runner.invoke(cli, ["sensors", "add", "web"], env=env).exit_code == 0
    r = runner.invoke(
        cli, ["ingest", str(folder), "-s", "web", "-m", "birdnet,spectral", "-q"], env=env
    )
    assert r.exit_code == 0, r.output
    return module_db_url, query


@pytest.fixture
def duplicates(library, run_cli, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", library[0])

    def go(*args):
        result = run_cli("duplicates", *args, "--json")
        return [json.loads(line) for line in result.stdout.splitlines()], result

    return go


def by_file(matches) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for m in matches:
        name = Path(m["path"]).name
        assert name not in out, f"{name} reported twice: {matches}"
        out[name] = m
    return out


def test_audio_query_finds_every_copy_once_with_its_offset(duplicates, library):
    matches, result = duplicates("--audio", str(library[1]))
    assert result.exit_code == 0, result.output
    assert "searching space birdnet" in result.stderr
    found = by_file(matches)
    assert set(found) == set(COPIES)  # every copy, once; nothing in the unrelated recording
    for name, offset in COPIES.items():
        m = found[name]
        assert m["offset_s"] == pytest.approx(offset, abs=0.005), name
        assert m["verified"] is True and m["correlation"] > 0.6
        assert m["precision_s"] < 0.001
        # spans, in both files, to about a hop
        start = 8.5 if name == "partial.wav" else 0.0
        assert abs(m["query_start_s"] - start) <= 1.0 and m["query_end_s"] >= 18.0
        assert m["start_s"] == pytest.approx(m["query_start_s"] + m["offset_s"], abs=1e-3)
        assert m["n_windows"] >= (5 if name == "partial.wav" else 8)


def test_window_level_offsets_without_verification(duplicates, library):
    matches, result = duplicates("--audio", str(library[1]), "--no-verify")
    assert result.exit_code == 0
    for name, offset in COPIES.items():
        best = max((m for m in matches if Path(m["path"]).name == name), key=lambda m: m["score"])
        # the query is windowed every hop/4 = 0.5 s: the offset is good to about 0.25 s
        assert best["offset_s"] == pytest.approx(offset, abs=0.3), name
        assert best["precision_s"] == 0.25 and best["verified"] is None


def test_spectral_space_is_gain_resample_and_mp3_proof(duplicates, library):
    matches, result = duplicates("--audio", str(library[1]), "--space", "spectral")
    assert result.exit_code == 0 and "scoring >= 0.8" in result.stderr
    found = by_file(matches)
    # broadband noise breaks log-mel statistics (documented); everything else is found
    assert set(COPIES) - {"noisy.wav"} <= set(found) <= set(COPIES)
    for name, m in found.items():
        assert m["offset_s"] == pytest.approx(COPIES[name], abs=0.005)


def test_recording_and_all(duplicates, library):
    original = [m for m in duplicates("--audio", str(library[1]))[0]]
    orig_id = next(m["recording_id"] for m in original if m["path"].endswith("original.wav"))
    ids = {Path(m["path"]).name: m["recording_id"] for m in original}
    matches, result = duplicates("--recording", str(orig_id))
    assert result.exit_code == 0, result.output
    found = by_file(matches)
    assert set(found) == set(COPIES) - {"original.wav"}  # its own windows are no match
    for name, m in found.items():
        assert m["offset_s"] == pytest.approx(COPIES[name], abs=0.005)
        assert m["query_recording_id"] == orig_id

    pairs, result = duplicates("--all")
    assert result.exit_code == 0, result.output
    names = {v: k for k, v in ids.items()}
    linked = set()
    for m in pairs:
        a, b = names.get(m["query_recording_id"]), names.get(m["recording_id"])
        assert a and b, f"a match with the unrelated recording: {m}"
        assert m["query_recording_id"] < m["recording_id"]
        # the offset between two copies is the difference of their offsets to the piece
        assert m["offset_s"] == pytest.approx(COPIES[b] - COPIES[a], abs=0.005), (a, b)
        linked |= {a, b}
    assert linked == set(COPIES)
    assert len({(m["query_recording_id"], m["recording_id"]) for m in pairs}) == len(pairs)


def test_usage_errors(duplicates, library):
    _, result = duplicates()
    assert result.exit_code == 2 and "exactly one of" in result.stderr
    _, result = duplicates("--all", "--recording", "1")
    assert result.exit_code == 2
    _, result = duplicates("--recording", "9999")
    assert result.exit_code == 1 and "no recording with id 9999" in result.stderr
    _, result = duplicates("--all", "--start", "3")
    assert result.exit_code == 2


# ------------------------------------------------------------------------------ units
def test_group_pairs_runs_gaps_jitter_and_two_copies():
    hop = 2.0
    pairs = []
    # a copy at offset 13.4 seen stored-vs-stored: each stored window's best query window
    # flips between offsets 12 and 14
    for i, f in enumerate(range(14, 34, 2)):
        if f == 24:
            continue  # one missing window is tolerated
        pairs.append(Pair(q=f - (14 if i % 2 else 12), rec=1, f=f, score=0.9))
    # the same piece again later in the same recording, offset 60
    pairs += [Pair(q=q, rec=1, f=q + 60, score=0.85) for q in range(0, 10, 2)]
    # a lone coincidence and a weak pair elsewhere
    pairs += [Pair(q=4, rec=2, f=30, score=0.95), Pair(q=6, rec=1, f=90, score=0.8)]
    runs = group_pairs(pairs, hop, hop, 3.0, min_windows=2)
    assert [(r.rec, r.n_windows) for r in runs] == [(1, 9), (1, 5)]
    first, second = runs
    assert first.query_start_s == 2 and first.query_end_s == 21 and 12 <= first.offset_s <= 14
    assert second.offset_s == 60 and second.query_end_s == 11
    # two missing windows in a row split a run
    split = [Pair(q=q, rec=3, f=q + 5, score=0.9) for q in (0, 2, 4, 10, 12)]
    assert [r.n_windows for r in group_pairs(split, hop, hop, 3.0)] == [3, 2]


def test_refine_offset_to_a_millisecond(tmp_path):
    x = piece()[: 10 * RATE]
    noise = np.random.default_rng(1).standard_normal(12 * RATE).astype(np.float32) * 0.02
    copy = noise.copy()
    at = 1.2345
    copy[int(at * RATE) : int(at * RATE) + len(x)] += x[: 12 * RATE - int(at * RATE)]
    sf.write(tmp_path / "q.wav", x, RATE, subtype="PCM_16")
    sf.write(tmp_path / "c.mp3", soxr.resample(copy, RATE, 44100), 44100, format="MP3")
    offset, corr = refine_offset(tmp_path / "q.wav", 1.0, 9.0, tmp_path / "c.mp3", 1.0, 1.0)
    assert offset == pytest.approx(at, abs=0.001) and corr > 0.8
    sf.write(tmp_path / "n.wav", noise, RATE, subtype="PCM_16")
    _, corr = refine_offset(tmp_path / "q.wav", 1.0, 9.0, tmp_path / "n.wav", 1.0, 1.0)
    assert corr < 0.1
