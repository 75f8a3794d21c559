"""Group commit: many threads' small writes in one transaction, each caller still waiting
for its own write to be committed before it answers.

A caller that arrives while no batch is being written writes the batch itself (it leads);
callers that arrive meanwhile queue, and when the leader's batch is done the first of them
leads the next batch with all that queued. No thread of its own and no timer: under no
load a batch is one item and costs what a lone write costs; under load the batches grow
with the load, and the per-write cost of the transaction (a connection, a round trip, a
commit) is shared.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class _Waiter(Generic[Item]):
    __slots__ = ("item", "ready", "leads", "done", "outcome", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.ready = threading.Event()
        self.leads = False
        self.done = False
        self.outcome = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Outcome]):
    """`submit(item)` returns the outcome of `write_batch` for that item.

    `write_batch(items)` writes and commits them all, and returns one outcome per item, in
    order; an outcome that is an exception is raised to that item's caller alone. If
    `write_batch` raises, every caller of the batch gets that error (nothing was committed).
    """

    def __init__(
        self, write_batch: Callable[[Sequence[Item]], Sequence[Outcome | Exception]]
    ) -> None:
        self._write_batch = write_batch
        self._lock = threading.Lock()
        self._queued: list[_Waiter[Item]] = []
        self._writing = False

    def submit(self, item: Item) -> Outcome:
        waiter = _Waiter(item)
        with self._lock:
            self._queued.append(waiter)
            if not self._writing:
                self._writing = waiter.leads = True
        if not waiter.leads:
            waiter.ready.wait()
        if not waiter.done:  # it was handed the lead while queued
            self._write_queued()
        if waiter.error is not None:
            raise waiter.error
        return waiter.outcome

    def _write_queued(self) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            outcomes = self._write_batch([waiter.item for waiter in batch])
            for waiter, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    waiter.error = outcome
                else:
                    waiter.outcome = outcome
        except BaseException as exc:
            for waiter in batch:
                waiter.error = exc
        finally:
            with self._lock:
                next_leader = self._queued[0] if self._queued else None
                if next_leader is None:
                    self._writing = False
                else:
                    next_leader.leads = True
            for waiter in batch:
                waiter.done = True
                waiter.ready.set()
            if next_leader is not None:
                next_leader.ready.set()
