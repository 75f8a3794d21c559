"""The README's five-minute walk-through runs as one pasted script against a real web
process and worker, and says what it promises at each step."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support import ROOT
from tests.support.database import empty_tables
from tests.support.processes import running_web

pytestmark = [pytest.mark.shared_data, pytest.mark.process]


def walk_through() -> str:
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    section = readme.split("## Five minutes with the API", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_walk_through_runs_as_a_script(settings, database, celery_worker):
    empty_tables(database)
    with running_web(settings, WEB_THREADS="32") as base:
        for _ in range(2):  # pasted twice: nothing in it collides with the first run
            finished = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", walk_through()],
                env={**os.environ, "API": base},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert finished.returncode == 0, finished.stdout + finished.stderr
            lines = finished.stdout.splitlines()
            assert lines[:2] == ["RUNNING", "ASSIGNED"], finished.stdout
            assert lines[3:5] == ["IN_PROGRESS", "COMPLETED"], finished.stdout
            assert '"percent_complete":100' in lines[5], finished.stdout
