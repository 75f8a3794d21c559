"""The client's webhook methods against a real gunicorn server and a real worker: create
(the secret once), list, get, the test event delivered to a real receiver, the delivery
log, delete, and the errors as exceptions."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from orchestrator_client import OrchestratorClient, ValidationError, WebhookNotFound
from shared.db import Database
from tests.support.processes import running_web
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver

pytestmark = pytest.mark.process


@pytest.fixture
def api(settings, celery_worker):
    cleaner = Database(settings)
    with cleaner.engine.begin() as connection:
        connection.execute(text("TRUNCATE webhooks CASCADE"))
    cleaner.dispose()
    with running_web(settings) as base_url:
        yield OrchestratorClient(base_url, retries=2, backoff=0.1)


@pytest.mark.process
def test_webhook_methods(api):
    with Receiver() as receiver:
        created = api.create_webhook(receiver.url("/ok"), ["task.*"], secret="s" * 16)
        assert created["secret"] == "s" * 16 and created["event_types"] == ["task.*"]
        made = api.create_webhook(receiver.url("/ok"), ["*"], pool="team-a")
        assert made["secret"].startswith("whsec_") and made["pool"] == "team-a"
        listed = api.list_webhooks(page_size=1)
        assert listed["total"] == 2 and listed["has_more"] and "secret" not in listed["items"][0]
        assert api.get_webhook(created["id"])["url"] == receiver.url("/ok")

        assert api.test_webhook(created["id"]) == {"queued": True}
        log = wait_for(
            lambda: [
                d
                for d in api.webhook_deliveries(created["id"])["items"]
                if d["status"] == "SUCCEEDED"
            ],
            timeout=20,
        )
        assert log[0]["event_type"] == "webhook.test" and log[0]["status_code"] == 200
        assert log[0]["attempts"] == 1 and log[0]["duration_ms"] >= 0 and log[0]["error"] is None
        (request,) = receiver.requests
        assert request.headers["X-Orchestrator-Event-Id"] == log[0]["event_id"]
        assert api.webhook_deliveries(made["id"], status="SUCCEEDED")["total"] == 0

        api.delete_webhook(created["id"])
        with pytest.raises(WebhookNotFound):
            api.get_webhook(created["id"])
        with pytest.raises(WebhookNotFound):
            api.webhook_deliveries(uuid.uuid4())
        with pytest.raises(ValidationError) as error:
            api.create_webhook("ftp://example.com/", ["task.*"])
        assert "url" in error.value.details
        with pytest.raises(ValidationError):
            api.create_webhook(receiver.url("/ok"), ["task.*"], secret="short")
