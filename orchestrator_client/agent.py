"""The reference agent: what a real agent does, with the work simulated.

It registers (and from then on acts with the token the registration returns), heartbeats
on a thread (on its stream while that is up, else over HTTP), hears of its tasks on its
own stream `/ws/agents/{id}` (`task.assigned`),
and polls `GET /api/v1/agents/{id}/tasks` as a fallback: right after each (re)connection,
since the stream only carries what happens after it, often while the stream is down, and
rarely while it is up. Each task is started, worked on (sleeps, with progress reports),
and completed with a small result, or failed as retryable at `fail_rate`. `stop()`
deregisters it, which hands whatever it still held back to the queue.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator_client.client import OrchestratorClient
from orchestrator_client.errors import (
    AgentNotFound,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidTransition,
    NotFound,
    OrchestratorError,
)

log = logging.getLogger(__name__)

# The task is no longer ours to work on (cancelled, reassigned, timed out, gone).
LOST = (InvalidTransition, Forbidden, NotFound, Conflict)


class ReferenceAgent:
    def __init__(
        self,
        client: OrchestratorClient,
        name: str,
        capabilities: Iterable[str],
        *,
        agent_type: str = "FULLSTACK",
        max_tasks: int = 1,
        work_seconds: float = 2.0,
        fail_rate: float = 0.0,
        progress_steps: int = 4,
        heartbeat_seconds: float = 5.0,
        poll_seconds: float = 15.0,
        offline_poll_seconds: float = 2.0,
        stop_after: int | None = None,
        websocket: bool = True,
        seed: int | None = None,
        echo: Callable[[str], None] | None = None,
        pool: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.pool = pool
        self.capabilities = [str(c).strip().upper() for c in capabilities if str(c).strip()]
        self.agent_type = agent_type
        self.max_tasks = max_tasks
        self.work_seconds = work_seconds
        self.fail_rate = fail_rate
        self.progress_steps = max(1, progress_steps)
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.offline_poll_seconds = offline_poll_seconds
        self.stop_after = stop_after
        self.websocket = websocket
        self.echo = echo or (lambda line: log.info("%s", line))
        self.random = random.Random(seed)
        self.id: str | None = None
        self.api = client  # the agent's own client, once registered
        self.completed: list[str] = []
        self.failed: list[str] = []
        self.received: Counter[str] = Counter()  # task offers by source: websocket, poll
        self.heartbeats: Counter[str] = Counter()  # heartbeats sent by way: stream, http
        self.polls = 0
        self.stopped = threading.Event()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._poll_now = threading.Event()
        self._stream = None
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # Lifecycle

    def start(self) -> ReferenceAgent:
        """Register and start the threads; returns at once."""
        agent = self.client.register_agent(
            self.name,
            self.agent_type,
            self.capabilities,
            max_concurrent_tasks=self.max_tasks,
            pool=self.pool,
        )
        self.id = agent["id"]
        if agent.get("token"):
            self.api = self.client.with_token(agent["token"])
        self.echo(f"{self.name}: registered as {self.id} ({', '.join(self.capabilities)})")
        targets = [self._heartbeats, self._poll]
        if self.websocket:
            self._stream = self.api.events(
                f"/ws/agents/{self.id}", on_connect=lambda _stream: self._poll_now.set()
            )
            targets.append(self._listen)
        targets += [self._work] * self.max_tasks
        for n, target in enumerate(targets):
            thread = threading.Thread(
                target=target, name=f"{self.name}-{target.__name__[1:]}-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def run(self) -> None:
        """Start, and block until stopped, `stop_after` tasks are done, or Ctrl-C; then
        deregister."""
        self.start()
        try:
            while not self.stopped.wait(0.5):
                if self.stop_after is not None and self.finished >= self.stop_after:
                    break
        except KeyboardInterrupt:
            self.echo(f"{self.name}: interrupted")
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Tell the threads to end, without waiting (stop several agents at once)."""
        self.stopped.set()
        self._poll_now.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        for _ in range(self.max_tasks):
            self._queue.put(None)  # wakes the workers

    def stop(self, *, deregister: bool = True) -> None:
        """Stop the threads and deregister (once; later calls do nothing)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self.request_stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        if deregister and self.id is not None:
            try:
                self.api.deregister_agent(self.id)
                self.echo(f"{self.name}: deregistered")
            except AgentNotFound:
                pass
            except OrchestratorError as exc:
                self.echo(f"{self.name}: could not deregister: {exc}")
        if self.api is not self.client:
            self.api.close()

    @property
    def streaming(self) -> bool:
        """Whether its event stream is connected right now."""
        stream = self._stream
        return stream is not None and stream.connected.is_set()

    @property
    def finished(self) -> int:
        return len(self.completed) + len(self.failed)

    @property
    def load(self) -> int:
        """The load it reports: its share of its slots in use, kept below 100 so that a
        freed slot is usable before the next heartbeat (the server counts tasks itself)."""
        with self._lock:
            busy = len(self._in_flight)
        return min(90, round(90 * busy / self.max_tasks))

    # Threads

    def _heartbeats(self) -> None:
        while not self.stopped.wait(self.heartbeat_seconds):
            try:
                self._heartbeat()
            except AgentNotFound:
                self.echo(f"{self.name}: the agent was deregistered elsewhere; stopping")
                self.stopped.set()
            except OrchestratorError as exc:
                log.warning("%s: heartbeat failed: %s", self.name, exc)

    def _heartbeat(self) -> None:
        """On the stream while it is up (cheaper for both ends), else over HTTP."""
        stream = self._stream
        if stream is not None and stream.connected.is_set():
            try:
                stream.heartbeat(self.load)
                self.heartbeats["stream"] += 1
                return
            except ConnectionFailed as exc:  # dropped meanwhile: HTTP, at once
                log.info("%s: heartbeat on the stream failed (%s); over HTTP", self.name, exc)
        self.api.heartbeat(self.id, self.load)
        self.heartbeats["http"] += 1

    def _listen(self) -> None:
        # on_connect (above) polls at once: the stream carries only what comes after it
        try:
            for event in self._stream:
                self._on_event(event)
        except OrchestratorError as exc:
            if not self.stopped.is_set():
                self.echo(f"{self.name}: event stream refused ({exc}); polling only")
                self._stream = None

    def _on_event(self, event: dict[str, Any]) -> None:
        payload = event.get("payload") or {}
        if event.get("type") == "task.assigned" and payload.get("agent_id") == self.id:
            self._offer(payload["task_id"], "websocket")

    def _poll(self) -> None:
        self._poll_now.set()  # once at start
        while not self.stopped.is_set():
            interval = self.poll_seconds if self.streaming else self.offline_poll_seconds
            self._poll_now.wait(interval)
            self._poll_now.clear()
            if self.stopped.is_set():
                return
            self.polls += 1
            try:
                held = self.api.agent_tasks(self.id)
                for task in held:
                    if task["status"] == "ASSIGNED":
                        self._offer(task["id"], "poll")
                self._polled(held)
            except AgentNotFound:
                self.stopped.set()
            except OrchestratorError as exc:
                log.warning("%s: polling failed: %s", self.name, exc)

    def _polled(self, held: list[dict[str, Any]]) -> None:
        """What the agent holds, as just polled (a hook for subclasses)."""

    def _offer(self, task_id: str, source: str) -> None:
        with self._lock:
            if task_id in self._in_flight:
                return
            self._in_flight.add(task_id)
            self.received[source] += 1
        self._queue.put(task_id)

    def _work(self) -> None:
        while not self.stopped.is_set():
            try:
                task_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if task_id is None:
                return
            try:
                self._do(task_id)
            except OrchestratorError as exc:
                self.echo(f"{self.name}: task {task_id} abandoned: {exc}")
            finally:
                with self._lock:
                    self._in_flight.discard(task_id)

    # The simulated work

    def _do(self, task_id: str) -> None:
        try:
            task = self.api.start_task(task_id, agent_id=self.id)
        except LOST as exc:
            log.info("%s: task %s not started: %s", self.name, task_id, exc)
            return
        self.echo(f"{self.name}: working on {task['title']!r}")
        began = time.monotonic()
        for step in range(1, self.progress_steps):
            if self.stopped.wait(self.work_seconds / self.progress_steps):
                return  # deregistering hands it back
            try:
                self.api.report_progress(
                    task_id, round(100 * step / self.progress_steps), agent_id=self.id
                )
            except LOST:
                self.echo(f"{self.name}: {task['title']!r} was taken away")
                return
        if self.stopped.wait(self.work_seconds / self.progress_steps):
            return
        try:
            if self.random.random() < self.fail_rate:
                self.api.fail_task(task_id, "simulated failure", retryable=True, agent_id=self.id)
                self.failed.append(task_id)
                self.echo(f"{self.name}: failed {task['title']!r} (simulated, retryable)")
            else:
                self.api.complete_task(task_id, self._result(task, began), agent_id=self.id)
                self.completed.append(task_id)
                self.echo(f"{self.name}: completed {task['title']!r}")
        except LOST:
            self.echo(f"{self.name}: {task['title']!r} was taken away")

    def _result(self, task: dict[str, Any], began: float) -> dict[str, Any]:
        return {
            "agent": self.name,
            "summary": f"Simulated work on {task['title']}",
            "seconds": round(time.monotonic() - began, 3),
        }
