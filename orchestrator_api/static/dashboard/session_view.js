/* Dashboard: one session's page, live from /ws/sessions (the events of this session: every
 * tab shares that one socket): its summary (session_summary.js), its tasks as a dependency
 * graph (task_graph.js), the forms that create and decompose tasks (session_forms.js), a
 * task's detail (task_detail.js) at #/sessions/{id}?task={task id}. Statuses, holders and
 * times follow the events (session_events.js); a new task's fields are fetched in the
 * background (budget.js), one fetch for a burst. */

import { actionButtons, syncActions } from "./actions.js";
import { refresher } from "./budget.js";
import { api, apiAll } from "./http.js";
import { LiveView } from "./live_view.js";
import { learnSessions, learnTasks, onNames } from "./names.js";
import { go } from "./router.js";
import { applySessionStatus, applyTaskEvent } from "./session_events.js";
import { SessionForms } from "./session_forms.js";
import { clearSummary, renderSummary } from "./session_summary.js";
import { TaskDetail } from "./task_detail.js";
import { TaskGraph } from "./task_graph.js";
import { $, FINISHED, say } from "./util.js";

export class SessionView extends LiveView {
  constructor() {
    super($("#session-view"));
    this.id = null;
    this.session = null;
    this.tasks = new Map();
    this.taskParam = null;
    this.byPool = false; // its events are the session's, whichever pool is shown
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
    clearSummary("Session");
    syncActions(this.actions, null);
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
      if (this.session && applySessionStatus(this.session, message)) this.refresh();
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
    applyTaskEvent(task, message);
    this.detail.event(message);
  }

  loadFailed(error) {
    if (error.status === 404) this.fatal(error.message);
    else super.loadFailed(error);
  }

  fatal(reason) {
    clearSummary("Session not found");
    say(`This session does not exist (${reason}).`, "error");
  }

  render() {
    if (!this.session) return;
    const tasks = [...this.tasks.values()];
    renderSummary(this.session, tasks);
    syncActions(this.actions, this.session);
    $("#session-forms").hidden = FINISHED.has(this.session.status);
    this.graph.renderGraph(tasks);
    this.forms.renderFormOptions(tasks);
  }
}
