"""Any Whisper model (issue 26): ``SOUNDSCAPE_WHISPER_MODEL`` names a CTranslate2 folder (here
the shipped tiny.en copied under another name) or a faster-whisper size name; it is its own
transcriber version (so a recording is transcribed again by it, not skipped), and
``models list`` shows the version in use. Real model, real speech."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from soundscape.db import make_engine
from soundscape.transcribers import get_transcriber_class
from soundscape.transcribers import whisper as w
from tests.conftest import SHARED_AUDIO, Cli

pytestmark = pytest.mark.slow

GUEST = SHARED_AUDIO / "podcast" / "voices" / "guest.wav"


@pytest.fixture(scope="module")
def my_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.en's CTranslate2 folder, copied as ``my-whisper``."""
    source = w.weights_path()
    assert source is not None
    folder = tmp_path_factory.mktemp("models") / "my-whisper"
    shutil.copytree(source, folder)
    return folder


def test_a_named_folder_is_its_own_version(db_url, my_whisper, monkeypatch):
    run = Cli(db_url)
    run("sensors", "add", "studio", "--timezone", "Europe/London")
    run("ingest", GUEST, "-s", "studio", "-m", "whisper", "-q")
    default = {r["name"]: r for r in run.json("models", "list")}["whisper"]
    assert default["version"] == w.DEFAULT_VERSION

    monkeypatch.setenv(w.MODEL_ENV, str(my_whisper))
    version = get_transcriber_class("whisper").version
    assert version.startswith("my-whisper-") and version.endswith("-int8-1")
    assert version != w.DEFAULT_VERSION
    row = {r["name"]: r for r in run.json("models", "list")}["whisper"]
    assert row["version"] == version and row["available"] is True
    # the recording is transcribed again by the named model (not skipped as already done)
    r = run("ingest", GUEST, "-s", "studio", "-m", "whisper")
    assert "stored 1" in r.stderr, r.stderr
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(
                sa.text("SELECT model_version, n_utterances FROM transcripts ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert [v.model_version for v in versions] == [w.DEFAULT_VERSION, version]
    assert all(v.n_utterances > 0 for v in versions)  # the copy transcribes like tiny.en
    text = run("transcript", GUEST, "--text").stdout  # the newest: the named model's
    assert text.strip() and version in run("transcript", GUEST, "--text").stderr


def test_a_bad_setting_says_how_to_fix_it(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv(w.MODEL_ENV, str(tmp_path / "no-such-model"))
    run = Cli(db_url)
    row = {r["name"]: r for r in run.json("models", "list")}["whisper"]
    assert row["available"] is False
    assert "neither a CTranslate2 Whisper folder" in row["reason"] and "small.en" in row["reason"]
    run("sensors", "add", "studio", "--timezone", "Europe/London")
    r = run("ingest", GUEST, "-s", "studio", "-m", "whisper", code=1)
    assert w.MODEL_ENV in r.stderr + r.stdout


def test_a_size_name_is_a_version_of_its_own(monkeypatch):
    monkeypatch.setenv(w.MODEL_ENV, "small.en")
    assert get_transcriber_class("whisper").version == "small.en-int8-1"
    assert get_transcriber_class("whisper").unavailable_reason() is None
    monkeypatch.delenv(w.MODEL_ENV)
    assert get_transcriber_class("whisper").version == w.DEFAULT_VERSION
