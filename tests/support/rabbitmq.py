"""A RabbitMQ vhost of a test's own (`make test-rabbitmq` runs tests with RabbitMQ as
Celery's broker): created with rabbitmqctl, removed after."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def own_vhost(broker_url: str) -> Iterator[str]:
    """A fresh vhost on the server of `broker_url` (amqp://user:pw@host:port/vhost):
    the same URL with that vhost."""
    vhost = f"orch_test_{uuid.uuid4().hex[:10]}"
    base, _, _ = broker_url.rpartition("/")
    user = base.split("//", 1)[1].split(":", 1)[0]
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
            check=True,
        )
        yield f"{base}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False)
