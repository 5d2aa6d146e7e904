"""Sessions: one session's turns, each with its messages, response, model, prompt, trace and
span ids, and every feedback on it from every source (this is not the blind review screen)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from feedbackloop.console.web import Page, error_page, page, redirect
from feedbackloop.v1 import ingestion_pb2

MAX_SESSION_ID_CHARS = 256


@page
async def find_session(request: Request, page: Page) -> Response:
    session_id = (request.query_params.get("session_id") or "").strip()
    if session_id:
        if len(session_id) > MAX_SESSION_ID_CHARS:
            return error_page(
                request, 400, f"session_id: at most {MAX_SESSION_ID_CHARS} characters", session=page.session
            )
        return redirect(f"/sessions/{quote(session_id, safe='')}")
    return page.render("sessions/find.html")


@page
async def session_screen(request: Request, page: Page) -> Response:
    session_id = request.path_params["session_id"]
    reply = await page.call(
        page.console.backend.ingestion.GetSession, ingestion_pb2.GetSessionRequest(session_id=session_id)
    )
    feedback_count = sum(len(turn.feedback) for turn in reply.turns) + len(reply.session_feedback)
    return page.render("sessions/session.html", reply=reply, feedback_count=feedback_count)


@page
async def feedback_link(request: Request, page: Page) -> Response:
    """A feedback id, wherever a screen names one, opens the feedback in its session."""
    reply = await page.call(
        page.console.backend.ingestion.GetFeedback,
        ingestion_pb2.GetFeedbackRequest(feedback_id=request.path_params["feedback_id"]),
    )
    if not reply.feedback.session_id:
        return error_page(
            request, 404, f"Feedback {reply.feedback.id} is not in a session yet.", session=page.session
        )
    return redirect(
        f"/sessions/{quote(reply.feedback.session_id, safe='')}#{quote(reply.feedback.id, safe='')}"
    )


routes = [
    Route("/feedback/{feedback_id}", feedback_link, methods=["GET"]),
    Route("/sessions", find_session, methods=["GET"]),
    Route("/sessions/{session_id}", session_screen, methods=["GET"]),
]
