"""Signing in and out: ``/login`` (a reviewer's database role and password, throttled) and
``/logout``; both rotate the session (a new id, so a stolen pre-sign-in cookie is worthless)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from soundscape.web.deps import checked_form, database, local_path, render, session
from soundscape.web.security import Sessions, SignInError, Throttle, sign_in

router = APIRouter()


@router.get("/login")
def login_page(request: Request) -> Response:
    return render(request, "login.html", message=None, next=request.query_params.get("next"))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_form(request)
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    client = request.client.host if request.client else "?"
    throttle: Throttle = request.app.state.throttle
    if not throttle.allowed(f"ip:{client}", f"name:{name}"):
        return render(
            request,
            "login.html",
            429,
            message="too many attempts; wait a few minutes",
            next=None,
        )
    try:
        writer = await run_in_threadpool(sign_in, database(request).engine, name, password)
    except SignInError as exc:
        throttle.failed(f"ip:{client}", f"name:{name}")
        return render(request, "login.html", 401, message=str(exc), next=form.get("next"))
    sessions: Sessions = request.app.state.sessions
    signed_in = sessions.rotate(session(request))
    signed_in.user, signed_in.writer = name, writer
    request.state.session = signed_in
    return RedirectResponse(local_path(form.get("next")), status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    sessions: Sessions = request.app.state.sessions
    request.state.session = sessions.rotate(session(request))
    return RedirectResponse("/search", status_code=303)
