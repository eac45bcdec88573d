"""BirdNET inference settings against the model wall (issue 28, item 3): windows per second and
top-1 label agreement with soundscape's default, measured in one interleaved run.

    python bench/birdnet_speed.py [--windows 256] [--rounds 5] [--variants base,b8,b32,...]

The windows are every 3 s window (2 s hop, as ingest makes them) of every file in
shared/audio (clips, soundscapes, speech, podcast) at 48 kHz, the first --windows of them.
Variants (each its own LiteRT interpreter on the same FP32 model soundscape ships, with the
embedding tensor added as an output exactly as soundscape.embedders.birdnet does):

- base: soundscape's default (2 threads = the usable cores, batch 16, XNNPACK by default);
- bN: batch N; tN: N threads;
- latest: `experimental_default_delegate_latest_features=True` (XNNPACK's newest kernels);
- nodelegate: the builtin kernels without XNNPACK;
- procs2: two processes of one thread each, each answering every other batch (forked after
  the windows are loaded: the windows are not copied, so this is the best case of "the model
  in a second process");
- onnx: onnxruntime on --onnx FILE (a conversion of the same model, bench/birdnet_onnx.sh),
  intra-op threads = cores.

Rounds take turns variant by variant (each round runs every variant over all windows), so
every variant sees the same machine load; the table gives the median windows/s, x real time
(windows/s x the 2 s hop), the ratio to base in the same run, the share of windows whose top-1
class equals base's and the lowest embedding cosine to base's. Results:
bench/results/birdnet-speed-<time>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_result  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
HOP_S = 2.0


def load_windows(limit: int) -> np.ndarray:
    from soundscape.audio import decode_span, window_array

    out: list[np.ndarray] = []
    total = 0
    for path in sorted(AUDIO.rglob("*")):
        if path.suffix.lower() not in (".ogg", ".mp3", ".wav", ".flac") or total >= limit:
            continue
        samples = decode_span(path, 48000)
        batch = window_array(samples, 48000, 3.0, HOP_S)
        out.append(batch.samples)
        total += len(batch.samples)
    return np.concatenate(out)[:limit].astype(np.float32)


def interpreter(threads: int, **kw):
    from ai_edge_litert.interpreter import Interpreter

    from soundscape.embedders.birdnet import (
        EMBEDDING_TENSOR,
        MODEL_FILE,
        _model_file,
        _with_extra_outputs,
    )

    content, _ = _with_extra_outputs(_model_file(MODEL_FILE).read_bytes(), [EMBEDDING_TENSOR])
    it = Interpreter(model_content=content, num_threads=threads, **kw)
    it.allocate_tensors()
    return it


class Lite:
    """One LiteRT interpreter run batch by batch: (embeddings, logits) of all windows."""

    def __init__(self, threads: int, batch: int, **kw) -> None:
        from soundscape.embedders.birdnet import EMBEDDING_TENSOR, INPUT_TENSOR, LOGITS_TENSOR

        self.it = interpreter(threads, **kw)
        self.batch = batch
        ins = {d["name"]: d["index"] for d in self.it.get_input_details()}
        outs = {d["name"]: d["index"] for d in self.it.get_output_details()}
        self.inp, self.emb, self.log = (
            ins[INPUT_TENSOR],
            outs[EMBEDDING_TENSOR],
            outs[LOGITS_TENSOR],
        )
        self.size = 0

    def one(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) != self.size:
            self.it.resize_tensor_input(self.inp, [len(x), x.shape[1]])
            self.it.allocate_tensors()
            self.size = len(x)
        self.it.set_tensor(self.inp, x)
        self.it.invoke()
        return self.it.get_tensor(self.emb).copy(), self.it.get_tensor(self.log).copy()

    def run(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.one(w[i : i + self.batch]) for i in range(0, len(w), self.batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


_WORKER: Lite | None = None
_WINDOWS: np.ndarray | None = None


def _init_worker(batch: int) -> None:
    global _WORKER
    _WORKER = Lite(1, batch)


def _work(i: int) -> tuple[int, np.ndarray, np.ndarray]:
    assert _WORKER is not None and _WINDOWS is not None
    e, lg = _WORKER.one(_WINDOWS[i : i + _WORKER.batch])
    return i, e, lg


class Procs:
    """Two processes of one thread, each with its own interpreter, batches shared out."""

    def __init__(self, windows: np.ndarray, batch: int, procs: int = 2) -> None:
        global _WINDOWS
        _WINDOWS = windows
        self.batch = batch
        self.pool = mp.get_context("fork").Pool(procs, _init_worker, (batch,))

    def run(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got = sorted(self.pool.map(_work, range(0, len(w), self.batch)), key=lambda r: r[0])
        return np.concatenate([r[1] for r in got]), np.concatenate([r[2] for r in got])


class Onnx:
    def __init__(self, path: Path, threads: int, batch: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inp = self.s.get_inputs()[0].name
        names = [o.name for o in self.s.get_outputs()]
        # the logits have 6,522 columns, the embedding 1,024
        self.names = names
        self.batch = batch

    def run(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embs, logs = [], []
        for i in range(0, len(w), self.batch):
            outs = self.s.run(self.names, {self.inp: w[i : i + self.batch]})
            e = next(o for o in outs if o.shape[-1] == 1024)
            lg = next(o for o in outs if o.shape[-1] == 6522)
            embs.append(e)
            logs.append(lg)
        return np.concatenate(embs), np.concatenate(logs)


def make(name: str, windows: np.ndarray, cores: int, onnx: Path | None):
    from ai_edge_litert.interpreter import OpResolverType

    if name == "base":
        return Lite(cores, 16)
    if name.startswith("b") and name[1:].isdigit():
        return Lite(cores, int(name[1:]))
    if name.startswith("t") and name[1:].isdigit():
        return Lite(int(name[1:]), 16)
    if name == "latest":
        return Lite(cores, 16, experimental_default_delegate_latest_features=True)
    if name == "nodelegate":
        return Lite(
            cores,
            16,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    if name == "procs2":
        return Procs(windows, 16)
    if name == "onnx":
        if onnx is None:
            raise SystemExit("variant onnx needs --onnx FILE")
        return Onnx(onnx, cores, 16)
    raise SystemExit(f"unknown variant {name}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--windows", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default="base,b8,b32,b64,t1,latest,nodelegate,procs2")
    p.add_argument("--onnx", type=Path)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    windows = load_windows(args.windows)
    names = args.variants.split(",")
    if "base" not in names:
        names.insert(0, "base")
    runners = {n: make(n, windows, cores, args.onnx) for n in names}
    outputs = {n: r.run(windows) for n, r in runners.items()}  # warm-up, and the answers
    secs: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for n, r in runners.items():
            t, c = time.perf_counter(), time.process_time()
            r.run(windows)
            secs[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
    be, bl = outputs["base"]
    be = be / np.linalg.norm(be, axis=1, keepdims=True)
    top = bl.argmax(axis=1)
    result: dict = {"machine": machine(), "windows": len(windows), "rounds": args.rounds,
                    "cores": cores, "variants": {}}  # fmt: skip
    base_wps = len(windows) / statistics.median(secs["base"])
    print(f"{len(windows)} windows, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<12}{'win/s':>8}{'x real':>8}{'vs base':>9}{'top-1 same':>12}{'min cos':>9}")
    for n in names:
        e, lg = outputs[n]
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        wps = len(windows) / statistics.median(secs[n])
        entry = {
            "windows_per_s": round(wps, 2),
            "x_real_time": round(wps * HOP_S, 1),
            "vs_base": round(wps / base_wps, 3),
            "cpu_s_per_window": round(statistics.median(cpu[n]) / len(windows), 4),
            "top1_agreement": round(float((lg.argmax(axis=1) == top).mean()), 4),
            "min_embedding_cosine": round(float((e * be).sum(axis=1).min()), 6),
            "max_logit_diff": round(float(np.abs(lg - bl).max()), 6),
            "seconds": [round(x, 3) for x in secs[n]],
        }
        result["variants"][n] = entry
        print(f"{n:<12}{wps:8.1f}{wps * HOP_S:8.1f}{wps / base_wps:9.3f}"
              f"{entry['top1_agreement']:12.4f}{entry['min_embedding_cosine']:9.5f}")  # fmt: skip
    result["load_avg_at_end"] = list(os.getloadavg())
    write_result("birdnet-speed", result)
    for r in runners.values():
        if isinstance(r, Procs):
            r.pool.terminate()


if __name__ == "__main__":
    main()
