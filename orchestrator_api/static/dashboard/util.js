/* Dashboard: constants, the configuration the page carries, DOM helpers and the
 * message line. */

export const TOKEN_KEY = "orchestrator.dashboard.token";
export const PAGE_SIZE = 20;
export const TASK_COLORS_ORDER = [
  "COMPLETED", "IN_PROGRESS", "ASSIGNED", "PENDING", "BLOCKED", "FAILED", "CANCELLED",
];
export const HELD = new Set(["ASSIGNED", "IN_PROGRESS"]);
export const FINISHED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
export const UNKNOWN = "—"; // shown until real data arrives, never a made-up 0

export const body = document.body;
export const config = {
  authRequired: body.dataset.authRequired === "true",
  flowerPort: body.dataset.flowerPort || "5555",
  flowerUrl: body.dataset.flowerUrl || "",
  version: body.dataset.version || "",
  noSharedWorker: new URLSearchParams(window.location.search).has("no-shared-worker"),
};
export const $ = (selector) => document.querySelector(selector);

/* ---------- small helpers ---------- */

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

export function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

export function badge(status) {
  return el("span", { class: "badge", dataset: { status }, text: status });
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

export function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/* ---------- messages ---------- */

let messageTimer = null;

export function say(text, kind = "info") {
  const box = $("#message");
  $("#message-text").textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(messageTimer);
  if (kind !== "error") messageTimer = setTimeout(() => { box.hidden = true; }, 5000);
}

export function notice(text) {
  $("#notice").textContent = text;
}

/** A persistent line (rate limit, refused stream): shown with text, hidden without. */
export function banner(selector, text) {
  const node = $(selector);
  if (!node) return;
  if (node.textContent !== text) node.textContent = text;
  node.hidden = !text;
}

/** Seconds as "45 s", "3 min", "2 h 5 min". */
export function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  const minutes = Math.round((seconds % 3600) / 60);
  return `${Math.floor(seconds / 3600)} h${minutes ? ` ${minutes} min` : ""}`;
}
