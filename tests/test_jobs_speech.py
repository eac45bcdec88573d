"""Transcribers (whisper) in the ingest summary and the job queue: the summary counts
utterances as utterances, not windows, and ``enqueue`` skips a file already transcribed by
that model version as it skips one already embedded (real VAD and spectral model on real
clips without speech, so Whisper itself never has to run: fast)."""

from __future__ import annotations

import json
import re

import sqlalchemy as sa

from soundscape.ingest import describe_counts
from tests.conftest import ROOT

BIRD = ROOT / "examples" / "audio" / "blackbird.ogg"
DOG = ROOT / "examples" / "audio" / "dog.ogg"


def test_describe_counts_names_windows_and_utterances():
    assert describe_counts({}) == "0 windows"
    assert describe_counts({"birdnet": 3, "spectral": 4}) == "7 windows"
    assert describe_counts({"whisper": 2}) == "2 utterances"
    assert describe_counts({"spectral": 5, "whisper": 0}) == "5 windows, 0 utterances"


def _enqueue(run_cli, *args) -> dict:
    result = run_cli("enqueue", *args, "--json")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    return row


def test_whisper_ingest_summary_and_enqueue_skips_transcribed_files(cli_env, run_cli, engine):
    assert run_cli("sensors", "add", "s1", "--timezone", "UTC").exit_code == 0
    both = run_cli("ingest", BIRD, "-s", "s1", "-m", "spectral,whisper", "-q", "--json")
    assert both.exit_code == 0, both.output
    summary = json.loads(both.stdout)["summary"]
    with engine.connect() as conn:
        windows = conn.execute(sa.text("SELECT count(*) FROM segments")).scalar_one()
        said = conn.execute(sa.text("SELECT count(*) FROM utterances")).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM transcripts")).scalar_one() == 1
    assert windows > 0 and (summary["segments"], summary["utterances"]) == (windows, said)
    assert re.search(rf"h of audio, {windows} windows, {said} utterances$", both.stderr.strip())
    only = run_cli("ingest", DOG, "-s", "s1", "-m", "whisper", "-q")
    assert only.exit_code == 0, only.output
    assert re.search(r"h of audio, \d+ utterances$", only.stderr.strip()), only.stderr
    assert "windows" not in only.stderr

    # transcribed by this version: skipped like a file already embedded in every space
    skipped = _enqueue(run_cli, BIRD, "-s", "s1", "-m", "whisper")
    assert skipped["status"] == "skipped" and "already stored" in skipped["reason"]
    assert _enqueue(run_cli, BIRD, "-s", "s1", "-m", "whisper,spectral")["status"] == "skipped"
    # not in the spectral space yet; then a transcript by another version only
    assert _enqueue(run_cli, DOG, "-s", "s1", "-m", "whisper,spectral")["status"] == "queued"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE transcripts SET model_version = 'older'"))
    assert _enqueue(run_cli, BIRD, "-s", "s1", "-m", "whisper")["status"] == "queued"
