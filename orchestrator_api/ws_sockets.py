"""One WebSocket client's side of the gateway: what it is sent, and how.

Every byte to a client goes through its `SocketWriter`, which never blocks the hub; its
`Subscription` holds the events fanned out to it until the client has been sent what it
missed (a resume), then passes them to the writer. Under gevent (the gateway) one
`Pinger` pings every socket of the process.
"""

from __future__ import annotations

import contextlib
import select as io_select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

try:
    from gevent import monkey as gevent_monkey
except ImportError:  # gevent serves the gateway only
    gevent_monkey = None

# Per socket: what the client has not read yet, at most (about 10,000 events).
BUFFER_BYTES = 4 * 1024 * 1024
OPCODE_CLOSE = 0x8  # control frames: 0x8 close, 0x9 ping, 0xA pong
PING_FRAME = b"\x89\x00"  # a ping without payload, as simple-websocket sends
POLICY_VIOLATION_CLOSE = 1008
# A Pinger sleeps at least this long between rounds: the pings that fell due meanwhile go
# out together.
PING_ROUND_SECONDS = 0.1

Filter = Callable[[dict], bool]


def cooperative() -> bool:
    """Whether sockets wait through gevent (the gateway) rather than in threads (web)."""
    return gevent_monkey is not None and gevent_monkey.is_module_patched("socket")


class SocketWriter:
    """Stands in for a client's socket (simple-websocket's own frames, pings and closes
    come through here too, so frames never interleave): bytes are written without
    blocking, and what the client cannot take yet waits, up to BUFFER_BYTES.

    What waits is a queue of writes, each whole frames. A control frame (ping, pong,
    close) goes ahead of the writes not yet begun, so a client busy with a backlog still
    answers pings in time; after a close, the data still waiting is dropped (nothing may
    follow a close, and the client resumes from its last id).

    `wake` is called when bytes start waiting or events overflow: the socket's own
    thread, which otherwise sleeps until its client sends something, then retries the
    writes (and drops a client that takes nothing)."""

    def __init__(
        self,
        raw: socket.socket,
        *,
        send_timeout: float,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.raw = raw
        self.wake = wake
        # How long the client may take nothing before the socket is dropped.
        self.send_timeout = send_timeout
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.offset = 0  # how much of the first write has gone out
        self.lock = threading.Lock()
        self.overflowed = False  # events were dropped: the client must be disconnected
        self.broken = False
        self.closed = False  # a close frame was queued: nothing more goes out after it
        self.waiting_since: float | None = None  # since when bytes wait without progress
        if cooperative():
            # gevent's socket wraps a non-blocking OS socket: writes go to that one and never
            # wait; reads wait on gevent's socket, which a close from another greenlet wakes.
            # Nothing done under the lock can switch greenlets, so there is no lock (gevent's
            # costs an eighth of a fan-out to ten thousand sockets).
            raw.settimeout(None)
            self.sender = raw._sock
            self.reads_wait = self.lockless = True
            self.lock = contextlib.nullcontext()
        else:
            raw.setblocking(False)
            self.sender = raw
            self.reads_wait = self.lockless = False

    def send(self, data: bytes, *, event: bool = False) -> int:
        if (
            event
            and self.lockless
            and not (self.pending or self.closed or self.overflowed or self.broken)
            and len(data) <= BUFFER_BYTES
        ):  # the hub's fan-out under gevent, nothing waiting: most writes, the short way
            if self._send_at_once(data) and self.wake is not None:
                self.wake()
            return len(data)
        with self.lock:
            if self.closed or not data:
                return len(data)
            if event and (self.overflowed or self.pending_bytes + len(data) > BUFFER_BYTES):
                self.overflowed = True
                waiting_began = True
            elif event and not self.pending and not self.broken:
                waiting_began = self._send_at_once(data)
            else:
                waiting_began = not self.pending
                if not event and _is_control(data):
                    self._queue_control(data)
                else:
                    self.pending.append(data)
                    self.pending_bytes += len(data)
                self._write()
                waiting_began = waiting_began and bool(self.pending)
        if waiting_began and self.wake is not None:
            self.wake()
        return 0 if self.overflowed and event else len(data)

    def _send_at_once(self, data: bytes) -> bool:
        """Nothing waits: write straight away (most writes). Whether some of it must wait."""
        try:
            sent = self.sender.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.broken = True  # the reader thread notices the dead socket too
            return False
        if sent == len(data):
            return False
        self.pending.append(data)
        self.pending_bytes = len(data)
        self.offset = sent
        self.waiting_since = time.monotonic()
        return True

    def _queue_control(self, frames: bytes) -> None:
        begun = self.pending.popleft() if self.offset else None  # a frame is never cut
        if _closes(frames):
            self.closed = True
            self.pending.clear()
            self.pending.append(frames)
        else:
            self.pending.appendleft(frames)
        if begun is not None:
            self.pending.appendleft(begun)
        self.pending_bytes = sum(len(write) for write in self.pending)

    def flush(self) -> bool:
        """Write what waits; True once nothing does."""
        with self.lock:
            self._write()
            return not self.pending

    def drain(self, timeout: float) -> None:
        """Give the client up to `timeout` seconds to take what waits."""
        deadline = time.monotonic() + timeout
        while not self.flush() and not self.broken and time.monotonic() < deadline:
            try:
                io_select.select(
                    [], [self.raw], [], max(0.0, min(0.1, deadline - time.monotonic()))
                )
            except (ValueError, OSError):  # closed meanwhile (the client went)
                return

    def stalled(self) -> bool:
        """Whether bytes have waited `send_timeout` without the client taking any."""
        with self.lock:
            since = self.waiting_since
        return since is not None and time.monotonic() - since > self.send_timeout

    def _write(self) -> None:
        progressed = False
        while self.pending and not self.broken:
            first = self.pending[0]
            try:
                sent = self.sender.send(memoryview(first)[self.offset :])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.broken = True  # the reader thread notices the dead socket too
                self.pending.clear()
                self.pending_bytes = self.offset = 0
                break
            progressed = True
            self.offset += sent
            if self.offset < len(first):
                break
            self.pending.popleft()
            self.pending_bytes -= len(first)
            self.offset = 0
        if not self.pending:
            self.waiting_since = None
        elif progressed or self.waiting_since is None:
            self.waiting_since = time.monotonic()

    def recv(self, size: int) -> bytes:
        """For simple-websocket's reader thread: waits for data like a blocking socket, and
        notices (within a second, in a thread) when the socket is closed under it."""
        if self.reads_wait:
            return self.raw.recv(size)
        while True:
            try:
                return self.raw.recv(size)
            except (BlockingIOError, InterruptedError):
                pass
            try:
                io_select.select([self.raw], [], [], 1.0)
            except (ValueError, OSError):  # closed meanwhile
                raise OSError("the socket was closed") from None

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


def _is_control(frames: bytes) -> bool:
    return frames[0] & 0x0F >= OPCODE_CLOSE


def _closes(frames: bytes) -> bool:
    """Whether these control frames (unmasked, payloads of at most 125 bytes) hold a close."""
    position = 0
    while position + 1 < len(frames):
        if frames[position] & 0x0F == OPCODE_CLOSE:
            return True
        position += 2 + (frames[position + 1] & 0x7F)
    return False


class Pinger:
    """Under gevent, pings every socket handed to it every `interval` seconds from one
    greenlet, and closes with 1008 a socket whose client did not answer the last ping (in
    threads, simple-websocket's reader does this per socket). simple-websocket's own
    pings cost each idle socket a timer and a selector's set-up and teardown per ping,
    most of an idle gateway's CPU at ten thousand sockets; here a ping is one write.
    It holds its sockets weakly: a connection that ended is freed at once, not when its
    next ping falls due (clients that reconnect in a loop would pile up)."""

    def __init__(self, interval: float, stopped: threading.Event) -> None:
        self.interval = interval
        self.stopped = stopped
        self.due: deque[tuple[float, weakref.ref]] = deque()  # oldest first
        threading.Thread(target=self._run, name="ws-pinger", daemon=True).start()

    def watch(self, ws) -> None:
        """`ws`: simple-websocket's Server once its socket is a SocketWriter (`ws.sock`);
        its reader records the pongs."""
        self.due.append((time.monotonic() + self.interval, weakref.ref(ws)))

    def _run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic()
            while self.due and self.due[0][0] <= now:
                _, held = self.due.popleft()
                ws = held()
                if ws is None or not ws.connected or ws.sock.broken or ws.sock.closed:
                    continue  # gone: forgotten
                if not ws.pong_received:
                    with contextlib.suppress(Exception):
                        ws.close(POLICY_VIOLATION_CLOSE, "Ping/Pong timeout")
                    ws.event.set()  # the socket's thread sees it closed and ends
                    continue
                ws.pong_received = False
                ws.sock.send(PING_FRAME)
                self.due.append((now + self.interval, held))
            ws = None  # no reference to the last socket while sleeping
            wait = self.due[0][0] - now if self.due else self.interval
            self.stopped.wait(max(wait, PING_ROUND_SECONDS))


class Subscription:
    """One socket's share of the stream. Until the socket has been sent what it missed
    (a resume), its events are held; then they go to its writer, each id once:
    `sent_upto` is the newest id it was sent (by the resume, then by the hub)."""

    def __init__(self, wants: Filter, *, route: str | None = None) -> None:
        self.wants = wants
        self.route = route  # the id the hub finds it by (None: it sees every event)
        self.writer: SocketWriter | None = None
        self.sent_upto = 0
        self.held: list[tuple[int, bytes]] = []
        self.held_bytes = 0
        self.lock = threading.Lock()

    @property
    def overflowed(self) -> bool:
        return self.held_bytes > BUFFER_BYTES or (
            self.writer is not None and self.writer.overflowed
        )

    def deliver(
        self,
        frames: list[tuple[int, bytes]],
        joined: dict[int, tuple[bytes, int]] | None = None,
    ) -> None:
        """Frames of wanted events, oldest first, with their ids (0: not a stream event);
        those up to `sent_upto` are skipped. `joined`: for the sockets that get the same
        frames, what each `sent_upto` gets (the bytes and the newest id), filled as it goes."""
        if self.writer is None:
            with self.lock:
                if self.writer is None:
                    self.held += frames
                    self.held_bytes += sum(len(frame) for _, frame in frames)
                    return
        if joined is None:
            self._write(frames)
            return
        after = self.sent_upto
        share = joined.get(after)
        if share is None:
            share = joined[after] = _after(frames, after)
        self.sent_upto = max(after, share[1])
        if share[0]:
            self.writer.send(share[0], event=True)

    def wake(self) -> None:
        """Wake the socket's own thread (the hub is shutting down)."""
        writer = self.writer
        if writer is not None and writer.wake is not None:
            writer.wake()

    def go_live(self, writer: SocketWriter, floor: int) -> None:
        """`floor`: the newest id the resume sent."""
        with self.lock:
            self.sent_upto = floor
            self._write(self.held, writer)
            self.held, self.held_bytes = [], 0
            self.writer = writer

    def _write(self, frames: list[tuple[int, bytes]], writer: SocketWriter | None = None) -> None:
        data, newest = _after(frames, self.sent_upto)
        self.sent_upto = max(self.sent_upto, newest)
        if data:
            (writer or self.writer).send(data, event=True)


def _after(frames: list[tuple[int, bytes]], sent_upto: int) -> tuple[bytes, int]:
    """The frames past `sent_upto` (and those of no id), joined, and the newest id."""
    data = b"".join(frame for seq, frame in frames if seq == 0 or seq > sent_upto)
    return data, max((seq for seq, _ in frames), default=0)
