"""One live server per test module: the fixture factory every such module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.database import empty_tables
from tests.support.processes import running_gateway, running_web


def live_server_fixture(*, worker: bool = True, gateway: bool = False, **env: str):
    """A module-scoped fixture yielding the base URL of the Procfile's `web` (gunicorn)
    with `env`, on the run's database and Redis; with `worker`, the in-process Celery
    worker does its jobs. Tables are emptied once before it starts (its tests share the
    server's data: mark the module `shared_data`) and once after it stops.

    With `gateway`, the fixture is parametrized: each test runs against `web` and again
    against the Procfile's `gateway` (gevent; beside a `web` that relays the events), so
    the WebSocket promises are kept by both.

    In a test module: `live = live_server_fixture(WEB_THREADS="32")`."""

    def serve(settings, database, process: str) -> Iterator[str]:
        empty_tables(database)
        running = running_gateway if process == "gateway" else running_web
        with running(settings, **env) as base:
            yield base
        empty_tables(database)

    params = ["web", "gateway"] if gateway else ["web"]
    ids = params if gateway else [""]

    if worker:

        @pytest.fixture(scope="module", params=params, ids=ids)
        def live_server(request, settings, database, celery_worker):
            yield from serve(settings, database, request.param)

    else:

        @pytest.fixture(scope="module", params=params, ids=ids)
        def live_server(request, settings, database):
            yield from serve(settings, database, request.param)

    return live_server
