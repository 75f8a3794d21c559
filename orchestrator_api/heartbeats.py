"""The heartbeat writer: the heartbeats a web process receives while one is being written
are written together, in one transaction (shared/group_commit.py, services/agents.py
`heartbeat_many`); each request is answered after its own commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared.db import Database
from shared.errors import AgentNotFound
from shared.services import agents as agent_service
from shared.services import statistics


def write_heartbeats(
    database: Database, loads: Sequence[tuple[uuid.UUID, int]]
) -> list[dict | AgentNotFound]:
    """The heartbeats of several requests, in one transaction (shared/group_commit.py)."""
    with database.transaction() as session:
        agents = agent_service.heartbeat_many(session, loads)
        figures = statistics.agent_figures(session, agent_ids=agents)
    return [
        {**agents[agent_id], **figures[agent_id]}
        if agent_id in agents
        else AgentNotFound(f"Agent with ID {agent_id} not found")
        for agent_id, _ in loads
    ]
