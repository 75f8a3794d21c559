/* Dashboard: the hash routes (#/sessions, #/sessions/{id}?task=, #/agents, #/activity) and
 * the one view shown at a time. Views register themselves by name (app.js at start); a
 * route to the view already shown gives it the new parameters (update) instead of leaving
 * and entering it again. */

import { notice } from "./util.js";

const TITLES = { agents: "Agents", sessions: "Sessions", session: "Session",
  activity: "Activity" };
const views = {};
let current = null;
let currentKey = null;
let running = false;

export function registerView(name, view) {
  views[name] = view;
}

/** "?a=1&b=2" of the parameters that have a value; "" when none has. */
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
  document.title = `${TITLES[target.name]} · Orchestrator`;
  notice(`${TITLES[target.name]} view`);
}

/** Routing on: the current hash's view is entered, and hash changes move between views. */
export function startRouting() {
  running = true;
  route();
}

/** Routing off (the token form): the view shown is left. */
export function stopRouting() {
  running = false;
  if (current) current.leave();
  current = null;
  currentKey = null;
}

window.addEventListener("hashchange", route);
