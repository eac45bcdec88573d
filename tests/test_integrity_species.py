"""One rule for BirdNET's location/season filter (issue 24, item 14) and label queries that
are words, not patterns (item 13), on real audio through real BirdNET.

The forest soundscape (examples/audio/xc563936.mp3) is North American: BirdNET hears a
Dark-eyed Junco in it, which its occurrence model finds implausible in Berlin. A label concept
for the junco at a Berlin sensor stored detections that ``species_daily`` (and label search)
leave out; now its detections follow the same rule.
"""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, Cli

pytestmark = pytest.mark.slow

SOUNDSCAPE = ROOT / "examples" / "audio" / "xc563936.mp3"
JUNCO = "Dark-eyed Junco"


@pytest.fixture(scope="module")
def berlin(module_db_url: str, tmp_path_factory) -> Cli:
    run = Cli(module_db_url)
    folder = tmp_path_factory.mktemp("berlin")
    shutil.copy(SOUNDSCAPE, folder / "20240501_043000.mp3")
    run("sensors", "add", "berlin", "--timezone", "Europe/Berlin", "--lat", "52.52",
        "--lon", "13.40")  # fmt: skip
    run("ingest", folder, "-s", "berlin", "-m", "birdnet", "-q")
    return run


def _scalar(url: str, sql: str):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = conn.execute(sa.text(sql)).scalar()
    engine.dispose()
    return value


def test_concept_detections_follow_the_location_filter(berlin: Cli) -> None:
    heard = _scalar(
        berlin.url,
        "SELECT count(*) FROM segment_scores sc JOIN space_labels l ON l.space_id = sc.space_id "
        f"AND l.label_id = sc.label_id WHERE l.common = '{JUNCO}' AND sc.score >= 0.1",
    )
    assert heard > 0  # BirdNET does hear it
    berlin("concepts", "add", "junco", "--text", JUNCO, "--threshold", "0.1")
    detections = _scalar(
        berlin.url, "SELECT count(*) FROM ranger.detections WHERE concept = 'junco'"
    )
    daily = _scalar(
        berlin.url,
        f"SELECT count(*) FROM ranger.species_daily WHERE label = '{JUNCO}' AND sensor = 'berlin'",
    )
    hits = berlin.json("search", "--concept", "junco")
    assert daily == 0 and hits == []
    assert detections == 0
    # with the sensor's coordinates gone, nothing is filtered: the junco is detected
    berlin("sensors", "add", "berlin", "--timezone", "Europe/Berlin", "--update")
    berlin("concepts", "refresh", "junco")
    assert _scalar(berlin.url, "SELECT count(*) FROM ranger.detections WHERE concept = 'junco'")


@pytest.mark.parametrize("query", ["[a-z]+", "a", "j.*", "(junco|owl)"])
def test_label_queries_are_words_not_patterns(berlin: Cli, query: str) -> None:
    result = berlin("search", query, "--space", "birdnet", code=1)
    assert "not patterns" in result.stderr or "too short" in result.stderr
