"""Task logs across processes: a real gunicorn server, a task.log event received over a
real WebSocket, and `orchestrator logs --follow` (a real process) printing lines as an
agent posts them and stopping when the task finishes."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from orchestrator_client.ws_client import Client
from tests.support import ROOT
from tests.support.live_server import live_server_fixture

pytestmark = [pytest.mark.shared_data, pytest.mark.process]


live = live_server_fixture(worker=False)


def call(method, url, body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.request(method, url, json=body, headers=headers, timeout=10)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


@pytest.fixture
def held(live):
    """A RUNNING session with a task assigned to a fresh agent, and that agent's token."""
    api = f"{live}/api/v1"
    pool = f"live-{uuid.uuid4().hex[:6]}"  # the agent takes no other test's task
    session = call("POST", f"{api}/sessions", {"title": "logs live", "pool": pool})
    call("POST", f"{api}/sessions/{session['id']}/start")
    agent = call(
        "POST",
        f"{api}/agents/register",
        {"name": pool, "type": "QA", "capabilities": ["TESTING"], "pool": pool},
    )
    task = call(
        "POST",
        f"{api}/tasks",
        {"session_id": session["id"], "title": "t", "required_capabilities": ["TESTING"]},
    )
    # assigned now, unless a Celery worker of this test run was quicker
    requests.post(f"{api}/tasks/{task['id']}/assign", json={"agent_id": agent["id"]}, timeout=10)
    assert call("GET", f"{api}/tasks/{task['id']}")["assigned_agent_id"] == agent["id"]
    return {"api": api, "session": session["id"], "task": task["id"], "token": agent["token"]}


def post_lines(held, *texts, stream="stdout"):
    body = {"lines": [{"stream": stream, "text": text} for text in texts]}
    return call("POST", f"{held['api']}/tasks/{held['task']}/logs", body, held["token"])


def test_a_subscriber_follows_the_log_live_over_the_websocket(live, held):
    socket = Client.connect(live.replace("http", "ws") + f"/ws/sessions/{held['session']}")
    try:
        time.sleep(0.3)  # the socket is subscribed once its handshake is answered
        post_lines(held, "compiling", "done", stream="stderr")
        deadline = time.monotonic() + 10
        event = None
        while event is None and time.monotonic() < deadline:
            raw = socket.receive(timeout=0.5)
            message = json.loads(raw) if raw else {}
            if message.get("type") == "task.log":
                event = message
        assert event is not None, "no task.log within 10 s"
        payload = event["payload"]
        assert payload["task_id"] == held["task"] and payload["session_id"] == held["session"]
        assert (payload["first_seq"], payload["last_seq"]) == (1, 2)
        assert [(x["stream"], x["text"]) for x in payload["lines"]] == [
            ("stderr", "compiling"),
            ("stderr", "done"),
        ]
        assert payload["more"] is False and payload["truncated"] is False
    finally:
        socket.close()


def test_cli_logs_follow_prints_new_lines_until_the_task_finishes(live, held):
    post_lines(held, "first line")
    env = {**os.environ, "ORCHESTRATOR_URL": live}
    env.pop("ORCHESTRATOR_TOKEN", None)
    follower = subprocess.Popen(
        [
            os.path.join(ROOT, ".venv", "bin", "orchestrator"),
            "logs",
            held["task"],
            "--follow",
            "--interval",
            "0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert follower.poll() is None, follower.communicate()
        post_lines(held, "second line")
        post_lines(held, "an error", stream="stderr")
        task_url = f"{held['api']}/tasks/{held['task']}"
        call("POST", f"{task_url}/start", {}, held["token"])
        call("POST", f"{task_url}/complete", {"result": {}}, held["token"])
        out, err = follower.communicate(timeout=15)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert out.splitlines() == ["first line", "second line"]
    assert err.splitlines() == ["an error"]


def test_the_python_client_appends_raw_output_and_reads_it_back(live, held):
    from orchestrator_client import OrchestratorClient
    from orchestrator_client.errors import Forbidden

    agent = OrchestratorClient(live, held["token"], retries=1)
    answer = agent.append_task_logs(
        held["task"],
        [{"stream": "stdout", "text": "bin\x00ary"}, {"stream": "stderr", "text": "lone \ud800"}],
    )
    assert answer == {"accepted": 2, "dropped": 0, "truncated": False, "last_seq": 2}
    page = agent.task_logs(held["task"], after=1, limit=1)
    assert [(i["seq"], i["stream"], i["text"]) for i in page["items"]] == [
        (2, "stderr", "lone \ufffd")
    ]
    assert agent.task_logs(held["task"])["items"][0]["text"] == "bin\ufffdary"
    stranger = OrchestratorClient(live, retries=0)  # development: no token, no agent named
    with pytest.raises(Forbidden):
        stranger.append_task_logs(held["task"], [{"stream": "stdout", "text": "x"}])
    agent.close()
    stranger.close()
