"""Input validation and honest output (issue 10, items 9, 10, 12, 13, 16, 17, 18, 20, 21, 24):
bad option values give a message and exit 1 or 2 (never a traceback, never a junk row), and
what the CLI prints is what is stored."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import real_audio

CLIP = real_audio("clips/animals/insects/bee.ogg")


def _sensor(run_cli, name="s1", *extra):
    result = run_cli("sensors", "add", name, *extra)
    assert result.exit_code == 0, result.output
    return result


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# ------------------------------------------------------------------ item 20: full precision
def test_csv_and_json_keep_full_precision(cli_env, run_cli):
    _sensor(run_cli, "s1", "--lat", "52.523456", "--lon", "13.4114591")
    as_csv = run_cli("sensors", "list", "--csv")
    row = next(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert row["latitude"] == "52.523456" and row["longitude"] == "13.4114591"
    as_json = json.loads(run_cli("sensors", "list", "--json").stdout.splitlines()[0])
    assert as_json["latitude"] == 52.523456 and as_json["longitude"] == 13.4114591
    # the aligned table still rounds for reading
    table = run_cli("sensors", "list").stdout
    assert "52.52 " in table and "52.523456" not in table


def test_emit_rounds_only_the_table():
    from soundscape.output import emit

    rows = [{"x": 0.123456789012, "y": 12345.678}]
    out = io.StringIO()
    emit(rows, "csv", out=out)
    assert out.getvalue().splitlines()[1] == "0.123456789012,12345.678"
    out = io.StringIO()
    emit(rows, "json", out=out)
    assert json.loads(out.getvalue()) == rows[0]
    out = io.StringIO()
    emit(rows, "table", out=out)
    assert "0.1235" in out.getvalue() and "0.123456789012" not in out.getvalue()


# -------------------------------------------------------- items 10 and 13: clear errors
@pytest.mark.parametrize(
    "args,needle",
    [
        (("--from", "99999999d"), "before year 1"),
        (("--from", "9999999999w"), "before year 1"),
        (("--from", "2024-05-02", "--to", "2024-05-01"), "later than"),
        (("--from", "2024-05-02T00:00:00Z", "--to", "2024-05-01T23:00:00Z"), "later than"),
        (("--from", "2024-05-03", "--to", "2024-05-01T23:00:00Z"), "later than"),
        (("--min-score", "nan"), "finite"),
        (("--min-score", "inf"), "finite"),
    ],
)
def test_bad_search_filters_are_usage_errors(cli_env, run_cli, args, needle):
    result = run_cli("search", "dog", *args)
    _no_traceback(result)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr


def test_from_equal_to_is_fine():
    from soundscape.cli.filters import build_filters

    f = build_filters({}, None, "2024-05-01", "2024-05-01")
    assert f.date_from == f.date_to


@pytest.mark.parametrize(
    "metadata,needle",
    [
        ('{"a": "x\\u0000y"}', "NUL"),
        ('{"a\\u0000": 1}', "NUL"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "deep"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "deep"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_sensor_metadata_is_checked(cli_env, run_cli, metadata, needle):
    result = run_cli("sensors", "add", "s1", "--metadata", metadata)
    _no_traceback(result)
    assert result.exit_code in (1, 2), result.output
    assert needle in result.stderr
    assert run_cli("sensors", "list", "--json").stdout == ""  # nothing stored


def test_sensor_metadata_nested_a_little_is_stored(cli_env, run_cli):
    nested = {"a": [[{"b": [1, 2]}]], "owner": "NABU"}
    _sensor(run_cli, "s1", "--metadata", json.dumps(nested))
    row = json.loads(run_cli("sensors", "list", "--json").stdout)
    assert row["metadata"] == nested


@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
def test_sensor_name_must_be_usable(cli_env, run_cli, name):
    result = run_cli("sensors", "add", name)
    _no_traceback(result)
    assert result.exit_code == 1
    assert "name" in result.stderr
    assert run_cli("sensors", "list", "--json").stdout == ""


def test_export_to_an_unusable_folder_is_an_error(cli_env, run_cli, tmp_path):
    _sensor(run_cli)
    assert run_cli("ingest", CLIP, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for option in ("--export", "--raven"):
        result = run_cli("search", "--audio", CLIP, "--space", "spectral", option, blocker / "x")
        _no_traceback(result)
        assert result.exit_code == 1, result.output
        assert str(blocker) in result.stderr
        # an existing folder given as a file is refused before searching
        result = run_cli("search", "--audio", CLIP, "--space", "spectral", option, blocker)
        assert result.exit_code == 2


# ------------------------------------------------------------- item 9: window and hop
def _spaces(db_url: str) -> list[str]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT name FROM spaces ORDER BY id"))]
    finally:
        eng.dispose()


@pytest.mark.parametrize(
    "args,option",
    [
        (("-m", "spectral", "--window", "nan"), "--window"),
        (("-m", "spectral", "--window", "inf"), "--window"),
        (("-m", "spectral", "--window", "1e-9"), "--window"),
        (("-m", "spectral", "--window", "3601"), "--window"),
        (("-m", "spectral", "--hop", "nan"), "--hop"),
        (("-m", "spectral", "--hop", "0.01"), "--hop"),
        (("-m", "birdnet", "--hop", "0.0001"), "--hop"),
        (("-m", "birdnet", "--window", "5"), "--window"),
        (("-m", "spectral", "--window", "2", "--hop", "3"), "--hop"),
        # the first model's window is fine, the second's is not: nothing is created
        (("-m", "spectral,birdnet", "--window", "5", "--hop", "2"), "--window"),
    ],
)
def test_bad_window_or_hop_is_refused_before_any_space_exists(cli_env, run_cli, args, option):
    _sensor(run_cli)
    for command in (("ingest", CLIP, "-s", "s1"), ("enqueue", CLIP, "-s", "s1")):
        result = run_cli(*command, *args, "-q" if command[0] == "ingest" else "--json")
        _no_traceback(result)
        assert result.exit_code == 2, result.output
        assert option in result.stderr
    assert _spaces(cli_env) == []
    assert run_cli("jobs", "list", "--json").stdout == ""


def test_backfill_checks_the_window_too(cli_env, run_cli):
    _sensor(run_cli)
    assert run_cli("ingest", CLIP, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    result = run_cli("backfill", "-m", "spectral", "--window", "nan", "-q")
    assert result.exit_code == 2 and "--window" in result.stderr
    assert _spaces(cli_env) == ["spectral"]


def test_allow_gaps_accepts_a_hop_longer_than_the_window(cli_env, run_cli):
    _sensor(run_cli)
    args = ("-m", "spectral", "--window", "1", "--hop", "2.5")
    result = run_cli("ingest", CLIP, "-s", "s1", *args, "--allow-gaps", "-q", "--json")
    assert result.exit_code == 0, result.output
    assert _spaces(cli_env) == ["spectral-w1-h2.5"]
    # 6.5 s of audio: windows start at 0, 2.5 and 5 s
    assert json.loads(result.stdout)["summary"]["segments"] == 3
    queued = run_cli("enqueue", CLIP, "-s", "s1", *args, "--allow-gaps", "--no-check-stored")
    assert queued.exit_code == 0, queued.output


def test_resolve_window_is_the_library_check():
    from soundscape.embedders.birdnet import BirdNET
    from soundscape.embedders.spectral import Spectral
    from soundscape.errors import BadOption
    from soundscape.spaces import resolve_window

    assert resolve_window(Spectral, None, None) == (3.0, 2.0)
    assert resolve_window(BirdNET, None, 3.0) == (3.0, 3.0)
    assert resolve_window(Spectral, 1.0, 4.0, allow_gaps=True) == (1.0, 4.0)
    with pytest.raises(BadOption) as info:
        resolve_window(Spectral, 1.0, 4.0)
    assert info.value.option == "--hop" and "--allow-gaps" in str(info.value)
    with pytest.raises(BadOption):
        resolve_window(BirdNET, None, float("-inf"))


# ------------------------------------------------------------ item 12: what is passed over
def _messy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "card"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(CLIP, folder / "good.ogg")
    shutil.copy(real_audio("clips/household/toilet.ogg"), folder / "sub" / "deeper.ogg")
    (folder / "x.wav").mkdir()
    (folder / "notes.aiff").write_bytes(b"FORM0000AIFF")
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    return folder


def test_collect_files_says_what_it_passed_over(tmp_path):
    from soundscape.ingest import collect_files

    folder = _messy_folder(tmp_path)
    flat = collect_files([folder])
    assert [f.name for f in flat.files] == ["good.ogg"]
    reasons = {f.name: why for f, why in flat.skipped}
    assert set(reasons) == {"x.wav", "notes.aiff", "gone.wav", "sub"}
    assert "dangling" in reasons["gone.wav"] and "unsupported" in reasons["notes.aiff"]
    assert "-r" in reasons["sub"] and "folder" in reasons["x.wav"]
    deep = collect_files([folder], recursive=True)
    assert sorted(f.name for f in deep.files) == ["deeper.ogg", "good.ogg"]
    # -r descends into every folder, x.wav too (empty: nothing in it)
    assert {f.name for f, _ in deep.skipped} == {"notes.aiff", "gone.wav"}


def test_ingest_lists_skipped_entries_and_goes_on_past_missing_files(cli_env, run_cli, tmp_path):
    _sensor(run_cli)
    folder = _messy_folder(tmp_path)
    missing = tmp_path / "missing.wav"
    result = run_cli("ingest", missing, folder, "-r", "-s", "s1", "-m", "spectral", "-q", "--json")
    _no_traceback(result)
    assert result.exit_code == 1, result.output  # the missing file failed; the rest went on
    out = json.loads(result.stdout)
    assert out["summary"]["stored"] == 2 and out["summary"]["failed"] == 1
    assert out["summary"]["skipped"] == 2
    skipped = {Path(r["path"]).name: r["reason"] for r in out["files"] if r["status"] == "skipped"}
    assert set(skipped) == {"notes.aiff", "gone.wav"}
    failed = [r for r in out["files"] if r["status"] == "failed"]
    assert failed[0]["path"] == str(missing)
    assert "stored 2, skipped 2, failed 1" in result.stderr


def test_enqueue_lists_skipped_entries(cli_env, run_cli, tmp_path):
    _sensor(run_cli)
    result = run_cli("enqueue", _messy_folder(tmp_path), "-s", "s1", "-m", "spectral", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    by_status = {}
    for r in rows:
        by_status.setdefault(r["status"], []).append(Path(r["path"]).name)
    assert by_status["queued"] == ["good.ogg"]
    assert sorted(by_status["skipped"]) == ["gone.wav", "notes.aiff", "sub", "x.wav"]


# ------------------------------------------------------ item 16: --csv on stats, db status
def test_stats_and_db_status_have_csv(cli_env, run_cli):
    _sensor(run_cli)
    assert run_cli("ingest", CLIP, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    rows = list(csv.DictReader(io.StringIO(run_cli("stats", "--csv").stdout)))
    assert len(rows) == 1 and rows[0]["recordings"] == "1" and rows[0]["sensors"] == "1"
    assert float(rows[0]["audio_hours"]) == pytest.approx(6.543 / 3600, rel=1e-3)
    as_json = json.loads(run_cli("stats", "--json").stdout)
    assert as_json["recordings"] == 1 and as_json["spaces"][0]["space"] == "spectral"
    assert run_cli("stats", "--json", "--csv").exit_code == 2
    status = list(csv.DictReader(io.StringIO(run_cli("db", "status", "--csv").stdout)))
    assert len(status) == 1 and status[0]["up_to_date"] == "True"
    assert json.loads(run_cli("db", "status", "--json").stdout)["up_to_date"] is True


# --------------------------------------------------------- item 18: failures can be seen
def test_errors_list_and_the_view(cli_env, run_cli, tmp_path):
    _sensor(run_cli, "s1", "--site", "North Marsh")
    bad = tmp_path / "card.ogg"
    bad.write_bytes(b"not audio at all" * 100)
    assert run_cli("ingest", bad, "-s", "s1", "-m", "spectral", "-q").exit_code == 1

    rows = [json.loads(line) for line in run_cli("errors", "list", "--json").stdout.splitlines()]
    assert len(rows) == 1
    assert rows[0]["path"] == str(bad) and rows[0]["sensor"] == "s1"
    assert rows[0]["site"] == "North Marsh" and rows[0]["resolved"] is False and rows[0]["error"]
    table = run_cli("errors", "list")
    assert table.exit_code == 0 and str(bad) in table.stdout
    as_csv = list(csv.DictReader(io.StringIO(run_cli("errors", "list", "--csv").stdout)))
    assert as_csv[0]["path"] == str(bad)
    assert run_cli("errors", "list", "--since", "1h", "--json").stdout.strip()
    assert run_cli("errors", "list", "--since", "2999-01-01", "--json").stdout == ""
    assert run_cli("errors", "list", "-s", "other", "--json").stdout == ""
    nonsense = run_cli("errors", "list", "--since", "last tuesday")
    assert nonsense.exit_code == 2 and "--since" in nonsense.stderr

    # the same file, fixed and ingested again: resolved
    shutil.copy(CLIP, bad)
    assert run_cli("ingest", bad, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    assert run_cli("errors", "list", "--unresolved", "--json").stdout == ""
    (row,) = [json.loads(line) for line in run_cli("errors", "list", "--json").stdout.splitlines()]
    assert row["resolved"] is True and row["resolved_at"]

    eng = sa.create_engine(cli_env)
    try:
        with eng.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM ranger.ingest_errors")).scalar()
    finally:
        eng.dispose()
    assert n == 1


# ------------------------------------------- item 24: a baseline of repeated audio
def _forest(seconds: float):
    from soundscape.audio import decode_span

    audio = decode_span(real_audio("xc563936.mp3"), 22050, 0, seconds)
    return audio.mean(axis=1) if audio.ndim > 1 else audio


def _two_days(folder: Path, day1, day2) -> None:
    import soundfile as sf

    folder.mkdir()
    sf.write(folder / "20240601_000000.wav", day1, 22050)
    sf.write(folder / "20240602_000000.wav", day2, 22050)


def _anomalies(run_cli, sensor: str):
    result = run_cli(
        "anomalies", "-s", sensor, "--from", "2024-06-02", "--windows", "--top", "1000", "--json"
    )
    assert result.exit_code == 0, result.output
    return sorted(json.loads(line)["score"] for line in result.stdout.splitlines()), result


def test_anomaly_scale_leaves_out_twins_of_repeated_audio(cli_env, run_cli, tmp_path):
    import numpy as np

    # a 12 s stretch of forest looped for 4 minutes (every window has 19 exact twins), then
    # the same loop a second later: nothing the baseline has not heard
    loop = np.tile(_forest(12), 20)
    _two_days(tmp_path / "loop", loop, np.roll(loop, -22050))
    _sensor(run_cli, "loop")
    assert run_cli("ingest", tmp_path / "loop", "-s", "loop", "-m", "spectral", "-q").exit_code == 0
    scores, result = _anomalies(run_cli, "loop")
    assert len(scores) == 120
    # with the twins counted the scale was ~0 (floored at 0.001) and the median scored 52
    assert scores[len(scores) // 2] < 1.5 and scores[-1] < 3, scores
    assert "repeated audio" in result.stderr and "exact twins" in result.stderr


def test_anomaly_scale_of_natural_audio_is_unchanged(cli_env, run_cli, tmp_path):
    forest = _forest(72)
    _two_days(tmp_path / "forest", forest[: 36 * 22050], forest[36 * 22050 :])
    _sensor(run_cli, "forest")
    assert (
        run_cli("ingest", tmp_path / "forest", "-s", "forest", "-m", "spectral", "-q").exit_code
        == 0
    )
    scores, result = _anomalies(run_cli, "forest")
    assert "repeated audio" not in result.stderr
    assert 0.5 < scores[len(scores) // 2] < 2


# ----------------------------------------- item 17: availability means weights are here
def test_models_list_says_clap_weights_are_missing(run_cli, monkeypatch, tmp_path):
    if importlib.util.find_spec("msclap") is None:  # found, not imported (torch: seconds)
        pytest.skip("msclap is not installed (the clap extra)")
    for key in ("SOUNDSCAPE_CLAP_WEIGHTS", "SOUNDSCAPE_CLAP_TEXT_MODEL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = run_cli("models", "list", "--json")
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["clap"]["available"] is False
    assert "CLAP_weights_2023.pth" in rows["clap"]["reason"]
    assert "SOUNDSCAPE_CLAP_WEIGHTS" in rows["clap"]["reason"]
    # a weights file that exists, but no GPT-2: still not available
    weights = tmp_path / "CLAP_weights_2023.pth"
    weights.write_bytes(b"x")
    monkeypatch.setenv("SOUNDSCAPE_CLAP_WEIGHTS", str(weights))
    result = run_cli("models", "list", "--json")
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["clap"]["available"] is False and "GPT-2" in rows["clap"]["reason"]
    assert rows["spectral"]["available"] and rows["birdnet"]["available"]


def test_classify_template_on_a_space_without_text_encoder_is_refused(cli_env, run_cli):
    _sensor(run_cli)
    assert run_cli("ingest", CLIP, "-s", "s1", "-m", "birdnet", "-q").exit_code == 0
    args = ("classify", "--labels", "bee, dog", "--space", "birdnet", "--json")
    refused = run_cli(*args, "--template", "a recording of {}")
    _no_traceback(refused)
    assert refused.exit_code == 1 and "template is not used" in refused.stderr
    plain = run_cli(*args)
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.strip()


# ------------------------------------------------------------------- item 21: progress
def test_progress_holds_back_until_stored_and_ends_at_the_total():
    from soundscape.cli.ingest import _Progress

    p = _Progress(10.5, quiet=False)
    p.start(7.25)
    p.advance(4.0)
    assert p.bar.n == 4.0
    p.advance(3.3)  # the last window, padded past the end of the file
    assert p.bar.n < 7.25 and p.phase == "finishing"
    p.finish()
    assert p.bar.n == 7.25 and p.phase == "audio"
    p.start(3.25)  # a file that is skipped: no progress, then done
    p.finish()
    assert p.bar.n == p.bar.total == 10.5


def test_ingest_bar_reaches_100_with_skipped_files_and_backfill_has_a_total(
    cli_env, run_cli, tmp_path
):
    _sensor(run_cli)
    assert run_cli("ingest", CLIP, "-s", "s1", "-m", "spectral", "-q").exit_code == 0
    folder = tmp_path / "card"
    folder.mkdir()
    shutil.copy(CLIP, folder / "again.ogg")  # stored already: skipped
    shutil.copy(real_audio("clips/household/toilet.ogg"), folder / "new.ogg")
    result = run_cli("ingest", folder, "-s", "s1", "-m", "spectral")
    assert result.exit_code == 0, result.output
    assert "100%" in result.stderr and "TqdmWarning" not in result.stderr
    backfill = run_cli("backfill", "-m", "birdnet")
    assert backfill.exit_code == 0, backfill.output
    assert "100%" in backfill.stderr  # a percentage: the bar knows its total


def test_litert_info_line_is_silenced(cli_env, run_cli):
    _sensor(run_cli)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "soundscape",
            "ingest",
            str(CLIP),
            "-s",
            "s1",
            "-m",
            "birdnet",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and "INFO:" not in proc.stderr
