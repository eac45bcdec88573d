"""Audio and images, served by stored id only (``soundscape.web.media`` does the reading):
a window's clip and spectrogram, a span of a recording, the recording's own file (with HTTP
range requests) and its plot. Errors answer JSON (``deps.error``), never a page."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from soundscape.web import media
from soundscape.web.deps import connect, error, viewer

router = APIRouter()

#: How long a browser may keep a window's clip or image (they never change).
CLIP_CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get("/clips/{segment_id}.wav")
def clip(request: Request, segment_id: int) -> Response:
    viewer(request)
    with connect(request) as conn:
        span = media.window_span(conn, segment_id)
    return Response(media.clip_wav(span), media_type="audio/wav", headers=CLIP_CACHE)


@router.get("/clips/{segment_id}.png")
def clip_png(request: Request, segment_id: int) -> Response:
    viewer(request)
    with connect(request) as conn:
        span = media.window_span(conn, segment_id)
    return Response(media.clip_png(span), media_type="image/png", headers=CLIP_CACHE)


@router.get("/recordings/{recording_id}/clip.wav")
def span_clip(request: Request, recording_id: int, start: float, end: float) -> Response:
    """A span of a recording (an event of several windows) with padding, at most
    ``media.MAX_CLIP_S`` long."""
    viewer(request)
    with connect(request) as conn:
        span = media.recording_span(conn, recording_id, start, end)
    return Response(media.clip_wav(span), media_type="audio/wav")


@router.get("/recordings/{recording_id}/clip.png")
def span_png(request: Request, recording_id: int, start: float, end: float) -> Response:
    viewer(request)
    with connect(request) as conn:
        span = media.recording_span(conn, recording_id, start, end)
    return Response(media.clip_png(span), media_type="image/png")


@router.get("/recordings/{recording_id}/audio")
def recording_audio(request: Request, recording_id: int) -> Response:
    """The recording's own file, with HTTP range requests (seekable, streamed)."""
    viewer(request)
    with connect(request) as conn:
        opened, mime = media.recording_file(conn, recording_id)
    try:
        ranged = media.byte_range(request.headers.get("range"), opened.size)
    except media.RangeNotSatisfiable as exc:
        opened.close()
        response = error(request, str(exc), 416)
        response.headers["Content-Range"] = f"bytes */{opened.size}"
        return response
    start, end = ranged or (0, opened.size)
    headers = {
        "Cache-Control": "private",
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
    }
    if ranged is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{opened.size}"

    def body() -> Iterator[bytes]:
        with opened:  # read from the checked descriptor only, then close it
            yield from opened.iter_bytes(start, end)

    status = 200 if ranged is None else 206
    return StreamingResponse(body(), status_code=status, media_type=mime, headers=headers)


@router.get("/recordings/{recording_id}/plot.png")
def recording_plot(
    request: Request, recording_id: int, start: float | None = None, end: float | None = None
) -> Response:
    viewer(request)
    with connect(request) as conn:
        png, source = media.recording_png(conn, recording_id, start, end)
    # X-Spectrogram: "stored" (the recording's overview) or "decoded" (its audio, slower)
    headers = {"Cache-Control": "private", "X-Spectrogram": source}
    return Response(png, media_type="image/png", headers=headers)
