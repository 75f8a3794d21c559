"""Nothing is stranded by a race: a task created while its session finishes, or while
a dependency of it is cancelled or fails for good, is either refused or cancelled with
them. Repeated concurrent rounds on real PostgreSQL, with the API wired to a real Celery
worker (a finishing session hands the tasks it could not lock at once to a job)."""

import threading
import uuid

from sqlalchemy import func, select, text

from shared.models import OutboxEvent, Task
from tests.api.helpers import act, make_task, register, start_session
from tests.support.waiting import wait_for

CREATORS = 29


def _race(app, creator_bodies, finisher):
    """Every body posted to /tasks by its own thread, and `finisher(client)` by one
    more, all released at once; returns the creators' status codes."""
    barrier = threading.Barrier(len(creator_bodies) + 1)
    statuses: list[int] = []

    def create(body):
        local = app.test_client()
        barrier.wait()
        statuses.append(local.post("/api/v1/tasks", json=body).status_code)

    def finish():
        local = app.test_client()
        barrier.wait()
        finisher(local)

    threads = [threading.Thread(target=create, args=(b,)) for b in creator_bodies]
    threads.append(threading.Thread(target=finish))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _settled(db, session_id):
    return not _unfinished_in(db, session_id)


def _unfinished_in(db, session_id):
    db.rollback()
    return db.scalars(
        select(Task.id).where(
            Task.session_id == session_id,
            Task.status.in_(["PENDING", "BLOCKED", "ASSIGNED", "IN_PROGRESS"]),
        )
    ).all()


def test_tasks_created_while_the_session_is_cancelled_are_refused_or_cancelled(engine_app, api, db):
    for round_number in range(8):
        session = start_session(api, title=f"cancel race {round_number}")
        first = make_task(api, session["id"])
        bodies = [
            # half plain, half waiting on a task that the cancel takes with it
            {"session_id": session["id"], "title": f"t{i}"}
            | ({"depends_on": [first["id"]]} if i % 2 else {})
            for i in range(CREATORS)
        ]

        def cancel(local, session_id=session["id"]):
            assert local.post(f"/api/v1/sessions/{session_id}/cancel").status_code == 200

        statuses = _race(engine_app, bodies, cancel)
        assert set(statuses) <= {201, 400}, statuses
        wait_for(lambda sid=session["id"]: _settled(db, sid))
        body = api.get(f"/api/v1/sessions/{session['id']}").json
        assert body["status"] == "CANCELLED"
        assert body["progress"]["by_status"]["CANCELLED"] == statuses.count(201) + 1


def test_tasks_created_while_the_session_completes_are_refused_or_cancelled(engine_app, api, db):
    for round_number in range(4):
        session = start_session(api, title=f"complete race {round_number}")
        bodies = [{"session_id": session["id"], "title": f"t{i}"} for i in range(CREATORS)]

        def complete(local, session_id=session["id"]):
            assert local.post(f"/api/v1/sessions/{session_id}/complete").status_code == 200

        statuses = _race(engine_app, bodies, complete)
        assert set(statuses) <= {201, 400}, statuses
        wait_for(lambda sid=session["id"]: _settled(db, sid))


def test_tasks_created_on_a_dependency_being_cancelled_are_refused_or_cancelled(
    engine_app, api, db
):
    session = start_session(api)
    for round_number in range(8):
        dependency = make_task(api, session["id"], title=f"dependency {round_number}")
        bodies = [
            {"session_id": session["id"], "title": f"t{i}", "depends_on": [dependency["id"]]}
            for i in range(CREATORS)
        ]

        def cancel(local, task_id=dependency["id"]):
            assert act(local, task_id, "cancel").status_code == 200

        statuses = _race(engine_app, bodies, cancel)
        assert set(statuses) <= {201, 400}, statuses
        db.rollback()
        waiting = db.scalar(
            select(func.count()).where(Task.status == "BLOCKED", Task.session_id == session["id"])
        )
        assert waiting == 0
        cancelled_dependents = db.scalars(
            select(Task.error).where(
                Task.session_id == session["id"],
                Task.status == "CANCELLED",
                Task.id != dependency["id"],
                Task.error.contains(dependency["id"]),
            )
        ).all()
        assert len(cancelled_dependents) == statuses.count(201)
    assert api.get(f"/api/v1/sessions/{session['id']}").json["status"] == "RUNNING"


def test_a_dependency_failing_for_good_cancels_the_chain_with_events(api, db):
    session = start_session(api)
    register(api)
    first = make_task(api, session["id"])
    second = make_task(api, session["id"], depends_on=[first["id"]])
    third = make_task(api, session["id"], depends_on=[second["id"]])
    wait_for(lambda: api.get(f"/api/v1/tasks/{first['id']}").json["status"] == "ASSIGNED")
    assert act(api, first["id"], "start").status_code == 200
    failed = act(api, first["id"], "fail", {"error": "boom", "retryable": False})
    assert failed.json["status"] == "FAILED"
    for task, reason in ((second, first["id"]), (third, second["id"])):
        body = api.get(f"/api/v1/tasks/{task['id']}").json
        assert body["status"] == "CANCELLED"
        assert reason in body["error"]
    db.rollback()
    cancelled_events = db.scalars(
        select(OutboxEvent.payload["task_id"].astext).where(
            OutboxEvent.type == "task.status_changed",
            OutboxEvent.payload["status"].astext == "CANCELLED",
        )
    ).all()
    assert {second["id"], third["id"]} <= set(cancelled_events)


def test_the_reconcile_sweep_repairs_each_stranded_state(client, database, db):
    from shared.services import settle, task_lifecycle

    running = start_session(client)
    finished = start_session(client)
    plain = make_task(client, finished["id"])
    blocker = make_task(client, finished["id"])
    blocked = make_task(client, finished["id"], depends_on=[blocker["id"]])
    dead = make_task(client, running["id"])
    dead_too = make_task(client, running["id"])
    on_cancelled = make_task(client, running["id"], depends_on=[dead["id"]])
    on_failed = make_task(client, running["id"], depends_on=[dead_too["id"]])
    chained = make_task(client, running["id"], depends_on=[on_failed["id"]])
    # What a race used to leave: tasks unfinished in a finished session, and tasks
    # BLOCKED on a dependency that will never complete.
    with database.transaction() as tx:
        tx.execute(
            text("UPDATE sessions SET status = 'CANCELLED' WHERE id = :id"), {"id": finished["id"]}
        )
        tx.execute(text("UPDATE tasks SET status = 'CANCELLED' WHERE id = :id"), {"id": dead["id"]})
        tx.execute(
            text("UPDATE tasks SET status = 'FAILED' WHERE id = :id"), {"id": dead_too["id"]}
        )
    with database.transaction() as tx:
        assert task_lifecycle.cancel_orphaned_dependents(tx) == 2
        assert settle.settle_finished_sessions(tx) == 3
    with database.transaction() as tx:  # a second run finds nothing left to do
        assert task_lifecycle.cancel_orphaned_dependents(tx) == 0
        assert settle.settle_finished_sessions(tx) == 0
    for task in (plain, blocker, blocked, on_cancelled, on_failed, chained):
        assert client.get(f"/api/v1/tasks/{task['id']}").json["status"] == "CANCELLED"
    assert "session cancelled" in client.get(f"/api/v1/tasks/{plain['id']}").json["error"]
    assert dead_too["id"] in client.get(f"/api/v1/tasks/{on_failed['id']}").json["error"]
    assert client.get(f"/api/v1/sessions/{running['id']}").json["status"] == "RUNNING"
    db.rollback()
    events = db.scalar(
        select(func.count()).where(
            OutboxEvent.type == "task.status_changed",
            OutboxEvent.payload["status"].astext == "CANCELLED",
        )
    )
    assert events == 6


def test_cancelling_ten_thousand_tasks_never_holds_a_lock_for_a_second(api, database, db):
    """The session's status changes at once; its tasks are cancelled in batches, so a
    client touching the session or any of its tasks meanwhile never waits a second."""
    session = start_session(api)
    agent = register(api, max_concurrent_tasks=3)
    with database.transaction() as tx:
        tx.execute(
            text(
                "INSERT INTO tasks (id, session_id, title, complexity, status,"
                " required_capabilities, attempts, progress, timeout_seconds, has_subtasks,"
                " created_at, updated_at)"
                " SELECT gen_random_uuid(), :sid, 'bulk ' || n, 'MEDIUM', 'BLOCKED',"
                " ARRAY['CODE_GENERATION'], 0, 0, 3600, false, now(), now()"
                " FROM generate_series(1, 10000) AS n"
            ),
            {"sid": session["id"]},
        )
    held = [make_task(api, session["id"])["id"] for _ in range(3)]
    wait_for(lambda: api.get(f"/api/v1/agents/{agent['id']}").json["status"] == "BUSY")
    task_ids = [str(t) for t in db.scalars(select(Task.id).where(Task.session_id == session["id"]))]
    db.rollback()

    stop = threading.Event()
    lock_waits: list[str] = []

    def probe():
        """Locks the session row and a task at a time, giving up after a second."""
        with database.engine.connect() as connection:
            for index in range(10**6):
                if stop.is_set():
                    return
                try:
                    with connection.begin():
                        connection.execute(text("SET LOCAL lock_timeout = '1s'"))
                        connection.execute(
                            text("SELECT id FROM sessions WHERE id = :id FOR UPDATE"),
                            {"id": session["id"]},
                        )
                    with connection.begin():
                        connection.execute(text("SET LOCAL lock_timeout = '1s'"))
                        connection.execute(
                            text("SELECT id FROM tasks WHERE id = :id FOR UPDATE"),
                            {"id": task_ids[(index * 7919) % len(task_ids)]},
                        )
                except Exception as exc:  # lock_timeout: someone held a lock for 1 s
                    lock_waits.append(str(exc).splitlines()[0])

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        response = api.post(f"/api/v1/sessions/{session['id']}/cancel")
        assert response.status_code == 200
        assert response.json["status"] == "CANCELLED"
        wait_for(lambda: _settled(db, session["id"]), timeout=120)
    finally:
        stop.set()
        prober.join()
    assert lock_waits == []
    body = api.get(f"/api/v1/sessions/{session['id']}").json
    assert body["progress"]["by_status"]["CANCELLED"] == 10003
    assert api.get(f"/api/v1/agents/{agent['id']}").json["status"] == "IDLE"
    assert all(api.get(f"/api/v1/tasks/{t}").json["status"] == "CANCELLED" for t in held)
    db.rollback()
    cancelled_events = db.scalar(
        select(func.count()).where(
            OutboxEvent.type == "task.status_changed",
            OutboxEvent.payload["status"].astext == "CANCELLED",
        )
    )
    assert cancelled_events == 10003


def test_a_task_being_depended_on_is_still_assigned_meanwhile(client, database):
    """A creation locks the tasks it depends on until it commits; assignment running
    meanwhile must still take them (it used to skip them, and nothing asked again)."""
    from shared.services import assignment, task_creation

    session = start_session(client)
    register(client)
    first = make_task(client, session["id"])
    creating = database.session()
    try:
        task_creation.create(
            creating,
            session_id=uuid.UUID(session["id"]),
            title="waits on first",
            depends_on=[uuid.UUID(first["id"])],
        )
        with database.transaction() as tx:
            assigned = assignment.assign_ready(tx)
        assert [str(task_id) for task_id, _ in assigned] == [first["id"]]
        creating.commit()
    finally:
        creating.close()
    assert client.get(f"/api/v1/tasks/{first['id']}").json["status"] == "ASSIGNED"
