"""Waiting on a condition instead of sleeping a fixed time."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """`predicate()`'s first truthy value, polled every `interval` seconds; an
    AssertionError naming the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
