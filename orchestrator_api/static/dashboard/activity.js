/* Dashboard: the events this tab has heard (and, with shared streams, the recent ones the
 * SharedWorker kept before the tab opened), newest last: the activity feed, tasks'
 * histories and the counts over time read them. No HTTP: it costs no rate budget.
 *
 * With shared streams the store follows /ws/sessions, /ws/agents and /ws/system itself (the
 * sockets are the worker's anyway); without, it hears what the tab's views follow. */

import { inPool, learnPools } from "./pool.js";
import { Stream, sharedStreams, tap } from "./streams.js";

const MAX_EVENTS = 3000;
const MAX_HEALTH = 720; // an hour of system.health at the default 5 s
const PATHS = ["/ws/sessions", "/ws/agents", "/ws/system"];

export const events = []; // stored events (numeric ids), oldest first
export const health = []; // [time ms, payload] of system.health messages
const seen = new Set();
const listeners = new Set();
let since = null; // the time from which the store has every event of its streams
let streams = [];
let notifyQueued = false;

export function onActivity(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify() {
  if (notifyQueued) return;
  notifyQueued = true;
  setTimeout(() => {
    notifyQueued = false;
    for (const fn of listeners) fn();
  }, 250);
}

function add(message) {
  if (!message || !message.type) return;
  const at = Date.parse(message.timestamp) || Date.now();
  if (message.type === "system.health") {
    if (health.length && health[health.length - 1][0] >= at) return;
    health.push([at, message.payload || {}]);
    if (health.length > MAX_HEALTH) health.splice(0, health.length - MAX_HEALTH);
    notify();
    return;
  }
  if (message.type === "task.log") return; // a task's lines: its detail shows them
  const id = String(message.id);
  if (!/^\d+$/.test(id) || seen.has(id)) return;
  seen.add(id);
  if (message.payload && message.payload.pool) learnPools([message.payload.pool]);
  events.push({ ...message, at });
  if (events.length > 1 && events[events.length - 2].at > at) events.sort((a, b) => a.at - b.at);
  if (events.length > MAX_EVENTS) {
    for (const old of events.splice(0, events.length - MAX_EVENTS)) seen.delete(String(old.id));
    since = events[0].at;
  }
  notify();
}

/** The time since which the store holds every event (its first, or when it started). */
export function coverage() {
  return since;
}

export function start() {
  if (since === null) {
    since = Date.now();
    tap((message) => add(message));
  }
  if (!sharedStreams() || streams.length) return;
  streams = PATHS.map((path) => new Stream(path, {
    onEvent: () => {}, // the tap has it
    onBacklog: (messages) => {
      for (const message of messages) add(message);
      const first = messages.find((m) => m.type !== "system.health");
      if (first) since = Math.min(since, Date.parse(first.timestamp) || since);
    },
    onResync: () => {},
  }, { backlog: true }));
  for (const stream of streams) stream.open();
}

export function stop() {
  for (const stream of streams) stream.close();
  streams = [];
}

/** The task's events this tab knows, oldest first. */
export function taskEvents(taskId) {
  return events.filter((e) => e.payload && e.payload.task_id === taskId);
}

/** Per minute over the last `minutes`: tasks created, completed, failed (from the events of
 * the pool shown; null before the store's coverage) and the queue depth (PENDING tasks of
 * every pool, the last system.health of the minute; null without one). */
export function perMinute(minutes) {
  const minute = 60000;
  const end = Math.floor(Date.now() / minute) * minute + minute;
  const start = end - minutes * minute;
  const buckets = [];
  for (let t = start; t < end; t += minute) {
    const known = since !== null && t + minute > since;
    buckets.push({ at: t, created: known ? 0 : null, completed: known ? 0 : null,
      failed: known ? 0 : null, queue: null });
  }
  const slot = (at) => Math.floor((at - start) / minute);
  for (const e of events) {
    const b = buckets[slot(e.at)];
    if (!b || b.created === null || !inPool(e)) continue;
    const p = e.payload || {};
    if (e.type === "task.created") b.created += 1;
    else if (e.type === "task.status_changed" && p.status === "COMPLETED") b.completed += 1;
    else if (e.type === "task.status_changed" && p.status === "FAILED") b.failed += 1;
  }
  for (const [at, payload] of health) {
    const b = buckets[slot(at)];
    const tasks = payload.counts && payload.counts.tasks;
    if (b && tasks) b.queue = tasks.PENDING || 0;
  }
  return buckets;
}
