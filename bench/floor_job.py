"""A trivial job for the dispatch floor, loaded into the Procfile's worker with
`--include bench.floor_job`: it pushes its argument onto a Redis list, where the
benchmark waits for it (BLPOP). The same Celery app, settings and broker as the jobs."""

from __future__ import annotations

from celery import shared_task

from orchestrator_worker import runtime

NAME = "bench.floor_touch"
DONE_KEY = "bench:floor:done"


@shared_task(name=NAME)  # acks_late and no result: the app's settings, as for every job
def touch(token: str) -> None:
    runtime.redis().rpush(DONE_KEY, token)
