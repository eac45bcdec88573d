"""The soak under faults (bench/soak.py, issue 24) in a short version, and regressions for what
the soak found in the queue's commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT.parent / "shared" / "audio"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen = path.read_text(errors="replace")
        if text in seen:
            return seen
        if proc.poll() is not None:
            return path.read_text(errors="replace")
        time.sleep(0.3)
    return path.read_text(errors="replace")


@pytest.mark.parametrize("command", ["worker", "watch"])
def test_worker_and_watch_wait_for_an_unreachable_database(db_url, command, tmp_path):
    """Found by the soak: a worker (or watch) started while the server restarts exited 1
    ("cannot connect"); as a service it must wait and start once the server is back."""
    parts = urlsplit(db_url)
    query = parse_qs(parts.query)
    socket_dir = Path(query["host"][0])
    port = query.get("port", ["5432"])[0]
    sock = socket_dir / f".s.PGSQL.{port}"
    assert sock.exists()
    # A socket folder where the server is not (yet): the same URL, another host folder.
    empty = Path(tempfile.mkdtemp(prefix="soak-sock-"))
    try:
        query["host"] = [str(empty)]
        url = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        log = tmp_path / "log"
        args = ["worker", "--poll", "0.5"] if command == "worker" else ["watch", str(tmp_path)]
        if command == "watch":
            subprocess.run(
                [sys.executable, "-m", "soundscape", "sensors", "add", "s1", "-d", db_url],
                env=_env(),
                check=True,
                capture_output=True,
            )
            args += ["-s", "s1", "-m", "spectral", "--interval", "0.5"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "soundscape", *args, "-d", url],
                env=_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            seen = _wait_for(log, "waiting for the database", proc, 60)
            assert proc.poll() is None, f"{command} exited {proc.returncode}: {seen}"
            assert "waiting for the database" in seen
            os.symlink(sock, empty / sock.name)  # the server is back
            started = "worker(s) on" if command == "worker" else "watching"
            seen = _wait_for(log, started, proc, 60)
            assert started in seen, seen
            assert proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM if command == "worker" else signal.SIGINT)
                proc.wait(timeout=60)
        assert proc.returncode == (0 if command == "worker" else 130)
    finally:
        for p in empty.iterdir():
            p.unlink()
        empty.rmdir()


def test_worker_once_still_fails_fast_without_a_database(tmp_path):
    """--once (cron, CI) does not wait: an unreachable database is exit 1 with the reason."""
    empty = Path(tempfile.mkdtemp(prefix="soak-sock-"))
    try:
        url = f"postgresql+psycopg://postgres@/soundscape?host={empty}"
        r = subprocess.run(
            [sys.executable, "-m", "soundscape", "worker", "--once", "-d", url],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        empty.rmdir()
    assert r.returncode == 1
    assert "cannot connect" in r.stderr


@pytest.mark.slow
def test_soak_short(tmp_path):
    """The soak, short: ~12 minutes of field audio for 3 sensors through watch and 3 workers,
    with each fault once or more (kill -9 of a worker, db restart, kill -9 of the postmaster,
    a full tablespace, bad files) and 4 searching clients; every check of the ledger holds."""
    if not (SHARED_AUDIO / "soundscapes" / "xc563936.mp3").exists():
        pytest.skip("needs ../shared/audio")
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            "12",
            "--quick",
            "--drop-minutes",
            "1",
            "--out",
            str(out),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), r.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["ok"] == dict.fromkeys(report["ok"], True), (r.stdout, report["findings"])
    led = report["ledger"]
    assert led["good_files"] >= 4 and led["bad_files"] >= 2
    kinds = set(report["fault_counts"])
    assert {"kill_worker", "db_restart", "postmaster_kill9", "bad_files"} <= kinds
    assert report["search"]["rows_checked"] > 0
    assert report["search"]["wrong_rows"] == 0
    assert r.returncode == 0, r.stdout
