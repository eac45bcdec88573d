"""Stored recordings are read by their stored identity only (issue 24, finding 2).

Real audio ingested with the spectral model into a real PostgreSQL; then a stored file is
replaced the ways an attacker (or an accident) would: a symbolic link to a secret, a parent
folder turned into a symbolic link, the same size with other bytes, a recording stored before
migration 0024. The web page's routes, clip export, review batches, ``plot recording`` and
``backfill`` must refuse each (410 on the web, exit 1 in the CLI, saying what to do) and serve
nothing of another file; a copy of the same content put back is still read.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa
from fastapi.testclient import TestClient

from soundscape.audio import decode_span
from soundscape.db import make_engine, open_database
from soundscape.web import WebConfig, create_app

from .conftest import Cli
from .reserve import EXAMPLES

NAMES = (
    "dog", "owl", "crow", "cuckoo", "saw", "fireworks", "lightningbolt", "blackbird", "firetruck"
)  # fmt: skip
SECRET = b"root:$6$saltsalt$notarealhashbutasecretone:19000:0:99999:7:::\n" * 64


@pytest.fixture(scope="module")
def world(module_db_url, tmp_path_factory):
    """Each example in its own folder (incoming/<name>/<name>.ogg), ingested with spectral;
    a secret text file and a secret recording (never ingested) beside them."""
    base = tmp_path_factory.mktemp("media")
    incoming = base / "incoming"
    for name in NAMES:
        (incoming / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / f"{name}.ogg", incoming / name / f"{name}.ogg")
    secrets = base / "secrets"
    secrets.mkdir()
    (secrets / "shadow").write_bytes(SECRET)
    shutil.copy(EXAMPLES / "violin.ogg", secrets / "private.ogg")
    run = Cli(module_db_url)
    run("sensors", "add", "north-1", "--timezone", "UTC")
    run("ingest", incoming, "-r", "-s", "north-1", "-m", "spectral", "-q")
    return module_db_url, incoming, secrets


@pytest.fixture(scope="module")
def engine(world):
    eng = make_engine(world[0])
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def client(world):
    database = open_database(world[0])
    with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database)) as c:
        yield c
    database.engine.dispose()


def _ids(engine, path: Path) -> tuple[int, int]:
    """(recording id, its first window's id) of the file stored from ``path``."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT r.id, min(g.id) FROM recordings r JOIN segments g ON g.recording_id = r.id "
                "WHERE r.path = :p GROUP BY r.id"
            ),
            {"p": str(path)},
        ).one()
    return int(row[0]), int(row[1])


def _urls(rec: int, seg: int) -> list[str]:
    return [
        f"/recordings/{rec}/audio",
        f"/recordings/{rec}/clip.wav?start=0&end=1",
        f"/recordings/{rec}/clip.png?start=0&end=1",
        f"/clips/{seg}.wav",
        f"/clips/{seg}.png",
        f"/recordings/{rec}/plot.png",
    ]


def _refused(client, rec: int, seg: int, secret: bytes | None, why: str) -> None:
    for url in _urls(rec, seg):
        for headers in ({}, {"Range": "bytes=0-99"}):
            r = client.get(url, headers=headers)
            assert r.status_code == 410, (url, r.status_code, r.content[:200])
            assert secret is None or secret not in r.content, url
            message = r.json()["error"]
            assert why in message and "--replace" in message, (url, message)


def test_the_identity_is_stored_at_ingest(world, engine):
    path = world[1] / "dog" / "dog.ogg"
    st = path.stat()
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT size_bytes, file_device, file_inode, file_mtime_ns FROM recordings "
                "WHERE path = :p"
            ),
            {"p": str(path)},
        ).one()
    assert tuple(int(v) for v in row) == (st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns)


def test_web_refuses_a_symlink_to_a_secret(world, engine, client):
    _, incoming, secrets = world
    path = incoming / "dog" / "dog.ogg"
    rec, seg = _ids(engine, path)
    ok = client.get(f"/recordings/{rec}/audio")
    assert ok.status_code == 200 and ok.content == path.read_bytes()
    path.unlink()
    path.symlink_to(secrets / "shadow")
    _refused(client, rec, seg, SECRET[:40], "symbolic link")


def test_web_refuses_a_symlink_to_another_recording(world, engine, client):
    """A secret *audio* file: served, it would decode into clips and spectrograms."""
    _, incoming, secrets = world
    path = incoming / "blackbird" / "blackbird.ogg"
    rec, seg = _ids(engine, path)
    path.unlink()
    path.symlink_to(secrets / "private.ogg")
    _refused(client, rec, seg, (secrets / "private.ogg").read_bytes()[200:400], "symbolic link")


def test_a_symlinked_parent_folder_is_refused(world, engine, client):
    """The very same file behind a folder that became a symbolic link: refused, since no
    stored path holds a link (ingest stores it resolved)."""
    _, incoming, _ = world
    path = incoming / "owl" / "owl.ogg"
    rec, seg = _ids(engine, path)
    moved = incoming.parent / "elsewhere"
    (incoming / "owl").rename(moved)
    (incoming / "owl").symlink_to(moved)
    assert path.read_bytes() == (moved / "owl.ogg").read_bytes()
    _refused(client, rec, seg, None, "symbolic link")
    r = client.get(f"/recordings/{rec}/audio")
    assert "'owl'" in r.json()["error"]  # names the folder that is a link


def test_same_size_other_bytes_is_refused(world, engine, client):
    _, incoming, _ = world
    path = incoming / "crow" / "crow.ogg"
    rec, seg = _ids(engine, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))  # same inode and size, other content and time
    _refused(client, rec, seg, None, "SHA-256 differs")


def test_a_copy_of_the_same_content_is_read(world, engine, client):
    """A restored file (new inode and time, same bytes) is checked by SHA-256 and read."""
    _, incoming, _ = world
    path = incoming / "cuckoo" / "cuckoo.ogg"
    rec, seg = _ids(engine, path)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    for _ in range(2):  # the second time from the remembered verification
        r = client.get(f"/recordings/{rec}/audio", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    clip = client.get(f"/clips/{seg}.wav")
    assert clip.status_code == 200
    audio, rate = sf.read(io.BytesIO(clip.content), dtype="float32")
    assert np.abs(audio - decode_span(path, rate, 0.0, len(audio) / rate)).max() < 1e-3


def test_a_recording_stored_before_0024_is_checked_by_size_and_sha256(world, engine, client):
    _, incoming, _ = world
    path = incoming / "saw" / "saw.ogg"
    rec, seg = _ids(engine, path)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE recordings SET file_device = NULL, file_inode = NULL, "
                "file_mtime_ns = NULL WHERE id = :r"
            ),
            {"r": rec},
        )
    data = path.read_bytes()
    r = client.get(f"/recordings/{rec}/audio")
    assert r.status_code == 200 and r.content == data
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    _refused(client, rec, seg, None, "SHA-256 differs")
    path.write_bytes(data + b"\0")
    _refused(client, rec, seg, None, "bytes")


def test_clip_export_review_and_plot_refuse(world, engine, tmp_path):
    url, incoming, secrets = world
    path = incoming / "fireworks" / "fireworks.ogg"
    rec, seg = _ids(engine, path)
    path.unlink()
    path.symlink_to(secrets / "private.ogg")
    run = Cli(url)
    _, query = _ids(engine, incoming / "dog" / "dog.ogg")  # a window of another recording
    out = run("search", "--like", query, "--limit", 500, "--export", tmp_path / "clips", "--json")
    hits = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    swapped = [h for h in hits if h["recording_id"] == rec]
    assert swapped and all(not h.get("clip") for h in swapped)
    assert "symbolic link" in out.stderr and "--replace" in out.stderr
    written = list((tmp_path / "clips").glob("*.wav"))
    assert len(written) == len([h for h in hits if h.get("clip")]) > 0

    from soundscape.media_files import stored_files
    from soundscape.results import Hit
    from soundscape.review import write_batch

    with engine.connect() as conn:
        stored = stored_files(conn, [rec])
    hit = Hit(seg, 1.0, rec, str(path), "north-1", None, None, 0.0, 1.0, None, None, None)
    batch = write_batch([hit], tmp_path / "review", "bang", "top", stored)
    assert not list((tmp_path / "review").glob("*.wav"))
    assert any("symbolic link" in e for e in batch.errors)

    plot = run("plot", "recording", rec, "--output", tmp_path / "r.png", code=1)
    assert "symbolic link" in plot.stderr and "--replace" in plot.stderr
    assert not (tmp_path / "r.png").exists()


def test_open_stored_refuses_a_fifo_and_reads_only_the_descriptor(world, engine):
    from soundscape.errors import StoredFileChanged
    from soundscape.media_files import open_stored, stored_file

    _, incoming, _ = world
    path = incoming / "lightningbolt" / "lightningbolt.ogg"
    rec, _ = _ids(engine, path)
    with engine.connect() as conn:
        stored = stored_file(conn, rec)
    data = path.read_bytes()
    with open_stored(stored) as opened:
        # the path now names another file: what was opened is still read
        path.rename(path.with_suffix(".old"))
        path.write_bytes(b"x" * len(data))
        assert opened.pread(len(data), 0) == data
        assert decode_span(opened, 8000, 0.0, 0.5).size == 4000
    with pytest.raises(StoredFileChanged, match="SHA-256 differs"):
        open_stored(stored).__enter__()
    path.unlink()
    os.mkfifo(path)  # would block an open without O_NONBLOCK
    with pytest.raises(StoredFileChanged, match="not a regular file|no longer a regular file"):
        open_stored(stored).__enter__()
    path.unlink()
    with pytest.raises(StoredFileChanged, match="no longer there") as gone:
        open_stored(stored).__enter__()
    assert gone.value.gone


def test_duplicate_checks_and_diarization_read_by_identity(world, engine, tmp_path):
    """``duplicates`` verifies a copy by the waveform of the stored recording and diarization
    runs the VAD over it: both through open_stored, so a swapped file is not read."""
    from soundscape.duplicates import Run, _refine_stored
    from soundscape.media_files import stored_files
    from soundscape.speakers import _regions

    _, incoming, secrets = world
    path = incoming / "firetruck" / "firetruck.ogg"
    query = tmp_path / "query.ogg"
    shutil.copy(path, query)
    rec, _ = _ids(engine, path)
    with engine.connect() as conn:
        stored = stored_files(conn, [rec])
    run = Run(None, rec, 1.0, 4.0, 0.0, 1.0, 1.0, 2, [], [], 1.0)
    starts, ends = np.array([0.0, 3.0]), np.array([3.0, 6.0])
    refined = _refine_stored(stored, run, str(query), 1.0, 4.0, 0.0, 0.5)
    assert refined is not None and refined[1] > 0.9 and abs(refined[0]) < 0.01
    assert _regions(stored[rec], starts, ends)[1] == "vad"
    path.unlink()
    path.symlink_to(secrets / "private.ogg")
    assert _refine_stored(stored, run, str(query), 1.0, 4.0, 0.0, 0.5) is None
    assert _regions(stored[rec], starts, ends) == ([(0.0, 6.0)], "windows")


def test_backfill_refuses_a_symlink_even_to_the_same_content(db_url, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ("dog", "owl"):
        shutil.copy(EXAMPLES / f"{name}.ogg", incoming / f"{name}.ogg")
    run = Cli(db_url)
    run("sensors", "add", "north-1", "--timezone", "UTC")
    run("ingest", incoming, "-s", "north-1", "-m", "spectral", "-q")
    kept = tmp_path / "kept.ogg"
    shutil.copy(incoming / "owl.ogg", kept)
    (incoming / "owl.ogg").unlink()
    (incoming / "owl.ogg").symlink_to(kept)  # same bytes, same SHA-256
    out = run("backfill", "-m", "spectral", "--window", 1, "--hop", 1, "--json", "-q", code=1)
    summary = json.loads(out.stdout)["summary"]
    assert summary["stored"] == 1 and summary["failed"] == 1
    assert "symbolic link" in out.stderr and "--replace" in out.stderr
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            paths = (
                conn.execute(
                    sa.text(
                        "SELECT r.path FROM recording_spaces rs JOIN spaces s ON s.id = rs.space_id "
                        "JOIN recordings r ON r.id = rs.recording_id WHERE s.name = 'spectral-w1-h1'"
                    )
                )
                .scalars()
                .all()
            )
            errors = conn.execute(sa.text("SELECT error FROM ingest_errors")).scalars().all()
    finally:
        engine.dispose()
    assert paths == [str(incoming / "dog.ogg")]
    assert len(errors) == 1 and "symbolic link" in errors[0]
