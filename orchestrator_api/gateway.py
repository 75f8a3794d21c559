"""The WebSocket gateway: the same application served by gunicorn's gevent worker
(gunicorn_gateway.conf.py, the Procfile's `gateway`), so one process holds many thousands
of mostly idle sockets, each a pair of greenlets instead of a thread.

A load balancer sends `/ws/...` here and everything else to `web` (docs/OPERATIONS.md);
the gateway answers the HTTP API too (the same app), but is not sized for it. It runs the
hub that reads the event stream, not the outbox relay: the `web` processes publish.

Under gevent every blocking call must yield to the other greenlets: the gevent worker
patches the standard library (sockets, threads, select), which covers redis-py; psycopg2
talks to PostgreSQL in C, so it is given a wait callback that waits on gevent's hub
(`make_psycopg2_cooperative`, as psycogreen does).
"""

from __future__ import annotations

from flask import Flask

from shared.config import load_settings_or_exit


def make_psycopg2_cooperative() -> None:
    """psycopg2 waits for PostgreSQL through gevent, instead of blocking the process."""
    import psycopg2
    from gevent.socket import wait_read, wait_write
    from psycopg2 import extensions

    def wait(connection, timeout=None):
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ:
                wait_read(connection.fileno(), timeout=timeout)
            elif state == extensions.POLL_WRITE:
                wait_write(connection.fileno(), timeout=timeout)
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state}")

    extensions.set_wait_callback(wait)


def create_gateway_app() -> Flask:
    """The application with the gateway's own cap on open sockets
    (GATEWAY_MAX_CONNECTIONS instead of WS_MAX_CONNECTIONS_PER_PROCESS)."""
    from orchestrator_api.app import create_app

    settings = load_settings_or_exit()
    return create_app(
        settings.with_overrides(ws_max_connections_per_process=settings.gateway_max_connections)
    )


def start_hub(app: Flask) -> None:
    from orchestrator_api.ws_hub import Hub

    ext = app.extensions["orchestrator"]
    if ext.hub is None:
        ext.hub = Hub(ext)
