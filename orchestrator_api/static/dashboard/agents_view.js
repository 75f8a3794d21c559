/* Dashboard: the agents (status, capabilities, load, the tasks each holds against its
 * capacity, heartbeat age), live from /ws/agents and, for the tasks they hold, /ws/sessions.
 * Offline agents are folded away unless asked for (#/agents?offline=1). Only what events
 * cannot tell (a new agent's name, a newly held task's title) is fetched again, in the
 * background (budget.js). */

import { refresher } from "./budget.js";
import { apiAll } from "./http.js";
import { LiveView } from "./live_view.js";
import { learnAgents, learnTasks, taskTitles } from "./names.js";
import { currentPool, learnPools, poolBadge } from "./pool.js";
import { go, query } from "./router.js";
import { $, HELD, UNKNOWN, ago, badge, el, plural, shortId } from "./util.js";

export class AgentsView extends LiveView {
  constructor() {
    super($("#agents-view"));
    this.agents = new Map();
    this.held = new Map(); // task id -> {id, title, session_id, status, agent_id}
    this.showOffline = false;
    this.ticker = null;
    this.refreshAgents = refresher(() => this.loadPart(() => this.fetchAgents()));
    this.refreshHeld = refresher(() => this.loadPart(() => this.fetchHeld()));
    $("#show-offline").addEventListener("change", (event) => {
      go(`#/agents${query({ offline: event.target.checked ? "1" : "" })}`);
    });
  }

  enter(params) {
    this.show();
    this.update(params);
    this.follow("/ws/agents", "/ws/sessions");
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  update(params) {
    this.showOffline = params.get("offline") === "1";
    $("#show-offline").checked = this.showOffline;
    this.render();
  }

  leave() {
    super.leave();
    this.refreshAgents.cancel();
    this.refreshHeld.cancel();
    clearInterval(this.ticker);
  }

  async fetch() {
    const [agents, held] = await Promise.all([this.fetchAgents(), this.fetchHeld()]);
    return { agents, held };
  }

  fetchAgents() {
    return apiAll("/api/v1/agents", poolParam()).then((agents) => ({ agents }));
  }

  async fetchHeld() {
    const lists = await Promise.all(["ASSIGNED", "IN_PROGRESS"].map((status) =>
      apiAll("/api/v1/tasks", { status, ...poolParam() })));
    return { held: lists.flat() };
  }

  snapshot(data) {
    const agents = data.agents ? data.agents.agents : null;
    const held = data.held ? data.held.held : null;
    if (agents) {
      this.agents = new Map(agents.map((agent) => [agent.id, agent]));
      learnAgents(agents);
      learnPools(agents.map((agent) => agent.pool));
    }
    if (held) {
      learnTasks(held);
      this.held = new Map(held.map((t) => [t.id, { id: t.id, title: t.title,
        session_id: t.session_id, status: t.status, agent_id: t.assigned_agent_id }]));
    }
  }

  /** One part again (agents, or held tasks), in the background. */
  async loadPart(fetchPart) {
    if (!this.active) return;
    const seq = this.seq;
    try {
      const part = await fetchPart();
      if (seq !== this.seq || !this.active) return;
      this.snapshot(part.agents ? { agents: part } : { held: part });
      this.queueRender();
    } catch (error) {
      this.loadFailed(error);
    }
  }

  apply(message) {
    const p = message.payload || {};
    if (message.type.startsWith("task.")) {
      if (message.type !== "task.log") this.applyTask(p);
      return;
    }
    const agent = this.agents.get(p.agent_id);
    if (message.type === "agent.deregistered") {
      this.agents.delete(p.agent_id);
      return;
    }
    if (!agent) {
      this.refreshAgents(); // a new agent: its name and capabilities come from the server
      return;
    }
    if (p.status) agent.status = p.status;
    if (typeof p.current_load === "number") agent.current_load = p.current_load;
    if (typeof p.active_tasks === "number") agent.active_tasks = p.active_tasks;
    if (message.type === "agent.heartbeat" || message.type === "agent.registered") {
      agent.last_heartbeat_at = message.timestamp;
    }
  }

  applyTask(p) {
    if (!p.task_id || !p.status) return;
    if (!HELD.has(p.status)) {
      this.held.delete(p.task_id);
      return;
    }
    const known = this.held.get(p.task_id);
    const agentId = p.agent_id || (known && known.agent_id);
    const title = taskTitles.get(p.task_id) || (known && known.title);
    this.held.set(p.task_id, { id: p.task_id, title, session_id: p.session_id,
      status: p.status, agent_id: agentId });
    if (!title) this.refreshHeld(); // its title comes from the server
  }

  render() {
    const tbody = $("#agents-body");
    const all = [...this.agents.values()].sort(
      (a, b) => b.created_at.localeCompare(a.created_at) || a.id.localeCompare(b.id));
    const byAgent = new Map();
    for (const task of this.held.values()) {
      if (!byAgent.has(task.agent_id)) byAgent.set(task.agent_id, []);
      byAgent.get(task.agent_id).push(task);
    }
    const offline = all.filter((a) => a.status === "OFFLINE");
    const agents = this.showOffline ? all : all.filter((a) => a.status !== "OFFLINE");
    tbody.replaceChildren(...agents.map((agent) => row(agent, byAgent.get(agent.id) || [])));
    $("#agents-empty").hidden = all.length > 0 || !this.loaded;
    $("#offline-toggle").hidden = !this.loaded || offline.length === 0;
    $("#offline-count").textContent = String(offline.length);
    $("#agents-count").textContent = this.loaded
      ? `${plural(all.length, "agent", "agents")} registered, ${all.length - offline.length} online`
      : `${UNKNOWN} agents registered`;
  }

  tick() {
    for (const cell of document.querySelectorAll("#agents-body .heartbeat-cell")) {
      const text = ago(cell.dataset.at);
      if (cell.textContent !== text) cell.textContent = text;
    }
  }
}

function row(agent, tasks) {
  const capacity = agent.max_concurrent_tasks || 1;
  tasks.sort((a, b) => (a.title || "").localeCompare(b.title || ""));
  return el(
    "tr",
    { dataset: { agentId: agent.id, status: agent.status } },
    el("th", { scope: "row" }, el("span", { class: "agent-name", text: agent.name }),
      el("span", { class: "sub", text: agent.type }), poolBadge(agent.pool || "")),
    el("td", { class: "status-cell" }, badge(agent.status)),
    el("td", { class: "caps-cell" },
      el("ul", { class: "chips" }, (agent.capabilities || []).map((c) =>
        el("li", { class: "chip", text: c })))),
    el("td", { class: "load-cell" },
      meter(agent.current_load, 100, `${agent.current_load}%`)),
    el("td", { class: "held-cell" },
      meter(tasks.length, capacity, `${tasks.length} / ${capacity}`)),
    el("td", { class: "tasks-cell" }, tasks.length
      ? el("ul", { class: "held-tasks" }, tasks.map((task) => el("li", {},
        el("a", { href: `#/sessions/${task.session_id}?task=${task.id}`,
          text: task.title || `task ${shortId(task.id)}` }), " ", badge(task.status))))
      : el("span", { class: "hint", text: "none" })),
    el("td", { class: "heartbeat-cell", dataset: { at: agent.last_heartbeat_at || "" },
      text: ago(agent.last_heartbeat_at) }),
  );
}

function poolParam() {
  return currentPool() ? { pool: currentPool() } : {};
}

export function meter(value, max, text) {
  const share = Math.max(0, Math.min(1, (value || 0) / (max || 1)));
  const level = share >= 1 ? "full" : share >= 0.75 ? "high" : "ok";
  return el("div", { class: "meter" },
    el("span", { class: "meter-text", text }),
    el("span", { class: "meter-bar", "aria-hidden": "true" },
      el("span", { class: "meter-fill", dataset: { level },
        style: { width: `${share * 100}%` } })));
}
