"""The suite never flushes a Redis db index holding keys it did not write: a real pytest
run in a subprocess, beside an index that looks like another stack's broker."""

import os
import subprocess
import sys

import redis as redis_lib

from tests.support import ROOT
from tests.support.redis_claim import CLAIM_KEY, claim_redis_db

FOREIGN_KEYS = {"celery": "list", "orchestrator:events": "stream", "LIMITS:x": "string"}


def _plant_foreign_index() -> redis_lib.Redis:
    """An index of ours dressed as someone else's: their queue and stream, no claim."""
    index = claim_redis_db(use_env=False)
    client = redis_lib.Redis(host="127.0.0.1", port=6379, db=index)
    client.rpush("celery", '{"a": "queued job of another stack"}')
    client.xadd("orchestrator:events", {"data": "another stack's event"})
    client.set("LIMITS:x", "7")
    client.delete(CLAIM_KEY)
    return client


def _run_suite_subset(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TEST_REDIS_DB"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["tests/api/test_health.py::test_health"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _intact(client: redis_lib.Redis) -> bool:
    return {k.decode(): client.type(k).decode() for k in client.keys("*")} == FOREIGN_KEYS


def test_a_run_leaves_an_index_holding_foreign_keys_alone():
    foreign = _plant_foreign_index()
    try:
        finished = _run_suite_subset()
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert _intact(foreign)
        assert foreign.lrange("celery", 0, -1) == [b'{"a": "queued job of another stack"}']

        index = foreign.connection_pool.connection_kwargs["db"]
        refused = _run_suite_subset(TEST_REDIS_DB=str(index))
        assert refused.returncode != 0
        assert "holds keys this test run did not write" in refused.stdout + refused.stderr
        assert _intact(foreign)
    finally:
        foreign.delete(*FOREIGN_KEYS)  # ours after all: planted above
