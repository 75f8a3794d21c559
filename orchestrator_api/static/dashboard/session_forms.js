/* Dashboard: the session page's forms: a new task (capabilities, dependencies, parent) and
 * the decomposition of a pending task by a template. */

import { api, failure } from "./http.js";
import { learnTasks } from "./names.js";
import { $, HELD, el, say } from "./util.js";

export class SessionForms {
  /** view: the session view (its id, and mergeTask for a task made here). */
  constructor(view) {
    this.view = view;
    $("#task-form").addEventListener("submit", (event) => this.createTask(event));
    $("#decompose-form").addEventListener("submit", (event) => this.decompose(event));
    $("#decompose-template").addEventListener("change", () => this.showSteps());
    this.showSteps();
  }

  get id() {
    return this.view.id;
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
      this.view.mergeTask(task);
      learnTasks([task]);
      form.title.value = "";
      say(`Task “${task.title}” created.`, "success");
    } catch (error) {
      const text = failure("Could not create the task", error);
      if (text) say(text, "error");
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
      const text = failure("Could not decompose", error);
      if (text) say(text, "error");
    } finally {
      submit.disabled = false;
    }
  }
}
