"""The demo: one session from creation to COMPLETED, worked by three reference agents.

It creates a session and a task, decomposes the task with a template, starts the session,
reads the subtasks' required capabilities and starts three agents that cover them
between them, then follows the session's `progress` (woken by its event stream) until
every task is done, and completes the session.

The demo runs in a fresh pool of its own (`demo-<random>`): its agents take only its
own tasks, and no agent of anyone else's takes them, so it never touches other work on a
shared server. The session is started after the decomposition is accepted, not before:
a task of a RUNNING session may be assigned at once, and a task that is no longer
PENDING can't be decomposed.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator_client.agent import ReferenceAgent
from orchestrator_client.client import OrchestratorClient
from orchestrator_client.errors import OrchestratorError

FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


def fresh_pool(prefix: str) -> str:
    """A pool name nobody else uses (the server's rule: lower-case, digits, '-', '_')."""
    return f"{prefix}-{secrets.token_hex(4)}"


AGENT_TYPES = ("BACKEND", "FULLSTACK", "QA")


class DemoFailed(Exception):
    pass


def capability_plan(requirements: list[list[str]], agents: int = 3) -> list[list[str]]:
    """Capability lists for `agents` agents such that each requirement (the capabilities
    of one subtask, all needed by one agent) is covered by one of them."""
    unique: list[tuple[str, ...]] = []
    for needed in requirements:
        key = tuple(sorted(needed))
        if key not in unique:
            unique.append(key)
    plans: list[list[str]] = [[] for _ in range(agents)]
    for n, needed in enumerate(unique):
        plan = plans[n % agents]
        plan.extend(c for c in needed if c not in plan)
    return [plan for plan in plans if plan]


def run_demo(
    client: OrchestratorClient,
    *,
    template: str = "FEATURE",
    title: str = "Add password reset",
    work_seconds: float = 1.0,
    fail_rate: float = 0.0,
    timeout: float = 300.0,
    echo: Callable[[str], None] = print,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the demo in a pool of its own; the finished session, or DemoFailed."""
    pool = fresh_pool("demo")
    session = client.create_session(
        f"Demo: {title}",
        priority="HIGH",
        initial_prompt=f"{title} ({template} template)",
        pool=pool,
    )
    sid = session["id"]
    agents: list[ReferenceAgent] = []
    try:
        root = client.create_task(sid, title, description=f"Decomposed with {template}")
        client.decompose_task(root["id"], template)
        client.start_session(sid)
        echo(f"session {sid} RUNNING in pool {pool}; task {root['id']} decomposed with {template}")
        subtasks = _wait_for_subtasks(client, sid, root["id"], timeout=min(timeout, 60))
        plan = capability_plan([t["required_capabilities"] for t in subtasks])
        echo(f"{len(subtasks)} subtasks; starting {len(plan)} agents")
        for n, capabilities in enumerate(plan):
            agent = ReferenceAgent(
                client,
                f"demo-{sid[:8]}-{n + 1}",
                capabilities,
                agent_type=AGENT_TYPES[n % len(AGENT_TYPES)],
                work_seconds=work_seconds,
                fail_rate=fail_rate,
                echo=echo,
                pool=pool,
            )
            agents.append(agent)
            agent.start()
        session = _follow(client, sid, timeout=timeout, on_progress=on_progress)
    except BaseException:
        _cancel_quietly(client, sid)  # nothing left running on an error or Ctrl-C
        raise
    finally:
        for agent in agents:
            agent.request_stop()
        for agent in agents:
            agent.stop()
    if session["status"] != "COMPLETED":
        raise DemoFailed(
            f"session {sid} ended {session['status']}: {session.get('error') or 'no reason'}"
        )
    return session


def _wait_for_subtasks(client, session_id: str, root_id: str, *, timeout: float) -> list[dict]:
    """The worker creates the subtasks shortly after the 202."""
    deadline = time.monotonic() + timeout
    while True:
        if client.get_task(root_id)["subtasks"]:
            page = client.list_tasks(session_id=session_id, page_size=100)
            return [t for t in page["items"] if t["parent_id"] == root_id]
        if time.monotonic() > deadline:
            raise DemoFailed(f"task {root_id} was not decomposed within {timeout:.0f}s")
        time.sleep(0.3)


def _follow(client, session_id: str, *, timeout: float, on_progress) -> dict[str, Any]:
    """Read the session whenever its stream says something happened (at least every 2 s,
    at most every 0.5 s, which keeps well under the default rate limit); complete it once
    every task is COMPLETED."""
    changed = threading.Event()
    stream = client.events(f"/ws/sessions/{session_id}")

    def listen() -> None:
        try:
            for _event in stream:
                changed.set()
        except OrchestratorError:
            pass  # the 2 s reads carry on

    threading.Thread(target=listen, name="demo-session-events", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            session = client.get_session(session_id)
            if on_progress is not None:
                on_progress(session)
            progress = session["progress"]
            done = progress["by_status"].get("COMPLETED", 0)
            if session["status"] == "RUNNING" and progress["total"] and done == progress["total"]:
                session = client.complete_session(session_id)
            if session["status"] in FINISHED:
                return session
            if time.monotonic() > deadline:
                raise DemoFailed(f"session {session_id} not finished within {timeout:.0f}s")
            changed.wait(2.0)
            changed.clear()
            time.sleep(0.5)
    finally:
        stream.close()


def _cancel_quietly(client, session_id: str) -> None:
    try:
        session = client.get_session(session_id)
        if session["status"] not in FINISHED:
            client.cancel_session(session_id)
    except OrchestratorError:
        pass
