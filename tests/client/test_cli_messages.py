"""What the CLI says when it cannot go on by itself: a wait on the server's rate limit,
and a server that needs a token."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator_cli.main import main
from tests.support.client import PRODUCTION_KEY, error_body, scripted
from tests.support.processes import running_web


def test_a_wait_on_the_rate_limit_is_said_plainly():
    limited = {"status": 429, "body": error_body("RATE_LIMITED"), "headers": {"Retry-After": "1"}}
    page = {"items": [], "total": 0, "page": 1, "page_size": 20, "has_more": False}
    with scripted(limited, {"status": 200, "body": page}) as server:
        result = CliRunner().invoke(main, ["--url", server.url, "sessions"])
    assert result.exit_code == 0, result.output
    assert "rate limited by the server (429): waiting 1s" in result.stderr
    assert "no sessions" in result.stdout


@pytest.mark.process
def test_status_without_a_token_in_production_says_how_to_pass_one(settings):
    production = {"ORCHESTRATOR_ENV": "production", "API_SECRET_KEY": PRODUCTION_KEY}
    with running_web(settings, **production) as base:
        result = CliRunner().invoke(main, ["--url", base, "status"], env={"ORCHESTRATOR_TOKEN": ""})
    assert result.exit_code == 1
    assert "UNAUTHORIZED" in result.stderr or "401" in result.stderr, result.stderr
    assert "--token" in result.stderr and "ORCHESTRATOR_TOKEN" in result.stderr
