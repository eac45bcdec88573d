"""perch-hoplite's side of tests/test_hoplite.py, run in hoplite's own venv (perch-hoplite pins
numpy>=2, which clashes with soundscape's CLAP pins; ``make hoplite-venv`` makes it).

    python tests/hoplite_peer.py build DB SPEC.json VECTORS.npy
        a hoplite database made through hoplite's own API (SQLiteUSearchDB): the deployments,
        recordings, windows (with the rows of VECTORS.npy) and annotations of SPEC.json
    python tests/hoplite_peer.py build-legacy DB SPEC.json VECTORS.npy
        the same through perch-hoplite 0.1.3's API (the venv's hoplite-0.1 folder), the way
        BirdNET-Analyzer's embeddings command writes: a source per file (dataset
        birdnet_analyzer_dataset), an embedding per window with float32 [start, end] offsets,
        labels of windows, its settings in the metadata
    python tests/hoplite_peer.py search DB QUERIES.npy K
        open DB with hoplite and answer each query (a row of QUERIES.npy) its own two ways:
        brute force (``brutalism.brute_search``, numpy dot on hoplite's float16 vectors) and
        ``db.search`` (USearch HNSW, re-scored); prints JSON: ids and scores of both, and what
        the database holds (counts, deployments, annotations, metadata keys)

No soundscape imports: this runs where soundscape is not installed.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import numpy as np
from ml_collections import config_dict
from perch_hoplite.db import brutalism, datatypes, score_functions, sqlite_usearch_impl


def build(db_dir: str, spec_path: str, vectors_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    vectors = np.load(vectors_path)
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(
        db_dir, usearch_cfg=sqlite_usearch_impl.get_default_usearch_config(vectors.shape[1])
    )
    if spec.get("model_config"):
        db.insert_metadata("model_config", config_dict.ConfigDict(spec["model_config"]))
    deployments = {
        d["name"]: db.insert_deployment(
            d["name"], d["project"], latitude=d.get("latitude"), longitude=d.get("longitude")
        )
        for d in spec["deployments"]
    }
    window_ids = []
    for rec in spec["recordings"]:
        when = dt.datetime.fromisoformat(rec["datetime"]) if rec.get("datetime") else None
        rid = db.insert_recording(rec["filename"], when, deployments[rec["deployment"]])
        rows = rec["rows"]  # rows of VECTORS.npy, with their offsets
        windows = [{"recording_id": rid, "offsets": list(o)} for o in rec["offsets"]]
        ids = db.insert_windows_batch(windows, vectors[rows], handle_duplicates="allow")
        window_ids.extend(int(i) for i in ids)
        for a in rec.get("annotations", []):
            db.insert_annotation(
                rid, list(a["offsets"]), a["label"], datatypes.LabelType(a["label_type"]),
                a["provenance"], handle_duplicates="allow",
            )  # fmt: skip
    db.commit()
    db.db.close()
    print(json.dumps({"window_ids": window_ids}))


def build_legacy(db_dir: str, spec_path: str, vectors_path: str) -> None:
    from pathlib import Path

    for name in [m for m in sys.modules if m.startswith("perch_hoplite")]:
        del sys.modules[name]
    sys.path.insert(0, str(Path(sys.prefix) / "hoplite-0.1"))
    from perch_hoplite.db import interface as old_interface
    from perch_hoplite.db import sqlite_usearch_impl as old

    assert old.__file__ and "hoplite-0.1" in old.__file__, old.__file__
    with open(spec_path) as f:
        spec = json.load(f)
    vectors = np.load(vectors_path)
    db = old.SQLiteUsearchDB.create(
        db_path=db_dir, usearch_cfg=old.get_default_usearch_config(embedding_dim=1024)
    )
    db.insert_metadata(
        "birdnet_analyzer_settings",
        config_dict.ConfigDict({"BANDPASS_FMIN": 0, "BANDPASS_FMAX": 15000, "AUDIO_SPEED": 1.0}),
    )
    window_ids = []
    for rec in spec["recordings"]:
        ids = []
        for row, offsets in zip(rec["rows"], rec["offsets"]):
            source = old_interface.EmbeddingSource(
                "birdnet_analyzer_dataset", rec["filename"], np.array(offsets, np.float32)
            )
            ids.append(int(db.insert_embedding(vectors[row], source)))
        window_ids.extend(ids)
        for a in rec.get("annotations", []):
            window = ids[[o[0] for o in rec["offsets"]].index(a["offsets"][0])]
            label = old_interface.Label(
                window, a["label"], old_interface.LabelType(a["label_type"]), a["provenance"]
            )
            db.insert_label(label)
        db.commit()
    db.db.close()
    print(json.dumps({"window_ids": window_ids}))


def search(db_dir: str, queries_path: str, k: int) -> None:
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(db_dir)
    queries = np.load(queries_path)
    exact, approx = [], []
    for q in queries:
        res = brutalism.brute_search(db, q, k, score_fn=score_functions.numpy_dot)
        exact.append([[int(r.window_id), float(r.sort_score)] for r in res])
        ann = db.search(q, k, approximate=True)
        approx.append([[int(r.window_id), float(r.sort_score)] for r in ann])
    out = {
        "exact": exact,
        "approx": approx,
        "count_embeddings": int(db.count_embeddings()),
        "windows": len(db.match_window_ids()),
        "deployments": sorted(d.name for d in db.get_all_deployments()),
        "annotations": sorted(
            [a.label, int(a.label_type), a.provenance] for a in db.get_all_annotations()
        ),
        "metadata": sorted(db.get_metadata(None).keys()),
        "extra_columns": {t: sorted(c) for t, c in db.get_extra_table_columns().items()},
    }
    db.db.close()
    print(json.dumps(out))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "build":
        build(*args)
    elif cmd == "build-legacy":
        build_legacy(*args)
    elif cmd == "search":
        search(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(__doc__)
