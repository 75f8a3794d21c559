"""A real Celery worker (threads pool) consuming from the test Redis db, and an API app
that sends its jobs there, for the orchestration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def engine_app(settings, celery_worker):
    """The API wired as in production: jobs go to the broker, the worker does them."""
    from orchestrator_api.app import create_app

    return create_app(settings)


@pytest.fixture
def api(engine_app):
    return engine_app.test_client()
