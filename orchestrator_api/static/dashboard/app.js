/* The orchestrator dashboard: plain JavaScript modules, no build step, no dependencies.
 * This one: the system strip, the router and the start.
 *
 * Each view loads a snapshot over HTTP once and then follows WebSocket streams (plus
 * /ws/system for the health strip), which a SharedWorker holds for every tab of the origin
 * (streams.js). Ordering: the stream is opened first and the snapshot fetched once it is
 * open, so no event falls between the two; events that arrive while a snapshot is in flight
 * are replayed on top of it, where they set absolute values (a task's new status) and never
 * relative ones (a count). A dropped stream reconnects with ?last_event_id= and receives what
 * it missed; "events.dropped" means too much was missed, and the view reloads over HTTP.
 * Anything else fetched over HTTP is what events cannot tell, in the background, within the
 * rate budget (budget.js).
 */

import { start as startActivity, stop as stopActivity } from "./activity.js";
import { ActivityView } from "./activity_view.js";
import { AgentsView } from "./agents_view.js";
import { auth } from "./auth.js";
import { SessionView } from "./session_view.js";
import { SessionsView } from "./sessions_view.js";
import { Stream, showConnection } from "./streams.js";
import { $, UNKNOWN, config, notice, plural } from "./util.js";

/* ---------- the system strip ---------- */

export const system = {
  stream: null,
  start() {
    this.unknown();
    this.stream = new Stream("/ws/system", {
      onEvent: (message) => this.show(message),
      onDown: () => this.unknown(), // no stale or made-up figures while it is down
    });
    this.stream.open();
    const link = $("#flower-link");
    link.href =
      config.flowerUrl ||
      `${window.location.protocol}//${window.location.hostname}:${config.flowerPort}/`;
  },
  stop() {
    if (this.stream) this.stream.close();
    this.stream = null;
  },
  unknown() {
    for (const id of ["#sys-database", "#sys-redis", "#sys-workers"]) {
      $(id).textContent = UNKNOWN;
      $(id).dataset.state = "unknown";
    }
    $("#sys-counts").textContent = "";
  },
  show(message) {
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
  },
};

/* ---------- router ---------- */

export const views = {};
export let current = null;
export let currentKey = null;
export let running = false;

export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== "" && v !== undefined);
  return entries.length ? `?${new URLSearchParams(entries)}` : "";
}

export function go(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

export function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/sessions";
  const [path, search] = raw.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "agents") return { name: "agents", key: "agents", params };
  if (parts[0] === "activity") return { name: "activity", key: "activity", params };
  if (parts[0] === "sessions" && parts[1]) {
    const id = decodeURIComponent(parts[1]);
    return { name: "session", key: `session:${id}`, params, id };
  }
  return { name: "sessions", key: "sessions", params };
}

export function route() {
  if (!running) return;
  const target = parseHash();
  if (current && currentKey === target.key && current.update) {
    current.update(target.params);
    return;
  }
  if (current && currentKey === target.key) return;
  if (current) current.leave();
  current = views[target.name];
  currentKey = target.key;
  for (const link of document.querySelectorAll(".views-nav a")) {
    const on = link.dataset.view === (target.name === "session" ? "sessions" : target.name);
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current.enter(target.params, target.id);
  const name = { agents: "Agents", sessions: "Sessions", session: "Session",
    activity: "Activity" }[target.name];
  document.title = `${name} · Orchestrator`;
  notice(`${name} view`);
}

export function startApp() {
  stopApp();
  running = true;
  auth.updateButton();
  auth.applyRole();
  system.start();
  startActivity();
  route();
  // A kept token that expired shows in the views' first requests (401), or, when the
  // sockets are refused first, in the probe streams.js makes then.
}

export function stopApp() {
  running = false;
  if (current) current.leave();
  current = null;
  currentKey = null;
  system.stop();
  stopActivity();
  showConnection();
}

/* ---------- start ---------- */

export function init() {
  views.sessions = new SessionsView();
  views.session = new SessionView();
  views.agents = new AgentsView();
  views.activity = new ActivityView();
  window.addEventListener("hashchange", route);
  $("#message-close").addEventListener("click", () => { $("#message").hidden = true; });
  $("#auth-form").addEventListener("submit", (event) => auth.submit(event));
  $("#auth-cancel").addEventListener("click", () => startApp());
  $("#token-button").addEventListener("click", () => {
    if (auth.token) {
      auth.forget();
      if (config.authRequired) auth.show("Signed out. Enter a token to continue.", false);
      else startApp();
      notice("Signed out.");
    } else {
      auth.show("A token is optional on this server; one that is sent must be valid.", false);
    }
  });
  if (config.authRequired && !auth.token) {
    auth.show("", false);
  } else {
    startApp();
  }
}
