"""Microsoft CLAP 2023 (``msclap``): 1024-d joint audio-text embeddings for text search.

Audio path. msclap's own ``get_audio_embeddings`` reads *files* and crops those longer than
7 s at a random offset, so two runs differ. soundscape never uses it: the ingest pipeline
decodes, mixes and resamples the stream itself and hands over exact ``[B, n]`` float32 windows
at 44.1 kHz; they go straight into the model's audio encoder (``clap.audio_encoder``: HTS-AT,
then the projection to 1024-d), which is what ``CLAPWrapper._get_audio_embeddings`` does after
its file loading. The result is L2-normalised. Nothing on this path is random in eval mode.

Window lengths. The encoder accepts any length of at least ``MIN_WINDOW_SAMPLES``. HTS-AT
computes log-mel frames every 320 samples and resizes them to its fixed 1024-frame input:
windows up to ~7.43 s (at most 1024 frames) are stretched along time with bicubic
interpolation (the 7 s default gives 965 frames, stretched by 6 %; a 3 s window is stretched
2.5x, which the model never saw in training). Longer windows are cut into 689-frame crops
(~5 s) every 344 frames (~2.5 s), each stretched to 1024 frames, and the crops' features are
averaged; the audio after the last whole crop is ignored. Hence the 7 s default window (the
model's training clips) and the 6 s hop (1 s overlap).

Weights. ``CLAP_weights_2023.pth`` comes from ``$SOUNDSCAPE_CLAP_WEIGHTS`` (or the ``weights``
option), else from the Hugging Face cache, downloaded there on first use as msclap does. The
text encoder is GPT-2 (``gpt2`` from the hub, fetched into the same cache, or a local
directory in ``$SOUNDSCAPE_CLAP_TEXT_MODEL``); files already in the cache are used without
asking the hub. Neither option changes what the vectors mean, so neither is
part of the space's ``params``. The files are located (downloaded if needed) when the model is
instantiated, so that a missing file fails an ingest at once with one message; the weights are
loaded into memory on the first ``embed_*`` call.

HTS-AT builds its STFT and mel layers from its own config module (32 kHz, 50-14000 Hz), not
from msclap's ``config_2023.yml`` (44.1 kHz, fmax 8 kHz); the mel matrix is a parameter in the
model's state dict, so the checkpoint's values are used.

Side effects of msclap undone here: importing it calls ``warnings.filterwarnings("ignore")``
for the whole process; the import runs inside ``warnings.catch_warnings()`` so the filters are
restored. (It also sets transformers' log level to ERROR, which is left as is.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pickle
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, overload

import numpy as np

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.embedders.birdnet import inference_threads
from soundscape.errors import ModelUnavailable, SoundscapeError

#: path of ``CLAP_weights_2023.pth``; unset means the Hugging Face cache (downloading once)
WEIGHTS_ENV = "SOUNDSCAPE_CLAP_WEIGHTS"
#: local GPT-2 directory for the text encoder; unset means ``gpt2`` from the Hugging Face hub
TEXT_MODEL_ENV = "SOUNDSCAPE_CLAP_TEXT_MODEL"

HUB_REPO = "microsoft/msclap"
WEIGHTS_FILE = "CLAP_weights_2023.pth"
DEFAULT_TEXT_MODEL = "gpt2"
#: what transformers needs of ``gpt2`` (its fast tokenizer can be built from vocab + merges)
GPT2_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
GPT2_OPTIONAL_FILES = ("tokenizer.json", "tokenizer_config.json")
#: modules the extra provides (checked with find_spec, never imported, by unavailable_reason)
REQUIRED_MODULES = ("msclap", "torch", "torchaudio", "torchlibrosa", "transformers")
INSTALL_HINT = "install the clap extra: pip install 'soundscape[clap]'"
#: the STFT window (1024 samples); shorter input cannot be reflect-padded
MIN_WINDOW_SAMPLES = 1024

_WAYS_OUT = (
    f"either pass --weights /path/to/{WEIGHTS_FILE} or set {WEIGHTS_ENV} to it (690 MB, from "
    f"https://huggingface.co/{HUB_REPO} or https://zenodo.org/record/8378278), or connect to "
    "the internet once so that it downloads into the Hugging Face cache"
)
_TEXT_WAYS_OUT = (
    f"either set {TEXT_MODEL_ENV} to a local GPT-2 directory (its path must contain 'gpt' and "
    "not 'clip'), or connect to the internet once so that transformers downloads 'gpt2' into "
    "the Hugging Face cache"
)

#: what msclap imports, imported before it (see ``_wrapper``)
_MSCLAP_DEPENDENCIES = (
    "torch",
    "torchaudio",
    "torchaudio.transforms",
    "torchlibrosa.stft",
    "torchlibrosa.augmentation",
    "transformers",
    "huggingface_hub.file_download",
    "yaml",
)

log = logging.getLogger(__name__)
_import_lock = threading.Lock()
_wrapper_class: type | None = None


def _missing_modules() -> list[str]:
    missing = []
    for name in REQUIRED_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _env_path(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's per-retry warnings (our own error says what to do)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@overload
def _hub_file(
    repo: str, filename: str, ways_out: str, *, required: Literal[True] = True
) -> str: ...
@overload
def _hub_file(repo: str, filename: str, ways_out: str, *, required: bool) -> str | None: ...
def _hub_file(repo: str, filename: str, ways_out: str, *, required: bool = True) -> str | None:
    """A file of a hub repository: from the Hugging Face cache without touching the network
    when it is there (an offline machine would otherwise wait ~25 s for retries), else
    downloaded into the cache. ModelUnavailable (or None when not ``required``) if neither."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return cached
    try:
        with _quiet_hub():
            return hf_hub_download(repo, filename)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP, disk: all mean "not here"
        if not required:
            return None
        raise ModelUnavailable(
            f"model 'clap' is not available: {filename} of {repo} is not in the Hugging Face "
            f"cache and could not be downloaded ({type(exc).__name__}); {ways_out}"
        ) from None


def _wrapper() -> type:
    """msclap's CLAPWrapper, subclassed to take the text model from us (imported once)."""
    global _wrapper_class
    with _import_lock:
        if _wrapper_class is not None:
            return _wrapper_class
        # msclap calls warnings.filterwarnings("ignore") for the whole process when imported.
        # Its dependencies are imported first, so that the filters they install themselves
        # survive; then everything msclap's own import adds to the filters is undone.
        try:
            for module in _MSCLAP_DEPENDENCIES:
                importlib.import_module(module)
            with warnings.catch_warnings():
                from msclap import CLAP as CLAPWrapper
        except (ImportError, OSError) as exc:  # e.g. a torchaudio built for another torch
            raise ModelUnavailable(
                f"model 'clap' is not available: importing msclap failed "
                f"({type(exc).__name__}: {exc}); reinstall the clap extra: "
                "pip install --force-reinstall 'soundscape[clap]'"
            ) from None

        class Wrapper(CLAPWrapper):
            """CLAPWrapper whose config's ``text_model`` can point at a local GPT-2 directory."""

            def __init__(self, model_fp: str, text_model: str) -> None:
                self._text_model = text_model
                super().__init__(model_fp=model_fp, version="2023", use_cuda=False)

            def read_config_as_args(
                self, config_path: str, args: Any = None, is_config_str: bool = False
            ) -> Any:
                ns = super().read_config_as_args(config_path, args, is_config_str)
                ns.text_model = self._text_model
                return ns

        _wrapper_class = Wrapper
        return Wrapper


class CLAP(Embedder):
    """Microsoft CLAP 2023 (HTS-AT audio encoder, GPT-2 text encoder): 1024-d, 44.1 kHz.

    ``embed_audio`` takes ``[B, n]`` float32 windows at 44.1 kHz (any ``n`` of at least 1024
    samples, see the module docstring), ``embed_text`` takes search texts; both return
    L2-normalised float32 ``[N, 1024]`` vectors in one space, compared by cosine.
    """

    name: ClassVar[str] = "clap"
    version: ClassVar[str] = "2023"
    dimension: ClassVar[int] = 1024
    sample_rate: ClassVar[int] = 44100
    default_window_s: ClassVar[float] = 7.0
    default_hop_s: ClassVar[float] = 6.0
    fixed_window: ClassVar[bool] = False
    # 4 was as fast per window as 8-32 with 2 threads (~0.12 s per 7 s window) in less memory
    batch_size: ClassVar[int] = 4
    supports_text: ClassVar[bool] = True
    has_class_scores: ClassVar[bool] = False
    description: ClassVar[str] = (
        "Microsoft CLAP 2023 (msclap): general sounds and text-to-audio search, 7 s windows at "
        "44.1 kHz (weights downloaded once, or $SOUNDSCAPE_CLAP_WEIGHTS)"
    )
    #: first for text and example search (a general text-audio model); last of the built-in
    #: rankings for anomalies and duplicates (spaces.pick_space)
    preference: ClassVar[Mapping[str, int]] = {
        "text": 10, "audio": 10, "anomalies": 30, "duplicates": 30,
    }  # fmt: skip

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        text_model: str | None = None,
        **params: Any,
    ) -> None:
        """``weights``/``text_model`` default to ``$SOUNDSCAPE_CLAP_WEIGHTS`` and
        ``$SOUNDSCAPE_CLAP_TEXT_MODEL``; they are runtime options, not space parameters."""
        if params:
            raise SoundscapeError(
                f"model 'clap' takes no parameters, got: {', '.join(sorted(params))}"
            )
        super().__init__()
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model 'clap' is not available: {reason}")
        self.weights_path = self._locate_weights(weights)
        self.text_model = self._locate_text_model(text_model)
        self._model: Any = None
        self._tokenizer: Any = None
        self._text_len = 77
        self._lock = threading.Lock()

    # -- availability ---------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = _missing_modules()
        if missing:
            return f"{INSTALL_HINT} (missing: {', '.join(missing)})"
        weights = _env_path(WEIGHTS_ENV)
        if weights and not Path(weights).is_file():
            return f"{WEIGHTS_ENV}={weights} is not a file; point it at {WEIGHTS_FILE}"
        text_model = _env_path(TEXT_MODEL_ENV)
        if text_model and not Path(text_model).is_dir():
            return f"{TEXT_MODEL_ENV}={text_model} is not a directory (a local GPT-2 model)"
        return None

    @classmethod
    def weights_missing(cls) -> str | None:
        """The checkpoint (--weights, SOUNDSCAPE_CLAP_WEIGHTS or the Hugging Face cache) and
        GPT-2 (SOUNDSCAPE_CLAP_TEXT_MODEL or the cache), looked up without the network."""
        if _missing_modules():
            return None  # unavailable_reason says what to install
        from huggingface_hub import try_to_load_from_cache

        def cached(repo: str, filename: str) -> bool:
            return isinstance(try_to_load_from_cache(repo, filename), str)

        weights = _env_path(WEIGHTS_ENV)
        if not (weights and Path(weights).is_file()) and not cached(HUB_REPO, WEIGHTS_FILE):
            return (
                f"the weights ({WEIGHTS_FILE}) are not on this machine (online, the first use "
                f"downloads them); {_WAYS_OUT}"
            )
        text_model = _env_path(TEXT_MODEL_ENV)
        if not (text_model and Path(text_model).is_dir()) and not all(
            cached(DEFAULT_TEXT_MODEL, f) for f in GPT2_FILES
        ):
            return (
                "the GPT-2 text encoder is not on this machine (online, the first use downloads "
                f"it); {_TEXT_WAYS_OUT}"
            )
        return None

    @staticmethod
    def _locate_weights(weights: str | os.PathLike[str] | None) -> str:
        given = os.fspath(weights) if weights is not None else _env_path(WEIGHTS_ENV)
        if given:
            if not Path(given).is_file():
                raise ModelUnavailable(
                    f"model 'clap' is not available: the weights file {given} does not exist; "
                    f"point {WEIGHTS_ENV} at {WEIGHTS_FILE}"
                )
            return given
        return _hub_file(HUB_REPO, WEIGHTS_FILE, _WAYS_OUT)

    @staticmethod
    def _locate_text_model(text_model: str | None) -> str:
        given = text_model if text_model is not None else _env_path(TEXT_MODEL_ENV)
        if not given:
            # GPT-2's files are fetched here, not by transformers on load, so that a cached
            # copy loads as a local directory (transformers would otherwise ask the hub for
            # updates, retrying for minutes on a machine without network).
            from huggingface_hub import try_to_load_from_cache

            online = not all(
                isinstance(try_to_load_from_cache(DEFAULT_TEXT_MODEL, f), str) for f in GPT2_FILES
            )
            paths = [_hub_file(DEFAULT_TEXT_MODEL, f, _TEXT_WAYS_OUT) for f in GPT2_FILES]
            if online:  # something was just downloaded: the hub is reachable
                for optional in GPT2_OPTIONAL_FILES:
                    _hub_file(DEFAULT_TEXT_MODEL, optional, _TEXT_WAYS_OUT, required=False)
            given = str(Path(paths[0]).parent)  # .../models--gpt2/snapshots/<commit>
        # msclap picks the text-encoder code by substrings of this string.
        if not Path(given).is_dir() or "gpt" not in given or "clip" in given:
            raise ModelUnavailable(
                f"model 'clap' is not available: the text model {given!r} must be a local GPT-2 "
                "directory whose path contains 'gpt' and not 'clip'"
            )
        return given

    # -- loading --------------------------------------------------------------------------
    def _load(self) -> Any:
        import torch

        torch.set_num_threads(inference_threads())
        wrapper_class = _wrapper()
        try:
            try:
                wrapper = self._construct(wrapper_class)
            except pickle.UnpicklingError:
                # torch >= 2.6 loads with weights_only=True by default; msclap was written for
                # full unpickling. The file is the user's configured or Microsoft's own.
                log.debug("weights-only load of %s failed; retrying", self.weights_path)
                wrapper = self._load_unrestricted(wrapper_class)
        except OSError as exc:
            if getattr(exc, "filename", None) == self.weights_path:
                raise ModelUnavailable(
                    f"model 'clap' is not available: cannot read the weights "
                    f"{self.weights_path}: {exc.strerror or exc}"
                ) from None
            raise ModelUnavailable(
                f"model 'clap' is not available: cannot load the text model "
                f"{self.text_model!r} ({type(exc).__name__}: {exc}); {_TEXT_WAYS_OUT}"
            ) from None
        except (RuntimeError, pickle.UnpicklingError, KeyError, EOFError) as exc:
            raise ModelUnavailable(
                f"model 'clap' is not available: cannot read the weights {self.weights_path} "
                f"({type(exc).__name__}: {exc}); expected msclap's {WEIGHTS_FILE}"
            ) from None
        self._tokenizer = wrapper.tokenizer
        self._text_len = int(wrapper.args.text_len)
        self._model = wrapper.clap.eval()
        return self._model

    def _construct(self, wrapper_class: type) -> Any:
        with warnings.catch_warnings():
            # HTS-AT calls torch.meshgrid without indexing=: noise for our users, not theirs.
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            return wrapper_class(self.weights_path, self.text_model)

    def _load_unrestricted(self, wrapper_class: type) -> Any:
        key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
        saved = os.environ.get(key)
        os.environ[key] = "1"
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=f".*{key}", category=UserWarning)
                return self._construct(wrapper_class)
        finally:
            if saved is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = saved

    # -- inference ------------------------------------------------------------------------
    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        """``[B, n]`` float32 at 44.1 kHz -> (unit embeddings ``[B, 1024]``, None)."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < MIN_WINDOW_SAMPLES:
            raise ValueError(
                f"CLAP needs a [windows, samples] batch of at least {MIN_WINDOW_SAMPLES} samples "
                f"per window at {self.sample_rate} Hz, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("audio batch contains NaN or infinite samples")
        if x.shape[0] == 0:
            return np.zeros((0, self.dimension), np.float32), None
        import torch

        with self._lock:
            model = self._model or self._load()
            with torch.inference_mode():
                audio = torch.from_numpy(np.array(x, dtype=np.float32, order="C"))
                projected = model.audio_encoder(audio)[0]
            out = projected.float().numpy()
        return _finite_unit(out), None

    @property
    def logit_scale(self) -> float:
        """CLAP's learned temperature, exp(logit_scale): the factor on cosine similarities
        before the zero-shot softmax over labels."""
        with self._lock:
            model = self._model or self._load()
        return float(model.logit_scale.detach().exp())

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """Token ids and attention masks as msclap's ``preprocess_text`` makes them
        (text + ``" <|endoftext|>"``, right-padded with id 0 to 77 tokens), except that a text
        longer than 77 tokens is cut to 76 and keeps its end-of-text token."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
        length = self._text_len
        eot = self._tokenizer.convert_tokens_to_ids("<|endoftext|>")
        pad = self._tokenizer.pad_token_id
        ids = np.full((len(texts), length), pad, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):
            tokens = self._tokenizer(f"{text} <|endoftext|>")["input_ids"]
            if len(tokens) > length:
                tokens = [*tokens[: length - 1], eot]
            ids[i, : len(tokens)] = tokens
            mask[i, : len(tokens)] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Embed search texts into the audio space: float32 ``[N, 1024]``, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        import torch

        tokens = self.tokenize(texts)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), 64):
                part = {k: v[start : start + 64] for k, v in tokens.items()}
                out.append(self._model.caption_encoder(part).float().numpy())
        return _finite_unit(np.concatenate(out))


def _finite_unit(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows; a non-finite or all-zero row becomes the constant unit vector."""
    bad = ~np.isfinite(x).all(axis=1) | ~x.any(axis=1)
    if bad.any():
        x = np.array(x, dtype=np.float32)
        x[bad] = 1.0
    return l2_normalize(x)
