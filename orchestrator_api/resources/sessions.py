"""Sessions (CONTRACT section 2)."""

from __future__ import annotations

from flask.views import MethodView

from orchestrator_api import pool_scope
from orchestrator_api.database import db
from orchestrator_api.resources.common import Blueprint, parse_id
from orchestrator_api.schemas.common import page_body
from orchestrator_api.schemas.sessions import (
    SessionCreateSchema,
    SessionListQuerySchema,
    SessionPageSchema,
    SessionSchema,
)
from orchestrator_api.views import session_views
from shared.services import sessions as service

blp = Blueprint("sessions", __name__, url_prefix="/api/v1/sessions", description="Sessions")


@blp.route("")
class Sessions(MethodView):
    @blp.arguments(SessionListQuerySchema, location="query")
    @blp.response(200, SessionPageSchema)
    def get(self, query):
        """List sessions, newest first."""
        page, progress = service.list_with_progress(db(), **query, pools=pool_scope.visible_pools())
        return page_body(page, session_views(page.items, progress))

    @blp.arguments(SessionCreateSchema)
    @blp.response(201, SessionSchema)
    def post(self, body):
        """Create a session."""
        body["pool"] = pool_scope.creation_pool(body.get("pool"))
        work_session = service.create(db(), **body)
        db().flush()
        return session_views([work_session], {work_session.id: service.no_progress()})[0]


@blp.route("/<id(statistics):session_id>")  # not /statistics: resources/statistics.py
class SessionById(MethodView):
    @blp.response(200, SessionSchema)
    def get(self, session_id):
        """Get one session with its progress."""
        work_session, progress = service.get_with_progress(db(), session_id=parse_id(session_id))
        return session_views([work_session], {work_session.id: progress})[0]


def _action_view(action: str):
    @blp.response(200, SessionSchema)
    def view(session_id):
        work_session = service.apply_action(db(), session_id=parse_id(session_id), action=action)
        db().flush()
        return session_views([work_session])[0]

    view.__name__ = f"{action}_session"
    view.__doc__ = f"{action.capitalize()} a session."
    return view


for _action in ("start", "pause", "resume", "cancel", "complete"):
    blp.route(f"/<session_id>/{_action}", methods=["POST"])(_action_view(_action))
