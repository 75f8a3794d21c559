"""gunicorn settings for the `web` process. Environment variables override the defaults."""

import os


def on_starting(server):
    # In the master, before any worker: a bad environment (in production, a missing or
    # short API_SECRET_KEY) stops gunicorn with one line and exit code 2. Found in a
    # worker instead, the master would respawn it forever.
    from shared.config import load_settings_or_exit

    load_settings_or_exit()


workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread: each open WebSocket holds one thread (see docs/ARCHITECTURE.md).
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None


def post_worker_init(worker):
    # Each web process relays committed events to Redis and fans them out to its sockets.
    from orchestrator_api.app import start_background

    start_background(worker.wsgi)
    _close_sockets_on_term(worker)


def _close_sockets_on_term(worker):
    """On SIGTERM, WebSocket clients get a close frame (1001) at once, instead of holding
    their threads until the graceful timeout; then gunicorn's own handler runs."""
    import signal

    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        hub = worker.wsgi.extensions["orchestrator"].hub
        if hub is not None:
            hub.closing.set()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
