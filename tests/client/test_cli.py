"""The `orchestrator` client commands against a real gunicorn server and Celery worker:
the listings and status print what the API has, `demo` runs a session to COMPLETED, and
`agent run` works on its tasks until Ctrl-C deregisters it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid

import pytest
from click.testing import CliRunner

from orchestrator_cli.main import main
from orchestrator_client import OrchestratorClient
from orchestrator_client.demo import capability_plan
from shared.templates import TEMPLATES
from tests.support import ROOT
from tests.support.client import tidy
from tests.support.live_server import live_server_fixture
from tests.support.processes import BIN, free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.shared_data, pytest.mark.process]

live = live_server_fixture(WEB_THREADS="32")


@pytest.fixture
def api(live):
    client = OrchestratorClient(live, retries=2, backoff=0.1)
    yield client
    tidy(client)
    client.close()


def cli(live, *args, env=None):
    return CliRunner().invoke(main, ["--url", live, *args], env=env, catch_exceptions=False)


def test_listings_print_what_the_api_has(api, live):
    running = api.start_session(api.create_session("listed running")["id"])
    pending = api.create_session("listed pending")
    task = api.create_task(running["id"], "listed task", required_capabilities=["DEPLOYMENT"])
    name = f"listed-{uuid.uuid4().hex[:6]}"
    agent = api.register_agent(name, "QA", ["TESTING"])

    result = cli(live, "sessions")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[:3] == ["ID", "TITLE", "STATUS"]
    for work_session in (running, pending):
        assert work_session["id"] in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(running["id"]))
    assert "listed running" in line and "RUNNING" in line and "0/1 (0%)" in line

    result = cli(live, "sessions", "--status", "running")
    assert running["id"] in result.stdout and pending["id"] not in result.stdout

    result = cli(live, "tasks", "--session", running["id"], "--status", "pending")
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(task["id"]))
    assert "listed task" in line and "PENDING" in line and "DEPLOYMENT" in line
    assert "tasks 1-1 of 1" in result.stdout

    result = cli(live, "agents", "--capability", "testing", "--available-only")
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith(agent["id"]))
    assert name in line and "IDLE" in line and "0/5" in line
    assert cli(live, "agents", "--status", "OFFLINE").stdout.strip() == "no agents"

    listed = json.loads(cli(live, "sessions", "--json", "--page-size", "1").stdout)
    assert listed["total"] == api.list_sessions()["total"] and len(listed["items"]) == 1

    from_env = CliRunner().invoke(main, ["tasks"], env={"ORCHESTRATOR_URL": live})
    assert task["id"] in from_env.stdout


def test_errors_end_the_command_with_their_code(live):
    result = cli(live, "tasks", "--status", "bogus")
    assert result.exit_code == 1 and "VALIDATION_ERROR" in result.output
    result = CliRunner().invoke(main, ["--url", live, "--token", "not-a-jwt", "sessions"])
    assert result.exit_code == 1 and "UNAUTHORIZED" in result.output
    result = cli(
        live, "agent", "run", "--name", "x", "--capabilities", "TESTING", "--fail-rate", "2"
    )
    assert result.exit_code == 2 and "--fail-rate" in result.output
    result = cli(live, "agent", "run", "--name", "x")
    assert result.exit_code == 2 and "--capabilities" in result.output


def test_status_shows_health_counts_and_queue(api, live, settings):
    api.start_session(api.create_session("counted")["id"])
    api.create_session("also counted")
    result = cli(live, "status", env={"REDIS_URL": settings.redis_url})
    assert result.exit_code == 0, result.output
    assert f"API       {live}: ok" in result.stdout
    assert "Ready     yes: database ok, redis ok" in result.stdout
    sessions = api.list_sessions()["total"]
    running = api.list_sessions(status="RUNNING")["total"]
    pending = api.list_sessions(status="PENDING")["total"]
    assert re.search(
        rf"^Sessions\s+{sessions}\s+\(.*PENDING {pending}, RUNNING {running}", result.stdout, re.M
    )
    assert re.search(r"^Agents\s+\d+", result.stdout, re.M)
    assert re.search(rf"^Tasks\s+{api.list_tasks()['total']}", result.stdout, re.M)
    assert re.search(r"^Queue\s+\d+ job\(s\) waiting in 'celery'", result.stdout, re.M)

    down = CliRunner().invoke(main, ["--url", f"http://127.0.0.1:{free_port()}", "status"])
    assert down.exit_code == 1 and "unreachable" in down.stdout


def test_demo_runs_a_session_to_completed(api, live):
    # someone else's real work on the same server, which the demo's agents could do
    other = api.start_session(api.create_session("someone else's work")["id"])
    capabilities = sorted({c.value for step in TEMPLATES["FEATURE"] for c in step.capabilities})
    theirs = [
        api.create_task(other["id"], f"theirs {c}", required_capabilities=[c]) for c in capabilities
    ]
    result = cli(live, "demo", "--work-seconds", "0.2", "--timeout", "120")
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"session (\S+) COMPLETED: 6/6 tasks completed", last)
    assert match, result.stdout
    assert "progress 100%" in result.stdout
    work_session = api.get_session(match.group(1))
    assert work_session["status"] == "COMPLETED"
    assert work_session["progress"]["by_status"]["COMPLETED"] == 6
    tasks = api.list_tasks(session_id=work_session["id"], page_size=100)["items"]
    assert {t["status"] for t in tasks} == {"COMPLETED"}
    assert api.list_agents()["total"] == 0, "the demo's agents deregistered"
    assert work_session["pool"].startswith("demo-")
    # done by its agents, who are records now: every completed task still says who
    assert all(t["assigned_agent_id"] for t in tasks if t["decomposition_template"] is None)
    for task in theirs:  # never touched
        untouched = api.get_task(task["id"])
        assert (untouched["status"], untouched["attempts"]) == ("PENDING", 0), untouched
        assert untouched["assigned_agent_id"] is None


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_the_demo_agents_cover_every_template(template):
    needs = [[c.value for c in step.capabilities] for step in TEMPLATES[template]]
    plan = capability_plan(needs)
    assert 1 <= len(plan) <= 3
    for needed in needs:
        assert any(set(needed) <= set(capabilities) for capabilities in plan)


def test_agent_run_works_until_ctrl_c_deregisters_it(api, live):
    name = f"cli-agent-{uuid.uuid4().hex[:6]}"
    process = subprocess.Popen(
        [
            os.path.join(BIN, "orchestrator"),
            "--url",
            live,
            "agent",
            "run",
            "--name",
            name,
            "--capabilities",
            "security_audit,testing",
            "--work-seconds",
            "0.2",
            "--heartbeat-seconds",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        agent = wait_for(
            lambda: next((a for a in api.list_agents()["items"] if a["name"] == name), None)
        )
        sid = api.start_session(api.create_session("for the CLI agent")["id"])["id"]
        tasks = [
            api.create_task(sid, f"audit {n}", required_capabilities=["SECURITY_AUDIT"])
            for n in range(2)
        ]
        for task in tasks:
            wait_for(lambda t=task: api.get_task(t["id"])["status"] == "COMPLETED")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert f"{name}: deregistered" in output and f"{name}: 2 completed, 0 failed" in output
    assert api.get_agent(agent["id"])["deregistered_at"]  # kept as a record
