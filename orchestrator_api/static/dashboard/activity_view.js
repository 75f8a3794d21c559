/* Dashboard: recent events (filterable by type and session) and counts over time (tasks
 * created, completed and failed per minute; the queue depth), drawn from the events the tab
 * holds (activity.js): no HTTP at all. */

import { events, onActivity, perMinute } from "./activity.js";
import { barChart, lineChart } from "./chart.js";
import { agentName, sessionTitles, taskTitles } from "./names.js";
import { currentPool, inPool } from "./pool.js";
import { go, query } from "./router.js";
import { Stream, sharedStreams } from "./streams.js";
import { $, badge, el, shortId } from "./util.js";

const FEED_SIZE = 200;
const CHART_MINUTES = 30;
const TYPES = ["session.created", "session.status_changed", "task.created",
  "task.status_changed", "task.assigned", "task.decomposed", "agent.registered",
  "agent.status_changed", "agent.heartbeat", "agent.deregistered"];

export class ActivityView {
  constructor() {
    this.section = $("#activity-view");
    this.type = "";
    this.session = "";
    this.streams = [];
    this.unlisten = null;
    this.ticker = null;
    const types = $("#activity-type");
    for (const group of ["session.", "task.", "agent."]) {
      types.append(el("option", { value: group, text: `${group}*` }));
    }
    for (const type of TYPES) types.append(el("option", { value: type, text: type }));
    types.addEventListener("change", () => this.go({ type: types.value }));
    $("#activity-session").addEventListener("change", (event) =>
      this.go({ session: event.target.value }));
  }

  go(change) {
    go(`#/activity${query({ type: this.type, session: this.session, ...change })}`);
  }

  enter(params) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view !== this.section;
    this.setParams(params);
    if (!sharedStreams()) { // the store hears only what the tab follows
      this.streams = ["/ws/sessions", "/ws/agents"].map((path) =>
        new Stream(path, { onEvent: () => {} }));
      for (const stream of this.streams) stream.open();
    }
    this.unlisten = onActivity(() => this.render());
    this.ticker = setInterval(() => this.renderChart(), 15000);
    this.render();
  }

  update(params) {
    this.setParams(params);
    this.render();
  }

  setParams(params) {
    this.type = params.get("type") || "";
    this.session = params.get("session") || "";
    $("#activity-type").value = this.type;
  }

  leave() {
    for (const stream of this.streams) stream.close();
    this.streams = [];
    if (this.unlisten) this.unlisten();
    clearInterval(this.ticker);
  }

  matches(e) {
    if (this.type && !(this.type.endsWith(".") ? e.type.startsWith(this.type) : e.type === this.type)) {
      return false;
    }
    if (!inPool(e)) return false;
    return !this.session || (e.payload && e.payload.session_id === this.session);
  }

  render() {
    this.renderSessions();
    const shown = [];
    for (let i = events.length - 1; i >= 0 && shown.length < FEED_SIZE; i -= 1) {
      if (this.matches(events[i])) shown.push(events[i]);
    }
    $("#activity-feed").replaceChildren(...shown.map((e) => feedItem(e)));
    $("#activity-empty").hidden = shown.length > 0;
    this.renderChart();
  }

  renderSessions() {
    const select = $("#activity-session");
    const ids = [...new Set(events.filter((e) => inPool(e))
      .map((e) => e.payload && e.payload.session_id).filter(Boolean))];
    if (this.session && !ids.includes(this.session)) ids.push(this.session);
    const key = JSON.stringify([ids, ids.map((id) => sessionTitles.get(id))]);
    if (select.dataset.key !== key) {
      select.dataset.key = key;
      select.replaceChildren(el("option", { value: "", text: "All" }),
        ...ids.reverse().map((id) => el("option", { value: id, text: sessionLabel(id) })));
    }
    select.value = this.session;
  }

  renderChart() {
    const buckets = perMinute(CHART_MINUTES);
    const last = buckets[buckets.length - 1];
    const tasks = barChart(buckets, [
      { key: "created", label: "created", cls: "created" },
      { key: "completed", label: "completed", cls: "completed" },
      { key: "failed", label: "failed", cls: "failed" },
    ], `Tasks per minute, last ${CHART_MINUTES} minutes; this minute: ${last.created ?? "—"} ` +
      `created, ${last.completed ?? "—"} completed, ${last.failed ?? "—"} failed`);
    const queue = lineChart(buckets, "queue", `Queue depth (PENDING tasks of every pool) per ` +
      `minute; now ${last.queue ?? "—"}`, "queue");
    $("#queue-scope").textContent = currentPool() ? "(every pool: the health stream counts " +
      "the whole server)" : "";
    $("#chart-tasks").replaceChildren(tasks);
    $("#chart-queue").replaceChildren(queue);
    $("#chart-now").textContent = `This minute: ${last.created ?? "—"} created · ` +
      `${last.completed ?? "—"} completed · ${last.failed ?? "—"} failed · queue ` +
      `${last.queue ?? "—"}`;
  }
}

function sessionLabel(id) {
  const title = sessionTitles.get(id);
  return title ? `${title} (${shortId(id)})` : `session ${shortId(id)}`;
}

function taskLink(p) {
  const title = taskTitles.get(p.task_id);
  return el("a", { href: `#/sessions/${p.session_id}?task=${p.task_id}`,
    text: title ? `“${title}”` : `task ${shortId(p.task_id)}` });
}

function feedItem(e) {
  const p = e.payload || {};
  const parts = [];
  if (e.type.startsWith("task.")) {
    parts.push(taskLink(p), " ");
    if (p.status) parts.push(badge(p.status));
    if (p.previous_status) parts.push(` from ${p.previous_status}`);
    if (p.agent_id) parts.push(` · ${agentName(p.agent_id)}`);
    if (p.template) parts.push(` · ${p.template}`);
    parts.push(" in ", el("a", { href: `#/sessions/${p.session_id}`,
      text: sessionLabel(p.session_id) }));
  } else if (e.type.startsWith("session.")) {
    parts.push(el("a", { href: `#/sessions/${p.session_id}`, text: sessionLabel(p.session_id) }),
      " ");
    if (p.status) parts.push(badge(p.status));
    if (p.previous_status) parts.push(` from ${p.previous_status}`);
  } else if (e.type.startsWith("agent.")) {
    parts.push(`agent ${agentName(p.agent_id)} `);
    if (p.status) parts.push(badge(p.status));
    if (typeof p.current_load === "number") parts.push(` · load ${p.current_load}%`);
    if (typeof p.active_tasks === "number") parts.push(` · ${p.active_tasks} held`);
    if (p.reason) parts.push(` · ${p.reason}`);
  }
  return el("li", { class: "feed-item", dataset: { type: e.type, eventId: e.id } },
    el("time", { datetime: e.timestamp, text: new Date(e.at).toLocaleTimeString() }),
    el("code", { class: "feed-type", text: e.type }),
    el("span", { class: "feed-text" }, parts));
}
