"""The client side of bench/gateway.py: many WebSocket clients in one asyncio process
(bench/ws_client.py's minimal client), several such processes at once, each client bound to
one of many loopback source addresses (127.0.0.2 and up: a client's identity in
development is its address, so each address holds only a share of the sockets).

`run_clients` is the body of a child process and talks to the benchmark over a Pipe: it
sends ("connected", n, errors); then takes commands: ("expect", first_id, last_id) waits
until every client has the last id (or DRAIN_SECONDS) and sends back its latencies and
checks; ("heartbeats", seconds) has its first clients heartbeat on their streams as fast as
the acks come back, and sends back how many were acknowledged; ("close",) ends it.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from collections import Counter

from bench.ws_client import HANDSHAKE_SECONDS, OP_TEXT, Client

# Handshakes in flight per client process: connections arrive spread out in production,
# and a storm of them leaves the server's heap at its peak (RSS per socket would count it).
CONNECT_BATCH = 25
DRAIN_SECONDS = 120
ACK_PREFIX = b'{"type": "heartbeat.ack"'


class GatewayClient(Client):
    """A client of one stream; on an agent's stream it checks that every event names its
    agent, and it can heartbeat."""

    def __init__(self, host: str, path: str, agent_id: str | None) -> None:
        super().__init__(host, path)
        self.agent_id = agent_id
        self.strangers = 0  # events that name another agent
        self.acks = 0
        self.heartbeating = False

    def _message(self, payload: bytes, now: float) -> None:
        if payload.startswith(ACK_PREFIX):
            self.acks += 1
            if self.heartbeating:
                self.heartbeat()
            return
        super()._message(payload, now)
        if self.agent_id is not None and payload.startswith(b'{"id"'):
            self.strangers += json.loads(payload)["payload"].get("agent_id") != self.agent_id

    def heartbeat(self) -> None:
        self.send(OP_TEXT, b'{"type": "heartbeat", "current_load": 10}')

    def send(self, opcode: int, payload: bytes) -> None:
        # the base class handles only short control frames
        if len(payload) < 126:
            super().send(opcode, payload)


def run_clients(host: str, port: int, paths: list[str], agents: list, sources: list, pipe):
    asyncio.run(_run(host, port, paths, agents, sources, pipe))


async def _run(host, port, paths, agents, sources, pipe) -> None:
    loop = asyncio.get_running_loop()
    clients: list[GatewayClient] = []
    errors: list[str] = []
    specs = list(zip(paths, agents, sources, strict=True))
    for start in range(0, len(specs), CONNECT_BATCH):
        batch = [
            (GatewayClient(f"{host}:{port}", p, a), s)
            for p, a, s in specs[start : start + CONNECT_BATCH]
        ]
        outcomes = await asyncio.gather(
            *(_open(loop, client, host, port, source) for client, source in batch),
            return_exceptions=True,
        )
        for (client, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(f"{outcome.__class__.__name__}: {outcome}")
            else:
                clients.append(client)
    pipe.send(("connected", len(clients), errors[:5]))
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "expect":
            pipe.send(await _drain(clients, command[1], command[2]))
        elif command[0] == "heartbeats":
            pipe.send(await _heartbeats(clients[: command[2]], command[1]))
        else:
            break
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)


async def _open(loop, client: GatewayClient, host: str, port: int, source: str) -> None:
    await loop.create_connection(lambda: client, host, port, local_addr=(source, 0))
    try:
        await asyncio.wait_for(client.opened, HANDSHAKE_SECONDS)
    except BaseException:
        client.transport.close()
        raise


async def _drain(clients: list[GatewayClient], first_id: int, last_id: int) -> dict:
    """Wait until each client has what it is due (the last id on a shared stream; on
    agents' streams, until the events stop coming); then the figures."""
    cpu = time.process_time()
    deadline = time.monotonic() + DRAIN_SECONDS
    shared = clients and clients[0].agent_id is None
    if shared:
        while time.monotonic() < deadline and not all(
            c.close_code is not None or (c.ids and c.ids[-1] >= last_id) for c in clients
        ):
            await asyncio.sleep(0.05)
    else:
        received = -1
        while time.monotonic() < deadline:
            now = sum(len(c.ids) for c in clients)
            if now == received and now:
                break
            received = now
            await asyncio.sleep(1.0)
    latencies = array("d")
    counts: dict[int, int] = {}
    for client in clients:
        for event_id, arrived in zip(client.ids, client.arrived, strict=True):
            latencies.append((arrived - Client.timestamps[event_id]) * 1000)
            counts[event_id] = counts.get(event_id, 0) + 1
    expected = array("q", range(first_id, last_id + 1))
    return {
        "clients": len(clients),
        "latencies": latencies,
        "counts": counts,
        "complete": sum(c.ids == expected for c in clients) if shared else None,
        "strangers": sum(c.strangers for c in clients),
        "closed_by_server": sum(c.close_code is not None for c in clients),
        "close_codes": dict(Counter(c.close_code for c in clients if c.close_code is not None)),
        "client_cpu": time.process_time() - cpu,
    }


async def _heartbeats(clients: list[GatewayClient], seconds: float) -> int:
    for client in clients:
        client.acks = 0
        client.heartbeating = True
        client.heartbeat()
    await asyncio.sleep(seconds)
    acked = sum(client.acks for client in clients)
    for client in clients:
        client.heartbeating = False
    await asyncio.sleep(1.0)  # the last answers come in
    return acked


def run_http_heartbeats(host: str, port: int, agents: list[str], seconds: float, pipe) -> None:
    """POST /api/v1/agents/{id}/heartbeat on one keep-alive connection per agent, each the
    next as soon as the last is answered, for `seconds`; sends back how many got 200."""
    pipe.send(asyncio.run(_http_heartbeats(host, port, agents, seconds)))


async def _http_heartbeats(host: str, port: int, agents: list[str], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    body = b'{"current_load": 10}'

    async def beat(agent_id: str) -> int:
        reader, writer = await asyncio.open_connection(host, port)
        request = (
            f"POST /api/v1/agents/{agent_id}/heartbeat HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        answered = 0
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            answered += head.startswith(b"HTTP/1.1 200")
        writer.close()
        return answered

    return sum(await asyncio.gather(*(beat(agent) for agent in agents)))
