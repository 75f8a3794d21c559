"""shared/logs.py: JSON lines at LOG_LEVEL, bound fields, and no secret in any line."""

from __future__ import annotations

import json
import logging

import pytest

from shared import logs, tokens
from shared.config import DEVELOPMENT_SECRET_KEY, Settings

KEY = "logging-test-key-" + "k" * 40


@pytest.fixture
def configured(capsys):
    """configure_logging on a copy of the root logger's state, restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configure(**overrides):
        logs.configure_logging(Settings(api_secret_key=KEY, **overrides))
        capsys.readouterr()

    yield configure
    for handler in list(root.handlers):
        if getattr(handler, "orchestrator", False):
            root.removeHandler(handler)
    for handler in saved[0]:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved[1])


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_each_line_is_one_json_object(configured, capsys):
    configured(log_level="INFO")
    logging.getLogger("orchestrator.test").info("hello %s", "world", extra={"task_id": "t-1"})
    (line,) = lines(capsys)
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["logger"] == "orchestrator.test"
    assert line["task_id"] == "t-1"
    assert line["timestamp"].endswith("Z")
    assert list(line)[0] == "timestamp"


def test_the_level_is_log_level(configured, capsys):
    configured(log_level="WARNING")
    log = logging.getLogger("orchestrator.test")
    log.info("quiet")
    log.warning("loud")
    assert [line["message"] for line in lines(capsys)] == ["loud"]


def test_configuring_again_replaces_the_handler(configured, capsys):
    configured(log_level="INFO")
    configured(log_level="INFO")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "orchestrator", False)]
    assert len(ours) == 1
    logging.getLogger("orchestrator.test").info("once")
    assert len(lines(capsys)) == 1


def test_bound_fields_are_on_every_line_until_unbound(configured, capsys):
    configured(log_level="INFO")
    log = logging.getLogger("orchestrator.test")
    token = logs.bind(request_id="req-1")
    inner = logs.bind(job="orchestrator.reconcile", job_id="celery-1")
    log.info("in a job")
    assert logs.job_headers() == {"request_id": "req-1"}
    logs.unbind(inner)
    log.info("in the request")
    logs.unbind(token)
    log.info("outside")
    job, request, outside = lines(capsys)
    assert job["request_id"] == "req-1" and job["job_id"] == "celery-1"
    assert request["request_id"] == "req-1" and "job_id" not in request
    assert "request_id" not in outside
    assert logs.job_headers() == {}


def test_exceptions_are_in_the_line(configured, capsys):
    configured(log_level="INFO")
    try:
        raise RuntimeError("went wrong")
    except RuntimeError:
        logging.getLogger("orchestrator.test").exception("failed")
    (line,) = lines(capsys)
    assert line["level"] == "ERROR" and "RuntimeError: went wrong" in line["exc_info"]


def test_secrets_never_reach_a_line(configured, capsys):
    configured(log_level="INFO")
    jwt = tokens.mint(key=KEY, sub="alice", role="admin")
    log = logging.getLogger("orchestrator.test")
    log.warning("key %s", KEY)
    log.warning("development key %s", DEVELOPMENT_SECRET_KEY)
    log.warning("header Authorization: Bearer opaque-token-value")
    log.warning("header authorization: bEaReR mixed-case-token")
    log.warning("token %s", jwt, extra={"token": jwt})
    log.warning("broker redis://:hunter2-password@redis:6379/0")
    try:
        raise ValueError(f"bad token {jwt}")
    except ValueError:
        log.exception("failed")
    output = capsys.readouterr().err
    secrets = (KEY, DEVELOPMENT_SECRET_KEY, "opaque-token-value", "mixed-case-token", jwt)
    for secret in (*secrets, "hunter2-password"):
        assert secret not in output
    assert output.count(logs.REDACTED) >= 7
    assert "redis://:[REDACTED]@redis:6379/0" in output
