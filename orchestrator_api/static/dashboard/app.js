/* The orchestrator dashboard: plain JavaScript modules, no build step, no dependencies.
 * This one: the system strip, the token flow, the router and the start.
 *
 * Each view loads a snapshot over HTTP and follows one WebSocket stream (plus /ws/system
 * for the health strip). Ordering: the stream is opened first and the snapshot fetched once
 * it is open, so no event falls between the two; events that arrive while a snapshot is in
 * flight are replayed on top of it. Events carry absolute values (a task's new status), so
 * replaying one the snapshot already holds is harmless. A dropped stream reconnects with
 * ?last_event_id= and receives what it missed; "events.dropped" means too much was missed,
 * and the view reloads over HTTP.
 */

import { AgentsView } from "./agents_view.js";
import { api } from "./http.js";
import { SessionView } from "./session_view.js";
import { SessionsView } from "./sessions_view.js";
import { Stream, showConnection } from "./streams.js";
import { $, TOKEN_KEY, config, notice, plural } from "./util.js";

/* ---------- the system strip ---------- */

export const system = {
  stream: null,
  start() {
    this.stream = new Stream("/ws/system", { onEvent: (message) => this.show(message) });
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

/* ---------- auth ---------- */

export const auth = {
  token: window.sessionStorage.getItem(TOKEN_KEY) || null,
  probing: false,
  lastProbe: 0,

  show(message, isError) {
    stopApp();
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== "auth-view";
    const intro = $("#auth-intro");
    if (!intro.dataset.default) intro.dataset.default = intro.innerHTML;
    if (isError || !message) intro.innerHTML = intro.dataset.default;
    else intro.textContent = message;
    $("#auth-error").textContent = isError ? message : "";
    $("#auth-cancel").hidden = config.authRequired;
    const input = $("#token-input");
    input.value = "";
    input.focus();
    this.updateButton();
  },

  refused(message) {
    const hadToken = Boolean(this.token);
    this.forget();
    this.show(hadToken
      ? `The server refused the token: ${message}. Enter another token.`
      : `This server requires a token: ${message}.`, true);
  },

  forget() {
    this.token = null;
    window.sessionStorage.removeItem(TOKEN_KEY);
  },

  async submit(event) {
    event.preventDefault();
    const token = $("#token-input").value.trim();
    const error = $("#auth-error");
    if (!token) {
      error.textContent = "Enter a token.";
      return;
    }
    error.textContent = "Checking the token…";
    try {
      await api("GET", "/api/v1/sessions?page_size=1", undefined, token);
    } catch (failure) {
      error.textContent = failure.status === 401
        ? `The server refused this token: ${failure.message}`
        : `The token could not be checked: ${failure.message}`;
      $("#token-input").select();
      return;
    }
    this.token = token;
    window.sessionStorage.setItem(TOKEN_KEY, token);
    error.textContent = "";
    notice("Token accepted.");
    startApp(true);
  },

  /** After repeated refused WebSocket connects: a 401 over HTTP brings the token form. */
  async probe() {
    if (this.probing || Date.now() - this.lastProbe < 10000) return;
    this.probing = true;
    this.lastProbe = Date.now();
    try {
      await api("GET", "/api/v1/sessions?page_size=1");
    } catch (error) {
      /* api() has handled a 401; anything else is the server being away */
    } finally {
      this.probing = false;
    }
  },

  updateButton() {
    $("#token-button").textContent = this.token ? "Sign out" : "Set token";
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
    const on = link.dataset.view === (target.name === "agents" ? "agents" : "sessions");
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current.enter(target.params, target.id);
  const name = { agents: "Agents", sessions: "Sessions", session: "Session" }[target.name];
  document.title = `${name} · Orchestrator`;
  notice(`${name} view`);
}

export function startApp(tokenChecked = false) {
  stopApp();
  running = true;
  auth.updateButton();
  system.start();
  route();
  // A kept token may have expired: a refused WebSocket says nothing of why, HTTP does.
  if (auth.token && !tokenChecked) auth.probe();
}

export function stopApp() {
  running = false;
  if (current) current.leave();
  current = null;
  currentKey = null;
  system.stop();
  showConnection();
}

/* ---------- start ---------- */

export function init() {
  views.sessions = new SessionsView();
  views.session = new SessionView();
  views.agents = new AgentsView();
  window.addEventListener("hashchange", route);
  $("#message-close").addEventListener("click", () => { $("#message").hidden = true; });
  $("#auth-form").addEventListener("submit", (event) => auth.submit(event));
  $("#auth-cancel").addEventListener("click", () => startApp(true));
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
