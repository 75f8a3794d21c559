"""Pools: several teams on one orchestrator. Every session and every agent belongs to one
pool, fixed at creation; a session's tasks are in its pool, and assignment matches agents
and tasks only within a pool (services/assignment.py)."""

from __future__ import annotations

import re

DEFAULT_POOL = "default"
POOL_RULE = (
    "1-40 characters: lower-case letters, digits, '-' and '_', beginning with a letter or digit"
)
POOL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


def is_valid(name: str) -> bool:
    return bool(POOL_PATTERN.fullmatch(name))


class KnownPools:
    """The pools of entities this process has looked up, by key (e.g. ("agent_id", id)).
    A pool is fixed at creation and ids are never reused, so what is known holds for good;
    bounded by forgetting everything past `limit` entries."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._pools: dict = {}

    def get(self, key) -> str | None:
        return self._pools.get(key)

    def remember(self, key, pool: str) -> None:
        if len(self._pools) >= self.limit:
            self._pools.clear()
        self._pools[key] = pool


known_pools = KnownPools()
