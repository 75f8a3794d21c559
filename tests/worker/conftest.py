"""A real Celery worker (threads pool) consuming from the test Redis db, and an API app
that sends its jobs there, for the orchestration tests."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker


@pytest.fixture(scope="session")
def celery_worker(settings):
    from orchestrator_worker import runtime
    from orchestrator_worker.celery_app import app as celery_app

    celery_app.conf.broker_url = settings.redis_url
    runtime.configure(settings)
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield celery_app


@pytest.fixture(scope="session")
def engine_app(settings, celery_worker):
    """The API wired as in production: jobs go to the broker, the worker does them."""
    from orchestrator_api.app import create_app

    return create_app(settings)


@pytest.fixture
def api(engine_app):
    return engine_app.test_client()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
