"""The application factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
from celery import Celery
from flask import Flask, Response
from flask_smorest import Api

from orchestrator_api import (
    auth,
    cors,
    database,
    errors,
    heartbeats,
    idempotency,
    limits,
    openapi,
    request_log,
)
from orchestrator_api.job_sender import make_job_sender
from orchestrator_api.request_body import MAX_BODY_BYTES, check_body
from orchestrator_api.schemas.common import ErrorSchema
from shared import __version__
from shared.config import Settings, load_settings_or_exit
from shared.db import Database
from shared.group_commit import GroupCommit
from shared.logs import configure_logging

log = logging.getLogger(__name__)


class OrchestratorApi(Api):
    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # errors.ErrorResponsesPlugin lists them instead

    def handle_http_exception(self, error):
        return errors.handle_http_exception(error)


@dataclass
class Extensions:
    settings: Settings
    database: Database
    redis: redis.Redis
    celery: Celery
    heartbeats: GroupCommit  # heartbeats that arrive together share one transaction
    hub: Any = None  # the WebSocket hub, started with the first socket
    relay: Any = None  # the outbox relay thread, started by `start_background`


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings_or_exit()
    configure_logging(settings)
    if not settings.api_secret_key:
        log.warning("API_SECRET_KEY is not set: using the public development key")

    app = Flask("orchestrator_api")
    app.config.update(
        API_TITLE="Orchestrator API",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
    app.json.sort_keys = False

    job_sender = make_job_sender(settings)
    database_ = Database(settings, job_sender=job_sender)
    app.extensions["orchestrator"] = Extensions(
        settings=settings,
        database=database_,
        heartbeats=GroupCommit(partial(heartbeats.write_heartbeats, database_)),
        redis=redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
        celery=job_sender.client,
    )

    plugins = [auth.BearerAuthPlugin(), errors.ErrorResponsesPlugin()]
    api = OrchestratorApi(app, spec_kwargs={"extra_plugins": plugins})
    request_log.register(app)  # first: binds the request id, logs the final status
    app.after_request(_add_request_id)  # runs after the others: on a commit's error answer too
    cors.register(app, cors.parse_origins(settings.cors_origins))  # preflights stop here
    errors.register(app)
    database.register(app)
    limits.register(app, settings)  # counts first: refused tokens count too
    database.run_again_from_here(app)  # run again after a lost connection: the hooks below
    auth.register(app)
    app.before_request(check_body)
    app.before_request(idempotency.check_request)

    from orchestrator_api import dashboard, metrics, ws
    from orchestrator_api.resources import agents, health, sessions, statistics, task_logs, tasks

    ws.register(app)
    app.register_blueprint(health.blp)
    app.register_blueprint(dashboard.blp)
    metrics.register(app)
    for blueprint in (sessions.blp, agents.blp, tasks.blp, task_logs.blp, statistics.blp):
        api.register_blueprint(blueprint)
    from orchestrator_api.resources import webhooks as webhook_routes

    api.register_blueprint(webhook_routes.blp)
    openapi.describe(api, app)  # /health, /ready, /metrics and the WebSocket streams
    return app


def start_background(app: Flask) -> None:
    """In each web process (gunicorn's post_worker_init): the relay that publishes
    committed events, and the hub that fans them out to this process's sockets."""
    from orchestrator_api.ws_hub import Hub
    from shared import notify
    from shared.metrics import EVENTS_PUBLISHED
    from shared.relay import RelayThread

    ext = app.extensions["orchestrator"]
    if ext.relay is None:
        ext.relay = RelayThread(
            ext.database,
            ext.redis,
            retention=ext.settings.event_retention,
            listener=notify.listener(notify.listen_url(ext.settings)),
            on_published=EVENTS_PUBLISHED.inc,
        )
        ext.relay.start()
    if ext.hub is None:
        ext.hub = Hub(ext)


def _add_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = errors.request_id()
    return response
