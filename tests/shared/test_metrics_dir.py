"""shared/metrics_dir.py, in child processes (it switches prometheus_client's storage)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT

SCRIPT = """
import os
from shared import metrics_dir
path = metrics_dir.ensure_dir()
from shared import metrics
metrics.HTTP_REQUESTS.labels("GET", "/x", "200").inc()
print(path, sorted(os.listdir(path)))
"""


def run(**env) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_named_directory_is_emptied_at_start(tmp_path):
    (tmp_path / "counter_1.db").write_bytes(b"an earlier run")
    (tmp_path / "notes.txt").write_text("not ours")
    out = run(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert "counter_1.db" not in out
    assert (tmp_path / "notes.txt").exists()
    assert [p.name for p in tmp_path.glob("counter_*.db")]  # the child's own counts


def test_a_made_directory_is_removed_when_its_process_exits(tmp_path):
    path, files = run(TMPDIR=str(tmp_path)).split(" ", 1)
    assert os.path.basename(path).startswith("orchestrator-metrics-")
    assert "counter_" in files  # the metrics went to files there
    assert list(tmp_path.iterdir()) == []
