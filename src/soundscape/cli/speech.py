"""``soundscape transcript``: a recording's transcribed speech as text, subtitles or JSON (the
work is in soundscape.speech; ``search --said`` lives with the other searches)."""

from __future__ import annotations

import click

from soundscape.cli.base import cli, database_option, echo_err, open_db
from soundscape.output import emit


@cli.command()
@click.argument("recording")
@click.option("--srt", "form", flag_value="srt", help="SubRip subtitles.")
@click.option("--vtt", "form", flag_value="vtt", help="WebVTT subtitles.")
@click.option(
    "--json", "form", flag_value="json", help="One JSON object per utterance, with its words."
)
@click.option("--csv", "form", flag_value="csv", help="CSV, one row per utterance.")
@click.option("--text", "form", flag_value="text", help="Plain text, one utterance per line.")
@click.option("-m", "--model", help="The transcriber (default: the newest transcript).")
@database_option
def transcript(recording, form, model, database) -> None:
    """Print what was said in RECORDING (an id or the file's path; transcribed by `ingest
    --model whisper`), with who said it once voices are known (`speakers enrol`).

    \b
    Examples:
      soundscape transcript 12
      soundscape transcript podcast.wav --text
      soundscape transcript 12 --srt > podcast.srt
      soundscape transcript 12 --json | jq -r '.words[] | [.w, .s, .e] | @tsv'
    """
    from soundscape import speech

    with open_db(database).engine.connect() as conn:
        found = speech.get_transcript(conn, speech.recording_of(conn, recording), model)
    echo_err(
        f"recording {found.recording_id} ({found.path}): {len(found.lines)} utterance(s), "
        f"{found.speech_s:.1f} s of speech, {found.model} {found.model_version}"
    )
    if form == "srt":
        click.echo(speech.to_srt(found), nl=False)
    elif form == "vtt":
        click.echo(speech.to_vtt(found), nl=False)
    elif form == "text":
        click.echo(speech.to_text(found), nl=False)
    else:
        fmt = form if form in ("json", "csv") else "table"
        columns = ["start_s", "end_s", "speaker", "text", "utterance_id"]
        if fmt != "table":
            columns += ["starts_at", "local_date", "local_time", "language", "words"]
        emit([line.as_row() for line in found.lines], fmt, columns)
