"""Webhook deliveries through a real Celery worker to a real HTTP receiver: signatures
checked with the README's snippet, every retry rule, the disable rule, the address rule
at delivery time, and the sweep that re-sends what a lost job left."""

from __future__ import annotations

import json
import os
import re
import time
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import select, text

from orchestrator_api.job_sender import make_job_sender
from orchestrator_worker import runtime
from shared import events, job_names, relay, webhook_http
from shared.db import Database
from shared.models import OutboxEvent
from shared.models.webhook import Webhook, WebhookDelivery
from shared.services import webhook_deliveries as deliveries_service
from shared.services import webhooks
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Receiver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "a-secret-of-the-test-0123456789"


def readme_verifier():
    """`verify_signature` exactly as README.md's Webhooks section shows it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    section = readme[readme.index("## Webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102  (our own README)
    return namespace["verify_signature"]


class Stack:
    """The worker's runtime and a relay with these settings (small retry values)."""

    def __init__(self, settings, **overrides) -> None:
        self.settings = settings.with_overrides(**overrides)
        runtime.configure(self.settings)
        self.database = Database(self.settings, job_sender=make_job_sender(self.settings))
        self.redis = redis_lib.Redis.from_url(self.settings.redis_url)

    def hook(self, url: str, event_types=("*",), pool=None) -> uuid.UUID:
        with self.database.transaction() as db:
            webhook = webhooks.create(
                db, url=url, event_types=list(event_types), pool=pool, secret=SECRET
            )
            return webhook.id

    def emit(self, count: int = 1, event_type: str = events.TASK_STATUS_CHANGED) -> list[int]:
        with self.database.transaction() as db:
            for i in range(count):
                events.record(db, event_type, task_id=str(uuid.uuid4()), n=i)
        self.publish()
        with self.database.engine.connect() as connection:
            return list(
                connection.scalars(
                    text("SELECT seq FROM outbox_events ORDER BY seq DESC LIMIT :n"), {"n": count}
                )
            )[::-1]

    def publish(self) -> None:
        while relay.publish_once(self.database, self.redis, retention=100_000):
            pass

    def deliveries(self, webhook_id) -> list[WebhookDelivery]:
        with self.database.transaction() as db:
            return list(
                db.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.webhook_id == webhook_id)
                    .order_by(WebhookDelivery.event_id)
                )
            )

    def webhook(self, webhook_id) -> Webhook:
        with self.database.transaction() as db:
            return db.get(Webhook, webhook_id)

    def settled(self, webhook_id, count: int = 1):
        found = self.deliveries(webhook_id)
        return len(found) >= count and all(d.status != "PENDING" for d in found) and found


@pytest.fixture
def make_stack(settings, celery_worker):
    cleaner = Database(settings)
    with cleaner.engine.begin() as connection:
        connection.execute(text("TRUNCATE webhooks CASCADE"))
    cleaner.dispose()
    made = []

    def make(**overrides) -> Stack:
        base = {
            "webhook_timeout_seconds": 1.0,
            "webhook_retry_base_seconds": 0.2,
            "webhook_retry_max_delay_seconds": 5.0,
            "webhook_redispatch_seconds": 1.0,
        }
        stack = Stack(settings, **{**base, **overrides})
        made.append(stack)
        return stack

    yield make
    runtime.configure(settings)
    for stack in made:
        stack.database.dispose()


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def test_events_arrive_signed_once_each_with_their_ids(make_stack, receiver):
    stack = make_stack()
    hook = stack.hook(receiver.url("/ok"))
    ids = stack.emit(5)
    deliveries = wait_for(lambda: stack.settled(hook, 5))
    verify = readme_verifier()
    got = receiver.to("/ok")
    assert sorted(int(r.headers["X-Orchestrator-Event-Id"]) for r in got) == ids
    for request in got:
        assert verify(SECRET, request.body, request.headers["X-Orchestrator-Signature"])
        assert not verify(
            "another-secret-0123456789", request.body, request.headers["X-Orchestrator-Signature"]
        )
        assert not verify(SECRET, request.body + b" ", request.headers["X-Orchestrator-Signature"])
        body = json.loads(request.body)
        assert body["id"] == request.headers["X-Orchestrator-Event-Id"]
        assert body["type"] == "task.status_changed" == request.headers["X-Orchestrator-Event-Type"]
        assert set(body) == {"id", "type", "payload", "timestamp"} and "task_id" in body["payload"]
        assert request.headers["X-Orchestrator-Webhook-Id"] == str(hook)
        assert request.headers["Content-Type"] == "application/json"
    assert all(d.status == "SUCCEEDED" and d.attempts == 1 for d in deliveries)
    assert all(d.last_status_code == 200 and d.last_duration_ms is not None for d in deliveries)
    assert stack.webhook(hook).consecutive_failures == 0


def test_an_old_signature_is_refused_by_the_snippet():
    verify = readme_verifier()
    body = b'{"id":"1"}'
    old = webhook_http.sign(SECRET, int(time.time()) - 3600, body)
    assert not verify(SECRET, body, old)
    assert verify(SECRET, body, webhook_http.sign(SECRET, int(time.time()), body))
    assert not verify(SECRET, body, "garbage")


def test_5xx_is_retried_with_growing_backoff_until_it_succeeds(make_stack, receiver):
    stack = make_stack(webhook_retry_base_seconds=0.3)
    hook = stack.hook(receiver.url("/flaky/3"))
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook), timeout=20)
    assert delivery.status == "SUCCEEDED" and delivery.attempts == 4
    got = receiver.to("/flaky/3")
    assert len(got) == 4 and len({r.body for r in got}) == 1  # the same event each time
    assert [r.headers["X-Orchestrator-Attempt"] for r in got] == ["1", "2", "3", "4"]
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    for attempt, gap in enumerate(gaps, start=1):  # at least half of base x 2^(attempt-1)
        assert gap >= 0.3 * 2 ** (attempt - 1) / 2 - 0.02, gaps


def test_429_waits_for_retry_after(make_stack, receiver):
    stack = make_stack(webhook_retry_base_seconds=0.05)
    hook = stack.hook(receiver.url("/status/429?retry_after=2"))
    stack.emit(1)
    wait_for(lambda: len(receiver.requests) >= 2, timeout=10)
    first, second = receiver.requests[:2]
    assert second.at - first.at >= 1.9  # not the 0.05 s backoff
    (delivery,) = stack.deliveries(hook)
    assert delivery.last_status_code == 429


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_other_4xx_are_not_retried(make_stack, receiver, status):
    stack = make_stack(webhook_retry_base_seconds=0.05)
    hook = stack.hook(receiver.url(f"/status/{status}"))
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook))
    assert delivery.status == "FAILED" and delivery.attempts == 1
    assert delivery.last_status_code == status and f"HTTP {status}" in delivery.last_error
    time.sleep(0.5)
    assert len(receiver.requests) == 1


def test_a_hanging_receiver_times_out_and_is_retried(make_stack, receiver):
    stack = make_stack(webhook_timeout_seconds=0.5, webhook_retry_base_seconds=0.1)
    hook = stack.hook(receiver.url("/hang/3"))
    stack.emit(1)
    wait_for(lambda: stack.deliveries(hook)[0].attempts >= 2, timeout=10)
    delivery = stack.deliveries(hook)[0]
    assert delivery.last_error.startswith("timed out") or delivery.lease_until is not None
    assert delivery.status == "PENDING"  # still retrying
    timed_out = wait_for(lambda: [d for d in stack.deliveries(hook) if d.last_error], timeout=5)
    assert "timed out after 0.5 s" in timed_out[0].last_error
    assert 450 <= timed_out[0].last_duration_ms < 1500
    with stack.database.transaction() as db:  # stop it retrying
        db.execute(text("DELETE FROM webhooks"))


def test_a_redirect_is_not_followed(make_stack, receiver):
    stack = make_stack()
    hook = stack.hook(receiver.url("/redirect"))
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook))
    assert delivery.status == "FAILED" and delivery.last_status_code == 302
    assert "redirects are not followed" in delivery.last_error
    time.sleep(0.3)
    assert receiver.to("/ok") == []


def test_a_huge_body_is_not_read(make_stack, receiver):
    stack = make_stack(webhook_timeout_seconds=5.0)
    hook = stack.hook(receiver.url("/huge"))
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook))
    assert delivery.status == "SUCCEEDED" and delivery.last_duration_ms < 1000
    time.sleep(0.3)
    assert receiver.huge_bytes_written < 10 * 1024 * 1024  # the client hung up


def test_consecutive_failures_disable_the_webhook_with_an_event(make_stack, receiver):
    stack = make_stack(webhook_disable_after_failures=4, webhook_retry_base_seconds=0.05)
    failing = stack.hook(receiver.url("/status/500"))
    watcher = stack.hook(receiver.url("/ok"), event_types=["webhook.*"])
    stack.emit(3)
    wait_for(lambda: not stack.webhook(failing).enabled, timeout=15)
    webhook = stack.webhook(failing)
    assert webhook.disabled_at is not None and webhook.consecutive_failures >= 4
    assert all(d.status == "FAILED" for d in stack.deliveries(failing))
    with stack.database.transaction() as db:
        disabled = db.scalars(
            select(OutboxEvent).where(OutboxEvent.type == events.WEBHOOK_DISABLED)
        ).all()
    assert [e.payload["webhook_id"] for e in disabled] == [str(failing)]
    # the event reaches other webhooks that want it, like any event
    stack.publish()
    wait_for(lambda: stack.settled(watcher))
    (told,) = receiver.to("/ok")
    assert json.loads(told.body)["payload"]["webhook_id"] == str(failing)
    count = len(receiver.to("/status/500"))
    stack.emit(2)  # a disabled webhook gets nothing more
    time.sleep(0.5)
    assert len(receiver.to("/status/500")) == count and len(stack.deliveries(failing)) == 3


def test_a_success_resets_the_failure_count(make_stack, receiver):
    stack = make_stack(webhook_disable_after_failures=3, webhook_retry_base_seconds=0.05)
    hook = stack.hook(receiver.url("/flaky/2"))
    stack.emit(1)
    wait_for(lambda: stack.settled(hook))
    webhook = stack.webhook(hook)
    assert webhook.enabled and webhook.consecutive_failures == 0


def test_retries_stop_when_the_window_is_spent(make_stack, receiver):
    stack = make_stack(webhook_retry_base_seconds=0.2, webhook_retry_window_seconds=1.0)
    hook = stack.hook(receiver.url("/status/503"))
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook), timeout=10)
    assert delivery.status == "FAILED" and "gave up" in delivery.last_error
    assert 2 <= delivery.attempts <= 5


def test_the_address_is_checked_again_at_delivery(make_stack, receiver):
    """Registered in development, delivered in production: the name now resolves to a
    loopback address, which the attempt refuses without connecting (no retry)."""
    stack = make_stack()
    hook = stack.hook(receiver.url("/ok").replace("127.0.0.1", "localhost"))
    make_stack(orchestrator_env="production", api_secret_key="k" * 40)  # the worker's
    stack.emit(1)
    (delivery,) = wait_for(lambda: stack.settled(hook))
    assert delivery.status == "FAILED" and delivery.last_error.startswith("refused:")
    assert "loopback, private or link-local" in delivery.last_error
    assert receiver.requests == []


def test_post_connects_to_the_address_it_checked(settings, receiver):
    production = settings.with_overrides(orchestrator_env="production", api_secret_key="k" * 40)
    refused = webhook_http.post(receiver.url("/ok"), b"{}", {}, production)
    assert refused.error.startswith("refused:") and not refused.retryable
    assert receiver.requests == []
    allowed = production.with_overrides(webhook_allow_private=True)
    url = receiver.url("/ok").replace("127.0.0.1", "localhost")
    outcome = webhook_http.post(url, b"{}", {"Host-Check": "1"}, allowed)
    assert outcome.succeeded
    (request,) = receiver.requests
    assert request.headers["Host"].startswith("localhost:")  # the URL's host, not the address


def test_the_sweep_sends_deliveries_whose_jobs_were_lost(make_stack, receiver, celery_worker):
    stack = make_stack(webhook_redispatch_seconds=0.5)
    hook = stack.hook(receiver.url("/ok"))
    lost = Database(stack.settings, job_sender=None)  # the relay's jobs never reach Redis
    with lost.transaction() as db:
        for i in range(3):
            events.record(db, events.TASK_CREATED, task_id=str(uuid.uuid4()), n=i)
    relay.publish_once(lost, stack.redis, retention=100_000)
    lost.dispose()
    assert all(d.status == "PENDING" for d in stack.deliveries(hook))
    time.sleep(0.6)
    celery_worker.send_task(job_names.SWEEP_WEBHOOK_DELIVERIES)
    deliveries = wait_for(lambda: stack.settled(hook, 3))
    assert all(d.status == "SUCCEEDED" for d in deliveries)
    assert len(receiver.requests) == 3


def test_a_test_event_goes_to_its_webhook_only(make_stack, receiver):
    stack = make_stack()
    target = stack.hook(receiver.url("/ok"), event_types=["agent.heartbeat"])
    stack.hook(receiver.url("/other"), event_types=["*"])
    with stack.database.transaction() as db:
        webhooks.send_test(db, webhook_id=target)
    stack.publish()
    (delivery,) = wait_for(lambda: stack.settled(target))
    assert delivery.status == "SUCCEEDED" and delivery.event_type == "webhook.test"
    time.sleep(0.3)
    assert receiver.to("/other") == []


def test_a_slow_receiver_holds_only_its_share_of_the_worker(make_stack, receiver):
    """The test worker has 4 threads; a webhook may have 1 delivery in flight: its
    backlog goes one at a time (a job goes on with the next), and another webhook's
    deliveries pass at once."""
    stack = make_stack(webhook_max_in_flight=1, webhook_timeout_seconds=5.0)
    slow = stack.hook(receiver.url("/slow/1"), event_types=["task.created"])
    fast = stack.hook(receiver.url("/ok"), event_types=["task.status_changed"])
    stack.emit(5, event_type=events.TASK_CREATED)
    wait_for(lambda: receiver.to("/slow/1"))
    began = time.monotonic()
    stack.emit(5, event_type=events.TASK_STATUS_CHANGED)
    wait_for(lambda: stack.settled(fast, 5), timeout=10)
    assert time.monotonic() - began < 1.5  # not behind the slow receiver's backlog
    assert any(d.status == "PENDING" for d in stack.deliveries(slow))
    deliveries = wait_for(lambda: stack.settled(slow, 5), timeout=20)
    assert all(d.status == "SUCCEEDED" and d.attempts == 1 for d in deliveries)
    starts = [r.at for r in receiver.to("/slow/1")]
    assert len(starts) == 5
    assert all(b - a >= 0.9 for a, b in zip(starts, starts[1:], strict=False)), starts


def test_the_sweep_forgets_finished_deliveries_past_their_retention(make_stack, receiver):
    stack = make_stack(webhook_delivery_retention_seconds=60)
    hook = stack.hook(receiver.url("/ok"))
    stack.emit(3)
    wait_for(lambda: stack.settled(hook, 3))
    with stack.database.transaction() as db:
        old, recent, _ = [d.id for d in stack.deliveries(hook)]
        db.execute(
            text(
                "UPDATE webhook_deliveries SET created_at = now() - interval '61 seconds' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [old]},
        )
        # an old delivery still pending is kept whatever its age
        db.execute(
            text(
                "UPDATE webhook_deliveries SET created_at = now() - interval '1 day', "
                "status = 'PENDING', next_attempt_at = now() + interval '1 hour' WHERE id = :id"
            ),
            {"id": recent},
        )
    with stack.database.transaction() as db:
        pruned = deliveries_service.prune(db)
    assert pruned == 1
    assert old not in {d.id for d in stack.deliveries(hook)}
    assert len(stack.deliveries(hook)) == 2
