"""Reference values for the `musicnn` model, from the ORIGINAL TensorFlow MusiCNN.

Runs in its own virtual environment (TensorFlow is never a soundscape dependency):

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras librosa
    /tmp/tfvenv/bin/pip install --no-deps musicnn==0.1.0
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python bench/musicnn_reference.py

It builds musicnn's own graph (``musicnn.models.define_model``, as ``musicnn.extractor`` does),
restores the MTT_musicnn checkpoint explicitly (``musicnn.extractor`` hides a failed restore
behind a bare ``except`` and then runs random weights) and checks every restored variable
against soundscape's pure-Python checkpoint reader. The clips are windowed with soundscape's
own decoder (3 s windows every 2 s at 16 kHz, the last one zero-padded, exactly what ingest
feeds the model); each window's log-mel is musicnn's preprocessing (librosa melspectrogram,
the first 187 frames) with the log computed in float32 (musicnn casts to float16 first, which
overflows under numpy 2 and gives every clip the same tags). Writes
``tests/data/musicnn_reference.json``: per window the 50 tag probabilities and the first
values of the 200-d "penultimate" embedding with its norm.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# numpy/soundfile/soxr only: no soundscape module here imports anything else
from soundscape.audio import iter_windows  # noqa: E402
from soundscape.embedders.tfcheckpoint import read_checkpoint  # noqa: E402

#: (name in the shared collection, file the tests read: examples/audio or tests/data)
CLIPS = [
    ("clips/hobbies/music/string/violin.ogg", "examples/audio/violin.ogg"),
    ("clips/hobbies/music/string/cello.ogg", "tests/data/cello.ogg"),
    ("clips/hobbies/music/percussion/drumkit.ogg", "tests/data/drumkit.ogg"),
    ("clips/animals/mammals/dog.ogg", "examples/audio/dog.ogg"),
]
SR, N_FFT, HOP, N_MELS, N_FRAMES = 16000, 512, 256, 96, 187
WINDOW_S, HOP_S = 3.0, 2.0
#: how many leading embedding values to keep per window
EMBEDDING_SLICE = 24


def log_mel(window: np.ndarray) -> np.ndarray:
    """musicnn.extractor.batch_data's representation of one window, log in float32."""
    rep = librosa.feature.melspectrogram(
        y=window,
        sr=SR,
        hop_length=HOP,
        n_fft=N_FFT,
        n_mels=N_MELS,
        center=True,  # librosa's defaults, pinned
        pad_mode="constant",
    ).T[:N_FRAMES]
    rep = rep.astype(np.float32)
    return np.log10(np.float32(10000) * rep + np.float32(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "musicnn_reference.json")
    args = p.parse_args()

    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import models

    tf.compat.v1.disable_eager_execution()
    spec = importlib.util.find_spec("musicnn")
    assert spec is not None and spec.submodule_search_locations
    prefix = os.path.join(next(iter(spec.submodule_search_locations)), "MTT_musicnn", "")

    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        outputs = models.define_model(x, is_training, "MTT_musicnn", len(config.MTT_LABELS))
        logits, penultimate = outputs[0], outputs[-1]
        tags = tf.nn.sigmoid(logits)
    sess = tf.compat.v1.Session()
    sess.run(tf.compat.v1.global_variables_initializer())
    tf.compat.v1.train.Saver().restore(sess, prefix)  # explicitly: a failure must raise

    # every variable of the graph equals what soundscape's reader gets from the files
    ours = read_checkpoint(prefix)
    variables = tf.compat.v1.global_variables()
    for var, value in zip(variables, sess.run(variables), strict=True):
        name = var.op.name
        assert name in ours, name
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    print(f"{len(variables)} restored variables equal the pure-Python reader's", file=sys.stderr)

    clips = []
    for shared, local in CLIPS:
        path = ROOT / local
        windows = []
        for batch in iter_windows(path, SR, WINDOW_S, HOP_S):
            mel = np.stack([log_mel(w) for w in batch.samples])
            t, e = sess.run([tags, penultimate], feed_dict={x: mel, is_training: False})
            for start, end, row, emb in zip(batch.start_s, batch.end_s, t, e, strict=True):
                top = np.argsort(-row, kind="stable")[:5]
                windows.append(
                    {
                        "start_s": float(start),
                        "end_s": float(end),
                        "top_tags": [config.MTT_LABELS[i] for i in top],
                        "tags": [round(float(v), 7) for v in row],
                        "embedding_norm": round(float(np.linalg.norm(emb)), 6),
                        "embedding_head": [round(float(v), 6) for v in emb[:EMBEDDING_SLICE]],
                    }
                )
        print(local, [w["top_tags"] for w in windows], file=sys.stderr)
        clips.append({"clip": shared, "file": local, "windows": windows})
    sess.close()

    result = {
        "source": "bench/musicnn_reference.py: musicnn 0.1.0 MTT_musicnn on TensorFlow "
        f"{tf.__version__}, librosa {librosa.__version__}, numpy {np.__version__}",
        "labels": list(config.MTT_LABELS),
        "window_s": WINDOW_S,
        "hop_s": HOP_S,
        "clips": clips,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
