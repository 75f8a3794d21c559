"""Webhooks over the API: registration and its checks (URL, address rule, event types,
secret), roles, the secret shown once, deletion, the delivery log and the test action.
Delivery itself is tests/worker/test_webhooks.py."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from shared import relay, tokens
from shared.models import OutboxEvent
from shared.models.webhook import Webhook, WebhookDelivery
from tests.api.helpers import assert_error, start_session

KEY = "production-key-" + "w" * 49
HOOK = {"url": "http://127.0.0.1:9/hook", "event_types": ["session.*"]}


@pytest.fixture(autouse=True)
def no_webhooks(database):
    with database.engine.begin() as connection:
        connection.execute(text("TRUNCATE webhooks CASCADE"))


def _count(db, model) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(model))


def test_create_shows_the_secret_once(client, db):
    response = client.post("/api/v1/webhooks", json={**HOOK, "secret": "s" * 16})
    assert response.status_code == 201, response.json
    created = response.json
    assert created["secret"] == "s" * 16
    assert created["enabled"] is True and created["pool"] is None
    assert created["event_types"] == ["session.*"]
    one = client.get(f"/api/v1/webhooks/{created['id']}")
    assert one.status_code == 200 and "secret" not in one.json
    listed = client.get("/api/v1/webhooks").json
    assert listed["total"] == 1 and "secret" not in listed["items"][0]
    assert db.get(Webhook, created["id"]).secret == "s" * 16  # kept: deliveries are signed


def test_a_secret_is_made_when_none_is_given(client):
    first = client.post("/api/v1/webhooks", json=HOOK).json
    second = client.post("/api/v1/webhooks", json=HOOK).json
    assert first["secret"].startswith("whsec_") and len(first["secret"]) >= 40
    assert first["secret"] != second["secret"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOOK, "url": "ftp://example.com/x"}, "url"),
        ({**HOOK, "url": "file:///etc/passwd"}, "url"),
        ({**HOOK, "url": "javascript:alert(1)"}, "url"),
        ({**HOOK, "url": "http:///no-host"}, "url"),
        ({**HOOK, "url": "http://user:pw@example.com/"}, "url"),
        ({**HOOK, "url": "http://example.com:99999/"}, "url"),
        ({**HOOK, "event_types": ["session.exploded"]}, "event_types"),
        ({**HOOK, "event_types": ["session.*", "nope"]}, "event_types"),
        ({**HOOK, "event_types": ["system.health"]}, "event_types"),
        ({**HOOK, "event_types": ["webhook.test"]}, "event_types"),
        ({**HOOK, "event_types": []}, "event_types"),
        ({**HOOK, "event_types": "session.*"}, "event_types"),
        ({**HOOK, "secret": "s" * 15}, "secret"),
        ({**HOOK, "pool": "Not A Pool"}, "pool"),
        ({"event_types": ["*"]}, "url"),
        ({**HOOK, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(client, db, body, field):
    error = assert_error(client.post("/api/v1/webhooks", json=body), 400, "VALIDATION_ERROR")
    assert field in error["details"], error
    assert _count(db, Webhook) == 0


def test_unknown_event_types_are_named(client):
    response = client.post("/api/v1/webhooks", json={**HOOK, "event_types": ["task.*", "tsk.*"]})
    message = assert_error(response, 400, "VALIDATION_ERROR")["details"]["event_types"][0]
    assert "tsk.*" in message and "task.status_changed" in message


def test_every_wildcard_and_type_of_the_contract_is_accepted(client):
    body = {**HOOK, "event_types": ["*", "session.*", "task.*", "agent.*", "webhook.*"]}
    assert client.post("/api/v1/webhooks", json=body).status_code == 201
    body = {
        **HOOK,
        "event_types": ["task.status_changed", "agent.deregistered", "webhook.disabled"],
    }
    assert client.post("/api/v1/webhooks", json=body).status_code == 201


def test_unknown_and_malformed_ids(client):
    missing = "00000000-0000-0000-0000-000000000000"
    assert_error(client.get(f"/api/v1/webhooks/{missing}"), 404, "WEBHOOK_NOT_FOUND")
    assert_error(client.delete(f"/api/v1/webhooks/{missing}"), 404, "WEBHOOK_NOT_FOUND")
    assert_error(client.post(f"/api/v1/webhooks/{missing}/test"), 404, "WEBHOOK_NOT_FOUND")
    response = client.get(f"/api/v1/webhooks/{missing}/deliveries")
    assert_error(response, 404, "WEBHOOK_NOT_FOUND")
    assert_error(client.get("/api/v1/webhooks/nope"), 400, "VALIDATION_ERROR")


def test_delete_removes_the_webhook_and_its_log(client, db, database):
    created = client.post("/api/v1/webhooks", json={**HOOK, "event_types": ["*"]}).json
    start_session(client)
    relay.publish_once(database, _redis(database), retention=1000)
    assert _count(db, WebhookDelivery) >= 2  # session.created, session.status_changed
    assert client.delete(f"/api/v1/webhooks/{created['id']}").status_code == 204
    assert _count(db, Webhook) == 0 and _count(db, WebhookDelivery) == 0
    assert client.get(f"/api/v1/webhooks/{created['id']}").status_code == 404


def test_the_relay_makes_a_delivery_per_matching_webhook(client, db, database):
    wants = {
        "sessions": ["session.*"],
        "created": ["session.created"],
        "tasks": ["task.*"],
        "all": ["*"],
        "other-pool": ["session.*"],
    }
    ids = {}
    for name, types in wants.items():
        body = {**HOOK, "event_types": types}
        if name == "other-pool":
            body["pool"] = "team-b"
        ids[name] = client.post("/api/v1/webhooks", json=body).json["id"]
    start_session(client)  # session.created and session.status_changed, pool default
    relay.publish_once(database, _redis(database), retention=1000)
    db.rollback()
    got = {
        name: sorted(
            db.scalars(
                select(WebhookDelivery.event_type).where(WebhookDelivery.webhook_id == hook_id)
            )
        )
        for name, hook_id in ids.items()
    }
    both = ["session.created", "session.status_changed"]
    assert got == {
        "sessions": both,
        "created": ["session.created"],
        "tasks": [],
        "all": both,
        "other-pool": [],
    }
    published = {e.type: e.seq for e in db.scalars(select(OutboxEvent))}
    for delivery in db.scalars(select(WebhookDelivery)):
        assert delivery.event_id == published[delivery.event_type]
        assert delivery.status == "PENDING"


def test_delivery_log_and_test_event(client, db, database):
    hook = client.post("/api/v1/webhooks", json={**HOOK, "event_types": ["task.*"]}).json
    response = client.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert response.status_code == 202 and response.json == {"queued": True}
    relay.publish_once(database, _redis(database), retention=1000)
    log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json
    assert log["total"] == 1 and log["has_more"] is False
    entry = log["items"][0]
    assert entry["event_type"] == "webhook.test"  # whatever the webhook's event types
    assert entry["status"] == "PENDING" and entry["attempts"] == 0
    assert entry["status_code"] is None and entry["duration_ms"] is None
    assert entry["error"] is None and entry["event_id"] == "1"
    other = client.post("/api/v1/webhooks", json=HOOK).json
    assert client.get(f"/api/v1/webhooks/{other['id']}/deliveries").json["total"] == 0
    paged = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?page_size=1&page=2").json
    assert paged["items"] == [] and paged["total"] == 1
    bad = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?status=LOST")
    assert_error(bad, 400, "VALIDATION_ERROR")


def _redis(database):
    import redis as redis_lib

    return redis_lib.Redis.from_url(database.settings.redis_url)


# --- production: roles and the address rule ---------------------------------------------


@pytest.fixture(scope="module")
def prod_settings(settings):
    return settings.with_overrides(orchestrator_env="production", api_secret_key=KEY)


_APPS: dict = {}


def _client(settings, role="admin"):
    """A test client of an app with these settings (its own Database: the service reads
    these settings), made once per settings and role."""
    from orchestrator_api.app import create_app

    if settings not in _APPS:
        _APPS[settings] = create_app(settings)
    client = _APPS[settings].test_client()
    token = tokens.mint(key=KEY, sub="alice", role=role, agent_id=None)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture(scope="module", autouse=True)
def _dispose_apps():
    yield
    for app in _APPS.values():
        app.extensions["orchestrator"].database.dispose()
    _APPS.clear()


@pytest.fixture(scope="module")
def prod_client(prod_settings):
    return _client(prod_settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "https://no-such-host.invalid/hook",
    ],
)
def test_production_refuses_private_addresses(prod_client, db, url):
    response = prod_client.post("/api/v1/webhooks", json={**HOOK, "url": url})
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert "url" in error["details"]
    assert _count(db, Webhook) == 0


def test_production_takes_public_addresses_and_allow_private(prod_client, prod_settings):
    public = {**HOOK, "url": "https://93.184.215.14/hook"}  # a global address, never called
    assert prod_client.post("/api/v1/webhooks", json=public).status_code == 201
    allowing = _client(prod_settings.with_overrides(webhook_allow_private=True))
    response = allowing.post("/api/v1/webhooks", json={**HOOK, "url": "http://localhost:9/x"})
    assert response.status_code == 201, response.json


@pytest.mark.parametrize("role", ["viewer", "agent"])
def test_viewers_and_agents_are_forbidden(prod_settings, prod_client, role):
    hook = prod_client.post(
        "/api/v1/webhooks", json={**HOOK, "url": "https://93.184.215.14/h"}
    ).json
    client = _client(prod_settings, role=role)
    for method, path in [
        ("get", "/api/v1/webhooks"),
        ("post", "/api/v1/webhooks"),
        ("get", f"/api/v1/webhooks/{hook['id']}"),
        ("delete", f"/api/v1/webhooks/{hook['id']}"),
        ("get", f"/api/v1/webhooks/{hook['id']}/deliveries"),
        ("post", f"/api/v1/webhooks/{hook['id']}/test"),
    ]:
        kwargs = {"json": HOOK} if method == "post" else {}
        assert_error(getattr(client, method)(path, **kwargs), 403, "FORBIDDEN")
    assert prod_client.get(f"/api/v1/webhooks/{hook['id']}").status_code == 200


def test_operators_may_manage_webhooks(prod_settings):
    operator = _client(prod_settings, role="operator")
    hook = operator.post("/api/v1/webhooks", json={**HOOK, "url": "https://93.184.215.14/h"})
    assert hook.status_code == 201
    assert operator.delete(f"/api/v1/webhooks/{hook.json['id']}").status_code == 204


def test_deliveries_are_sent_to_their_own_queue(settings):
    """The API's job sender (the web processes' relay uses it) routes deliveries to the
    `webhooks` queue, and nothing else there."""
    from orchestrator_api.job_sender import make_job_sender
    from shared import job_names

    router = make_job_sender(settings).client.amqp.router
    assert router.route({}, job_names.DELIVER_WEBHOOK, (), {})["queue"].name == "webhooks"
    for name in (
        job_names.ASSIGN_READY_TASKS,
        job_names.SWEEP_WEBHOOK_DELIVERIES,
        job_names.PUBLISH_EVENTS,
    ):
        assert router.route({}, name, (), {})["queue"].name == "celery"


def test_a_disabled_webhook_takes_no_test_event(client, db, database):
    hook = client.post("/api/v1/webhooks", json=HOOK).json
    with database.transaction() as session:
        session.get(Webhook, hook["id"]).enabled = False
    response = client.post(f"/api/v1/webhooks/{hook['id']}/test")
    assert "disabled" in assert_error(response, 400, "INVALID_TRANSITION")["message"]
    db.rollback()
    assert db.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    assert client.get(f"/api/v1/webhooks/{hook['id']}").json["enabled"] is False
