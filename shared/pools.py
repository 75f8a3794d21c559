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
