/* Dashboard: a task's log in its detail dialog, live. Read once when the dialog opens
 * (GET /api/v1/tasks/{id}/logs, page by page, keeping the newest MAX_LINES), then grown
 * by the task.log events of the session's stream: each carries its batch's seq range and
 * its first lines; a gap or a batch the event left out (`more`) is read with
 * GET ...?after=<last seq held> (at most every READ_GAP_MS). While the view is scrolled to the end it follows the
 * end; scrolled up, it stays where the reader is. */

import { api } from "./http.js";
import { el } from "./util.js";

const MAX_LINES = 2000;
const PAGE = 1000;
const READ_GAP_MS = 2000; // reads a chatty log's events ask for, at most one this often

export class TaskLog {
  constructor() {
    this.taskId = null;
    this.lines = [];
    this.lastSeq = 0;
    this.truncated = false;
    this.pruned = false;
    this.loading = false;
    this.pending = false; // a read was asked for while one ran
    this.readTimer = null;
    this.lastRead = 0;
    this.follow = true;
    this.node = el("pre", { id: "task-log", class: "task-log", tabindex: "0",
      "aria-label": "Task log", "aria-live": "off" });
    this.scrollTop = 0;
    this.node.addEventListener("scroll", () => {
      const n = this.node;
      if (!n.isConnected) return;
      this.follow = n.scrollTop + n.clientHeight >= n.scrollHeight - 4;
      this.scrollTop = n.scrollTop;
    });
    this.note = el("p", { id: "task-log-note", class: "hint" });
  }

  open(taskId) {
    if (this.taskId === taskId) return;
    this.taskId = taskId;
    this.lines = [];
    this.lastSeq = 0;
    this.truncated = false;
    this.pruned = false;
    this.follow = true;
    this.render();
    this.read();
  }

  close() {
    this.taskId = null;
    clearTimeout(this.readTimer);
    this.readTimer = null;
  }

  /** The nodes the detail puts in its body (kept across its re-renders). */
  nodes() {
    return [this.node, this.note];
  }

  /** Once the detail has put the nodes back: at the end when following, else where the
   * reader was (a node put back starts at the top). */
  placed() {
    this.node.scrollTop = this.follow ? this.node.scrollHeight : this.scrollTop;
  }

  /** A task.log event of the open session: this task's lines are added in order. */
  event(message) {
    const p = message.payload || {};
    if (!this.taskId || p.task_id !== this.taskId) return;
    if (p.truncated) this.truncated = true;
    if (p.last_seq <= this.lastSeq) return; // already read
    if (this.loading || p.first_seq !== this.lastSeq + 1) {
      this.readSoon(); // a gap: what is missing comes from the server
      return;
    }
    this.add(p.lines || []);
    if (p.more) this.readSoon();
    this.render();
  }

  readSoon() {
    if (this.readTimer) return;
    const wait = Math.max(0, this.lastRead + READ_GAP_MS - Date.now());
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      this.read();
    }, wait);
  }

  add(lines) {
    for (const line of lines) {
      if (line.seq <= this.lastSeq) continue;
      this.lines.push(line);
      this.lastSeq = line.seq;
    }
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
  }

  async read() {
    if (this.loading) {
      this.pending = true;
      return;
    }
    const id = this.taskId;
    this.loading = true;
    this.lastRead = Date.now();
    try {
      for (;;) {
        const page = await api("GET",
          `/api/v1/tasks/${id}/logs?after=${this.lastSeq}&limit=${PAGE}`);
        if (id !== this.taskId) return;
        this.add(page.items);
        this.truncated = page.truncated;
        this.pruned = page.pruned;
        if (!page.has_more) break;
      }
    } catch (error) {
      if (id === this.taskId) this.note.textContent = "Could not read the log; it shows what arrived.";
      return;
    } finally {
      this.loading = false;
    }
    this.render();
    if (this.pending) {
      this.pending = false;
      this.read();
    }
  }

  render() {
    const shown = this.lines.map((line) => el("span", {
      class: `log-line log-${line.stream}`, dataset: { seq: String(line.seq) },
      text: `${line.text}\n` }));
    this.node.replaceChildren(...shown);
    const dropped = this.lines.length && this.lines[0].seq > 1
      ? `Lines before ${this.lines[0].seq} are not shown (orchestrator logs <task id> prints ` +
        "them all). " : "";
    const state = this.pruned ? "The log was removed (retention)."
      : this.truncated ? "The log reached its size limit; later lines were dropped."
        : this.lines.length ? "" : "No log lines yet.";
    this.note.textContent = dropped + state;
    if (this.follow && this.node.isConnected) this.node.scrollTop = this.node.scrollHeight;
  }
}
