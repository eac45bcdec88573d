"""``soundscape serve``: the web page for rangers (search, listen, say yes / no / unsure;
recordings, activity, sensors, the job queue), FastAPI + Jinja2 served by uvicorn.

It calls the same library functions as the CLI. Needs the ``web`` extra
(``pip install 'soundscape[web]'``); nothing here is imported by the base CLI.
"""

from soundscape.web.app import WebConfig, create_app

__all__ = ["WebConfig", "create_app"]
