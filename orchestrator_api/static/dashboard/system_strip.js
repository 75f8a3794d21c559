/* Dashboard: the system strip under the header: PostgreSQL, Redis, the workers and the
 * counts, from /ws/system (and "—" while it is down: no stale or made-up figures), and the
 * link to Flower. With a pool shown, the counts are that pool's: /ws/system counts the
 * whole server, so they are read over HTTP (three requests) when the pool is chosen and
 * again, in the background (budget.js), after its events. */

import { refresher } from "./budget.js";
import { api } from "./http.js";
import { currentPool, inPool, onPool } from "./pool.js";
import { Stream, tap } from "./streams.js";
import { $, UNKNOWN, config, plural } from "./util.js";

const POOL_COUNTS_GAP_MS = 15000;
const COUNTED = new Set(["session.created", "session.status_changed", "task.status_changed",
  "agent.registered", "agent.status_changed", "agent.deregistered"]);

let stream = null;
let shownPool = null; // the pool whose counts are shown ("" the server's), null when stopped
let seq = 0;
const refreshPoolCounts = refresher(() => loadPoolCounts(), POOL_COUNTS_GAP_MS);

onPool(() => {
  if (shownPool === null || shownPool === currentPool()) return;
  showPool();
});

tap((message) => {
  if (shownPool && COUNTED.has(message.type) && inPool(message)) refreshPoolCounts();
});

export function startSystemStrip() {
  showUnknown();
  stream = new Stream("/ws/system", { onEvent: show, onDown: showUnknown });
  stream.open();
  $("#flower-link").href =
    config.flowerUrl ||
    `${window.location.protocol}//${window.location.hostname}:${config.flowerPort}/`;
  showPool();
}

export function stopSystemStrip() {
  if (stream) stream.close();
  stream = null;
  shownPool = null;
  seq += 1;
  refreshPoolCounts.cancel();
}

function showPool() {
  shownPool = currentPool();
  seq += 1;
  refreshPoolCounts.cancel();
  $("#sys-counts").textContent = "";
  $("#sys-counts").dataset.pool = shownPool;
  if (shownPool) loadPoolCounts();
}

function showUnknown() {
  for (const id of ["#sys-database", "#sys-redis", "#sys-workers"]) {
    $(id).textContent = UNKNOWN;
    $(id).dataset.state = "unknown";
  }
  if (!shownPool) $("#sys-counts").textContent = "";
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
  if (shownPool) return; // the pool's counts come over HTTP
  const counts = p.counts || {};
  const pick = (group, status) => ((counts[group] || {})[status] || 0);
  const online = Object.entries(counts.agents || {})
    .filter(([status]) => status !== "OFFLINE").reduce((n, [, c]) => n + c, 0);
  showCounts(pick("sessions", "RUNNING"), pick("tasks", "IN_PROGRESS"), online);
}

function showCounts(sessions, tasks, agents, pool = "") {
  $("#sys-counts").textContent = (pool ? `Pool ${pool}: ` : "") + [
    plural(sessions, "session", "sessions") + " running",
    plural(tasks, "task", "tasks") + " in progress",
    plural(agents, "agent", "agents") + " online",
  ].join(" · ");
}

async function loadPoolCounts() {
  const pool = shownPool;
  const mine = ++seq;
  if (!pool) return;
  const query = (params) => new URLSearchParams({ pool, ...params });
  try {
    const [sessions, tasks, agents] = await Promise.all([
      api("GET", `/api/v1/sessions?${query({ status: "RUNNING", page_size: 1 })}`),
      api("GET", `/api/v1/tasks?${query({ status: "IN_PROGRESS", page_size: 1 })}`),
      api("GET", `/api/v1/agents/performance?${query({})}`),
    ]);
    if (mine !== seq) return;
    showCounts(sessions.total, tasks.total, agents.active_agents, pool);
  } catch (error) {
    if (mine === seq) $("#sys-counts").textContent = `Pool ${pool}: ${UNKNOWN}`;
  }
}
