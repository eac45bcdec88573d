"""Plugin discovery (soundscape.plugins): the embedders' and the transcribers' registries are
one loader, find a third-party package's entry points beside the built-ins, and keep their
messages (no database, no model weights: fast)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from soundscape import embedders, transcribers
from soundscape.embedders.spectral import Spectral
from soundscape.errors import ModelUnavailable, SoundscapeError
from soundscape.plugins import Registry
from soundscape.transcribers.whisper import Whisper


def test_both_registries_use_the_one_loader():
    assert isinstance(embedders.MODELS, Registry) and isinstance(
        transcribers.TRANSCRIBERS, Registry
    )
    assert (embedders.MODELS.group, transcribers.TRANSCRIBERS.group) == (
        "soundscape.models",
        "soundscape.transcribers",
    )
    assert embedders.get_model_class(" Spectral ") is Spectral
    assert transcribers.get_transcriber_class("WHISPER") is Whisper
    assert transcribers.is_transcriber(" Whisper ") and not transcribers.is_transcriber("spectral")
    assert (
        "whisper" not in embedders.model_names() and "whisper" in transcribers.transcriber_names()
    )


def test_unknown_names_keep_their_messages():
    with pytest.raises(SoundscapeError) as model:
        embedders.get_model_class("nope")
    assert str(model.value).startswith("unknown model 'nope'; available: birdnet, clap")
    assert str(model.value).endswith(" (see `soundscape models list`)")
    with pytest.raises(SoundscapeError) as said:
        transcribers.get_transcriber_class("nope")
    assert str(said.value).startswith("unknown transcriber 'nope'; available: ")
    assert "whisper" in str(said.value) and "models list" not in str(said.value)


def test_a_third_party_entry_point_is_found_and_loaded(tmp_path, monkeypatch):
    """A package declaring ``[project.entry-points."soundscape.transcribers"]`` (here an
    installed distribution's metadata on sys.path) is listed beside the built-ins, imported
    only when asked for, and refused with its own reason when it cannot run."""
    (tmp_path / "acme_asr.py").write_text(
        textwrap.dedent(
            """
            from soundscape.transcribers import Transcriber

            class Tiny(Transcriber):
                name = "tiny"
                version = "1"

            class Broken(Transcriber):
                name = "broken"
                version = "1"

                @classmethod
                def unavailable_reason(cls):
                    return "pip install acme-asr[weights]"
            """
        )
    )
    info = tmp_path / "acme_asr-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-asr\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[soundscape.transcribers]\ntiny = acme_asr:Tiny\nbroken = acme_asr:Broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_asr", raising=False)
    registry: Registry[transcribers.Transcriber] = Registry(
        transcribers.ENTRY_POINT_GROUP, {"whisper": "soundscape.transcribers.whisper:Whisper"},
        "transcriber",
    )  # fmt: skip
    assert registry.names() == ["broken", "tiny", "whisper"]
    assert "acme_asr" not in sys.modules  # listing imports nothing
    tiny = registry.load("Tiny", beam=2)
    assert type(tiny).__name__ == "Tiny" and tiny.params == {"beam": 2}
    with pytest.raises(ModelUnavailable, match=r"model 'broken' is not available: pip install"):
        registry.load("broken")
