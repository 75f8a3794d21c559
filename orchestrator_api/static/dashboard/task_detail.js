/* Dashboard: one task's detail, in a dialog over its session's graph: what it asks for,
 * its times, progress, result and error, its agent, its log (live: task_log.js), its
 * history, and the actions its state allows. Fetched once when opened (GET /api/v1/tasks/{id}); its events update it, and a
 * background fetch (budget.js) brings the fields events do not carry.
 *
 * History: the task's retained events, read once when the dialog opens
 * (GET /api/v1/tasks/{id}/events), merged by id with the events this tab (or the
 * SharedWorker, for all tabs) hears; before the oldest of them, the steps the task's own
 * timestamps record. */

import { TASK_ACTION_LABELS, runTaskAction, taskActions } from "./actions.js";
import { coverage, onActivity, taskEvents } from "./activity.js";
import { refresher } from "./budget.js";
import { api, failure } from "./http.js";
import { agentName, learnTasks, onNames } from "./names.js";
import { TaskLog } from "./task_log.js";
import { $, FINISHED, HELD, UNKNOWN, ago, badge, el, shortId, when } from "./util.js";

const EVENT_GAP_MS = 3000;
const POLL_MS = 30000; // progress reports send no event: an open IN_PROGRESS task is re-read

export class TaskDetail {
  /** view: the session view (session, tasks, closeTask(), mergeTask(task)). */
  constructor(view) {
    this.view = view;
    this.taskId = null;
    this.task = null;
    this.dialog = $("#task-dialog");
    this.refresh = refresher(() => this.fetch(), EVENT_GAP_MS);
    this.poll = null;
    this.log = new TaskLog();
    this.dialog.addEventListener("close", () => {
      if (this.taskId) this.view.closeTask();
    });
    $("#task-dialog-close").addEventListener("click", () => this.dialog.close());
    onActivity(() => this.taskId && this.renderHistory());
    onNames(() => this.taskId && this.render());
  }

  open(taskId) {
    if (this.taskId === taskId && this.dialog.open) return;
    this.taskId = taskId;
    this.task = this.view.tasks.get(taskId) || null;
    this.recorded = [];
    this.log.open(taskId);
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    this.fetch();
    this.fetchHistory();
    clearInterval(this.poll);
    this.poll = setInterval(() => {
      if (this.task && this.task.status === "IN_PROGRESS") this.refresh();
    }, POLL_MS);
  }

  close() {
    this.taskId = null;
    this.log.close();
    this.refresh.cancel();
    clearInterval(this.poll);
    if (this.dialog.open) this.dialog.close();
  }

  async fetch() {
    const id = this.taskId;
    if (!id) return;
    try {
      const task = await api("GET", `/api/v1/tasks/${id}`);
      if (id !== this.taskId) return;
      learnTasks([task]);
      this.task = task;
      this.view.mergeTask(task);
      this.render();
    } catch (error) {
      if (id !== this.taskId) return;
      const text = failure("Could not load the task", error);
      if (text) $("#task-dialog-error").textContent = text;
    }
  }

  async fetchHistory() {
    const id = this.taskId;
    if (!id) return;
    try {
      const history = await api("GET", `/api/v1/tasks/${id}/events`);
      if (id !== this.taskId) return;
      this.recorded = history.items.map((e) => ({ ...e, at: Date.parse(e.timestamp) }));
      this.renderHistory();
    } catch (error) {
      // the heard events and the task's timestamps still tell most of it
    }
  }

  /** A task event of the view's session: this task's updates what it knows at once. */
  event(message) {
    const p = message.payload || {};
    if (message.type === "task.log") {
      this.log.event(message); // lines only: nothing else of the task changed
      return;
    }
    if (!this.taskId || p.task_id !== this.taskId || !this.task) return;
    const task = this.task;
    if (p.status) task.status = p.status;
    if ("agent_id" in p && p.status !== "PENDING") task.assigned_agent_id = p.agent_id;
    if (p.status === "ASSIGNED") task.assigned_at = message.timestamp;
    if (p.status === "IN_PROGRESS" && !task.started_at) task.started_at = message.timestamp;
    if (FINISHED.has(p.status)) task.completed_at = message.timestamp;
    this.render();
    this.refresh();
  }

  render() {
    const task = this.task;
    $("#task-dialog-title").textContent = task ? task.title : "Task";
    $("#task-dialog-error").textContent = "";
    if (!task) {
      $("#task-dialog-body").replaceChildren(el("p", { class: "hint", text: "Loading…" }));
      return;
    }
    const item = (term, value) => (value === null || value === undefined || value === ""
      ? null : el("div", { class: "detail-item" }, el("dt", { text: term }), el("dd", {}, value)));
    const finished = FINISHED.has(task.status);
    const agent = task.assigned_agent_id
      ? `${agentName(task.assigned_agent_id)} (${shortId(task.assigned_agent_id)})` : "none";
    const titles = (ids) => (ids || []).map((id) => {
      const other = this.view.tasks.get(id);
      return other ? `${other.title} (${other.status})` : shortId(id);
    }).join(", ");
    const facts = el("dl", { class: "detail-grid" },
      item("Status", badge(task.status)),
      item(HELD.has(task.status) ? "Held by" : finished ? "Done by" : "Agent", agent),
      item("Attempts", String(task.attempts ?? UNKNOWN)),
      item("Complexity", task.complexity),
      item("Required capabilities", el("ul", { class: "chips" },
        (task.required_capabilities || []).map((c) => el("li", { class: "chip", text: c })))),
      item("Depends on", titles(task.depends_on)),
      item("Subtasks", titles(task.subtasks)),
      item("Subtask of", task.parent_id ? titles([task.parent_id]) : null),
      item("Decomposed with", task.decomposition_template),
      item("Timeout", task.timeout_seconds ? `${task.timeout_seconds} s` : null));
    const times = el("dl", { class: "detail-grid times" },
      item("Created", stamp(task.created_at)),
      item("Assigned", stamp(task.assigned_at)),
      item("Started", stamp(task.started_at)),
      item(finished ? statusWord(task.status) : "Finished", stamp(task.completed_at)),
      item("Deadline", task.deadline_at ? deadline(task.deadline_at) : null),
      item("Updated", stamp(task.updated_at)));
    const progress = el("div", { class: "detail-progress" },
      el("div", { class: "meter-bar", "aria-hidden": "true" },
        el("span", { class: "meter-fill", style: { width: `${task.progress || 0}%` } })),
      el("span", { text: `${task.progress ?? 0}%${task.progress_message
        ? ` · ${task.progress_message}` : ""}` }));
    const sections = [
      this.renderActions(task),
      facts,
      el("h3", { text: "Times" }), times,
      el("h3", { text: "Progress" }), progress,
      task.description ? el("h3", { text: "Description" }) : null,
      task.description ? el("p", { class: "detail-text", text: task.description }) : null,
      task.result ? el("h3", { text: "Result" }) : null,
      task.result ? el("pre", { class: "detail-json", text: JSON.stringify(task.result, null, 2) })
        : null,
      task.error ? el("h3", { text: "Error" }) : null,
      task.error ? el("p", { class: "detail-error", text: task.error }) : null,
      el("h3", { text: "Log" }),
      ...this.log.nodes(),
      el("h3", { text: "History" }),
      el("ol", { id: "task-history", class: "history" }),
      el("p", { id: "task-history-note", class: "hint" }),
    ];
    $("#task-dialog-body").replaceChildren(...sections.filter(Boolean));
    $("#task-dialog").dataset.status = task.status;
    this.log.placed();
    this.renderHistory();
  }

  renderActions(task) {
    const hasSubtasks = (task.subtasks || []).length > 0 ||
      [...this.view.tasks.values()].some((t) => t.parent_id === task.id);
    const actions = taskActions(task, this.view.session, hasSubtasks);
    if (!actions.length) return null;
    return el("div", { class: "actions detail-actions write-control", role: "group",
      "aria-label": "Task actions" }, actions.map((action) => el("button", {
      type: "button", class: `action action-${action}`, dataset: { action },
      text: TASK_ACTION_LABELS[action],
      onclick: async (event) => {
        event.target.disabled = true;
        const result = await runTaskAction(action, task, this.view.tasks);
        event.target.disabled = false;
        if (!result) return;
        this.view.mergeTask(result);
        if (result.id === task.id) {
          this.task = { ...task, ...result };
          this.render();
        } else {
          this.view.openTask(result.id); // the new task of a retry
        }
      },
    })));
  }

  renderHistory() {
    const list = $("#task-history");
    if (!list || !this.task) return;
    const task = this.task;
    const byId = new Map();
    for (const e of [...(this.recorded || []), ...taskEvents(task.id)]) byId.set(String(e.id), e);
    const heard = [...byId.values()].sort((a, b) => a.at - b.at);
    const first = heard.length ? heard[0].at : Infinity;
    const entries = [];
    const recorded = (at, text) => {
      if (at && Date.parse(at) < first - 1000) entries.push({ at: Date.parse(at), text,
        source: "record" });
    };
    recorded(task.created_at, "created");
    recorded(task.assigned_at, `assigned to ${agentName(task.assigned_agent_id)}`);
    recorded(task.started_at, "started");
    if (FINISHED.has(task.status)) recorded(task.completed_at, statusWord(task.status).toLowerCase());
    for (const e of heard) entries.push({ at: e.at, text: describe(e), source: "event" });
    entries.sort((a, b) => a.at - b.at);
    list.replaceChildren(...entries.map((entry) => el("li", { dataset: { source: entry.source } },
      el("time", { text: new Date(entry.at).toLocaleString() }), " ", entry.text,
      entry.source === "record" ? el("span", { class: "hint", text: " (from the task's record)" })
        : null)));
    const since = (this.recorded || []).length ? null : coverage();
    $("#task-history-note").textContent = since
      ? `Events as heard by this page since ${new Date(since).toLocaleTimeString()}; earlier ` +
        "steps come from the task's timestamps (a release or retry before then is counted in " +
        "Attempts)." : "";
  }
}

function describe(e) {
  const p = e.payload || {};
  if (e.type === "task.created") return `created (${p.status})`;
  if (e.type === "task.assigned") return `assigned to ${agentName(p.agent_id)}`;
  if (e.type === "task.decomposed") {
    return `decomposed with ${p.template} into ${(p.subtask_ids || []).length} subtasks`;
  }
  const agent = p.agent_id ? ` (${agentName(p.agent_id)})` : "";
  return `${p.previous_status || "?"} → ${p.status}${agent}`;
}

function statusWord(status) {
  return { COMPLETED: "Completed", FAILED: "Failed", CANCELLED: "Cancelled" }[status] || status;
}

function stamp(iso) {
  return iso ? el("time", { datetime: iso, title: iso, text: `${when(iso)} (${ago(iso)})` }) : null;
}

function deadline(iso) {
  const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
  const rel = seconds >= 0 ? `in ${seconds} s` : `${-seconds} s ago`;
  return el("time", { datetime: iso, text: `${when(iso)} (${rel})` });
}
