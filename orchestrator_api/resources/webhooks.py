"""Webhooks (docs/API.md, "Webhooks"): admin and operator only."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from orchestrator_api import pool_scope
from orchestrator_api.auth import FULL_ACCESS_ROLES
from orchestrator_api.database import db
from orchestrator_api.resources.common import Blueprint, parse_id
from orchestrator_api.schemas.common import PageQuerySchema, page_body
from orchestrator_api.schemas.webhooks import (
    CreatedWebhookSchema,
    DeliveryListQuerySchema,
    DeliveryPageSchema,
    WebhookCreateSchema,
    WebhookPageSchema,
    WebhookSchema,
    WebhookTestSentSchema,
)
from shared.errors import Forbidden
from shared.services import webhooks as service

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks", description="Webhooks")


@blp.before_request
def _admins_and_operators_only() -> None:
    # The role table lets viewers read every route; a webhook's URL and delivery log
    # are not for them (agents are refused by the role table already).
    principal = getattr(g, "principal", None)
    if principal is not None and principal.role not in FULL_ACCESS_ROLES:
        raise Forbidden("Webhooks are for admin and operator tokens")


@blp.route("")
class Webhooks(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, WebhookPageSchema)
    def get(self, query):
        """List webhooks, newest first (secrets are never shown)."""
        page = service.list_webhooks(db(), **query, pools=pool_scope.visible_pools())
        return page_body(page, page.items)

    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, CreatedWebhookSchema)
    def post(self, body):
        """Register a webhook. The answer carries its signing secret, the only time it is
        shown."""
        if pool_scope.visible_pools() is not None:  # scoped: never a webhook of every pool
            body["pool"] = pool_scope.creation_pool(body.get("pool"))
        return service.create(db(), **body)


@blp.route("/<webhook_id>")
class WebhookById(MethodView):
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id):
        """Get one webhook."""
        return service.get_or_raise(db(), webhook_id=parse_id(webhook_id))

    @blp.response(204)
    def delete(self, webhook_id):
        """Delete a webhook and its delivery log; nothing more is sent to it."""
        service.delete(db(), webhook_id=parse_id(webhook_id))


@blp.route("/<webhook_id>/deliveries", methods=["GET"])
@blp.arguments(DeliveryListQuerySchema, location="query")
@blp.response(200, DeliveryPageSchema)
def deliveries(query, webhook_id):
    """The delivery log, newest first: one entry per event, with its last attempt."""
    page = service.list_deliveries(db(), webhook_id=parse_id(webhook_id), **query)
    return page_body(page, page.items)


@blp.route("/<webhook_id>/test", methods=["POST"])
@blp.response(202, WebhookTestSentSchema)
def send_test(webhook_id):
    """Send a `webhook.test` event to this webhook, through the path every event takes
    (it appears in the delivery log)."""
    service.send_test(db(), webhook_id=parse_id(webhook_id))
    return {"queued": True}
