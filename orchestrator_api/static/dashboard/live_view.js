/* Dashboard: a view fed by a snapshot over HTTP and a stream (the ordering is
 * described in app.js), progress bars, and the session action buttons. */

import { api } from "./http.js";
import { Stream } from "./streams.js";
import { PAST, REFRESH_MS, SESSION_ACTIONS, TASK_COLORS_ORDER, el, say, throttled } from "./util.js";

/* ---------- a view fed by a snapshot and a stream ---------- */

export class LiveView {
  constructor(section) {
    this.section = section;
    this.active = false;
    this.stream = null;
    this.seq = 0;
    this.inFlight = 0;
    this.buffer = [];
    this.stale = true;
    this.retryTimer = null;
    this.renderQueued = false;
    this.refresh = throttled(() => this.load(), REFRESH_MS);
  }

  show() {
    for (const view of document.querySelectorAll(".view")) view.hidden = view !== this.section;
    this.active = true;
  }

  follow(path) {
    this.stream = new Stream(path, {
      onEvent: (message) => this.receive(message),
      onReady: (kind) => {
        if (kind !== "resumed" || this.stale) this.load();
      },
      onResync: () => this.load(),
      onFatal: (reason) => this.fatal(reason),
    });
    this.stream.open();
  }

  leave() {
    this.active = false;
    if (this.stream) this.stream.close();
    this.stream = null;
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
      }
    } catch (error) {
      if (seq === this.seq && this.active) {
        this.stale = true;
        this.loadFailed(error);
        // Network errors wait for the stream to come back; refusals for their delay.
        if (error.status === 429 || error.status >= 500) {
          const delay = (error.retryAfter || 3) * 1000;
          this.retryTimer = setTimeout(() => this.load(), delay);
        }
      }
    } finally {
      this.inFlight -= 1;
      if (this.inFlight === 0 && this.active) {
        const pending = this.buffer;
        this.buffer = [];
        for (const message of pending) this.apply(message);
        this.render();
      }
    }
  }

  receive(message) {
    if (!this.active) return;
    if (this.inFlight > 0) {
      this.buffer.push(message);
      return;
    }
    this.apply(message);
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
    if (error.status !== 401) say(`Could not load: ${error.message}`, "error");
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

/* ---------- session actions (list and detail) ---------- */

export function actionButtons(getSession, onDone) {
  const group = el("div", { class: "actions", role: "group", "aria-label": "Session actions" });
  for (const action of SESSION_ACTIONS) {
    const label = action[0].toUpperCase() + action.slice(1);
    const button = el("button", {
      type: "button",
      class: `action action-${action}`,
      dataset: { action },
      text: label,
    });
    button.addEventListener("click", async () => {
      const session = getSession();
      if (!session) return;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        const updated = await api("POST", `/api/v1/sessions/${session.id}/${action}`);
        say(`Session “${session.title}” ${PAST[action]}.`, "success");
        onDone(updated);
      } catch (error) {
        if (error.status !== 401) {
          say(`Could not ${action} “${session.title}”: ${error.message}`, "error");
        }
      } finally {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    });
    group.append(button);
  }
  return group;
}

export function labelActions(group, title) {
  for (const button of group.querySelectorAll("button")) {
    button.setAttribute("aria-label", `${button.textContent} session ${title}`);
  }
}

/* ---------- Sessions view ---------- */
