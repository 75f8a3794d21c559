"""Prometheus multiprocess mode for the processes that fork (gunicorn, the Celery worker).

Each process writes its metrics to files in PROMETHEUS_MULTIPROC_DIR and whoever serves
/metrics sums them. prometheus_client chooses its storage when it is imported, and metrics
made before keep theirs, so `ensure_dir` runs before shared/metrics.py is imported and
before any child forks: in gunicorn's `on_starting` (the master) and in the Celery worker's
app module. Celery's command line imports prometheus_client earlier (through Flower's
plugin), so the choice is made again here. Nothing here imports prometheus_client.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "orchestrator-metrics-"


def in_use() -> bool:
    """Whether this process writes its metrics to the shared directory."""
    return bool(os.environ.get(ENV))


def ensure_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR: the directory it names, emptied of an earlier run's files,
    or, when unset, a fresh one under the system temp dir, removed when this process exits
    (not when its forked children do)."""
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        wipe(path)
    else:
        path = tempfile.mkdtemp(prefix=PREFIX)
        os.environ[ENV] = path
        atexit.register(_remove, path, os.getpid())
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # already imported: the metrics made from now on use files
        values.ValueClass = values.get_value_class()
    return path


def wipe(path: str) -> None:
    """Forget the files of an earlier run (a directory given by the operator is reused)."""
    for name in glob.glob(os.path.join(path, "*.db")):
        os.unlink(name)


def _remove(path: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)
