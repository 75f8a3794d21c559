/* Dashboard: one session, its tasks as a dependency graph, live from /ws/sessions (the
 * events of this session: every tab shares that one socket); creating and decomposing
 * tasks; a task's detail (task_detail.js) at #/sessions/{id}?task={task id}. Statuses,
 * holders and times follow the events; a new task's fields are fetched in the background
 * (budget.js), one fetch for a burst. */

import { actionButtons, syncActions } from "./actions.js";
import { go } from "./app.js";
import { refresher } from "./budget.js";
import { api, apiAll } from "./http.js";
import { LiveView, countTasks, progressBar } from "./live_view.js";
import { learnSessions, learnTasks, onNames } from "./names.js";
import { SessionForms } from "./session_forms.js";
import { TaskDetail } from "./task_detail.js";
import { TaskGraph } from "./task_graph.js";
import { $, FINISHED, HELD, badge, el, say, when } from "./util.js";

export class SessionView extends LiveView {
  constructor() {
    super($("#session-view"));
    this.id = null;
    this.session = null;
    this.tasks = new Map();
    this.taskParam = null;
    this.detail = new TaskDetail(this);
    this.refreshTasks = refresher(() => this.loadTasks());
    this.actions = actionButtons(() => this.session, (updated) => {
      this.session = updated;
      this.render();
    });
    $("#session-actions").append(this.actions);
    this.graph = new TaskGraph(this);
    this.forms = new SessionForms(this);
    $("#graph").addEventListener("click", (event) => this.clickNode(event));
    $("#graph").addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") this.clickNode(event);
    });
    window.addEventListener("resize", () => this.active && this.graph.drawEdges());
    onNames(() => this.active && this.queueRender());
  }

  enter(params, id) {
    this.show();
    this.id = id;
    this.session = null;
    this.tasks = new Map();
    $("#session-title-heading").textContent = "Session";
    syncActions(this.actions, null);
    $("#session-summary").replaceChildren();
    $("#graph").replaceChildren();
    $("#graph-empty").hidden = true;
    this.taskParam = params.get("task");
    this.follow("/ws/sessions");
  }

  update(params) {
    this.taskParam = params.get("task");
    this.syncDetail();
  }

  leave() {
    super.leave();
    this.refreshTasks.cancel();
    this.detail.close();
  }

  openTask(taskId) {
    go(`#/sessions/${this.id}?task=${taskId}`);
  }

  closeTask() {
    if (this.taskParam) go(`#/sessions/${this.id}`);
  }

  syncDetail() {
    if (this.taskParam && this.loaded) this.detail.open(this.taskParam);
    else if (!this.taskParam) this.detail.close();
  }

  clickNode(event) {
    const node = event.target.closest(".node");
    if (!node) return;
    if (event.type === "keydown") event.preventDefault();
    this.openTask(node.dataset.taskId);
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
    learnSessions([data.session]);
    learnTasks(data.tasks);
    queueMicrotask(() => this.syncDetail());
  }

  /** The tasks again (a new one appeared): one request, in the background. */
  async loadTasks() {
    const id = this.id;
    try {
      const tasks = await apiAll("/api/v1/tasks", { session_id: id });
      if (id !== this.id || !this.active) return;
      for (const task of tasks) this.mergeTask(task);
      learnTasks(tasks);
      this.queueRender();
    } catch (error) {
      if (error.status !== 401 && error.status !== 429) this.refreshTasks();
    }
  }

  /** A fresher copy of a task (the detail's fetch, an action's answer). */
  mergeTask(task) {
    if (task.session_id !== this.id) return;
    const known = this.tasks.get(task.id);
    if (known && Date.parse(known.updated_at) > Date.parse(task.updated_at)) return;
    this.tasks.set(task.id, { ...(known || {}), ...task });
    this.queueRender();
  }

  apply(message) {
    const p = message.payload || {};
    if (p.session_id !== this.id) return;
    if (message.type === "session.status_changed") {
      if (!this.session) return;
      const session = this.session;
      session.status = p.status;
      if (p.status === "RUNNING" && !session.started_at) session.started_at = message.timestamp;
      if (FINISHED.has(p.status)) {
        session.completed_at = session.completed_at || message.timestamp;
        if (p.status === "FAILED") this.refresh(); // the error is only in the session
      }
      return;
    }
    if (!message.type.startsWith("task.")) return;
    if (message.type === "task.log") {
      this.detail.event(message); // the open task's log; the graph does not change
      return;
    }
    const task = this.tasks.get(p.task_id);
    if (!task) {
      this.refreshTasks(); // a new task: its title and the rest come from the server
      return;
    }
    if (message.type === "task.decomposed") {
      task.decomposition_template = p.template || task.decomposition_template;
    } else if (p.status) {
      task.status = p.status;
      task.updated_at = message.timestamp;
      if (p.status === "PENDING" && p.previous_status && HELD.has(p.previous_status)) {
        task.assigned_agent_id = null; // released: an attempt counted
        task.attempts = (task.attempts || 0) + 1;
      } else if ("agent_id" in p && p.agent_id) {
        task.assigned_agent_id = p.agent_id;
      }
      if (p.status === "ASSIGNED") task.assigned_at = message.timestamp;
      if (p.status === "IN_PROGRESS" && !task.started_at) task.started_at = message.timestamp;
      if (FINISHED.has(p.status)) task.completed_at = task.completed_at || message.timestamp;
    }
    this.detail.event(message);
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
    syncActions(this.actions, session);
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
    $("#session-forms").hidden = FINISHED.has(session.status);
    this.graph.renderGraph(tasks);
    this.forms.renderFormOptions(tasks);
  }
}
