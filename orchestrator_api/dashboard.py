"""The dashboard: one server-rendered page at /dashboard (and / redirects to it).

The page is a shell; the JavaScript modules under `static/dashboard/` (entry `main.js`)
read the API over HTTP and follow the WebSocket streams, with the same token (kept in
the browser's sessionStorage); a SharedWorker (`stream_worker.js`) holds the streams for
every tab. No build step and nothing from a CDN: the page works offline. Outside /api/v1,
so neither authentication nor the rate limit applies to the page itself (nor to
/favicon.ico); its API calls have both.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from shared import __version__
from shared.enums import (
    AgentStatus,
    Capability,
    Complexity,
    Priority,
    SessionStatus,
    SessionType,
    TaskStatus,
)
from shared.templates import TEMPLATES

blp = Blueprint("dashboard", __name__)


@blp.get("/")
def index():
    return redirect(url_for("dashboard.dashboard"))


@blp.get("/favicon.ico")
def favicon():
    """Browsers ask for it on every page (/docs too): the dashboard's SVG icon."""
    response = redirect(url_for("static", filename="dashboard/favicon.svg"), code=301)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@blp.get("/dashboard")
def dashboard():
    settings = current_app.extensions["orchestrator"].settings
    templates = {
        template.value: " → ".join(step.title for step in steps)
        for template, steps in TEMPLATES.items()
    }
    html = render_template(
        "dashboard.html",
        version=__version__,
        auth_required=settings.is_production,
        flower_port=settings.flower_port,
        flower_url=settings.flower_url,
        session_statuses=list(SessionStatus),
        session_types=list(SessionType),
        priorities=list(Priority),
        task_statuses=list(TaskStatus),
        agent_statuses=list(AgentStatus),
        capabilities=list(Capability),
        complexities=list(Complexity),
        templates=templates,
    )
    response = current_app.make_response(html)
    # Only this origin's script, styles, worker and sockets; no inline script, no framing.
    sockets = f"ws://{request.host} wss://{request.host}"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; connect-src 'self' {sockets}; img-src 'self' data:; "
        "worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
