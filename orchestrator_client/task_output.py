"""What a task's command prints: read on threads, sent to the task's log in batches.

One reader thread a pipe splits the bytes into lines (at most LINE_BYTES each, so output
without newlines is still lines), decodes them (invalid UTF-8 replaced), notes the last
`::progress N message`, keeps the last lines of each stream, and appends the line to a
bounded buffer. One shipper thread posts the buffer to the task's log as soon as 64 KB
wait, else at most every 250 ms. The readers never wait for the server: past
`buffer_bytes` a line is dropped (one marker line tells how many, once there is room
again), and once the server answers that the log is truncated (its per-task cap) nothing
more is buffered. So the command never blocks on its pipes and the runner's memory stays
flat whatever it prints.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from orchestrator_client.client import MAX_LOG_BATCH_BYTES, MAX_LOG_LINES_PER_BATCH
from orchestrator_client.errors import (
    Conflict,
    Forbidden,
    InvalidTransition,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
    ValidationError,
)

log = logging.getLogger(__name__)

LINE_BYTES = 16 * 1024
TAIL_LINES = 20
TAIL_LINE_CHARS = 400
PROGRESS = re.compile(rb"^::progress\s+(\d{1,3})(?:\s+(.*))?$")

SendLines = Callable[[list[dict[str, Any]]], dict[str, Any]]
ReportProgress = Callable[[int, str | None], None]

# The log is no longer this runner's to write (task finished, taken back, gone).
REFUSED = (Conflict, Forbidden, InvalidTransition, NotFound)


class TaskOutput:
    """`attach(stdout, stderr)` starts the threads; `finish()` waits for the pipes' end
    and sends what is left; `close()` stops sending at once (a cancelled task)."""

    def __init__(
        self,
        send_lines: SendLines | None,
        report_progress: ReportProgress,
        on_refused: Callable[[Exception], None],
        *,
        flush_seconds: float = 0.25,
        flush_bytes: int = 64 * 1024,
        buffer_bytes: int = 1024 * 1024,
        retry_seconds: float = 1.0,
        progress_seconds: float = 10.0,
    ) -> None:
        self.send_lines = send_lines
        self.report_progress = report_progress
        self.on_refused = on_refused
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self.buffer_bytes = buffer_bytes
        self.retry_seconds = retry_seconds
        # progress reports count against the agent's RATE_LIMIT: the latest, at most this often
        self.progress_seconds = progress_seconds
        self.tails = {
            "stdout": collections.deque(maxlen=TAIL_LINES),
            "stderr": collections.deque(maxlen=TAIL_LINES),
        }
        self.last_lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.lines_read = 0
        self.bytes_read = 0
        self.lines_dropped = 0  # by this runner (buffer full), not by the server's cap
        self.truncated = False  # the server said the log reached its cap
        self.shipping = send_lines is not None
        self._pending: collections.deque[tuple[str, str, str, int]] = collections.deque()
        self._pending_bytes = 0
        self._unmarked_drops = 0
        self._progress: tuple[int, str | None] | None = None
        self._readers_done = False
        self._closed = False
        self._cond = threading.Condition()
        self._readers: list[threading.Thread] = []
        self._shipper: threading.Thread | None = None

    def attach(self, stdout: IO[bytes], stderr: IO[bytes], name: str = "task") -> None:
        for stream, pipe in (("stdout", stdout), ("stderr", stderr)):
            reader = threading.Thread(
                target=self._read, args=(stream, pipe), name=f"{name}-{stream}", daemon=True
            )
            reader.start()
            self._readers.append(reader)
        self._shipper = threading.Thread(target=self._ship, name=f"{name}-log", daemon=True)
        self._shipper.start()

    def finish(self, timeout: float = 10.0) -> None:
        """After the command's processes are gone: read to the end, send the rest."""
        deadline = time.monotonic() + timeout
        for reader in self._readers:
            # a process that left the group (setsid) may hold a pipe open: not waited for
            reader.join(max(0.0, min(2.0, deadline - time.monotonic())))
        with self._cond:
            self._mark_drops()
            self._readers_done = True
            self._cond.notify_all()
        if self._shipper is not None:
            self._shipper.join(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._pending_bytes = 0
            self._progress = None
            self._cond.notify_all()

    def tail(self, stream: str | None = None) -> list[str]:
        with self._cond:
            return list(self.tails[stream] if stream else self.last_lines)

    # Reader threads

    def _read(self, stream: str, pipe: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed under us
            for raw in iter(lambda: pipe.readline(LINE_BYTES), b""):
                self._take(stream, raw)
        with contextlib.suppress(OSError):
            pipe.close()

    def _take(self, stream: str, raw: bytes) -> None:
        raw = raw.rstrip(b"\r\n")
        text = raw.decode("utf-8", errors="replace")
        progress = PROGRESS.match(raw) if raw.startswith(b"::progress") else None
        with self._cond:
            self.lines_read += 1
            self.bytes_read += len(raw) + 1
            short = text[:TAIL_LINE_CHARS]
            self.tails[stream].append(short)
            self.last_lines.append(short)
            if progress is not None:
                message = progress.group(2)
                self._progress = (
                    min(100, int(progress.group(1))),
                    message.decode("utf-8", errors="replace")[:1000] if message else None,
                )
                self._cond.notify_all()
            if not self.shipping or self.truncated or self._closed:
                return
            size = len(raw) + 32
            if self._pending_bytes + size > self.buffer_bytes:
                self.lines_dropped += 1
                self._unmarked_drops += 1
                return
            self._mark_drops()
            self._append(stream, text, size)

    def _mark_drops(self) -> None:
        """One line for the lines dropped since the last one kept (the cap's overrun)."""
        if self._unmarked_drops and self.shipping and not self.truncated:
            self._append(
                "stderr",
                f"[orchestrator runner: {self._unmarked_drops} lines dropped: the command "
                "printed faster than the log took them]",
                100,
            )
        self._unmarked_drops = 0

    def _append(self, stream: str, text: str, size: int) -> None:
        self._pending.append((stream, text, _now(), size))
        self._pending_bytes += size
        if len(self._pending) == 1 or self._pending_bytes >= self.flush_bytes:
            self._cond.notify_all()

    # The shipper thread

    def _ship(self) -> None:
        last_sent = last_progress = -float("inf")
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = last_sent + self.flush_seconds - now
                    progress_due = last_progress + self.progress_seconds - now
                    lines_ready = self._pending and (
                        self._pending_bytes >= self.flush_bytes or due <= 0 or self._readers_done
                    )
                    progress_ready = self._progress is not None and progress_due <= 0
                    if lines_ready or progress_ready:
                        break
                    if self._readers_done and not self._pending:
                        return  # all read and sent (a progress not yet due: the end follows)
                    waits = [due] if self._pending else []
                    if self._progress is not None:
                        waits.append(progress_due)
                    self._cond.wait(min(waits) if waits else None)
                progress = None
                if progress_ready:
                    progress, self._progress = self._progress, None
                batch = self._take_batch() if lines_ready else []
            if progress is not None:
                last_progress = time.monotonic()
                if not self._report(progress):
                    return
            if batch:
                last_sent = time.monotonic()
                if not self._send(batch):
                    return

    def _take_batch(self) -> list[tuple[str, str, str, int]]:
        batch: list[tuple[str, str, str, int]] = []
        size = 0
        limit = min(self.flush_bytes, MAX_LOG_BATCH_BYTES // 2)
        while self._pending and len(batch) < MAX_LOG_LINES_PER_BATCH:
            line_size = self._pending[0][3]
            if batch and size + line_size > limit:
                break
            batch.append(self._pending.popleft())
            size += line_size
        self._pending_bytes -= size
        return batch

    def _send(self, batch: list[tuple[str, str, str, int]]) -> bool:
        """Post one batch; False once nothing more should be sent."""
        lines = [{"stream": stream, "text": text, "at": at} for stream, text, at, _ in batch]
        try:
            answer = self.send_lines(lines)
        except REFUSED as exc:
            self._stop_shipping()
            self.on_refused(exc)
            return False
        except (PayloadTooLarge, ValidationError) as exc:
            log.warning("task log batch refused (%s); %d lines dropped", exc, len(batch))
            return True
        except OrchestratorError as exc:
            log.warning("task log not sent (%s); retrying", exc)
            with self._cond:
                if not self._closed:
                    self._pending.extendleft(reversed(batch))
                    self._pending_bytes += sum(line[3] for line in batch)
                    self._cond.wait(self.retry_seconds)
            return True
        if answer.get("truncated"):
            self._stop_shipping(truncated=True)
        return True

    def _report(self, progress: tuple[int, str | None]) -> bool:
        try:
            self.report_progress(*progress)
        except REFUSED as exc:
            self._stop_shipping()
            self.on_refused(exc)
            return False
        except OrchestratorError as exc:
            log.warning("progress not reported: %s", exc)
        return True

    def _stop_shipping(self, *, truncated: bool = False) -> None:
        with self._cond:
            self.truncated = self.truncated or truncated
            self.shipping = False
            self._pending.clear()
            self._pending_bytes = 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
