"""The gateway's gunicorn worker: gevent's, answering its own errors in JSON like `web`'s
(orchestrator_api/gunicorn_worker.py), with psycopg2 waiting through gevent."""

from __future__ import annotations

from gunicorn.workers import ggevent

from orchestrator_api.gateway import make_psycopg2_cooperative
from orchestrator_api.gunicorn_worker import JsonErrors


class GeventWorker(JsonErrors, ggevent.GeventWorker):
    def patch(self):
        super().patch()  # the standard library, before the application is loaded
        make_psycopg2_cooperative()
