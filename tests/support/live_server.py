"""One live server per test module: the fixture factory every such module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.database import empty_tables
from tests.support.processes import running_web


def live_server_fixture(*, worker: bool = True, **env: str):
    """A module-scoped fixture yielding the base URL of the Procfile's `web` (gunicorn)
    with `env`, on the run's database and Redis; with `worker`, the in-process Celery
    worker does its jobs. Tables are emptied once before it starts (its tests share the
    server's data: mark the module `shared_data`) and once after it stops.

    In a test module: `live = live_server_fixture(WEB_THREADS="32")`."""

    def serve(settings, database) -> Iterator[str]:
        empty_tables(database)
        with running_web(settings, **env) as base:
            yield base
        empty_tables(database)

    if worker:

        @pytest.fixture(scope="module")
        def live_server(settings, database, celery_worker):
            yield from serve(settings, database)

    else:

        @pytest.fixture(scope="module")
        def live_server(settings, database):
            yield from serve(settings, database)

    return live_server
