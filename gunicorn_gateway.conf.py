"""gunicorn settings for the `gateway` process: the WebSocket routes on gevent, from the
environment through shared.config's Settings (GATEWAY_CONCURRENCY, GATEWAY_MAX_CONNECTIONS,
ACCESS_LOG). The logging, the start-up check and the metrics hooks are `web`'s
(gunicorn.conf.py)."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "orchestrator_web_gunicorn_conf", os.path.join(os.path.dirname(__file__), "gunicorn.conf.py")
)
_web = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_web)
_env = _web._env

on_starting = _web.on_starting
child_exit = _web.child_exit
logger_class = _web.JsonLogger

workers = _env.gateway_concurrency
# gevent: an open socket costs two greenlets (its route and its reader), not a thread.
worker_class = "orchestrator_api.gunicorn_gevent.GeventWorker"
# Sockets past GATEWAY_MAX_CONNECTIONS are refused by the app with 503 (a plain HTTP
# answer): gunicorn must still take the connection to say so, hence the margin.
worker_connections = _env.gateway_max_connections + 1000
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-" if _env.access_log else None
limit_request_line = _web.limit_request_line
limit_request_fields = _web.limit_request_fields
limit_request_field_size = _web.limit_request_field_size


def post_worker_init(worker):
    # The hub only: `web` processes relay the outbox to the event stream.
    from orchestrator_api.gateway import start_hub

    start_hub(worker.wsgi)
    # The handler runs in gevent's loop, where nothing may block: the wake-up is a greenlet.
    import gevent

    _web._close_sockets_on_term(worker, spawn=gevent.spawn)


def _raise_open_files_limit():
    # Each socket is a file descriptor: take the hard limit (ulimit -Hn), not the default
    # soft one (often 1,024).
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_raise_open_files_limit()
