"""A small synthetic reserve built from real audio: the forest soundscape with real clips mixed
in at known offsets, recorded by sensors in known places at known local times."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
RATE = 48000


@dataclass(frozen=True)
class Event:
    clip: str  # file in examples/audio
    offset_s: float  # where it starts in the recording


@dataclass(frozen=True)
class Recording:
    sensor: str
    name: str  # AudioMoth-style name: the UTC start
    events: tuple[Event, ...]

    @property
    def stem(self) -> str:
        return Path(self.name).stem


SENSORS = {
    # name: (site, quadrant, timezone)
    "north-1": ("Marsh", "N", "Europe/Berlin"),
    "south-1": ("Forest", "S", "Europe/Berlin"),
}

RECORDINGS = (
    # 00:30 UTC = 02:30 CEST: a siren 20 s in (02:30:20 local), a dog at 50 s
    Recording(
        "north-1", "20240501_003000.WAV", (Event("firetruck.ogg", 20.0), Event("dog.ogg", 50.0))
    ),
    # noon in the south: a siren 10 s in
    Recording("south-1", "20240501_100000.WAV", (Event("firetruck.ogg", 10.0),)),
    # 21:59:30 UTC = 23:59:30 CEST: crosses local midnight; siren at 40 s = 00:00:10 on 2 May
    Recording("north-1", "20240501_215930.WAV", (Event("firetruck.ogg", 40.0),)),
    # 00:59:00 UTC = 01:59:00 CET on the spring-forward night: a siren at 01:59:10 CET and one
    # at 61 s = 01:00:01 UTC = 03:00:01 CEST (local clocks jumped from 02:00 to 03:00)
    Recording(
        "north-1",
        "20240331_005900.WAV",
        (Event("firetruck.ogg", 10.0), Event("firetruck.ogg", 61.0)),
    ),
    # 00:59:30 UTC = 02:59:30 CEST on the fall-back night: at 01:00 UTC clocks go back from
    # 03:00 CEST to 02:00 CET, so 02:00-03:00 local happens twice; siren at 40 s = 02:00:10 CET
    Recording("north-1", "20241027_005930.WAV", (Event("firetruck.ogg", 40.0),)),
)


def _load(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def build(folder: Path) -> list[Path]:
    """Write the recordings as 16-bit WAV files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _load(EXAMPLES / "xc563936.mp3")
    paths = []
    for n, rec in enumerate(RECORDINGS):
        audio = np.roll(base, n * 7 * RATE) * 0.5  # each recording a different stretch of forest
        for ev in rec.events:
            clip = _load(EXAMPLES / ev.clip)
            i = int(ev.offset_s * RATE)
            n = min(len(clip), len(audio) - i)
            audio[i : i + n] += clip[:n] * (0.5 / max(1e-6, np.abs(clip).max()))
        audio = np.clip(audio, -1, 1)
        sub = folder / rec.sensor
        sub.mkdir(exist_ok=True)
        path = sub / rec.name
        sf.write(path, audio, RATE, subtype="PCM_16", format="WAV")
        paths.append(path)
    return paths


def birdnet_only_with_coordinates(url: str, coords: dict[str, tuple[str, str]]) -> None:
    """Turn a copy of the session's reserve (conftest's ``reserve_url``: birdnet and spectral,
    sensors without coordinates) into the reserve ingested with ``-m birdnet`` by sensors
    registered with coordinates (``coords``: sensor -> (latitude, longitude)): the spectral
    space goes (its partition of ``segments`` dropped, the rows that point at the space
    cascade), and each sensor gets its coordinates the way
    ``sensors add --lat --lon`` gives them (the same row, its occurrence lists computed)."""
    import psycopg
    from click.testing import CliRunner
    from sqlalchemy.engine import make_url

    from soundscape.cli import cli
    from soundscape.spaces import partition_name

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn:
        (space,) = conn.execute("SELECT id FROM spaces WHERE name = 'spectral'").fetchone() or ()
        conn.execute("DELETE FROM spaces WHERE id = %s", (space,))
        conn.execute(f"ALTER TABLE segments DETACH PARTITION {partition_name(space)}")
        conn.execute(f"DROP TABLE {partition_name(space)}")
    for name, (site, quadrant, tz) in SENSORS.items():
        lat, lon = coords[name]
        args = ["sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz]
        r = CliRunner().invoke(
            cli,
            [*args, "--lat", lat, "--lon", lon, "--update"],
            env={"SOUNDSCAPE_DATABASE_URL": url},
        )
        assert r.exit_code == 0, r.output
