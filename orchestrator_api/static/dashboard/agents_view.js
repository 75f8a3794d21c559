/* Dashboard: the agents (status, capabilities, load, held tasks against capacity,
 * heartbeat age), live from /ws/agents. */

import { api, apiAll } from "./http.js";
import { LiveView } from "./live_view.js";
import { $, AGENTS_BACKSTOP_MS, ago, badge, el, plural } from "./util.js";

export class AgentsView extends LiveView {
  constructor() {
    super($("#agents-view"));
    this.agents = new Map();
    this.ticker = null;
    this.backstop = null;
  }

  enter() {
    this.show();
    this.render();
    this.follow("/ws/agents");
    this.ticker = setInterval(() => this.tick(), 1000);
    this.backstop = setInterval(() => this.refresh(), AGENTS_BACKSTOP_MS);
  }

  leave() {
    super.leave();
    clearInterval(this.ticker);
    clearInterval(this.backstop);
  }

  fetch() {
    return apiAll("/api/v1/agents");
  }

  snapshot(agents) {
    this.agents = new Map(agents.map((agent) => [agent.id, agent]));
  }

  apply(message) {
    const p = message.payload || {};
    const agent = this.agents.get(p.agent_id);
    if (message.type === "agent.deregistered") {
      this.agents.delete(p.agent_id);
      return;
    }
    if (!agent || message.type === "agent.registered") {
      this.refresh();
      return;
    }
    if (p.status) agent.status = p.status;
    if (typeof p.current_load === "number") agent.current_load = p.current_load;
    if (typeof p.active_tasks === "number") agent.active_tasks = p.active_tasks;
    if (message.type === "agent.heartbeat") agent.last_heartbeat_at = message.timestamp;
    // A status change is a change of held tasks (or load): the count comes from the server.
    if (message.type === "agent.status_changed") this.refresh();
  }

  render() {
    const tbody = $("#agents-body");
    const agents = [...this.agents.values()].sort(
      (a, b) => b.created_at.localeCompare(a.created_at) || a.id.localeCompare(b.id));
    tbody.replaceChildren(...agents.map((agent) => {
      const capacity = agent.max_concurrent_tasks || 1;
      return el(
        "tr",
        { dataset: { agentId: agent.id, status: agent.status } },
        el("th", { scope: "row" }, el("span", { class: "agent-name", text: agent.name }),
          el("span", { class: "sub", text: agent.type })),
        el("td", { class: "status-cell" }, badge(agent.status)),
        el("td", { class: "caps-cell" },
          el("ul", { class: "chips" }, (agent.capabilities || []).map((c) =>
            el("li", { class: "chip", text: c })))),
        el("td", { class: "load-cell" },
          meter(agent.current_load, 100, `${agent.current_load}%`)),
        el("td", { class: "held-cell" },
          meter(agent.active_tasks, capacity, `${agent.active_tasks} / ${capacity}`)),
        el("td", { class: "heartbeat-cell", dataset: { at: agent.last_heartbeat_at || "" },
          text: ago(agent.last_heartbeat_at) }),
      );
    }));
    $("#agents-empty").hidden = agents.length > 0 || this.stale;
    const online = agents.filter((a) => a.status !== "OFFLINE").length;
    $("#agents-count").textContent =
      `${plural(agents.length, "agent", "agents")} registered, ${online} online`;
  }

  tick() {
    for (const cell of document.querySelectorAll("#agents-body .heartbeat-cell")) {
      const text = ago(cell.dataset.at);
      if (cell.textContent !== text) cell.textContent = text;
    }
  }
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
