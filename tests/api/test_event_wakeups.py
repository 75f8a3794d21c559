"""What wakes the outbox relay and the hub (PostgreSQL NOTIFY, shared/notify.py), what
an idle web process costs, and the safety polls that cover a lost notification.

The relay, the hub and their listener run in this process, as in a web process
(`start_background`), so the statements they send are counted on the engine itself."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
import redis as redis_lib
from sqlalchemy import event, text

from orchestrator_api.app import create_app, start_background
from shared import events, notify, relay
from shared.db import Database
from tests.support.waiting import wait_for

IDLE_SECONDS = 10.0
RETENTION = 100_000


@pytest.fixture
def web_process(settings):
    """A web process's background threads (relay, hub, listener) in this process, with
    the statements its engine sends (their times)."""
    app = create_app(settings)
    ext = app.extensions["orchestrator"]
    sent: list[float] = []
    event.listen(
        ext.database.engine, "before_cursor_execute", lambda *_: sent.append(time.monotonic())
    )
    start_background(app)
    yield ext, sent
    _stop(ext)


def _stop(ext) -> None:
    ext.relay.stop()
    ext.hub.stopped.set()
    notify.listener(notify.listen_url(ext.settings)).stop()
    ext.relay.join(timeout=10)
    ext.database.dispose()


def _thread_cpu_seconds(names: set[str]) -> float:
    """CPU time used so far by this process's threads of those names (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for thread in threading.enumerate():
        if thread.name in names and thread.native_id is not None:
            try:
                with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _hub_sees(hub, seq: int):
    subscription = hub.subscribe(lambda message: True)
    return subscription, lambda: any(s == seq for s, _ in subscription.held)


def _record_event(database: Database, *, notifying: bool = True) -> None:
    with database.transaction() as db:
        if not notifying:  # triggers off for this transaction: no NOTIFY is sent
            db.execute(text("SET LOCAL session_replication_role = replica"))
        events.record(db, events.TASK_STATUS_CHANGED, task_id=str(uuid.uuid4()))


def _latest_seq(database: Database) -> int:
    return relay.latest_seq(database)


def test_an_idle_web_process_sends_about_one_statement_a_second_and_uses_no_cpu(web_process):
    ext, sent = web_process
    threads = {"outbox-relay", "ws-hub-reader", "ws-hub-health", "pg-listener"}
    wait_for(lambda: notify.listener(notify.listen_url(ext.settings)).connected.is_set())
    time.sleep(2.0)  # past the start: the hub's first read, the relay's first look
    cpu_before, counted_from = _thread_cpu_seconds(threads), len(sent)
    time.sleep(IDLE_SECONDS)  # time itself must pass: this is what idle costs
    statements = len(sent) - counted_from
    cpu = _thread_cpu_seconds(threads) - cpu_before
    # the relay's safety poll (one EXISTS a second); the hub asks only every 30 s
    assert statements <= 1.2 * IDLE_SECONDS, statements
    assert cpu < 0.01 * IDLE_SECONDS, f"{cpu:.3f} s of CPU in {IDLE_SECONDS} s"
    # and what it does send is the relay's probe, nothing that writes or locks
    assert statements >= 0.5 * IDLE_SECONDS  # the safety poll runs


def test_a_notification_wakes_the_relay_at_once(settings, database, redis):
    listener = notify.listener(notify.listen_url(settings))
    thread = relay.RelayThread(
        database, redis, retention=RETENTION, listener=listener, safety_interval=60.0
    )
    thread.start()
    try:
        wait_for(listener.connected.is_set)
        time.sleep(0.2)  # the relay's first look is done; now only a NOTIFY wakes it
        before = _latest_seq(database)
        began = time.monotonic()
        _record_event(database)
        wait_for(lambda: _latest_seq(database) > before, timeout=10, interval=0.01)
        entries = wait_for(
            lambda: redis.xrange(relay.STREAM_KEY, min=f"{before + 1}-0"), interval=0.01
        )
        took = time.monotonic() - began
        assert json.loads(entries[0][1][b"m"])["type"] == events.TASK_STATUS_CHANGED
        assert took < 5.0, took  # not the 60 s safety poll
    finally:
        thread.stop()
        listener.stop()
        thread.join(timeout=10)


def test_an_event_whose_notification_was_lost_arrives_by_the_safety_poll(web_process):
    ext, _sent = web_process
    wait_for(lambda: notify.listener(notify.listen_url(ext.settings)).connected.is_set())
    seq = _latest_seq(ext.database) + 1
    subscription, seen = _hub_sees(ext.hub, seq)
    began = time.monotonic()
    _record_event(ext.database, notifying=False)
    wait_for(seen, timeout=10, interval=0.02)
    took = time.monotonic() - began
    # within the relay's one-second safety poll, then the stream at once
    assert took < 3.0, took
    ext.hub.unsubscribe(subscription)


def test_an_idle_hub_fills_a_lost_xadd_from_postgresql_when_notified(web_process, settings):
    ext, _sent = web_process
    ext.relay.stop()  # this test publishes itself, to a Redis that is not there
    ext.relay.join(timeout=10)
    wait_for(lambda: notify.listener(notify.listen_url(ext.settings)).connected.is_set())
    seq = _latest_seq(ext.database) + 1
    subscription, seen = _hub_sees(ext.hub, seq)
    _record_event(ext.database)
    nowhere = redis_lib.Redis(port=1, socket_connect_timeout=0.5)
    began = time.monotonic()
    # numbered and committed (the hubs are notified), but never added to the stream
    assert relay.publish_once(ext.database, nowhere, retention=RETENTION) == 1
    wait_for(seen, timeout=10, interval=0.02)
    took = time.monotonic() - began
    # the hub's XREAD waits one second, then PostgreSQL: not the 30 s safety poll
    assert took < 5.0, took
    ext.hub.unsubscribe(subscription)


def test_the_listening_connection_goes_where_database_listen_url_says():
    from shared.config import Settings

    pooled = "postgresql+psycopg2://app:secret@pgbouncer:6432/orchestrator"
    direct = "postgres://app:secret@db:5432/orchestrator"
    env = {"DATABASE_URL": pooled, "DATABASE_LISTEN_URL": direct}
    assert notify.listen_url(Settings.from_env(env)) == direct.replace("postgres:", "postgresql:")
    unset = Settings.from_env({"DATABASE_URL": pooled})
    assert notify.listen_url(unset) == "postgresql://app:secret@pgbouncer:6432/orchestrator"
