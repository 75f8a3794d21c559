"""A Redis db index of the test run's own: claimed only while empty, flushed only by the
run that claimed it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import redis as redis_lib

CLAIM_KEY = "orchestrator-test-run"
CLAIM_SECONDS = 3 * 3600
HOST = "127.0.0.1"
PORT = 6379


class RedisIndexBusy(RuntimeError):
    pass


def claim_redis_db(*, use_env: bool = True) -> int:
    """A Redis db index (1-15) that was empty when this run claimed it. An index holding
    any key is someone's data (another stack's broker, another run's claim) and is never
    taken, so the run can flush what it claimed without touching anything else."""
    wanted = os.environ.get("TEST_REDIS_DB") if use_env else None
    indexes = [int(wanted)] if wanted else list(range(1, 16))
    for index in indexes:
        client = redis_lib.Redis(host=HOST, port=PORT, db=index)
        if not client.set(CLAIM_KEY, os.getpid(), nx=True, ex=CLAIM_SECONDS):
            continue
        if client.dbsize() == 1:
            return index
        release_redis_db(client)  # keys of someone else's: not ours to use
    if wanted:
        raise RedisIndexBusy(
            f"TEST_REDIS_DB={wanted}: that Redis db index holds keys this test run did not "
            "write (another stack or run); the suite only uses an empty index"
        )
    raise RedisIndexBusy(
        "no empty Redis db index among 1-15: each holds another stack's or run's keys, "
        "and the suite never flushes data it did not write (set TEST_REDIS_DB to an empty one)"
    )


def release_redis_db(client: redis_lib.Redis, *, flush: bool = False) -> None:
    """Give back a claimed index: flushed when `flush` (everything in it is this run's,
    since it was empty when claimed), else only the claim key removed."""
    if client.get(CLAIM_KEY) != str(os.getpid()).encode():
        return  # the claim expired and someone else holds the index now
    if flush:
        client.flushdb()
    else:
        client.delete(CLAIM_KEY)


@contextlib.contextmanager
def claimed_redis_url(*, use_env: bool = True) -> Iterator[str]:
    """The URL of a claimed index, flushed and given back when the block ends."""
    index = claim_redis_db(use_env=use_env)
    client = redis_lib.Redis(host=HOST, port=PORT, db=index)
    try:
        yield f"redis://{HOST}:{PORT}/{index}"
    finally:
        release_redis_db(client, flush=True)
        client.close()
