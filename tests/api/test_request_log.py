"""One JSON line per request (orchestrator_api/request_log.py), without secrets."""

from __future__ import annotations

import json

import pytest

from shared import logs
from tests.api.helpers import REQUEST_LOG, make_session, request_log_reader


@pytest.fixture
def request_lines(caplog):
    return request_log_reader(caplog)


def test_a_request_logs_one_line_with_its_fields(client, request_lines):
    response = client.post(
        "/api/v1/sessions", json={"title": "logged"}, headers={"X-Request-ID": "req-log-1"}
    )
    assert response.status_code == 201
    (line,) = request_lines()
    assert line["request_id"] == "req-log-1" == response.headers["X-Request-ID"]
    assert line["method"] == "POST"
    assert line["path"] == "/api/v1/sessions"
    assert line["route"] == "/api/v1/sessions"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["level"] == "INFO" and line["logger"] == REQUEST_LOG


def test_the_route_is_the_url_rule_and_the_status_is_the_final_one(client, request_lines):
    session = make_session(client)
    client.get(f"/api/v1/sessions/{session['id']}")
    client.post(f"/api/v1/sessions/{session['id']}/complete")  # PENDING: refused
    client.get("/no/such/path")
    *_, got, refused, unknown = request_lines()
    assert got["route"] == "/api/v1/sessions/<session_id>"
    assert got["path"] == f"/api/v1/sessions/{session['id']}" and got["status"] == 200
    assert refused["status"] == 400
    assert unknown["status"] == 404 and unknown["route"] == "unmatched"
    assert len({got["request_id"], refused["request_id"], unknown["request_id"]}) == 3


def test_probes_are_not_logged(client, request_lines):
    for path in ("/health", "/ready", "/metrics"):
        assert client.get(path).status_code == 200
    assert request_lines() == []


def test_no_token_or_query_string_in_the_line(client, request_lines, caplog):
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    client.get("/api/v1/sessions?token=" + secret, headers={"Authorization": "Bearer " + secret})
    (line,) = request_lines()
    assert line["status"] == 401  # a token that is sent must be valid
    assert line["path"] == "/api/v1/sessions"
    assert secret not in json.dumps(line) and secret not in caplog.text


def test_the_request_id_is_unbound_after_the_request(client, request_lines):
    client.get("/api/v1/sessions", headers={"X-Request-ID": "req-log-2"})
    assert "request_id" not in logs.bound()
