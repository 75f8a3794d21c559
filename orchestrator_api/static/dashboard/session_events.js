/* Dashboard: what a session's events change in the session and its tasks as the session
 * page holds them. Events carry absolute values (a new status, the agent), so applying one
 * twice (a replay over a snapshot that already had it) changes nothing more. No DOM. */

import { FINISHED, HELD } from "./util.js";

/** A session.status_changed on the session; true when the session must be read again (a
 * failure: its error is only in the session). */
export function applySessionStatus(session, message) {
  const p = message.payload || {};
  session.status = p.status;
  if (p.status === "RUNNING" && !session.started_at) session.started_at = message.timestamp;
  if (FINISHED.has(p.status)) {
    session.completed_at = session.completed_at || message.timestamp;
    return p.status === "FAILED";
  }
  return false;
}

/** A task event (not task.log) on the task it names. */
export function applyTaskEvent(task, message) {
  const p = message.payload || {};
  if (message.type === "task.decomposed") {
    task.decomposition_template = p.template || task.decomposition_template;
    return;
  }
  if (!p.status) return;
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
