"""``soundscape speakers enrol|list|remove|who``: enrolled voices and who speaks when (the
work is in soundscape.speakers; the library is imported inside the commands so that
``soundscape --help`` starts fast)."""

from __future__ import annotations

from pathlib import Path

import click

from soundscape.cli.base import (
    Number,
    PathParam,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
)
from soundscape.output import emit

SPEAKER_COLUMNS = ["name", "space", "examples", "windows", "speech_s", "created_at", "updated_at"]
TURN_COLUMNS = ["speaker", "start_s", "end_s", "duration_s", "windows", "similarity", "enrolled"]


@cli.group()
def speakers() -> None:
    """Enrolled voices (the voice model): enrol, list, remove, and who speaks when."""


@speakers.command("enrol")
@click.argument("name")
@click.argument(
    "files", nargs=-1, required=True, type=PathParam(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--start", type=Number(min=0), help="Start of the span of each FILE (s).")
@click.option("--end", type=Number(min=0), help="End of the span of each FILE (s).")
@click.option("--space", "space_name", help="Voice space (default: the one holding voice windows).")
@click.option("--replace", is_flag=True, help="Forget the speaker's earlier examples first.")
@database_option
@format_options
def speakers_enrol(name, files, start, end, space_name, replace, database, fmt) -> None:
    """Enrol speaker NAME from the speech in FILE... (more examples can be added later).

    \b
    Examples:
      soundscape speakers enrol guest voices/guest.wav
      soundscape speakers enrol host interview.wav --start 12 --end 40
    """
    from soundscape import speakers as sp

    if start is not None and end is not None and end <= start:
        raise click.BadParameter(
            f"--end {end:g} is not after --start {start:g}", param_hint="--end"
        )
    with open_db(database).engine.begin() as conn:
        done = sp.enrol(
            conn, name, files, start_s=start, end_s=end, space=space_name, replace=replace
        )
    for path in done.already:
        echo_err(f"{path}: already enrolled for {name!r}, skipped")
    added = sum(e.n_windows for e in done.added)
    echo_err(
        f"speaker {name!r} in space {done.speaker.space}: {len(done.added)} example(s) added "
        f"({added} speech window(s)); {done.speaker.n_examples} example(s), "
        f"{done.speaker.n_windows} window(s) in all"
    )
    emit([done.speaker.as_row()], fmt, SPEAKER_COLUMNS)


@speakers.command("list")
@database_option
@format_options
def speakers_list(database, fmt) -> None:
    """List enrolled speakers."""
    from soundscape import speakers as sp

    with open_db(database).engine.connect() as conn:
        rows = [s.as_row() for s in sp.list_speakers(conn)]
    if not rows:
        echo_err("no speakers enrolled (soundscape speakers enrol NAME FILE...)")
    emit(rows, fmt, SPEAKER_COLUMNS)


@speakers.command("remove")
@click.argument("names", nargs=-1, required=True)
@database_option
def speakers_remove(names, database) -> None:
    """Remove enrolled speakers (and their examples)."""
    from soundscape import speakers as sp

    with open_db(database).engine.begin() as conn:
        n = sp.remove_speakers(conn, names)
    echo_err(f"removed {n} speaker(s)")


@speakers.command("who")
@click.argument("recording")
@click.option("--space", "space_name", help="Voice space (default: the recording's).")
@click.option(
    "--threshold",
    type=Number(-1, 1),
    default=0.8,
    show_default=True,
    help="Cosine to an enrolled speaker's centroid a window needs to be that speaker.",
)
@click.option(
    "--cluster-threshold",
    type=Number(-1, 1),
    default=0.75,
    show_default=True,
    help="Unknown voices: clusters join while their mean cosine is at least this.",
)
@click.option("--rttm", "as_rttm", is_flag=True, help="RTTM lines (NIST diarisation format).")
@database_option
@format_options
def speakers_who(
    recording, space_name, threshold, cluster_threshold, as_rttm, database, fmt
) -> None:
    """Who speaks when in RECORDING (an id or the file's path): turns of enrolled speakers and of unknown
    voices (unknown-1, unknown-2, ...), from its voice windows.

    \b
    Examples:
      soundscape speakers who 12
      soundscape speakers who podcast.wav --rttm > podcast.rttm
    """
    from soundscape import speakers as sp
    from soundscape.speech import recording_of

    if as_rttm and fmt != "table":
        raise click.UsageError("choose one of --rttm, --json and --csv")
    with open_db(database).engine.connect() as conn:
        recording_id = recording_of(conn, recording)
        found = sp.who(
            conn,
            recording_id,
            space_name=space_name,
            threshold=threshold,
            cluster_threshold=cluster_threshold,
        )
    voices = sorted({t.speaker for t in found.turns})
    echo_err(
        f"recording {recording_id} ({found.path}), space {found.space.name}: "
        f"{found.speech_s:.1f} s of speech, {len(found.turns)} turn(s) of "
        f"{len(voices)} voice(s); enrolled: {', '.join(found.speakers) or 'none'}"
        + ("" if found.regions_from == "vad" else " (file not readable: turns from the windows)")
    )
    if not found.turns:
        echo_err("no speech windows in this recording")
    if as_rttm:
        for line in sp.rttm(found):
            click.echo(line)
        return
    emit([t.as_row() for t in found.turns], fmt, TURN_COLUMNS)
