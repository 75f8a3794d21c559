"""An idle stack's INFO log is quiet: the Procfile's worker and beat, at LOG_LEVEL=INFO,
run their schedule without a line about the routine jobs (those lines are DEBUG)."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest

from shared.logs import ROUTINE_JOBS
from tests.support.processes import output, start, stop
from tests.support.waiting import wait_for

pytestmark = pytest.mark.process


def _lines(process) -> list[dict]:
    lines = []
    for raw in output(process).splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue  # Celery's banner is plain text
    return lines


def _about_routine_jobs(lines: list[dict]) -> list[str]:
    return [
        line["message"]
        for line in lines
        if line.get("level") in ("INFO", "DEBUG")
        and any(j in line["message"] for j in ROUTINE_JOBS)
    ]


def test_an_idle_worker_and_beat_log_nothing_routine_at_info(settings, spare_redis_url):
    schedule = os.path.join(tempfile.mkdtemp(prefix="orchestrator-beat-"), "schedule")
    env = {"REDIS_URL": spare_redis_url, "LOG_LEVEL": "INFO", "SWEEP_INTERVAL_SECONDS": "1"}
    worker = start("worker", settings, WORKER_CONCURRENCY="1", WORKER_METRICS_PORT="", **env)
    beat = start("beat", settings, CELERY_BEAT_SCHEDULE=schedule, **env)
    try:
        wait_for(lambda: "ready" in output(worker), timeout=60)
        started = time.monotonic()
        # beat sends each routine job several times in this window
        wait_for(lambda: time.monotonic() - started > 8, timeout=20, interval=0.5)
        assert worker.poll() is None and beat.poll() is None, output(worker) + output(beat)
        lines = _lines(worker) + _lines(beat)
    finally:
        stop(beat)
        stop(worker)
    assert _about_routine_jobs(lines) == []


def test_at_debug_the_routine_lines_are_there(settings, spare_redis_url):
    schedule = os.path.join(tempfile.mkdtemp(prefix="orchestrator-beat-"), "schedule")
    env = {"REDIS_URL": spare_redis_url, "LOG_LEVEL": "DEBUG"}
    beat = start("beat", settings, CELERY_BEAT_SCHEDULE=schedule, **env)
    try:
        wait_for(lambda: "Sending due task" in output(beat), timeout=30)
        lines = _lines(beat)
    finally:
        stop(beat)
    sent = [line for line in lines if "Sending due task" in line["message"]]
    assert sent and all(line["level"] == "DEBUG" for line in sent)


def test_two_stacks_on_one_host_keep_their_own_beat_schedule(settings, spare_redis_url):
    """Without CELERY_BEAT_SCHEDULE, beat's schedule file is named after the stack's
    database and Redis: a second stack on the host gets another file."""

    def schedule_file(beat) -> str | None:
        for line in output(beat).splitlines():
            if ". db -> " in line:
                return line.split(". db -> ", 1)[1].strip()
        return None

    files = []
    for redis_url in (settings.redis_url, spare_redis_url):
        beat = start("beat", settings, CELERY_BEAT_SCHEDULE="", REDIS_URL=redis_url)
        try:
            files.append(wait_for(lambda beat=beat: schedule_file(beat), timeout=30))
        finally:
            stop(beat)
    assert len(set(files)) == 2, files
    assert all(os.path.basename(f).startswith("orchestrator-beat-") for f in files), files
