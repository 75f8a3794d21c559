"""The two commands: `make run` installs only what running needs and says where the
stack is once it is up; `make test` adds the test tools; `make run` refuses a Redis db
index that a test run holds."""

from __future__ import annotations

import contextlib
import io
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from shared.announce import wait_and_print
from tests.support import ROOT


def _dry_run(target: str, tmp_path) -> str:
    venv = tmp_path / "venv"
    return subprocess.run(
        ["make", "-n", "-B", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and "-e" in line]


def test_run_installs_without_the_test_tools_and_test_with_them(tmp_path):
    commands = _dry_run("run", tmp_path)
    run = _installs(commands)
    assert run and all("[test]" not in line for line in run), run
    assert "what it needs to run" in commands  # it says what it is doing
    test = _installs(_dry_run("test", tmp_path))
    assert any("'.[test]'" in line for line in test), test


def test_the_stack_is_announced_once_it_answers():
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            assert wait_and_print(f"http://127.0.0.1:{server.server_port}", "5599", timeout=10)
    finally:
        server.shutdown()
    assert f"http://127.0.0.1:{server.server_port}/dashboard" in printed.getvalue()
    assert "http://127.0.0.1:5599" in printed.getvalue()


def test_run_refuses_a_redis_index_a_test_run_holds(settings):
    held = subprocess.run(
        ["make", "-s", "redis-free", f"REDIS_URL={settings.redis_url}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert held.returncode != 0
    assert "a test run is using" in held.stderr
