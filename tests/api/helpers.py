import json
import logging

from shared import logs


def make_session(client, **fields):
    body = {"title": "Implement user authentication", **fields}
    response = client.post("/api/v1/sessions", json=body)
    assert response.status_code == 201, response.json
    return response.json


def assert_error(response, status, code):
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def start_session(client, **fields):
    session = make_session(client, **fields)
    response = client.post(f"/api/v1/sessions/{session['id']}/start")
    assert response.status_code == 200, response.json
    return response.json


def register(client, name="agent-1", **fields):
    body = {"name": name, "type": "BACKEND", "capabilities": ["CODE_GENERATION"], **fields}
    response = client.post("/api/v1/agents/register", json=body)
    assert response.status_code == 201, response.json
    agent = response.json
    assert agent.pop("token")  # the agent's own token: tests/api/test_auth.py
    return agent


def make_task(client, session_id, **fields):
    response = client.post("/api/v1/tasks", json={"session_id": session_id, "title": "t", **fields})
    assert response.status_code == 201, response.json
    return response.json


def act(client, task_id, action, body=None):
    return client.post(f"/api/v1/tasks/{task_id}/{action}", json=body or {})


REQUEST_LOG = "orchestrator_api.requests"


def request_log_reader(caplog):
    """The request log's lines (as JSON objects) captured so far, read when called."""
    caplog.set_level(logging.INFO, logger=REQUEST_LOG)
    formatter = logs.JsonFormatter()

    def read() -> list[dict]:
        return [json.loads(formatter.format(r)) for r in caplog.records if r.name == REQUEST_LOG]

    return read
