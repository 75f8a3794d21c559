/* Dashboard: the session page's heading and summary (status, priority, type, pool, progress
 * counted from its tasks, times, error). */

import { countTasks, progressBar } from "./live_view.js";
import { poolBadge } from "./pool.js";
import { $, badge, el, when } from "./util.js";

export function renderSummary(session, tasks) {
  $("#session-title-heading").textContent = session.title;
  const summary = [
    ["Status", badge(session.status)],
    ["Priority", session.priority],
    ["Type", session.type],
    ["Pool", poolBadge(session.pool || "")],
    ["Progress", progressBar(countTasks(tasks))],
    ["Created", when(session.created_at)],
  ];
  if (session.started_at) summary.push(["Started", when(session.started_at)]);
  if (session.completed_at) summary.push(["Finished", when(session.completed_at)]);
  if (session.error) summary.push(["Error", session.error]);
  $("#session-summary").replaceChildren(...summary.map(([term, value]) =>
    el("div", { class: "summary-item" }, el("dt", { text: term }), el("dd", {}, value))));
  $("#session-summary").dataset.status = session.status;
}

export function clearSummary(heading) {
  $("#session-title-heading").textContent = heading;
  $("#session-summary").replaceChildren();
}
