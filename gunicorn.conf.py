"""gunicorn settings for the `web` process, from the environment through shared.config's
Settings (WEB_CONCURRENCY, WEB_THREADS, WS_MAX_CONNECTIONS_PER_PROCESS, ACCESS_LOG)."""

from gunicorn.glogging import Logger


def _settings():
    from shared.config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError:
        return Settings()  # on_starting reports the error and stops


_env = _settings()


def on_starting(server):
    # In the master, before any worker: a bad environment (in production, a missing or
    # short API_SECRET_KEY) stops gunicorn with one line and exit code 2. Found in a
    # worker instead, the master would respawn it forever.
    from shared import metrics_dir
    from shared.config import load_settings_or_exit

    load_settings_or_exit()
    # Prometheus multiprocess mode (orchestrator_api/metrics.py): each worker writes its
    # metrics to files in PROMETHEUS_MULTIPROC_DIR and /metrics sums them. Set here, once,
    # before a worker forks: a fresh directory under the system temp dir (removed when the
    # master exits) unless the variable names one (emptied of an earlier run's files).
    metrics_dir.ensure_dir()


def child_exit(server, worker):
    # A dead worker's gauges (its open WebSockets) stop counting; its counters still do.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class JsonLogger(Logger):
    """gunicorn's own lines (booting, worker exits and timeouts) go through the root
    logger as JSON, like every other line (shared/logs.py), unless an error log file is
    asked for. The access log, when asked for (ACCESS_LOG=1 or --access-logfile), keeps
    gunicorn's format: the API logs each request itself (orchestrator_api/request_log.py)."""

    def setup(self, cfg):
        super().setup(cfg)
        if cfg.errorlog != "-":
            return
        from shared.logs import configure_logging

        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
        configure_logging(_env)


logger_class = JsonLogger


workers = _env.web_concurrency
# gthread: each open WebSocket holds one thread (see docs/ARCHITECTURE.md).
worker_class = "orchestrator_api.gunicorn_worker.ThreadWorker"  # gthread, errors in JSON


# WEB_THREADS threads are for HTTP requests; WebSockets get threads of their own, as many
# as the gateway lets a process open (WS_MAX_CONNECTIONS_PER_PROCESS, refused beyond with
# 503), so open sockets never take a thread that a request needs. Threads start on
# demand: the WebSocket share costs nothing until sockets use it.
ws_max_connections = _env.ws_max_connections_per_process
threads = _env.web_threads + ws_max_connections
# Connections a worker holds at once (open sockets, requests, idle keep-alives): gunicorn's
# default of 1,000 for HTTP, beside the sockets.
worker_connections = 1000 + ws_max_connections
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-" if _env.access_log else None
# Beyond these, gunicorn refuses the request itself: 414 or 431 with the contract's error
# body (orchestrator_api/gunicorn_worker.py; docs/API.md, "Request limits").
limit_request_line = 4094  # bytes: method, path, query string and version
limit_request_fields = 100
limit_request_field_size = 8190  # bytes: one header, name and value


def post_worker_init(worker):
    # Each web process relays committed events to Redis and fans them out to its sockets.
    from orchestrator_api.app import start_background

    start_background(worker.wsgi)
    _close_sockets_on_term(worker)


def _in_a_thread(function) -> None:
    import threading

    threading.Thread(target=function, daemon=True).start()


def _close_sockets_on_term(worker, spawn=_in_a_thread):
    """On SIGTERM, WebSocket clients get a close frame (1001) at once, instead of holding
    their threads until the graceful timeout; then gunicorn's own handler runs. `spawn`
    runs a function outside the signal handler (the gateway's: a greenlet)."""
    import signal

    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        hub = worker.wsgi.extensions["orchestrator"].hub
        if hub is not None:
            hub.closing.set()
            # Each socket's thread sleeps until woken: wake them all, outside the handler.
            spawn(hub.shut_down)
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
