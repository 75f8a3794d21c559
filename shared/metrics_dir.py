"""Prometheus multiprocess mode for the processes that fork (gunicorn, the Celery worker).

Each process writes its metrics to files in PROMETHEUS_MULTIPROC_DIR and whoever serves
/metrics sums them. prometheus_client chooses its storage when it is imported, and metrics
made before keep theirs, so `ensure_dir` runs before shared/metrics.py is imported: in
gunicorn's config (the master, before workers fork) and in the Celery worker's app module.
Celery's command line imports prometheus_client earlier (through Flower's plugin), so the
choice is made again here. Nothing here imports prometheus_client.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "orchestrator-metrics-"


def ensure_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR, made (fresh, under the system temp dir) when unset."""
    path = os.environ.get(ENV)
    if not path:
        path = tempfile.mkdtemp(prefix=PREFIX)
        os.environ[ENV] = path
    os.makedirs(path, exist_ok=True)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # already imported: the metrics made from now on use files
        values.ValueClass = values.get_value_class()
    return path


def wipe(path: str) -> None:
    """Forget the files of an earlier run (a directory given by the operator is reused)."""
    for name in glob.glob(os.path.join(path, "*.db")):
        os.unlink(name)


def remove_if_made_here(path: str | None) -> None:
    """Remove the directory at exit, if `ensure_dir` made it."""
    if not path:
        return
    made = os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir())
    if made and os.path.basename(path).startswith(PREFIX):
        shutil.rmtree(path, ignore_errors=True)
