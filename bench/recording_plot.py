"""The recording page's plot of a long file (issue 23): first view, from the stored overview
against decoding the audio (what every first view did before migration 0037).

    python bench/recording_plot.py [--hours 1] [--repeat 3]

A scratch embedded database gets one recording of ``--hours`` (the real forest soundscape
with real clips mixed in, 32 kHz WAV) ingested with the ``spectral`` model (cheap: the plot
does not depend on the model). Then, in process through the app's ASGI interface (server
time, no network; the figure cache emptied before every request):

- ``GET /recordings/<id>/plot.png`` with the overview stored at ingest (the first view now);
- the same figure drawn by decoding the audio (``plots.recording_plot`` without an overview:
  every first view before);
- a first view that has to backfill the overview (a recording ingested before 0037);
- what the overview costs: the ingest's extra time (``compute_overview`` alone) and its size.

Results go to bench/results/recording_plot-*.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, make_recording, write_result  # noqa: E402


def median_s(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2),
            "n": repeat}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    result: dict = {"machine": machine(), "args": vars(args)}
    scratch = ScratchDatabase()
    try:
        from fastapi.testclient import TestClient

        from soundscape import plots
        from soundscape.ingest import Ingestor
        from soundscape.overview_images import compute_overview
        from soundscape.web import WebConfig, create_app, media

        path = make_recording(scratch.home / "20240501_020000.wav", args.hours * 3600, 32000)
        t = time.perf_counter()
        stored = Ingestor(scratch.db.engine, "bench", ["spectral"]).ingest_file(path)
        result["ingest_s"] = round(time.perf_counter() - t, 1)
        assert stored.status == "stored", stored.reason
        rid = stored.recording_id
        t = time.perf_counter()
        compute_overview(path)
        result["overview_compute_s"] = round(time.perf_counter() - t, 2)
        with scratch.db.engine.connect() as conn:
            result["overview_bytes"] = conn.execute(
                sa.text("SELECT length(image) FROM recording_overviews WHERE recording_id = :r"),
                {"r": rid},
            ).scalar()

        client = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), scratch.db))
        url = f"/recordings/{rid}/plot.png"

        def first_view() -> None:
            media.RECORDING_PNGS._items.clear()
            r = client.get(url)
            assert r.status_code == 200 and r.headers["x-spectrogram"] == "stored", r.headers

        client.get(url)  # warm up (imports, matplotlib)
        result["first_view_stored"] = median_s(first_view, args.repeat)

        def decoded() -> None:
            with scratch.db.engine.connect() as conn, tempfile.TemporaryDirectory() as tmp:
                conn.execute(sa.text("DELETE FROM recording_overviews"))
                made = plots.recording_plot(conn, rid, Path(tmp) / "p.png", width=1200,
                                            height=520)  # fmt: skip
                conn.rollback()
            assert made.details["spectrogram"] == "decoded"

        result["first_view_decoded"] = median_s(decoded, args.repeat)

        def backfill() -> None:
            with scratch.db.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM recording_overviews"))
            first_view()

        result["first_view_backfill"] = median_s(backfill, 1)
        result["machine"]["load_avg_at_end"] = os.getloadavg()
    finally:
        scratch.close()
    print(result)
    write_result("recording_plot", result)


if __name__ == "__main__":
    main()
