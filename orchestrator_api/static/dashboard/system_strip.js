/* Dashboard: the system strip under the header: PostgreSQL, Redis, the workers and the
 * counts, from /ws/system (and "—" while it is down: no stale or made-up figures), and the
 * link to Flower. */

import { Stream } from "./streams.js";
import { $, UNKNOWN, config, plural } from "./util.js";

let stream = null;

export function startSystemStrip() {
  showUnknown();
  stream = new Stream("/ws/system", { onEvent: show, onDown: showUnknown });
  stream.open();
  $("#flower-link").href =
    config.flowerUrl ||
    `${window.location.protocol}//${window.location.hostname}:${config.flowerPort}/`;
}

export function stopSystemStrip() {
  if (stream) stream.close();
  stream = null;
}

function showUnknown() {
  for (const id of ["#sys-database", "#sys-redis", "#sys-workers"]) {
    $(id).textContent = UNKNOWN;
    $(id).dataset.state = "unknown";
  }
  $("#sys-counts").textContent = "";
}

function show(message) {
  if (message.type !== "system.health") return;
  const p = message.payload || {};
  const set = (id, text, ok) => {
    const node = $(id);
    node.textContent = text;
    node.dataset.state = ok ? "ok" : "down";
  };
  set("#sys-database", p.database || "unknown", p.database === "ok");
  set("#sys-redis", p.redis || "unknown", p.redis === "ok");
  set("#sys-workers", String(p.workers ?? 0), (p.workers || 0) > 0);
  const counts = p.counts || {};
  const pick = (group, status) => ((counts[group] || {})[status] || 0);
  const online = Object.entries(counts.agents || {})
    .filter(([status]) => status !== "OFFLINE").reduce((n, [, c]) => n + c, 0);
  $("#sys-counts").textContent = [
    plural(pick("sessions", "RUNNING"), "session", "sessions") + " running",
    plural(pick("tasks", "IN_PROGRESS"), "task", "tasks") + " in progress",
    plural(online, "agent", "agents") + " online",
  ].join(" · ");
}
