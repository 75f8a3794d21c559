/* Dashboard: one session, its tasks as a dependency graph, live from
 * /ws/sessions/{id}; creating and decomposing tasks. */

import { api, apiAll } from "./http.js";
import { LiveView, actionButtons, countTasks, labelActions, progressBar } from "./live_view.js";
import { $, HELD, REFRESH_MS, badge, el, say, shortId, svg, throttled, when } from "./util.js";

export class SessionView extends LiveView {
  constructor() {
    super($("#session-view"));
    this.id = null;
    this.session = null;
    this.tasks = new Map();
    this.agents = new Map();
    this.askedAgents = new Set();
    this.loadAgents = throttled(() => this.fetchAgents(), REFRESH_MS);
    this.actions = actionButtons(() => this.session, (updated) => {
      this.session = updated;
      this.render();
    });
    $("#session-actions").append(this.actions);
    $("#task-form").addEventListener("submit", (event) => this.createTask(event));
    $("#decompose-form").addEventListener("submit", (event) => this.decompose(event));
    $("#decompose-template").addEventListener("change", () => this.showSteps());
    window.addEventListener("resize", () => this.active && this.drawEdges());
    this.showSteps();
  }

  enter(params, id) {
    this.show();
    this.id = id;
    this.session = null;
    this.tasks = new Map();
    $("#session-title-heading").textContent = "Session";
    for (const button of this.actions.querySelectorAll("button")) button.disabled = true;
    $("#session-summary").replaceChildren();
    $("#graph").replaceChildren();
    this.follow(`/ws/sessions/${id}`);
    this.loadAgents();
  }

  async fetch() {
    const [session, tasks] = await Promise.all([
      api("GET", `/api/v1/sessions/${this.id}`),
      apiAll("/api/v1/tasks", { session_id: this.id }),
    ]);
    return { session, tasks };
  }

  snapshot(data) {
    this.session = data.session;
    this.tasks = new Map(data.tasks.map((task) => [task.id, task]));
  }

  async fetchAgents() {
    try {
      const agents = await apiAll("/api/v1/agents");
      for (const agent of agents) this.agents.set(agent.id, agent);
      if (this.active) this.queueRender();
    } catch (error) {
      /* names are a nicety: ids are shown meanwhile */
    }
  }

  agentName(id) {
    if (!id) return "";
    const agent = this.agents.get(id);
    if (agent) return agent.name;
    if (!this.askedAgents.has(id)) {
      this.askedAgents.add(id);
      this.loadAgents();
    }
    return `agent ${shortId(id)}`;
  }

  apply(message) {
    const p = message.payload || {};
    if (message.type === "session.status_changed") {
      if (this.session) this.session.status = p.status;
      this.refresh(); // started_at, completed_at, error
    } else if (message.type === "task.created" || message.type === "task.decomposed") {
      this.refresh();
    } else if (message.type === "task.status_changed" || message.type === "task.assigned") {
      const task = this.tasks.get(p.task_id);
      if (!task) {
        this.refresh();
        return;
      }
      task.status = p.status;
      if ("agent_id" in p) task.assigned_agent_id = p.agent_id;
    }
  }

  loadFailed(error) {
    if (error.status === 404) this.fatal(error.message);
    else super.loadFailed(error);
  }

  fatal(reason) {
    $("#session-title-heading").textContent = "Session not found";
    say(`This session does not exist (${reason}).`, "error");
  }

  render() {
    if (!this.session) return;
    const session = this.session;
    const tasks = [...this.tasks.values()];
    $("#session-title-heading").textContent = session.title;
    labelActions(this.actions, session.title);
    if (!this.actions.querySelector("button[aria-busy]")) {
      for (const button of this.actions.querySelectorAll("button")) button.disabled = false;
    }
    const progress = countTasks(tasks);
    const summary = [
      ["Status", badge(session.status)],
      ["Priority", session.priority],
      ["Type", session.type],
      ["Progress", progressBar(progress)],
      ["Created", when(session.created_at)],
    ];
    if (session.started_at) summary.push(["Started", when(session.started_at)]);
    if (session.completed_at) summary.push(["Finished", when(session.completed_at)]);
    if (session.error) summary.push(["Error", session.error]);
    $("#session-summary").replaceChildren(...summary.map(([term, value]) =>
      el("div", { class: "summary-item" }, el("dt", { text: term }), el("dd", {}, value))));
    $("#session-summary").dataset.status = session.status;
    this.renderGraph(tasks);
    this.renderFormOptions(tasks);
  }

  renderGraph(tasks) {
    const graph = $("#graph");
    const children = new Map();
    for (const task of tasks) {
      const parent = task.parent_id && this.tasks.has(task.parent_id) ? task.parent_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(task);
    }
    for (const list of children.values()) {
      list.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
    }
    // A group (the root tasks, or one task's subtasks) is laid out in lanes: a task sits
    // one lane after its latest dependency in the group. The lanes of the root tasks are
    // columns (left to right), those of subtasks rows (top to bottom), and so on, turn
    // and turn about: a parent's tall frame then never stands between two root tasks.
    const group = (list, level) => {
      const depth = layerDepths(list);
      const direction = level % 2 === 0 ? "columns" : "rows";
      const lanes = [];
      // in each lane, single tasks before parents: their edges stay clear of the frames
      const ordered = [...list].sort((a, b) => children.has(a.id) - children.has(b.id));
      for (const task of ordered) {
        const d = depth.get(task.id);
        while (lanes.length <= d) lanes.push([]);
        const item = this.node(task, children.get(task.id), (sub) => group(sub, level + 1));
        item.firstChild.dataset.flow = direction;
        lanes[d].push(item);
      }
      return el("div", { class: `layer-group ${direction}`, role: "list" },
        lanes.map((items) => el("div", { class: "layer", role: "none" }, items)));
    };
    const roots = children.get(null) || [];
    const canvas = el("div", { class: "graph-canvas" }, group(roots, 0));
    graph.replaceChildren(canvas);
    $("#graph-empty").hidden = tasks.length > 0;
    this.drawEdges();
  }

  node(task, subtasks, group) {
    const after = (task.depends_on || []).map((id) => this.tasks.get(id)).filter(Boolean);
    const holder = task.assigned_agent_id ? this.agentName(task.assigned_agent_id) : "";
    let agentLine = null;
    if (holder && HELD.has(task.status)) agentLine = `held by ${holder}`;
    else if (holder && task.status === "COMPLETED") agentLine = `done by ${holder}`;
    const card = el(
      "div",
      { class: "node", dataset: { taskId: task.id, status: task.status } },
      el("div", { class: "node-head" },
        el("span", { class: "node-title", text: task.title }),
        badge(task.status)),
      el("div", { class: "node-meta" },
        agentLine ? el("span", { class: "node-agent", text: agentLine }) : null,
        task.status === "IN_PROGRESS" && task.progress
          ? el("span", { class: "node-progress", text: `${task.progress}%` }) : null,
        task.decomposition_template
          ? el("span", { class: "node-template", text: task.decomposition_template }) : null,
        el("span", { class: "node-caps", text: (task.required_capabilities || []).join(", ") })),
      after.length
        ? el("span", { class: "visually-hidden",
          text: `after ${after.map((t) => t.title).join(", ")}` })
        : null,
    );
    const item = el("div", { class: "graph-item", role: "listitem" }, card);
    if (subtasks && subtasks.length) {
      card.classList.add("has-children");
      card.append(el("div", { class: "subtasks", "aria-label": `Subtasks of ${task.title}` },
        group(subtasks)));
    }
    return item;
  }

  drawEdges() {
    const canvas = document.querySelector("#graph .graph-canvas");
    if (!canvas) return;
    const old = canvas.querySelector("svg.edges");
    if (old) old.remove();
    const box = canvas.getBoundingClientRect();
    const layer = svg("svg", {
      class: "edges",
      width: canvas.scrollWidth,
      height: canvas.scrollHeight,
      "aria-hidden": "true",
    });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
    defs.append(marker);
    layer.append(defs);
    const place = (id) => {
      const node = canvas.querySelector(`.node[data-task-id="${id}"]`);
      if (!node) return null;
      const rect = node.getBoundingClientRect();
      const head = node.querySelector(".node-head").getBoundingClientRect();
      // a parent's edges meet its heading, not the middle of its subtasks
      const parent = node.classList.contains("has-children");
      return {
        flow: node.dataset.flow,
        left: rect.left - box.left,
        right: rect.right - box.left,
        top: rect.top - box.top,
        bottom: rect.bottom - box.top,
        x: (parent ? head.left + 60 : (rect.left + rect.right) / 2) - box.left,
        y: (parent ? (head.top + head.bottom) / 2 : (rect.top + rect.bottom) / 2) - box.top,
      };
    };
    for (const task of this.tasks.values()) {
      const to = place(task.id);
      if (!to) continue;
      for (const dep of task.depends_on || []) {
        const from = place(dep);
        if (!from) continue;
        const source = this.tasks.get(dep);
        const siblings = (source.parent_id || null) === (task.parent_id || null);
        const across = siblings ? to.flow === "columns" : to.left >= from.right;
        let d;
        if (across) { // lanes left to right: right edge to left edge
          const bend = Math.max(16, (to.left - from.right) / 2);
          d = `M ${from.right} ${from.y} C ${from.right + bend} ${from.y}, ` +
            `${to.left - 2 - bend} ${to.y}, ${to.left - 2} ${to.y}`;
        } else { // lanes top to bottom: bottom edge to top edge
          const bend = Math.max(14, Math.abs(to.top - from.bottom) / 2);
          d = `M ${from.x} ${from.bottom} C ${from.x} ${from.bottom + bend}, ` +
            `${to.x} ${to.top - 2 - bend}, ${to.x} ${to.top - 2}`;
        }
        const path = svg("path", { d, class: "edge", "marker-end": "url(#arrow)" });
        path.dataset.from = dep;
        path.dataset.to = task.id;
        layer.append(path);
      }
    }
    canvas.prepend(layer);
  }

  renderFormOptions(tasks) {
    const sorted = [...tasks].sort((a, b) => a.created_at.localeCompare(b.created_at));
    const fill = (select, list, first) => {
      const key = JSON.stringify(list.map((t) => [t.id, t.title, t.status]));
      if (select.dataset.key === key) return; // an open list is left alone
      select.dataset.key = key;
      const chosen = new Set([...select.selectedOptions].map((o) => o.value));
      const options = list.map((t) => el("option", {
        value: t.id, text: `${t.title} (${t.status})`, selected: chosen.has(t.id) }));
      select.replaceChildren(...(first ? [first] : []), ...options);
    };
    const open = sorted.filter((t) => !["COMPLETED", "FAILED", "CANCELLED"].includes(t.status));
    fill($("#task-depends"), open);
    const parents = open.filter((t) => !HELD.has(t.status));
    fill($("#task-parent"), parents, el("option", { value: "", text: "(none)" }));
    const hasChildren = new Set(sorted.map((t) => t.parent_id).filter(Boolean));
    const decomposable = sorted.filter(
      (t) => t.status === "PENDING" && !t.decomposition_template && !hasChildren.has(t.id));
    fill($("#decompose-task"), decomposable);
  }

  showSteps() {
    const option = $("#decompose-template").selectedOptions[0];
    $("#template-steps").textContent = option ? `Subtasks: ${option.dataset.steps}` : "";
  }

  async createTask(event) {
    event.preventDefault();
    const form = event.target;
    const title = form.title.value.trim();
    if (!title) {
      say("A task needs a title.", "error");
      form.title.focus();
      return;
    }
    const capabilities = [...form.querySelectorAll("input[name=capability]:checked")]
      .map((box) => box.value);
    const payload = { session_id: this.id, title, complexity: form.complexity.value };
    if (capabilities.length) payload.required_capabilities = capabilities;
    const dependsOn = [...$("#task-depends").selectedOptions].map((o) => o.value);
    if (dependsOn.length) payload.depends_on = dependsOn;
    if (form.parent_id.value) payload.parent_id = form.parent_id.value;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const task = await api("POST", "/api/v1/tasks", payload);
      this.tasks.set(task.id, task);
      form.title.value = "";
      say(`Task “${task.title}” created.`, "success");
      this.queueRender();
    } catch (error) {
      if (error.status !== 401) say(`Could not create the task: ${error.message}`, "error");
    } finally {
      submit.disabled = false;
    }
  }

  async decompose(event) {
    event.preventDefault();
    const form = event.target;
    const taskId = form.task_id.value;
    if (!taskId) {
      say("Choose a pending task to decompose.", "error");
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const task = await api("POST", `/api/v1/tasks/${taskId}/decompose`,
        { template: form.template.value });
      say(`“${task.title}” is being decomposed (${form.template.value}); its subtasks appear ` +
        "as the worker makes them.", "success");
    } catch (error) {
      if (error.status !== 401) say(`Could not decompose: ${error.message}`, "error");
    } finally {
      submit.disabled = false;
    }
  }
}

/** Rows of a group: a task sits one row below its latest dependency in the group. */
export function layerDepths(list) {
  const ids = new Set(list.map((t) => t.id));
  const byId = new Map(list.map((t) => [t.id, t]));
  const depth = new Map();
  const visit = (task, trail) => {
    if (depth.has(task.id)) return depth.get(task.id);
    if (trail.has(task.id)) return 0; // the server refuses cycles; never loop anyway
    trail.add(task.id);
    let d = 0;
    for (const dep of task.depends_on || []) {
      if (ids.has(dep)) d = Math.max(d, visit(byId.get(dep), trail) + 1);
    }
    depth.set(task.id, d);
    return d;
  };
  for (const task of list) visit(task, new Set());
  return depth;
}

/* ---------- Agents view ---------- */
