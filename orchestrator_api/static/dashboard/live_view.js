/* Dashboard: a view fed by a snapshot over HTTP and by streams (the ordering is described
 * in app.js), and the progress bars. */

import { refresher } from "./budget.js";
import { failure } from "./http.js";
import { inPool } from "./pool.js";
import { Stream } from "./streams.js";
import { TASK_COLORS_ORDER, el, say } from "./util.js";

/* ---------- a view fed by a snapshot and streams ---------- */

export class LiveView {
  constructor(section) {
    this.section = section;
    this.active = false;
    this.streams = [];
    this.seq = 0;
    this.inFlight = 0;
    this.buffer = [];
    this.stale = true;
    this.loaded = false; // a snapshot arrived since enter(): until then, figures are "—"
    this.retryTimer = null;
    this.renderQueued = false;
    this.byPool = true; // events of other pools than the one shown are left out
    // Events that need what only HTTP has: one background reload for a burst (budget.js).
    this.refresh = refresher(() => this.load());
  }

  show() {
    for (const view of document.querySelectorAll(".view")) view.hidden = view !== this.section;
    this.active = true;
    this.loaded = false;
    this.stale = true;
  }

  /** Follow the streams; the snapshot is fetched once all of them are open. */
  follow(...paths) {
    this.streams = paths.map((path) => new Stream(path, {
      onEvent: (message) => this.receive(message),
      onReady: (kind) => {
        if (!this.streams.every((s) => s.up)) return;
        if (kind !== "resumed" || this.stale) this.load();
      },
      onResync: () => this.load(),
      onFatal: (reason) => this.fatal(reason),
      onDown: () => this.queueRender(),
    }));
    for (const stream of this.streams) stream.open();
  }

  leave() {
    this.active = false;
    for (const stream of this.streams) stream.close();
    this.streams = [];
    this.refresh.cancel();
    clearTimeout(this.retryTimer);
    this.buffer = [];
    this.seq += 1; // answers still in flight are ignored
  }

  async load() {
    const seq = ++this.seq;
    this.inFlight += 1;
    clearTimeout(this.retryTimer);
    try {
      const data = await this.fetch();
      if (seq === this.seq && this.active) {
        this.snapshot(data);
        this.stale = false;
        this.loaded = true;
      }
    } catch (error) {
      if (seq === this.seq && this.active) {
        this.stale = true;
        this.loadFailed(error);
        // Network errors wait for the stream to come back; refusals for their delay
        // (a 429 pauses every background fetch: the refresher waits for it).
        if (error.status === 429 || error.status >= 500) {
          this.retryTimer = setTimeout(() => this.refresh(), (error.retryAfter || 3) * 1000);
        }
      }
    } finally {
      this.inFlight -= 1;
      if (this.inFlight === 0 && this.active) {
        const pending = this.buffer;
        this.buffer = [];
        // The snapshot may or may not hold these: apply() makes no relative change for them.
        for (const message of pending) this.apply(message, true);
        this.render();
      }
    }
  }

  receive(message) {
    if (!this.active || (this.byPool && !inPool(message))) return;
    if (this.inFlight > 0) {
      this.buffer.push(message);
      return;
    }
    this.apply(message, false);
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      if (this.active) this.render();
    });
  }

  loadFailed(error) {
    if (error.status === 401 || error.status === 429) return; // the form, the rate line
    say(failure("Could not load", error), "error");
  }

  fatal(reason) {
    say(reason, "error");
  }
}

/* ---------- progress bars ---------- */

export function progressBar(progress) {
  const total = (progress && progress.total) || 0;
  const counts = (progress && progress.by_status) || {};
  const done = counts.COMPLETED || 0;
  const bar = el("div", { class: "progress-bar", "aria-hidden": "true" });
  for (const status of TASK_COLORS_ORDER) {
    const n = counts[status] || 0;
    if (n > 0 && total > 0) {
      bar.append(el("span", {
        class: "segment",
        dataset: { status },
        style: { width: `${(100 * n) / total}%` },
        title: `${status}: ${n}`,
      }));
    }
  }
  const parts = TASK_COLORS_ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  const label = total
    ? `${done} of ${total} tasks completed (${Math.round((100 * done) / total)}%)`
    : "no tasks";
  return el(
    "div",
    { class: "progress", title: parts.join(", ") },
    bar,
    el("span", { class: "progress-text", text: label }),
  );
}

export function countTasks(tasks) {
  const byStatus = {};
  for (const task of tasks) byStatus[task.status] = (byStatus[task.status] || 0) + 1;
  return { total: tasks.length, by_status: byStatus };
}

/** A status change (or a new task) on a progress object; false when it cannot tell. */
export function moveCount(progress, from, to) {
  if (!progress) return false;
  const counts = progress.by_status || (progress.by_status = {});
  if (from) {
    if (!counts[from]) return false;
    counts[from] -= 1;
  } else {
    progress.total = (progress.total || 0) + 1;
  }
  counts[to] = (counts[to] || 0) + 1;
  const done = counts.COMPLETED || 0;
  progress.percent_complete = progress.total ? (100 * done) / progress.total : 0;
  return true;
}
