"""Agents (CONTRACT section 3)."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from orchestrator_api import auth, pool_scope
from orchestrator_api.database import db, in_transaction
from orchestrator_api.resources.common import Blueprint, parse_id
from orchestrator_api.schemas.agents import (
    AgentListQuerySchema,
    AgentPageSchema,
    AgentRegisterSchema,
    AgentSchema,
    HeartbeatSchema,
    RegisteredAgentSchema,
)
from orchestrator_api.schemas.common import page_body
from orchestrator_api.schemas.tasks import TaskListSchema
from orchestrator_api.views import agent_views, task_views
from shared.services import agents as service
from shared.services import cascades, statistics

blp = Blueprint("agents", __name__, url_prefix="/api/v1/agents", description="Agents")


@blp.route("")
class Agents(MethodView):
    @blp.arguments(AgentListQuerySchema, location="query")
    @blp.response(200, AgentPageSchema)
    def get(self, query):
        """List agents, newest first."""
        page = service.list_agents(db(), **query, pools=pool_scope.visible_pools())
        return page_body(page, agent_views(page.items))


@blp.route("/register", methods=["POST"])
@blp.arguments(AgentRegisterSchema)
@blp.response(201, RegisteredAgentSchema)
def register_agent(body):
    """Register an agent (409 AGENT_NAME_TAKEN if the name is in use). The answer carries
    the agent's own token (role agent, its agent_id), which it uses from then on."""
    body["pool"] = pool_scope.creation_pool(body.get("pool"))
    agent = service.register(db(), **body)
    db().flush()
    token = auth.mint_agent_token(agent.id, agent.pool)  # its sub is agent:<id>, never the name
    return {**agent_views([agent], {agent.id: 0})[0], "token": token}


@blp.route("/<id(register,performance):agent_id>")  # not /register nor /performance
class AgentById(MethodView):
    @blp.response(200, AgentSchema)
    def get(self, agent_id):
        """Get one agent."""
        return agent_views([service.get_or_raise(db(), agent_id=parse_id(agent_id))])[0]

    @blp.response(204)
    def delete(self, agent_id):
        """Deregister an agent; the tasks it held go back to PENDING. The agent stays as a
        record (OFFLINE, with `deregistered_at`); its token no longer works."""
        agent_id = parse_id(agent_id)
        cascades.deregister_agent(db(), agent_id=agent_id)
        auth.live_agents.forget(agent_id)


@blp.route("/<agent_id>/heartbeat", methods=["POST"])
@blp.arguments(HeartbeatSchema)
@blp.response(200, AgentSchema)
def heartbeat(body, agent_id):
    """The agent is alive, at this load. An OFFLINE agent comes back online."""
    agent_id = parse_id(agent_id)
    if in_transaction():  # an Idempotency-Key was claimed in it: the answer goes with it
        agent = service.heartbeat(db(), agent_id=agent_id, **body)
        return {**agent, **statistics.agent_figures(db(), agent_ids=[agent_id])[agent_id]}
    heartbeats = current_app.extensions["orchestrator"].heartbeats
    return heartbeats.submit((agent_id, body["current_load"]))


@blp.route("/<agent_id>/tasks", methods=["GET"])
@blp.response(200, TaskListSchema)
def agent_tasks(agent_id):
    """The tasks the agent holds (ASSIGNED and IN_PROGRESS)."""
    tasks = service.held_tasks(db(), agent_id=parse_id(agent_id))
    return {"items": task_views(tasks), "total": len(tasks)}
