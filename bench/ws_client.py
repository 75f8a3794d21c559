"""Many WebSocket clients in one asyncio process, with the standard library only.

A minimal RFC 6455 client: the HTTP upgrade, unmasked server frames parsed straight from
the socket's bytes, pongs to the server's pings, a close at the end. Each client records
the event id of each message and when it arrived, and nothing else, so a client costs
little CPU; the timestamps are parsed once per event id, not once per client.

`run_clients` is the body of a child process and talks to the benchmark over a Pipe:
it sends ("connected", n, errors); receives ("expect", first_id, last_id); then waits
until every client has the last id or DRAIN_SECONDS pass, and sends back a summary (with
when that was, and the CPU time the clients used until then).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import statistics
import time
from array import array
from datetime import datetime

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PREFIX = b'{"id": "'
CONNECT_BATCH = 50
HANDSHAKE_SECONDS = 30
DRAIN_SECONDS = 120
OP_CONTINUATION, OP_TEXT, OP_CLOSE, OP_PING = 0x0, 0x1, 0x8, 0x9


class Client(asyncio.Protocol):
    timestamps: dict[int, float] = {}  # event id -> its timestamp (epoch seconds), shared

    def __init__(self, host: str, path: str) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.fragments = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.ids = array("q")
        self.arrived = array("d")
        self.others = 0  # messages without an event id (errors, pongs)
        self.close_code: int | None = None  # set when the server closes or the socket drops
        self.closing = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if self.close_code is None and not self.closing:
            self.close_code = 1006

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded and not self._upgrade():
            return
        buffer, position = self.buffer, 0
        while len(buffer) - position >= 2:
            first, second = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            # the extended length may not have arrived yet (a segment can end anywhere)
            if second == 126:
                if len(buffer) < start + 2:
                    break
                second, start = int.from_bytes(buffer[start : start + 2]), start + 2
            elif second == 127:
                if len(buffer) < start + 8:
                    break
                second, start = int.from_bytes(buffer[start : start + 8]), start + 8
            if len(buffer) < start + second:
                break
            self._frame(first, bytes(buffer[start : start + second]), now)
            position = start + second
        del buffer[:position]

    def _upgrade(self) -> bool:
        head, found, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        if not found:
            return False
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            self.opened.set_exception(ConnectionError(head.split(b"\r\n")[0].decode()))
            self.transport.close()
            return False
        self.upgraded = True
        self.buffer = bytearray(rest)
        self.opened.set_result(True)
        return True

    def _frame(self, first: int, payload: bytes, now: float) -> None:
        opcode = first & 0x0F
        if opcode in (OP_TEXT, OP_CONTINUATION):
            if not first & 0x80:  # a fragment: wait for the rest
                self.fragments += payload
                return
            if self.fragments:
                payload, self.fragments = bytes(self.fragments + payload), bytearray()
            self._message(payload, now)
        elif opcode == OP_PING:
            self.send(0xA, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
            self.send(OP_CLOSE, payload[:2])
            self.transport.close()

    def _message(self, payload: bytes, now: float) -> None:
        if not payload.startswith(PREFIX):
            self.others += 1
            return
        event_id = int(payload[len(PREFIX) : payload.index(b'"', len(PREFIX))])
        if event_id not in self.timestamps:
            stamp = json.loads(payload)["timestamp"]
            self.timestamps[event_id] = datetime.fromisoformat(stamp).timestamp()
        self.ids.append(event_id)
        self.arrived.append(now)

    def send(self, opcode: int, payload: bytes) -> None:
        """A client frame (masked, as RFC 6455 requires); control frames are short."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[n % 4] for n, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(masked)]) + mask + masked)

    def close(self) -> None:
        self.closing = True
        if self.transport and not self.transport.is_closing():
            self.send(OP_CLOSE, (1000).to_bytes(2))
            self.transport.close()


def run_clients(host: str, port: int, path: str, count: int, pipe) -> None:
    asyncio.run(_run(host, port, path, count, pipe))


async def _run(host: str, port: int, path: str, count: int, pipe) -> None:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    errors: list[str] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = [Client(f"{host}:{port}", path) for _ in range(min(CONNECT_BATCH, count - start))]
        outcomes = await asyncio.gather(
            *(_open(loop, client, host, port) for client in batch), return_exceptions=True
        )
        for client, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(f"{outcome.__class__.__name__}: {outcome}")
            else:
                clients.append(client)
    pipe.send(("connected", len(clients), errors[:5]))
    cpu = time.process_time()
    _, first_id, last_id = await loop.run_in_executor(None, pipe.recv)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and not all(
        c.close_code is not None or (c.ids and c.ids[-1] >= last_id) for c in clients
    ):
        await asyncio.sleep(0.05)
    drained = {"drained_at": time.time(), "client_cpu": time.process_time() - cpu}
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    pipe.send({**summary(clients, first_id, last_id), **drained})


async def _open(loop, client: Client, host: str, port: int) -> None:
    await loop.create_connection(lambda: client, host, port)
    try:
        await asyncio.wait_for(client.opened, HANDSHAKE_SECONDS)
    except BaseException:
        client.transport.close()
        raise


def summary(clients: list[Client], first_id: int, last_id: int) -> dict:
    """Latencies (ms) over every message of every client, and the completeness checks."""
    expected = array("q", range(first_id, last_id + 1))
    latencies = sorted(
        (arrived - Client.timestamps[event_id]) * 1000
        for client in clients
        for event_id, arrived in zip(client.ids, client.arrived, strict=True)
    )
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if latencies else []
    return {
        "clients": len(clients),
        "messages": len(latencies),
        "p50_ms": quantiles[49] if quantiles else float("nan"),
        "p99_ms": quantiles[98] if quantiles else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "complete": sum(client.ids == expected for client in clients),
        "missing": sum(len(set(expected) - set(client.ids)) for client in clients),
        "closed_by_server": sum(client.close_code is not None for client in clients),
        "other_messages": sum(client.others for client in clients),
    }
