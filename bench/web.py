"""The web page's server times (``soundscape serve``): a search page with 50 hits, the clip
endpoint, and memory while a 2-hour recording is streamed.

    python bench/web.py [--minutes 10] [--repeat 15] [--stream-hours 2]

A scratch embedded database is filled like the demo (examples/audio with BirdNET and the
spectral model) plus ``--minutes`` of the forest soundscape with real clips mixed in (BirdNET),
so a label query has 50 hits. Then, in process through the app's ASGI interface (server time,
no network):

- the search page for ``bird`` (label search, 50 hits) as HTML and as JSON, and a "more like
  this" page (vector search in the spectral space, 50 hits), each against the library's
  ``search()`` alone for the same request (the peer: what the page adds), and the search page
  without a query (its forms: sensors, concepts, classifiers);
- ``GET /clips/<id>.wav`` for 20 different windows, and ``/clips/<id>.png`` uncached and cached.

And with a real ``soundscape serve`` (uvicorn) process: a 2-hour 16 kHz WAV (230 MB) streamed
whole by a client while the server's resident memory is sampled every 20 ms, then a range
request for its last minute.

Results go to bench/results/web-*.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLES, ScratchDatabase, machine, make_recording, write_result  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn, repeat: int) -> dict:
    fn()  # warm up (imports, caches, first plan)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "n": repeat,
    }


def fill(scratch: ScratchDatabase, folder: Path, minutes: float) -> None:
    env = {**os.environ, "SOUNDSCAPE_HOME": str(scratch.home)}
    env.pop("SOUNDSCAPE_DATABASE_URL", None)
    soundscape = [sys.executable, "-m", "soundscape"]
    subprocess.run(
        [*soundscape, "ingest", str(EXAMPLES), "-s", "bench", "-m", "birdnet,spectral", "-q"],
        env=env,
        check=True,
    )
    long = make_recording(folder / "20240501_020000.wav", minutes * 60, rate=48000)
    subprocess.run(
        [*soundscape, "ingest", str(long), "-s", "bench", "-m", "birdnet,spectral", "-q"],
        env=env,
        check=True,
    )


def in_process(scratch: ScratchDatabase, repeat: int) -> dict:
    from fastapi.testclient import TestClient

    from soundscape.search import SearchRequest, search
    from soundscape.web import WebConfig, create_app

    app = create_app(WebConfig(allowed_hosts=["testserver"]), scratch.db)
    client = TestClient(app)
    out: dict = {}
    with scratch.db.engine.connect() as conn:
        like = conn.execute(
            sa.text(
                "SELECT g.id FROM segments g JOIN spaces s ON s.id = g.space_id "
                "WHERE s.name = 'spectral' ORDER BY g.id LIMIT 1 OFFSET 40"
            )
        ).scalar_one()
        windows = list(
            conn.execute(
                sa.text(
                    "SELECT g.id FROM segments g JOIN spaces s ON s.id = g.space_id "
                    "WHERE s.name = 'birdnet' ORDER BY g.id LIMIT 21 OFFSET 100"
                )
            ).scalars()
        )
        n_windows = conn.execute(sa.text("SELECT count(*) FROM segments")).scalar_one()
    out["windows_stored"] = n_windows

    out["empty search page (forms only)"] = timed(lambda: client.get("/search"), repeat)
    for name, query, request in (
        ("label search 'bird'", "q=bird&limit=50", SearchRequest(text="bird", limit=50)),
        ("more like this (spectral)", f"like={like}&limit=50", SearchRequest(like=like, limit=50)),
    ):
        html = client.get(f"/search?{query}")
        assert html.status_code == 200, html.text
        n_hits = html.text.count('class="hit"')

        def library(request: SearchRequest = request) -> None:
            with scratch.db.engine.connect() as conn:
                search(conn, request)

        out[name] = {
            "hits": n_hits,
            "page_html": timed(lambda q=query: client.get(f"/search?{q}"), repeat),
            "page_json": timed(
                lambda q=query: client.get(f"/search?{q}", headers={"Accept": "application/json"}),
                repeat,
            ),
            "library_search": timed(library, repeat),
        }
        page, lib = out[name]["page_html"]["median_ms"], out[name]["library_search"]["median_ms"]
        out[name]["page_over_library"] = round(page / lib, 2) if lib else None
        print(f"{name}: {out[name]}", file=sys.stderr)

    clip_times, png_cold, png_warm = [], [], []
    for segment_id in windows[1:]:
        t = time.perf_counter()
        r = client.get(f"/clips/{segment_id}.wav")
        clip_times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    for segment_id in windows[1:6]:
        for bucket in (png_cold, png_warm):
            t = time.perf_counter()
            assert client.get(f"/clips/{segment_id}.png").status_code == 200
            bucket.append((time.perf_counter() - t) * 1000)
    out["clip_wav_ms"] = {
        "median": round(statistics.median(clip_times), 1),
        "max": round(max(clip_times), 1),
        "n": len(clip_times),
        "bytes": len(r.content),
    }
    out["clip_png_ms"] = {
        "uncached_median": round(statistics.median(png_cold), 1),
        "cached_median": round(statistics.median(png_warm), 1),
    }
    print(f"clips: {out['clip_wav_ms']} {out['clip_png_ms']}", file=sys.stderr)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def streaming(scratch: ScratchDatabase, folder: Path, hours: float) -> dict:
    import httpx

    path = make_recording(folder / "two_hours.wav", hours * 3600, rate=16000)
    size = path.stat().st_size
    with scratch.db.engine.begin() as conn:
        recording_id = conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s, started_at) SELECT id, :p, repeat('0', 64), "
                ":n, 'wav', 16000, 1, :d, '2024-05-01T00:00:00Z' FROM sensors "
                "WHERE name = 'bench' RETURNING id"
            ),
            {"p": str(path), "n": size, "d": hours * 3600},
        ).scalar_one()
    port = _free_port()
    env = {**os.environ, "SOUNDSCAPE_HOME": str(scratch.home)}
    env.pop("SOUNDSCAPE_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "soundscape", "serve", "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        url = f"{base}/recordings/{recording_id}/audio"
        httpx.get(url, headers={"Range": "bytes=0-1023"})  # warm up the route
        baseline = rss_mb(proc.pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        received = 0
        t = time.perf_counter()
        with httpx.stream("GET", url, timeout=120) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(1 << 16):
                received += len(chunk)
        elapsed = time.perf_counter() - t
        t = time.perf_counter()
        last_minute = 16000 * 2 * 60
        tail = httpx.get(url, headers={"Range": f"bytes={size - last_minute}-"})
        seek_ms = (time.perf_counter() - t) * 1000
        done.set()
        sampler.join()
        assert received == size and tail.status_code == 206 and len(tail.content) == last_minute
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = {
        "file_mb": round(size / 1e6, 1),
        "hours": hours,
        "server_rss_before_mb": round(baseline, 1),
        "server_rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "stream_s": round(elapsed, 2),
        "throughput_mb_s": round(size / 1e6 / elapsed, 1),
        "range_last_minute_ms": round(seek_ms, 1),
    }
    print(f"streaming: {result}", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--stream-hours", type=float, default=2.0)
    args = ap.parse_args()
    result: dict = {"machine": machine(), "args": vars(args)}
    scratch = ScratchDatabase()
    folder = scratch.home / "audio"
    try:
        t = time.perf_counter()
        fill(scratch, folder, args.minutes)
        result["fill_s"] = round(time.perf_counter() - t, 1)
        result["in_process"] = in_process(scratch, args.repeat)
        result["streaming"] = streaming(scratch, folder, args.stream_hours)
        result["machine"]["load_avg_at_end"] = os.getloadavg()
    finally:
        scratch.close()
    write_result("web", result)


if __name__ == "__main__":
    main()
