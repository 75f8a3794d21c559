/* Dashboard: a session's tasks as a dependency graph: groups laid out in lanes (columns for
 * root tasks, rows for subtasks, and so on in turn), dependencies drawn as SVG edges. Each
 * node opens the task's detail (the session view listens for clicks on #graph). */

import { agentName } from "./names.js";
import { $, HELD, badge, el, svg } from "./util.js";

export class TaskGraph {
  /** view: holds `tasks`, the session's tasks by id. */
  constructor(view) {
    this.view = view;
  }

  get tasks() {
    return this.view.tasks;
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
    const holder = task.assigned_agent_id ? agentName(task.assigned_agent_id) : "";
    let agentLine = null;
    if (holder && HELD.has(task.status)) agentLine = `held by ${holder}`;
    else if (holder && task.status === "COMPLETED") agentLine = `done by ${holder}`;
    const card = el(
      "div",
      { class: "node", dataset: { taskId: task.id, status: task.status }, tabindex: "0",
        role: "button", "aria-haspopup": "dialog", title: "Open the task's detail" },
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
