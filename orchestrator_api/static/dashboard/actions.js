/* Dashboard: the actions the current state allows (the API's state machines: docs/API.md,
 * "Sessions" and "Tasks"), as buttons; none where the token may not write. */

import { api, failure } from "./http.js";
import { canWrite } from "./token.js";
import { FINISHED, el, say } from "./util.js";

/* ---------- sessions ---------- */

export const SESSION_MOVES = {
  start: ["PENDING"],
  pause: ["RUNNING"],
  resume: ["PAUSED"],
  cancel: ["PENDING", "RUNNING", "PAUSED"],
  complete: ["RUNNING"],
};
const PAST = { start: "started", pause: "paused", resume: "resumed", cancel: "cancelled",
  complete: "completed" };

export function sessionAllows(session, action) {
  return Boolean(session) && SESSION_MOVES[action].includes(session.status);
}

/** A group of the session action buttons; syncActions shows those the state allows. */
export function actionButtons(getSession, onDone) {
  const group = el("div", { class: "actions write-control", role: "group",
    "aria-label": "Session actions" });
  for (const action of Object.keys(SESSION_MOVES)) {
    const label = action[0].toUpperCase() + action.slice(1);
    const button = el("button", { type: "button", class: `action action-${action}`,
      dataset: { action }, text: label, hidden: true });
    button.addEventListener("click", async () => {
      const session = getSession();
      if (!session) return;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        const updated = await api("POST", `/api/v1/sessions/${session.id}/${action}`);
        say(`Session “${session.title}” ${PAST[action]}.`, "success");
        onDone(updated);
      } catch (error) {
        const text = failure(`Could not ${action} “${session.title}”`, error);
        if (text) say(text, "error");
      } finally {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    });
    group.append(button);
  }
  return group;
}

export function syncActions(group, session) {
  const write = canWrite();
  for (const button of group.querySelectorAll("button")) {
    button.hidden = !write || !sessionAllows(session, button.dataset.action);
    button.setAttribute("aria-label", `${button.textContent} session ${session ? session.title : ""}`);
  }
}

/* ---------- tasks ---------- */

/** The actions offered on a task: cancel while unfinished; assign now when it is PENDING,
 * not a parent, in a RUNNING session; retry (a new task with the same fields) when it
 * failed or was cancelled and its session can still take tasks. */
export function taskActions(task, session, hasSubtasks) {
  if (!canWrite() || !task) return [];
  const open = session && !FINISHED.has(session.status);
  const actions = [];
  if (task.status === "PENDING" && !hasSubtasks && !task.decomposition_template &&
      session && session.status === "RUNNING") {
    actions.push("assign");
  }
  if (!FINISHED.has(task.status)) actions.push("cancel");
  if ((task.status === "FAILED" || task.status === "CANCELLED") && open) actions.push("retry");
  return actions;
}

export const TASK_ACTION_LABELS = { assign: "Assign now", cancel: "Cancel task",
  retry: "Retry as a new task" };

/** Runs a task action; resolves to the task it produced (the same or, for retry, a new
 * one), or null when it failed (the message is shown). */
export async function runTaskAction(action, task, tasks) {
  try {
    if (action === "retry") {
      const payload = {
        session_id: task.session_id,
        title: task.title,
        complexity: task.complexity,
        required_capabilities: task.required_capabilities,
      };
      if (task.description) payload.description = task.description;
      const usable = (task.depends_on || []).filter((id) => {
        const dep = tasks && tasks.get(id);
        return !dep || !["FAILED", "CANCELLED"].includes(dep.status);
      });
      if (usable.length) payload.depends_on = usable;
      const created = await api("POST", "/api/v1/tasks", payload);
      say(`Task “${task.title}” created again.`, "success");
      return created;
    }
    const body = action === "assign" ? {} : undefined;
    const updated = await api("POST", `/api/v1/tasks/${task.id}/${action}`, body);
    say(action === "assign" ? `Task “${task.title}” assigned.` : `Task “${task.title}” cancelled.`,
      "success");
    return updated;
  } catch (error) {
    const text = failure(`Could not ${action} “${task.title}”`, error);
    if (text) say(text, "error");
    return null;
  }
}
