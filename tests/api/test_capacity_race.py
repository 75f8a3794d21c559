"""However many callers assign at once, no agent exceeds its capacity and no task is
given twice."""

import random
import threading

from sqlalchemy import func, select

from shared.models import OutboxEvent, Task
from tests.api.helpers import make_task, register, start_session


def test_twenty_threads_fifty_tasks_three_agents_of_two(app, client, db):
    for round_number in range(4):
        session = start_session(client, title=f"race {round_number}")
        agents = [
            register(client, name=f"r{round_number}-{i}", max_concurrent_tasks=2) for i in range(3)
        ]
        task_ids = [make_task(client, session["id"])["id"] for _ in range(50)]
        barrier = threading.Barrier(20)
        statuses: list[int] = []

        def worker(seed, barrier=barrier, task_ids=task_ids, agents=agents, statuses=statuses):
            local = app.test_client()
            order = random.Random(seed).sample(task_ids, len(task_ids))
            barrier.wait()
            for index, task_id in enumerate(order):
                # half the calls name an agent, half let the service choose
                body = {"agent_id": agents[index % 3]["id"]} if index % 2 else {}
                statuses.append(
                    local.post(f"/api/v1/tasks/{task_id}/assign", json=body).status_code
                )

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert set(statuses) <= {200, 400, 503}, set(statuses)
        assert statuses.count(200) == 6
        held = dict(
            db.execute(
                select(Task.assigned_agent_id, func.count())
                .where(Task.session_id == session["id"], Task.status == "ASSIGNED")
                .group_by(Task.assigned_agent_id)
            ).all()
        )
        assert sorted(held.values()) == [2, 2, 2]
        assigned_events = db.scalars(
            select(OutboxEvent.payload["task_id"].astext).where(OutboxEvent.type == "task.assigned")
        ).all()
        assert len(assigned_events) == len(set(assigned_events)) == 6 * (round_number + 1)
        for agent in agents:
            body = client.get(f"/api/v1/agents/{agent['id']}").json
            assert (body["active_tasks"], body["status"]) == (2, "BUSY")
        db.rollback()
