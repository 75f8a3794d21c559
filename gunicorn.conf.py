"""gunicorn settings for the `web` process. Environment variables override the defaults."""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread: each open WebSocket holds one thread (see docs/ARCHITECTURE.md).
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = 60
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None
