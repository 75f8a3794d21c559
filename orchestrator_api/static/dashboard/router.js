/* Dashboard: the hash routes (#/sessions, #/sessions/{id}?task=, #/agents, #/activity) and
 * the one view shown at a time. Views register themselves by name (app.js at start); a
 * route to the view already shown gives it the new parameters (update) instead of leaving
 * and entering it again. Every route carries the pool shown (?pool=, pool.js): a hash that
 * names one (a link, a reload) chooses it, one that names none gets the current one, and
 * a view is entered again when the pool changes. */

import { currentPool, setPool } from "./pool.js";
import { notice } from "./util.js";

const TITLES = { agents: "Agents", sessions: "Sessions", session: "Session",
  activity: "Activity" };
const views = {};
let current = null;
let currentKey = null;
let running = false;
let enteredPool = null; // the pool the current view was entered with

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
  if (target.params.has("pool")) setPool(target.params.get("pool")); // refused: kept as is
  target.params.delete("pool");
  const pool = currentPool();
  showPoolInHash(pool);
  if (current && currentKey === target.key && enteredPool === pool) {
    if (current.update) current.update(target.params);
    return;
  }
  if (current) current.leave();
  current = views[target.name];
  currentKey = target.key;
  enteredPool = pool;
  for (const link of document.querySelectorAll(".views-nav a")) {
    const on = link.dataset.view === (target.name === "session" ? "sessions" : target.name);
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current.enter(target.params, target.id);
  document.title = `${TITLES[target.name]} · Orchestrator`;
  notice(`${TITLES[target.name]} view`);
}

/** The hash route with ?pool= of the pool shown (none for every pool), in place: no new
 * history entry, no hashchange. */
function showPoolInHash(pool) {
  const raw = window.location.hash.replace(/^#/, "") || "/sessions";
  const [path, search] = raw.split("?");
  const params = new URLSearchParams(search || "");
  if ((params.get("pool") || "") === pool && (pool || !params.has("pool"))) return;
  if (pool) params.set("pool", pool);
  else params.delete("pool");
  const rest = params.toString();
  window.history.replaceState(window.history.state, "", `#${path}${rest ? `?${rest}` : ""}`);
}

/** The pool selector's choice ("" every pool): kept, and the view shows it. */
export function choosePool(name) {
  if (!setPool(name)) return false;
  showPoolInHash(currentPool()); // before route() reads the hash
  route();
  return true;
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
  enteredPool = null;
}

window.addEventListener("hashchange", route);
