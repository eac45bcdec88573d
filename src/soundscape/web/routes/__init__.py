"""The web page's routes, one ``APIRouter`` per area; ``create_app`` includes them all.

- ``health``: ``/healthz`` and ``/`` (to the search page)
- ``search``: ``/search`` (GET: a query; POST: an uploaded audio example)
- ``review``: ``/annotations`` (a reviewer's yes / no / unsure, and its undo)
- ``queue``: ``/review`` (the review queue: one clip at a time, by keyboard; retrain)
- ``media``: clips, spectrograms, a recording's audio and its plot
- ``recordings``: ``/recordings`` and one recording's page
- ``overview``: ``/activity``, ``/sensors``, ``/jobs``
- ``density``: ``/density`` (call density: samples, estimates per site and day)
- ``auth``: ``/login``, ``/logout``
"""

from fastapi import APIRouter

from soundscape.web.routes import (
    auth,
    density,
    health,
    media,
    overview,
    queue,
    recordings,
    review,
    search,
)

#: Every router, in the order the app includes them.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    search.router,
    review.router,
    queue.router,
    media.router,
    recordings.router,
    overview.router,
    density.router,
    auth.router,
)

__all__ = ["ROUTERS"]
