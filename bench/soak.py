"""A soak under faults (issue 24, item 2): field audio through `watch` and 3 workers while a
fault driver breaks things and 20 clients search, then a ledger of what was stored.

    python bench/soak.py --hours 24            # `make soak`; the lead's long run
    python bench/soak.py --hours 1             # about an hour of audio
    python bench/soak.py --minutes 12 --quick  # what tests/test_soak.py runs (CI, marked slow)

What runs (all real: an embedded PostgreSQL in a temporary SOUNDSCAPE_HOME, the `soundscape`
CLI as subprocesses, real audio from ../shared/audio):

- **Audio.** Recorder files (AudioMoth names, ``YYYYMMDD_HHMMSS.WAV``, 48 kHz mono 16-bit,
  whole seconds) for a few sensors: the Xeno-canto soundscape looped, quiet and noise stretches,
  real clips mixed in at random offsets. Staged in a hidden folder, then "copied" into each
  sensor's watched folder over ``--drop-minutes``: some renamed in at once, some written in
  pieces a second or two apart (a card copy), so that ``watch --settle`` matters.
- **Ingest.** One ``soundscape watch`` per sensor folder (models birdnet,spectral) and
  ``--workers`` ``soundscape worker`` processes on the PostgreSQL job queue.
- **Faults** at random times (mean ``--fault-every`` s): kill -9 a worker (and start another),
  ``db stop``/``db start``, kill -9 of the postmaster (then ``db start``), "disk full" (the
  database's default tablespace for new tables is a size-capped tmpfs; a ballast file fills it
  for a while), bad files dropped into the watched folders (random bytes, a truncated WAV, a
  half-copied file never completed, an empty file). With ``--citus`` everything runs on a local
  Citus cluster (a coordinator and two workers: ``db_restart`` and ``postmaster_kill9`` hit the
  coordinator, no disk-full fault) and a worker node is stopped or killed for 5-30 s, during
  which probe searches through the coordinator must fail rather than answer from one node.
- **Clients.** ``--clients`` threads, half through the web page (``/search?like=<window>``,
  JSON) and half through SQL as a read-only reader role (``ranger.search_vector``). Every SQL
  answer (``auto`` or ``hnsw``) is compared with ``p_strategy => 'exact'`` in the same
  REPEATABLE READ transaction; every returned row of either kind is checked afterwards against
  the stored data (exists, its score is the exact cosine similarity, it passes the filter, no
  duplicates, not the query window). A row failing any of these is a **wrong row**; an exact
  neighbour scoring higher than a returned row but missing is a **miss** (recall, counted
  apart: an index may miss, it may not invent).
- **Ledger.** Every good file stored exactly once with every window of every space (counted from
  duration, window and hop), every bad file in ``ingest_errors`` exactly once and never stored,
  no job left queued or running, wrong rows 0; p50/p95 of the web search under load, the faults,
  the wall time, tracebacks seen in any log. Printed and written to bench/results/soak-*.json;
  exit code 1 if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("SOUNDSCAPE_SHARED_AUDIO", ROOT.parent / "shared" / "audio"))
RESULTS = ROOT / "bench" / "results"
RATE = 48000
#: (model, sample rate, window s, hop s): the spaces every good file must fill completely
SPACES = {"birdnet": (48000, 3.0, 2.0), "spectral": (16000, 3.0, 2.0)}
READER = "soak_reader"
READER_PASSWORD = "soak-reader-" + hashlib.sha256(os.urandom(16)).hexdigest()[:16]
SCORE_EPS = 2e-3  # scores are float32; the check recomputes them in float64 from the same rows


def now() -> float:
    return time.monotonic()


# ------------------------------------------------------------------------------- audio


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x
    try:
        import soxr

        return np.asarray(soxr.resample(x, rate, RATE), dtype=np.float32)
    except ImportError:  # pragma: no cover - soxr ships with the project's dependencies
        n = int(round(len(x) * RATE / rate))
        return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def _load(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = _resample(data.mean(axis=1), int(rate))
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return x / peak if peak > 0 else x


class Synth:
    """Field audio from the shared recordings: background stretches with clips mixed in."""

    def __init__(self, rng: random.Random, clips: int = 40) -> None:
        self.rng = rng
        self.background = _load(AUDIO / "soundscapes" / "xc563936.mp3")
        with open(AUDIO / "manifest.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["path"].startswith("clips/")]
        rng.shuffle(rows)
        self.clips = [(r["label"], _load(AUDIO / r["path"])) for r in rows[:clips]]

    def chunk(self, seconds: int, np_rng: np.random.Generator) -> np.ndarray:
        """``seconds`` of audio: forest (looped), quiet or noise stretches, clips mixed in."""
        n = seconds * RATE
        out = np.empty(n, dtype=np.float32)
        i = 0
        while i < n:
            length = min(n - i, RATE * self.rng.randint(20, 240))
            kind = self.rng.choices(["forest", "quiet", "noise"], [0.6, 0.2, 0.2])[0]
            if kind == "forest":
                start = self.rng.randrange(len(self.background))
                idx = (start + np.arange(length)) % len(self.background)
                out[i : i + length] = self.background[idx] * self.rng.uniform(0.2, 0.8)
            else:
                level = 0.001 if kind == "quiet" else 0.03
                out[i : i + length] = np_rng.normal(0, level, length).astype(np.float32)
            i += length
        t = self.rng.uniform(0, 20)
        while t < seconds - 1:
            _, clip = self.rng.choice(self.clips)
            at = int(t * RATE)
            piece = clip[: n - at] * self.rng.uniform(0.05, 0.6)
            out[at : at + len(piece)] += piece
            t += self.rng.uniform(8, 60)
        return np.clip(out, -1.0, 1.0)

    def write(self, path: Path, seconds: int, seed: int) -> None:
        """A 16-bit WAV written a minute at a time (a 30-minute file never sits in memory)."""
        np_rng = np.random.default_rng(seed)
        with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16", format="WAV") as f:
            left = seconds
            while left > 0:
                part = min(left, 60)
                f.write(self.chunk(part, np_rng))
                left -= part


def expected_windows(seconds: int, rate: int, window_s: float, hop_s: float) -> int:
    """Windows covering ``seconds`` (the rule documented in README/audio.n_windows, written out
    here again so that the ledger does not trust the code it checks)."""
    n, w, h = seconds * rate, round(window_s * rate), round(hop_s * rate)
    if n <= w:
        return 1
    full = (n - w) // h + 1
    tail = full * h < n and (full - 1) * h + w < n
    return full + int(tail)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------- plan


@dataclass
class FileSpec:
    sensor: str
    name: str
    seconds: int
    kind: str  # good | garbage | truncated | half | empty
    how: str  # rename | pieces (a card copy a piece at a time) | abandon (half copied)
    seed: int
    path: str = ""
    sha256: str = ""
    dropped_at: float | None = None

    @property
    def good(self) -> bool:
        return self.kind == "good"


def plan_files(
    rng: random.Random, sensors: list[str], total_s: int, file_s: tuple[int, int]
) -> list[FileSpec]:
    """Good files of ``file_s`` seconds (whole seconds) adding up to ``total_s`` per all
    sensors, each sensor's files back to back from 2024-05-01 00:00 UTC, in drop order."""
    clocks = dict.fromkeys(sensors, datetime(2024, 5, 1, tzinfo=timezone.utc))
    specs: list[FileSpec] = []
    left = total_s
    while left > 0:
        sensor = rng.choice(sensors)
        seconds = min(left, rng.randint(*file_s))
        if seconds < 10:
            break
        left -= seconds
        start = clocks[sensor]
        clocks[sensor] = start + timedelta(seconds=seconds)
        how = rng.choices(["rename", "pieces"], [0.5, 0.5])[0]
        specs.append(
            FileSpec(
                sensor,
                start.strftime("%Y%m%d_%H%M%S.WAV"),
                seconds,
                "good",
                how,
                rng.getrandbits(32),
            )
        )
    return specs


def bad_spec(rng: random.Random, sensor: str, kind: str, serial: int) -> FileSpec:
    """A bad file with a recorder name of its own (a year no good file uses)."""
    start = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=serial)
    how = "abandon" if kind == "half" else "rename"
    return FileSpec(
        sensor,
        start.strftime("%Y%m%d_%H%M%S.WAV"),
        rng.randint(20, 90),
        kind,
        how,
        rng.getrandbits(32),
    )


# ------------------------------------------------------------------------------- the run


@dataclass
class Fault:
    at_s: float
    kind: str
    detail: str = ""
    took_s: float | None = None
    ok: bool = True


@dataclass
class Stats:
    web_ms: list[float] = field(default_factory=list)
    sql_ms: list[float] = field(default_factory=list)
    web_queries: int = 0
    sql_queries: int = 0
    unavailable: int = 0  # refused/failed while the database was down or restarting
    errors: dict[str, int] = field(default_factory=dict)
    wrong_rows: int = 0
    wrong: list[dict[str, Any]] = field(default_factory=list)
    rows_checked: int = 0
    misses: int = 0
    web_compared: int = 0
    #: SQL answers per strategy and number of missed exact rows
    miss_histogram: dict[str, int] = field(default_factory=dict)
    web_misses: int = 0
    exact_agree: int = 0
    compared: int = 0
    #: SQL answers that missed exact rows: when, strategy, space, and the space's recall
    #: guard at that moment (ranger.index_recall), up to 100
    miss_log: list[dict[str, Any]] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.t0 = now()
        self.base = Path(tempfile.mkdtemp(prefix="soundscape-soak-"))
        self.base.chmod(0o711)  # the embedded server's own user must traverse it (root runs)
        self.home = self.base / "home"
        self.incoming = self.base / "incoming"
        self.stage = self.base / ".stage"
        self.logs = self.base / "logs"
        for d in (self.incoming, self.stage, self.logs):
            d.mkdir(parents=True)
        self.env = {**os.environ, "SOUNDSCAPE_HOME": str(self.home)}
        self.env.pop("SOUNDSCAPE_DATABASE_URL", None)
        self.soundscape = [sys.executable, "-m", "soundscape"]
        self.sensors = [f"soak-{i + 1}" for i in range(args.sensors)]
        self.files: list[FileSpec] = []
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.stats = Stats()
        self.findings: list[str] = []
        self.stop = threading.Event()  # clients and fault driver
        self.dropping_done = threading.Event()
        self.db_down = threading.Event()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.expected_exit: set[int] = set()
        self.worker_serial = 0
        self.bad_serial = 0
        self.pool: list[tuple[int, int, str, str]] = []  # (segment, space, vector text, sensor)
        self.small: Path | None = None
        self.disk_full_note = ""
        self.web_port = 0
        self.admin_url = ""
        self.cluster: Any = None  # a cluster.LocalCluster with --citus
        self.worker_down = threading.Event()  # a Citus worker node is stopped

    # -- helpers ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        return now() - self.t0

    def say(self, msg: str) -> None:
        print(f"[{self.elapsed():7.1f}s] {msg}", file=sys.stderr, flush=True)

    def cli(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*self.soundscape, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"soundscape {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}"
            )
        return r

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            [*self.soundscape, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[name] = p
        return p

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)

    def url_now(self) -> str:
        if self.cluster is not None:
            return str(self.cluster.url())
        from soundscape import embedded_db

        st = embedded_db.status(self.home)
        url = st.url()
        if url is None:
            raise RuntimeError("the embedded server is not running")
        return url

    # -- set-up -----------------------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        self.say(f"soak in {self.base}: {a.total_s / 3600:.2f} h of audio, {a.sensors} sensors")
        if a.citus:
            self.setup_cluster()
        else:
            self.cli("db", "start")
        self.admin_url = self.url_now()
        for i, s in enumerate(self.sensors):
            self.cli(
                "sensors", "add", s, "--site", f"Soak {i % 2}", "--quadrant", "NESW"[i % 4],
                "--lat", f"{52.5 + i / 10:.3f}", "--lon", f"{13.4 + i / 10:.3f}",
                "--timezone", "UTC", "--update",
            )  # fmt: skip
            (self.incoming / s).mkdir()
        self.env_reader = {**self.env, "SOUNDSCAPE_READER_PASSWORD": READER_PASSWORD}
        r = subprocess.run(
            [*self.soundscape, "db", "create-reader", "--name", READER],
            env=self.env_reader, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"db create-reader failed: {r.stderr}")
        if self.cluster is None:
            self.setup_small_tablespace()
        else:
            self.disk_full_note = (
                "no disk-full fault with --citus: the windows live on the worker nodes, "
                "the small tablespace is the embedded server's"
            )
        plan_rng = random.Random(a.seed + 1)
        self.files = plan_files(plan_rng, self.sensors, a.total_s, a.file_s)
        self.synth = Synth(random.Random(a.seed + 2))
        self.web_port = _free_port()
        self.spawn("serve", "serve", "--port", str(self.web_port))
        for s in self.sensors:
            self.spawn_watch(s)
        for _ in range(a.workers):
            self.spawn_worker()
        self.wait_web()

    def setup_cluster(self) -> None:
        """--citus: a coordinator and two workers (``cluster.LocalCluster``, PostgreSQL 15 with
        Citus and pgvector built by ../shared/vendor/citus/build.sh) on free ports; every
        ``soundscape`` process of the soak talks to the coordinator (SOUNDSCAPE_DATABASE_URL),
        ``db upgrade`` distributes the tables."""
        from soundscape import cluster

        missing = cluster.citus_missing()
        if missing:
            raise RuntimeError(f"--citus: {missing}; run ../shared/vendor/citus/build.sh as root")
        self.cluster = cluster.LocalCluster(
            self.base / "cluster", workers=2, port=cluster.free_port_range(3)
        )
        self.cluster.start()
        self.env["SOUNDSCAPE_DATABASE_URL"] = self.cluster.url()
        r = self.cli("db", "upgrade", timeout=600)
        self.say(f"Citus cluster on port {self.cluster.port}: {r.stderr.strip()[-300:]}")

    def setup_small_tablespace(self) -> None:
        """New tables (the spaces' partitions, created at the first ingest) go to a tablespace
        on a tmpfs of ``--disk-mb`` MB, which the disk-full fault fills with a ballast file."""
        small = self.base / "small"
        small.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.args.disk_mb}m,mode=0711", "tmpfs", str(small)],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            self.disk_full_note = (
                f"no disk-full fault: cannot mount a tmpfs here ({r.stderr.strip()})"
            )
            self.say(self.disk_full_note)
            return
        self.small = small
        ts = small / "ts"
        ts.mkdir()
        owner = self.pg_owner()
        os.chown(ts, owner[0], owner[1])
        ts.chmod(0o700)
        with self.admin() as conn:
            conn.execute(f"CREATE TABLESPACE soak_small LOCATION '{ts}'")
            conn.execute("ALTER DATABASE soundscape SET default_tablespace = soak_small")
        self.disk_full_note = (
            f"a {self.args.disk_mb} MB tmpfs holds the tablespace of every table created after "
            "set-up (the spaces' segment partitions and their indexes); the fault fills it with "
            "a ballast file (ENOSPC on every write there: SQLSTATE 53100), holds, then frees it. "
            "WAL and the tables made by the migrations stay on the main disk."
        )

    def pg_owner(self) -> tuple[int, int]:
        st = (self.home / "pgdata").stat()
        return st.st_uid, st.st_gid

    def spawn_watch(self, sensor: str) -> None:
        a = self.args
        self.spawn(
            f"watch-{sensor}", "watch", str(self.incoming / sensor), "-s", sensor,
            "-m", a.models, "--interval", str(a.interval), "--settle", str(a.settle),
        )  # fmt: skip

    def spawn_worker(self) -> str:
        self.worker_serial += 1
        name = f"worker-{self.worker_serial}"
        a = self.args
        self.spawn(
            name, "worker", "--lease", str(a.lease), "--poll", "2", "--backoff", str(a.backoff),
            "--max-attempts", str(a.max_attempts),
        )  # fmt: skip
        return name

    def wait_web(self, timeout: float = 120) -> None:
        end = now() + timeout
        while now() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz", timeout=5):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        raise RuntimeError(f"soundscape serve did not answer: {self.tail('serve')}")

    def tail(self, name: str, n: int = 3000) -> str:
        try:
            return (self.logs / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- dropping files ---------------------------------------------------------------------
    def dropper(self) -> None:
        try:
            span = self.args.drop_s
            goods = [f for f in self.files if f.good]  # bad files are dropped by the faults
            n = len(goods)
            for i, spec in enumerate(goods):
                due = self.t0_drop + span * i / max(n, 1)
                while not self.stop.is_set() and now() < due:
                    time.sleep(min(1.0, due - now()))
                if self.stop.is_set():
                    return
                self.drop(spec)
        finally:
            self.dropping_done.set()

    def stage_file(self, spec: FileSpec) -> Path:
        staged = self.stage / f"{spec.sensor}-{spec.name}"
        self.synth.write(staged, spec.seconds, spec.seed)
        rng = random.Random(spec.seed)
        if spec.kind == "garbage":
            size = staged.stat().st_size
            staged.write_bytes(rng.randbytes(min(size, 2_000_000)))
        elif spec.kind == "truncated":
            with open(staged, "r+b") as f:  # the header still says the whole length
                f.truncate(int(staged.stat().st_size * rng.uniform(0.3, 0.8)))
        elif spec.kind == "empty":
            staged.write_bytes(b"")
        return staged

    def drop(self, spec: FileSpec) -> None:
        staged = self.stage_file(spec)
        dest = self.incoming / spec.sensor / spec.name
        spec.path = str(dest)
        data_len = staged.stat().st_size
        if spec.kind == "half":  # a copy that stopped half way and was never finished
            with open(staged, "rb") as src, open(dest, "wb") as out:
                out.write(src.read(data_len // 2))
        elif spec.how == "pieces":  # a card copy: pieces a little apart (less than --settle)
            pieces = random.Random(spec.seed).randint(3, 6)
            step = math.ceil(data_len / pieces)
            with open(staged, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(step):
                    out.write(chunk)
                    out.flush()
                    time.sleep(random.uniform(0.3, self.args.settle * 0.4))
        else:
            os.replace(staged, dest)
        spec.sha256 = sha256(dest)
        spec.dropped_at = self.elapsed()
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        self.say(f"dropped {spec.kind} {spec.sensor}/{spec.name} ({spec.seconds} s, {spec.how})")

    # -- faults -----------------------------------------------------------------------------
    def fault_driver(self) -> None:
        kinds = dict(self.args.fault_weights)
        if self.small is None:
            kinds.pop("disk_full", None)
        if not self.args.citus:
            kinds.pop("citus_worker", None)
        schedule = list(self.args.fault_script or [])
        while not self.stop.is_set():
            wait = self.rng.expovariate(1.0 / self.args.fault_every)
            if self.stop.wait(wait):
                return
            if self.dropping_done.is_set() and self.queue_empty() and not schedule:
                return  # the work is done: let the queue settle and check
            if self.args.max_faults is not None and len(self.faults) >= self.args.max_faults:
                return
            kind = (
                schedule.pop(0)
                if schedule
                else self.rng.choices(list(kinds), list(kinds.values()))[0]
            )
            started = now()
            fault = Fault(round(self.elapsed(), 1), kind)
            try:
                fault.detail = getattr(self, f"fault_{kind}")()
            except Exception as exc:  # noqa: BLE001 - a failed fault is itself a finding
                fault.ok, fault.detail = False, f"{type(exc).__name__}: {exc}"
                self.finding(f"fault {kind} could not be injected or recovered: {exc}")
            fault.took_s = round(now() - started, 1)
            with self.lock:
                self.faults.append(fault)
            self.say(f"fault {kind}: {fault.detail} ({fault.took_s} s)")

    def finding(self, text: str) -> None:
        with self.lock:
            self.findings.append(f"[{self.elapsed():.0f}s] {text}")
        self.say(f"FINDING: {text}")

    def fault_kill_worker(self) -> str:
        live = [n for n, p in self.procs.items() if n.startswith("worker-") and p.poll() is None]
        if not live:
            return "no live worker"
        name = self.rng.choice(live)
        p = self.procs[name]
        self.expected_exit.add(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        new = self.spawn_worker()
        return f"SIGKILL {name} (pid {p.pid}); started {new}"

    def fault_db_restart(self) -> str:
        self.db_down.set()
        if self.cluster is not None:  # the coordinator
            try:
                t = now()
                self.cluster.stop_node(0)
                stop_s = now() - t
                time.sleep(self.rng.uniform(2, 8))
                self.start_db()
                return f"coordinator stop ({stop_s:.1f} s), down, start"
            finally:
                self.db_down.clear()
        try:
            t = now()
            r = self.cli("db", "stop", check=False, timeout=120)
            stop_s = now() - t
            if r.returncode != 0:
                self.finding(f"db stop exited {r.returncode}: {r.stderr.strip()[-500:]}")
            time.sleep(self.rng.uniform(2, 8))
            self.start_db()
            return f"db stop ({stop_s:.1f} s), down, db start"
        finally:
            self.db_down.clear()

    def fault_postmaster_kill9(self) -> str:
        from soundscape import embedded_db

        self.db_down.set()
        if self.cluster is not None:
            try:
                return self._kill9_node(0)
            finally:
                self.db_down.clear()
        try:
            st = embedded_db.status(self.home)
            if not st.running or st.pid is None:
                self.start_db()
                return "server was not running; started"
            os.kill(st.pid, signal.SIGKILL)
            time.sleep(self.rng.uniform(1, 5))
            took = self.start_db()
            return f"SIGKILL postmaster {st.pid}; db start succeeded after {took:.1f} s"
        finally:
            self.db_down.clear()

    def start_db(self, timeout: float = 180) -> float:
        """``db start`` until it works (after a kill -9 the old backends may hold the shared
        memory for a while); returns the seconds it took."""
        t = now()
        last = ""
        tries = 0
        if self.cluster is not None:
            return self._start_node(0, timeout)
        while now() - t < timeout:
            tries += 1
            r = self.cli("db", "start", check=False, timeout=120)
            if r.returncode == 0:
                self.admin_url = self.url_now()
                if tries > 1:
                    self.say(f"db start needed {tries} tries: last refusal {last[-300:]}")
                return now() - t
            last = r.stderr.strip()
            time.sleep(2)
        raise RuntimeError(f"db start failed for {timeout:.0f} s: {last[-800:]}")

    def fault_disk_full(self) -> str:
        assert self.small is not None
        ballast = self.small / "ballast"
        hold = self.rng.uniform(*self.args.disk_full_hold)
        written = 0
        block = b"\0" * (1 << 20)
        with open(ballast, "wb") as f:
            try:
                while True:
                    f.write(block)
                    f.flush()
                    written += len(block)
            except OSError:
                pass
        # keep it full while ingest and autovacuum free and take pages: top up now and then
        end = now() + hold
        while now() < end and not self.stop.is_set():
            time.sleep(1)
            with contextlib.suppress(OSError), open(ballast, "ab") as f:
                while True:
                    f.write(block[: 1 << 16])
        ballast.unlink()
        return f"filled the {self.args.disk_mb} MB tablespace ({written >> 20} MB of ballast) for {hold:.0f} s"

    def fault_bad_files(self) -> str:
        kinds = ["garbage", "truncated", "half", "empty"]
        made = []
        for _ in range(self.rng.randint(1, 3)):
            self.bad_serial += 1
            spec = bad_spec(
                self.rng, self.rng.choice(self.sensors), self.rng.choice(kinds), self.bad_serial
            )
            self.drop(spec)
            with self.lock:
                self.files.append(spec)
            made.append(f"{spec.kind} {spec.sensor}/{spec.name}")
        return ", ".join(made)

    def _start_node(self, node: int, timeout: float = 180) -> float:
        """Start a Citus node until it works; the seconds it took."""
        t = now()
        last = ""
        while now() - t < timeout:
            try:
                self.cluster.start_node(node)
                return now() - t
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                last = str(exc)
                if self.cluster._data(node).joinpath("postmaster.pid").exists():
                    with (
                        contextlib.suppress(Exception),
                        psycopg.connect(self.cluster.url(node), connect_timeout=5),
                    ):
                        return now() - t  # it is up (pg_ctl start refused a running server)
            time.sleep(2)
        raise RuntimeError(f"node {node} did not start for {timeout:.0f} s: {last[-800:]}")

    def _kill9_node(self, node: int) -> str:
        pidfile = self.cluster._data(node) / "postmaster.pid"
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(self.rng.uniform(1, 5))
        took = self._start_node(node)
        return f"SIGKILL postmaster of node {node} (pid {pid}); started after {took:.1f} s"

    def fault_citus_worker(self) -> str:
        """Stop a Citus worker node (fast shutdown or kill -9 of its postmaster), keep it down
        for a while, start it again. While it is down, a search through the coordinator must
        fail, never answer from the other node's rows alone: probed here (a silent partial
        answer is a wrong answer)."""
        node = self.rng.randint(1, self.cluster.workers)
        how = self.rng.choice(["fast", "kill9"])
        self.worker_down.set()
        try:
            if how == "fast":
                self.cluster.stop_node(node)
            else:
                pid = int((self.cluster._data(node) / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
            hold = self.rng.uniform(5, 30)
            probe = self.probe_partial(hold)
            took = self._start_node(node)
            return (
                f"worker node {node} down ({how}) for {hold:.0f} s, {probe}; "
                f"started after {took:.1f} s"
            )
        finally:
            self.worker_down.clear()

    def probe_partial(self, seconds: float) -> str:
        """While a worker is down: searches and a count through the coordinator, each of which
        must raise; an answer is a wrong answer (rows of one node only)."""
        end = now() + seconds
        refused = answered = 0
        while now() < end:
            q = self.pick()
            try:
                with self.admin() as conn:
                    if q is None:
                        conn.execute("SELECT count(*) FROM segments").fetchone()
                    else:
                        conn.execute(
                            "SELECT segment_id FROM ranger.search_vector(%s, CAST(%s AS vector), "
                            "10, p_strategy => %s)",
                            (q[1], q[2], self.rng.choice(["auto", "hnsw", "exact"])),
                        ).fetchall()
                answered += 1
                self.wrong("a search answered while a Citus worker was down", space=q and q[1])
            except psycopg.Error:
                refused += 1
            time.sleep(1)
        return f"{refused} probe searches refused, {answered} answered"

    # -- supervision ------------------------------------------------------------------------
    def supervise(self) -> None:
        """Restart a watch/serve/worker that died on its own (each such death is a finding)."""
        while not self.stop.wait(2):
            for name, p in list(self.procs.items()):
                if p.poll() is None or p.pid in self.expected_exit:
                    continue
                self.expected_exit.add(p.pid)
                self.finding(
                    f"{name} exited on its own with {p.returncode}: {self.tail(name, 800)!r}"
                )
                if name.startswith("watch-"):
                    self.spawn_watch(name.removeprefix("watch-"))
                elif name.startswith("worker-"):
                    del self.procs[name]
                    self.spawn_worker()
                elif name == "serve":
                    self.spawn("serve", "serve", "--port", str(self.web_port))

    # -- clients ----------------------------------------------------------------------------
    def refresh_pool(self) -> None:
        while not self.stop.is_set():
            if not self.db_down.is_set():
                try:
                    with self.admin() as conn:
                        rows = conn.execute(
                            "SELECT g.id, g.space_id, g.embedding::text, s.name FROM segments g "
                            "JOIN recordings r ON r.id = g.recording_id "
                            "JOIN sensors s ON s.id = r.sensor_id "
                            "ORDER BY random() LIMIT 200"
                        ).fetchall()
                    if rows:
                        self.pool = [(int(a), int(b), c, d) for a, b, c, d in rows]
                except psycopg.Error:
                    pass
            self.stop.wait(10)

    def pick(self) -> tuple[int, int, str, str] | None:
        pool = self.pool
        return random.choice(pool) if pool else None

    def error(self, kind: str) -> None:
        with self.lock:
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1

    def wrong(self, what: str, **detail: Any) -> None:
        with self.lock:
            self.stats.wrong_rows += 1
            if len(self.stats.wrong) < 50:
                self.stats.wrong.append({"what": what, "at_s": round(self.elapsed(), 1), **detail})
        self.say(f"WRONG ROW: {what} {detail}")

    def verify_rows(
        self, rows: list[tuple[int, float]], vector: str, space: int, sensor: str | None,
        exclude: int | None,
    ) -> None:  # fmt: skip
        """Check returned (segment, score) rows against the stored data (committed rows never
        change, so a later look is as good as the answer's own snapshot)."""
        ids = [r[0] for r in rows]
        if len(set(ids)) != len(ids):
            self.wrong("duplicate segment in one answer", ids=ids)
        if exclude is not None and exclude in ids:
            self.wrong("the query window itself returned", id=exclude)
        if not rows:
            return
        for attempt in range(5):
            try:
                with self.admin() as conn:
                    found = {
                        int(i): (float(sc), sn)
                        for i, sc, sn in conn.execute(
                            "SELECT g.id, 1 - (g.embedding <=> CAST(%s AS vector)), s.name "
                            "FROM segments g JOIN recordings r ON r.id = g.recording_id "
                            "JOIN sensors s ON s.id = r.sensor_id "
                            "WHERE g.space_id = %s AND g.id = ANY(%s)",
                            (vector, space, ids),
                        )
                    }
                break
            except psycopg.OperationalError:
                time.sleep(3 * (attempt + 1))
        else:
            self.error("verify-unavailable")
            return
        with self.lock:
            self.stats.rows_checked += len(rows)
        for seg, score in rows:
            if seg not in found:
                self.wrong("row not in the stored data (never committed?)", id=seg, space=space)
            elif abs(found[seg][0] - score) > SCORE_EPS:
                self.wrong(
                    "score is not the exact similarity", id=seg, got=score, exact=found[seg][0]
                )
            elif sensor is not None and found[seg][1] != sensor:
                self.wrong(
                    "row outside the sensor filter", id=seg, sensor=found[seg][1], want=sensor
                )

    def web_client(self, i: int) -> None:
        rng = random.Random(self.args.seed * 100 + i)
        while not self.stop.is_set():
            self.stop.wait(rng.uniform(*self.args.think))
            q = self.pick()
            if q is None or self.stop.is_set():
                continue
            seg, space, vector, sensor = q
            params: dict[str, Any] = {"like": seg, "limit": 10, "format": "json"}
            want_sensor = sensor if rng.random() < 0.3 else None
            if want_sensor:
                params["sensor"] = want_sensor
            url = f"http://127.0.0.1:{self.web_port}/search?{urllib.parse.urlencode(params)}"
            down = self.db_down.is_set() or self.worker_down.is_set()
            before = self.exact_now(space, vector, want_sensor, seg)
            t = now()
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    body = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                code = getattr(exc, "code", None)
                if down or self.db_down.is_set() or self.worker_down.is_set():
                    with self.lock:
                        self.stats.unavailable += 1
                    self.error(f"web during a database fault: {code or type(exc).__name__}")
                else:
                    self.error(f"web {code or type(exc).__name__}")
                continue
            ms = (now() - t) * 1000
            with self.lock:
                self.stats.web_queries += 1
                self.stats.web_ms.append(ms)
            hits = body.get("hits", [])
            rows = [(int(h["segment_id"]), float(h["score"])) for h in hits]
            self.verify_rows(rows, vector, space, want_sensor, exclude=seg)
            if before is not None:  # rows committed before the request that it should have had
                missed = self.missed(rows, before, 10)
                with self.lock:
                    self.stats.web_compared += 1
                    self.stats.web_misses += len(missed)

    def exact_now(
        self, space: int, vector: str, sensor: str | None, exclude: int
    ) -> list[tuple[int, float]] | None:
        """The exact top 10 over the rows committed now (None if the database is away)."""
        try:
            with self.admin() as conn:
                return [
                    (int(a), float(b))
                    for a, b in conn.execute(
                        "SELECT segment_id, score FROM ranger.search_vector(%s, "
                        "CAST(%s AS vector), 10, p_sensors => %s, p_exclude => %s, "
                        "p_strategy => 'exact')",
                        (space, vector, [sensor] if sensor else None, exclude),
                    )
                ]
        except psycopg.Error:
            return None

    @staticmethod
    def missed(got: list[tuple[int, float]], exact: list[tuple[int, float]], k: int) -> list[int]:
        """Exact rows scoring above the answer's last row (any, if it has fewer than k)
        that the answer lacks."""
        ids = {s for s, _ in got}
        floor = min(sc for _, sc in got) if len(got) >= k else -math.inf
        return [s for s, sc in exact if s not in ids and sc > floor + SCORE_EPS]

    def sql_client(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            self.stop.wait(rng.uniform(*self.args.think))
            q = self.pick()
            if q is None or self.stop.is_set():
                continue
            seg, space, vector, sensor = q
            want_sensor = sensor if rng.random() < 0.3 else None
            strategy = rng.choice(["auto", "auto", "hnsw"])
            down = self.db_down.is_set() or self.worker_down.is_set()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.reader_url(), connect_timeout=10)
                t = now()
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    sql = (
                        "SELECT segment_id, score FROM ranger.search_vector(%s, CAST(%s AS vector), "
                        "10, p_sensors => %s, p_exclude => %s, p_strategy => %s)"
                    )
                    sensors = [want_sensor] if want_sensor else None
                    got = conn.execute(sql, (space, vector, sensors, seg, strategy)).fetchall()
                    ms = (now() - t) * 1000
                    exact = conn.execute(sql, (space, vector, sensors, seg, "exact")).fetchall()
            except psycopg.Error as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                if (
                    down
                    or self.db_down.is_set()
                    or self.worker_down.is_set()
                    or isinstance(exc, psycopg.OperationalError)
                ):
                    with self.lock:
                        self.stats.unavailable += 1
                else:
                    self.error(f"sql {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                continue
            rows = [(int(a), float(b)) for a, b in got]
            ex = [(int(a), float(b)) for a, b in exact]
            with self.lock:
                self.stats.sql_queries += 1
                self.stats.sql_ms.append(ms)
                self.stats.compared += 1
            if self.compare(rows, ex, strategy):
                self.log_miss(space, strategy, rows, ex)
            self.verify_rows(rows, vector, space, want_sensor, exclude=seg)
        if conn is not None:
            conn.close()

    def log_miss(
        self, space: int, strategy: str, got: list[tuple[int, float]],
        exact: list[tuple[int, float]],
    ) -> None:  # fmt: skip
        """Record a missing answer with the space's recall guard as it stands now."""
        if len(self.stats.miss_log) >= 100:
            return
        entry: dict[str, Any] = {
            "at_s": round(self.elapsed(), 1), "space": space, "strategy": strategy,
            "missed": len(self.missed(got, exact, 10)),
        }  # fmt: skip
        try:
            with self.admin() as conn:
                row = conn.execute(
                    "SELECT checked_at, n_windows, recall, guard, guard_ef "
                    "FROM ranger.index_recall(%s)",
                    (space,),
                ).fetchone()
                n = conn.execute(
                    "SELECT count(*) FROM segments WHERE space_id = %s", (space,)
                ).fetchone()
            entry["windows_now"] = int(n[0]) if n else None
            if row is not None:
                entry.update(
                    checked_at=str(row[0]), checked_windows=row[1], recall=row[2],
                    guard=row[3], guard_ef=row[4],
                )  # fmt: skip
        except psycopg.Error as exc:
            entry["guard_unknown"] = type(exc).__name__
        with self.lock:
            self.stats.miss_log.append(entry)

    def compare(
        self, got: list[tuple[int, float]], exact: list[tuple[int, float]], strategy: str
    ) -> bool:
        """An answer against the exact one of the same snapshot: a row scoring above exact's
        best, or fewer rows than exact found, is wrong; a better exact row not returned is a
        miss (an index's recall)."""
        if not exact:
            if got:
                self.wrong("rows where exact finds none", strategy=strategy, got=got[:3])
            return False
        best = exact[0][1]
        for seg, score in got:
            if score > best + SCORE_EPS:
                self.wrong("a row better than exact's best", strategy=strategy, id=seg, score=score)
        if len(got) < len(exact) and strategy == "auto":
            self.wrong("fewer rows than exact", strategy=strategy, got=len(got), exact=len(exact))
        missed = self.missed(got, exact, 10)
        with self.lock:
            self.stats.misses += len(missed)
            key = f"{strategy}: {len(missed)} missed"
            self.stats.miss_histogram[key] = self.stats.miss_histogram.get(key, 0) + 1
            if not missed and {round(sc, 3) for _, sc in got} == {round(sc, 3) for _, sc in exact}:
                self.stats.exact_agree += 1
        return bool(missed)

    def reader_url(self) -> str:
        if self.cluster is not None:
            pw = urllib.parse.quote(READER_PASSWORD)
            return f"postgresql://{READER}:{pw}@127.0.0.1:{self.cluster.port}/postgres"
        from soundscape import embedded_db

        st = embedded_db.status(self.home)
        if not st.running or st.socket_dir is None:
            raise psycopg.OperationalError("server down")
        port = f"&port={st.port}" if st.port and st.port != 5432 else ""
        pw = urllib.parse.quote(READER_PASSWORD)
        return f"postgresql://{READER}:{pw}@/soundscape?host={st.socket_dir}{port}"

    # -- the end ----------------------------------------------------------------------------
    def ensure_up(self) -> None:
        """Faults over: every server runs (a fault that failed may have left one down)."""
        if self.cluster is not None:
            for node in range(self.cluster.workers + 1):
                if not (self.cluster._data(node) / "postmaster.pid").exists():
                    self._start_node(node)
            return
        from soundscape import embedded_db

        if not embedded_db.status(self.home).running:
            self.start_db()

    def queue_counts(self) -> dict[str, int]:
        with self.admin() as conn:
            return {
                s: int(n) for s, n in conn.execute("SELECT status, count(*) FROM jobs GROUP BY 1")
            }

    def queue_empty(self) -> bool:
        try:
            counts = self.queue_counts()
        except psycopg.Error:
            return False
        with self.lock:
            dropped = len({f.path for f in self.files if f.dropped_at is not None})
        busy = counts.get("queued", 0) + counts.get("running", 0)
        return busy == 0 and sum(counts.values()) >= dropped

    def drain(self, timeout: float) -> bool:
        end = now() + timeout
        while now() < end:
            if self.queue_empty():
                time.sleep(self.args.settle + 2 * self.args.interval)  # a last scan
                if self.queue_empty():
                    return True
            time.sleep(3)
        return False

    def ledger(self) -> dict[str, Any]:
        with self.admin() as conn:
            spaces = {
                m: (int(i), float(w), float(h))
                for i, m, w, h in conn.execute("SELECT id, model, window_s, hop_s FROM spaces")
            }
            recs = conn.execute(
                "SELECT r.id, r.path, r.sha256, r.duration_s, "
                "coalesce(jsonb_object_agg(c.space_id, c.n) FILTER (WHERE c.space_id IS NOT NULL), '{}') "
                "FROM recordings r LEFT JOIN (SELECT recording_id, space_id, count(*) AS n, "
                "count(DISTINCT start_s) AS d FROM segments GROUP BY 1, 2) c ON c.recording_id = r.id "
                "GROUP BY r.id"
            ).fetchall()
            dup_windows = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM segments GROUP BY space_id, recording_id, start_s "
                "HAVING count(*) > 1) d"
            ).fetchone()[0]
            errors = conn.execute("SELECT path, sha256, error FROM ingest_errors").fetchall()
            jobs = {
                s: int(n) for s, n in conn.execute("SELECT status, count(*) FROM jobs GROUP BY 1")
            }
            failed_jobs = conn.execute(
                "SELECT path, last_error FROM jobs WHERE status = 'failed'"
            ).fetchall()
            left = conn.execute(
                "SELECT id, path, status, attempts, last_error FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchall()
        by_sha: dict[str, list[Any]] = {}
        for r in recs:
            by_sha.setdefault(r[2], []).append(r)
        good = [f for f in self.files if f.good and f.dropped_at is not None]
        bad = [f for f in self.files if not f.good and f.dropped_at is not None]
        lost, duplicated, partial, wrong_duration = [], [], [], []
        for f in good:
            found = by_sha.get(f.sha256, [])
            if not found:
                lost.append(f.path)
                continue
            if len(found) > 1:
                duplicated.append(f.path)
            rec = found[0]
            if abs(float(rec[3]) - f.seconds) > 1e-6:
                wrong_duration.append((f.path, rec[3], f.seconds))
            counts = rec[4]
            for model, (rate, _window, _hop) in SPACES.items():
                if model not in spaces:
                    partial.append((f.path, model, "no space"))
                    continue
                sid, w, h = spaces[model]
                want = expected_windows(f.seconds, rate, w, h)
                have = int(counts.get(str(sid), 0))
                if have != want:
                    partial.append((f.path, model, have, want))
        err_by_path: dict[str, int] = {}
        for path, _h, _e in errors:
            err_by_path[path] = err_by_path.get(path, 0) + 1
        bad_not_once = [
            (f.path, f.kind, err_by_path.get(f.path, 0))
            for f in bad
            if err_by_path.get(f.path, 0) != 1
        ]
        bad_stored = [f.path for f in bad if f.sha256 in by_sha]
        good_paths = {f.path for f in good}
        good_in_errors = sorted(p for p in err_by_path if p in good_paths)
        extra_recordings = [r[1] for r in recs if r[2] not in {f.sha256 for f in good}]
        return {
            "good_files": len(good),
            "good_audio_h": round(sum(f.seconds for f in good) / 3600, 3),
            "bad_files": len(bad),
            "bad_kinds": {
                k: sum(f.kind == k for f in bad) for k in ("garbage", "truncated", "half", "empty")
            },
            "recordings": len(recs),
            "windows_expected": {
                m: sum(expected_windows(f.seconds, *SPACES[m]) for f in good) for m in SPACES
            },
            "lost": lost,
            "duplicated": duplicated,
            "partial": partial,
            "duplicate_windows": int(dup_windows or 0),
            "wrong_duration": wrong_duration,
            "extra_recordings": extra_recordings,
            "bad_not_in_errors_once": bad_not_once,
            "bad_stored": bad_stored,
            "good_in_errors": good_in_errors,
            "jobs": jobs,
            "jobs_left": [list(map(str, r)) for r in left],
            "failed_jobs_of_good_files": [list(r) for r in failed_jobs if r[0] in good_paths],
        }

    def tracebacks(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for log in sorted(self.logs.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            found = [
                _last_line_after(lines, j)
                for j, ln in enumerate(lines)
                if ln.startswith("Traceback")
            ]
            if found:
                out[log.stem] = found[:10]
        return out

    def shutdown(self) -> None:
        self.stop.set()
        for p in self.procs.values():
            if p.poll() is None:
                self.expected_exit.add(p.pid)
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with contextlib.suppress(Exception):
            if self.cluster is not None:
                self.cluster.stop()
            else:
                self.cli("db", "stop", check=False, timeout=120)
        if self.small is not None:
            subprocess.run(["umount", "-l", str(self.small)], check=False)
        if not self.args.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def run(self) -> dict[str, Any]:
        a = self.args
        threads: list[threading.Thread] = []
        try:
            self.setup()
            self.t0_drop = now()
            threads.append(threading.Thread(target=self.dropper, name="dropper", daemon=True))
            threads.append(threading.Thread(target=self.supervise, name="supervise", daemon=True))
            threads.append(threading.Thread(target=self.refresh_pool, name="pool", daemon=True))
            n_web = a.clients // 2
            for i in range(n_web):
                threads.append(threading.Thread(target=self.web_client, args=(i,), daemon=True))
            for i in range(a.clients - n_web):
                threads.append(threading.Thread(target=self.sql_client, args=(i,), daemon=True))
            faults = threading.Thread(target=self.fault_driver, name="faults", daemon=True)
            for t in [*threads, faults]:
                t.start()
            self.dropping_done.wait()
            self.say("all files dropped; faults go on until the queue is empty")
            while faults.is_alive():
                faults.join(timeout=5)
                if self.elapsed() > a.max_wall_s:
                    self.finding(
                        f"the run passed --max-wall ({a.max_wall_s:.0f} s); stopping faults"
                    )
                    break
            # faults over: the server must be up, then the queue must drain on its own
            self.ensure_up()
            drained = self.drain(a.drain_s)
            if not drained:
                self.finding(f"the queue did not drain within {a.drain_s:.0f} s after the faults")
            self.stop.set()
            ledger = self.ledger()
        finally:
            self.stop.set()
            tracebacks = self.tracebacks() if self.logs.exists() else {}
            self.shutdown()
        s = self.stats
        report = {
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "args": {k: v for k, v in vars(a).items() if k not in ("fault_weights",)},
            "wall_s": round(self.elapsed(), 1),
            "ledger": ledger,
            "faults": [asdict(f) for f in self.faults],
            "fault_counts": {
                k: sum(f.kind == k for f in self.faults) for k in {f.kind for f in self.faults}
            },
            "disk_full": self.disk_full_note,
            "search": {
                "clients": a.clients,
                "web_queries": s.web_queries,
                "web_p50_ms": _pct(s.web_ms, 50),
                "web_p95_ms": _pct(s.web_ms, 95),
                "sql_queries": s.sql_queries,
                "sql_p50_ms": _pct(s.sql_ms, 50),
                "sql_p95_ms": _pct(s.sql_ms, 95),
                "rows_checked": s.rows_checked,
                "wrong_rows": s.wrong_rows,
                "wrong": s.wrong,
                "sql_compared_with_exact": s.compared,
                "sql_same_as_exact": s.exact_agree,
                "misses": s.misses,
                "sql_answers_by_misses": s.miss_histogram,
                "sql_misses_with_guard": s.miss_log,
                "web_compared_with_exact_before": s.web_compared,
                "web_misses": s.web_misses,
                "unavailable_during_faults": s.unavailable,
                "errors": s.errors,
            },
            "findings": self.findings,
            "tracebacks": tracebacks,
        }
        report["ok"] = _verdict(report)
        return report


def _last_line_after(lines: list[str], start: int) -> str:
    """The exception line of the traceback starting at ``start``."""
    for line in lines[start + 1 :]:
        if line and not line.startswith((" ", "Traceback")):
            return line[:300]
    return lines[start]


def _verdict(report: dict[str, Any]) -> dict[str, bool]:
    led = report["ledger"]
    return {
        "no_lost": not led["lost"],
        "no_duplicated": not led["duplicated"] and not led["duplicate_windows"],
        "no_partial": not led["partial"] and not led["wrong_duration"],
        "no_unexpected_recordings": not led["extra_recordings"],
        "bad_files_in_errors_once": not led["bad_not_in_errors_once"] and not led["bad_stored"],
        "no_job_stuck": not led["jobs_left"],
        "no_good_file_failed": not led["failed_jobs_of_good_files"],
        "wrong_rows_0": report["search"]["wrong_rows"] == 0,
    }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1], 1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _range(text: str, kind: type = float) -> tuple[Any, Any]:
    lo, _, hi = text.partition("-")
    return kind(lo), kind(hi or lo)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--hours", type=float, default=24.0, help="hours of good audio (all sensors)")
    p.add_argument("--minutes", type=float, help="minutes of good audio (instead of --hours)")
    p.add_argument("--sensors", type=int, default=3)
    p.add_argument("--file-minutes", default="10-30", help="length of a recorder file, min-max")
    p.add_argument("--drop-minutes", type=float, help="spread the drops over this many minutes "
                   "(default: 2.5 per hour of audio, at least 3)")  # fmt: skip
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--clients", type=int, default=20, help="search clients: half web, half SQL")
    p.add_argument("--think", default="2-6", help="seconds a client waits between searches")
    p.add_argument("--fault-every", type=float, default=60.0, help="mean seconds between faults")
    p.add_argument("--max-faults", type=int, help="inject at most this many faults")
    p.add_argument("--faults", help="a fixed script of faults to inject first, comma-separated")
    p.add_argument("--disk-mb", type=int, help="size of the small tablespace's tmpfs")
    p.add_argument("--disk-full-hold", default="15-40", help="seconds the disk stays full")
    p.add_argument("--models", default="birdnet,spectral")
    p.add_argument("--settle", type=float, default=8.0)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--backoff", type=float, default=5.0)
    p.add_argument("--max-attempts", type=int, default=10)
    p.add_argument("--drain-minutes", type=float, default=20.0)
    p.add_argument("--max-wall-hours", type=float, help="stop injecting faults after this")
    p.add_argument("--citus", action="store_true", help="run on a local Citus cluster (coordinator "
                   "+ 2 workers) and also stop a worker node; no disk-full fault")  # fmt: skip
    p.add_argument("--seed", type=int, default=24)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, audio)")
    p.add_argument("--quick", action="store_true", help="CI preset: short files, 4 clients, "
                   "every fault kind once")  # fmt: skip
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/soak-<time>.json)")
    a = p.parse_args(argv)
    a.total_s = int(round((a.minutes * 60) if a.minutes is not None else a.hours * 3600))
    if a.quick:
        a.file_minutes = "1-3" if a.file_minutes == "10-30" else a.file_minutes
        a.clients = min(a.clients, 4)
        a.fault_every = min(a.fault_every, 8.0)
        a.faults = a.faults or "bad_files,kill_worker,disk_full,db_restart,postmaster_kill9"
        a.max_faults = len(a.faults.split(",")) if a.max_faults is None else a.max_faults
        a.sensors = min(a.sensors, 2)
        a.disk_full_hold = "6-8"
        a.think = "1-3"
        a.settle = 4.0
        a.interval = 1.0
        a.lease = 15.0
        a.backoff = 2.0
    lo, hi = _range(a.file_minutes)
    a.file_s = (max(10, int(lo * 60)), max(10, int(hi * 60)))
    a.think = _range(a.think)
    a.disk_full_hold = _range(a.disk_full_hold)
    hours = a.total_s / 3600
    a.drop_s = 60 * (a.drop_minutes if a.drop_minutes is not None else max(3.0, 2.5 * hours))
    a.disk_mb = a.disk_mb or int(256 + 40 * hours)  # ~17 MB per hour of audio measured
    a.drain_s = a.drain_minutes * 60
    a.max_wall_s = (a.max_wall_hours or max(1.0, hours)) * 3600
    a.fault_script = [f for f in (a.faults or "").split(",") if f]
    if a.citus:  # no small tablespace on a cluster: a worker node stops instead
        a.fault_script = [("citus_worker" if f == "disk_full" else f) for f in a.fault_script]
    a.fault_weights = {
        "kill_worker": 3,
        "db_restart": 1.5,
        "postmaster_kill9": 1.5,
        "disk_full": 1.5,
        "bad_files": 2,
        "citus_worker": 2,
    }
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Soak(args).run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"soak-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    led, s = report["ledger"], report["search"]
    print(f"soak: {report['wall_s']:.0f} s wall, {led['good_audio_h']} h of audio in {led['good_files']} "
          f"good files, {led['bad_files']} bad files")  # fmt: skip
    print(f"  faults: {report['fault_counts']}")
    print(f"  lost {len(led['lost'])}, duplicated {len(led['duplicated'])}, partial {len(led['partial'])}, "
          f"bad files not in errors once {len(led['bad_not_in_errors_once'])}, jobs left {len(led['jobs_left'])}, "
          f"good files failed {len(led['failed_jobs_of_good_files'])}")  # fmt: skip
    print(f"  search: {s['web_queries']} web (p50 {s['web_p50_ms']} ms, p95 {s['web_p95_ms']} ms), "
          f"{s['sql_queries']} SQL (p50 {s['sql_p50_ms']} ms, p95 {s['sql_p95_ms']} ms); "
          f"{s['rows_checked']} rows checked, wrong rows {s['wrong_rows']}, misses {s['misses']}")  # fmt: skip
    for f in report["findings"]:
        print(f"  finding: {f}")
    for name, tbs in report["tracebacks"].items():
        print(f"  tracebacks in {name}: {tbs}")
    print(f"  verdict: {report['ok']}; written to {out}")
    return 0 if all(report["ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
