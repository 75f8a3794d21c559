/* Dashboard: the sessions list (filters, paging, progress, actions), live from
 * /ws/sessions: statuses and progress counts follow the events; only what events cannot
 * tell (a new session's fields, a session entering the filter) is fetched again, in the
 * background (budget.js). */

import { actionButtons, syncActions } from "./actions.js";
import { api, failure } from "./http.js";
import { LiveView, moveCount, progressBar } from "./live_view.js";
import { learnSessions } from "./names.js";
import { currentPool, learnPools, poolBadge } from "./pool.js";
import { go, query } from "./router.js";
import { $, PAGE_SIZE, UNKNOWN, badge, el, plural, say, when } from "./util.js";

export class SessionsView extends LiveView {
  constructor() {
    super($("#sessions-view"));
    this.items = [];
    this.total = 0;
    this.page = 1;
    this.status = "";
    this.rows = new Map();
    $("#status-filter").addEventListener("change", (event) => {
      go(`#/sessions${query({ status: event.target.value })}`);
    });
    $("#prev-page").addEventListener("click", () => this.goPage(this.page - 1));
    $("#next-page").addEventListener("click", () => this.goPage(this.page + 1));
    $("#session-form").addEventListener("submit", (event) => this.create(event));
  }

  goPage(page) {
    go(`#/sessions${query({ status: this.status, page: page > 1 ? page : "" })}`);
  }

  enter(params) {
    this.show();
    this.setParams(params);
    this.render();
    this.follow("/ws/sessions");
  }

  update(params) {
    this.setParams(params);
    this.loaded = false;
    this.render();
    this.load();
  }

  setParams(params) {
    this.page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
    this.status = params.get("status") || "";
    $("#status-filter").value = this.status;
  }

  fetch() {
    const params = { page: this.page, page_size: PAGE_SIZE };
    if (this.status) params.status = this.status;
    if (currentPool()) params.pool = currentPool();
    return api("GET", `/api/v1/sessions?${new URLSearchParams(params)}`);
  }

  snapshot(data) {
    this.items = data.items;
    this.total = data.total;
    this.hasMore = data.has_more;
    learnSessions(data.items);
    learnPools(data.items.map((s) => s.pool));
  }

  /** replay: the event came while a snapshot was loading, which may already count it. */
  apply(message, replay) {
    const p = message.payload || {};
    const onPage = this.items.find((s) => s.id === p.session_id);
    if (message.type === "session.created") {
      // pages shift by one (unless it is the one this page created and shows already)
      if (!onPage && (!this.status || this.status === p.status)) this.refresh();
    } else if (message.type === "session.status_changed") {
      if (onPage) onPage.status = p.status;
      if (this.status && onPage && p.status !== this.status) {
        this.items = this.items.filter((s) => s !== onPage); // it left the filter
        this.total = Math.max(0, this.total - 1);
        if (this.hasMore) this.refresh(); // the next page's first row moves up
      } else if (this.status && !onPage && p.status === this.status) {
        this.refresh(); // it entered the filter: its fields come from the server
      }
    } else if (message.type === "task.created" && onPage) {
      if (replay || !moveCount(onPage.progress, null, p.status)) this.refresh();
    } else if (message.type === "task.status_changed" && onPage) {
      if (p.previous_status === p.status) return;
      if (replay || !moveCount(onPage.progress, p.previous_status, p.status)) this.refresh();
    }
  }

  render() {
    const tbody = $("#sessions-body");
    const seen = new Set();
    let previous = null;
    for (const session of this.items) {
      seen.add(session.id);
      let row = this.rows.get(session.id);
      if (!row) {
        row = this.makeRow(session.id);
        this.rows.set(session.id, row);
      }
      this.fillRow(row, session);
      const want = previous ? previous.nextSibling : tbody.firstChild;
      if (want !== row) tbody.insertBefore(row, want);
      previous = row;
    }
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    $("#sessions-empty").hidden = this.items.length > 0 || !this.loaded;
    const pages = Math.max(1, Math.ceil(this.total / PAGE_SIZE));
    $("#page-info").textContent = this.loaded
      ? `Page ${this.page} of ${pages} · ${plural(this.total, "session", "sessions")}`
      : `Page ${this.page} of ${UNKNOWN} · ${UNKNOWN} sessions`;
    $("#prev-page").disabled = this.page <= 1;
    $("#next-page").disabled = !this.hasMore;
  }

  makeRow(id) {
    const row = el("tr", { dataset: { sessionId: id } });
    const get = () => this.items.find((s) => s.id === id);
    const actions = actionButtons(get, (updated) => {
      const index = this.items.findIndex((s) => s.id === updated.id);
      if (index >= 0) this.items[index] = updated;
      this.render();
    });
    row.append(
      el("th", { scope: "row", class: "title-cell" }, el("a", {}), el("span", { class: "sub" }),
        poolBadge("")),
      el("td", { class: "status-cell" }),
      el("td", { class: "priority-cell" }),
      el("td", { class: "progress-cell" }),
      el("td", { class: "created-cell" }),
      el("td", { class: "actions-cell" }, actions),
    );
    return row;
  }

  fillRow(row, session) {
    const cells = row.children;
    const link = cells[0].firstChild;
    link.href = `#/sessions/${session.id}`;
    link.textContent = session.title;
    cells[0].children[1].textContent = session.type;
    cells[0].lastChild.textContent = session.pool || "";
    const key = JSON.stringify([session.status, session.priority, session.progress,
      session.created_at, session.title, document.body.dataset.canWrite]);
    if (row.dataset.key === key) return;
    row.dataset.key = key;
    row.dataset.status = session.status;
    cells[1].replaceChildren(badge(session.status));
    cells[2].replaceChildren(el("span", { class: "priority", dataset: { priority:
      session.priority }, text: session.priority }));
    cells[3].replaceChildren(progressBar(session.progress));
    cells[4].textContent = when(session.created_at);
    syncActions(cells[5].firstChild, session);
  }

  async create(event) {
    event.preventDefault();
    const form = event.target;
    const title = form.title.value.trim();
    if (!title) {
      say("A session needs a title.", "error");
      form.title.focus();
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const payload = { title, type: form.type.value, priority: form.priority.value };
      if (currentPool()) payload.pool = currentPool(); // else the server's default
      let session = await api("POST", "/api/v1/sessions", payload);
      if (form.start.checked) {
        session = await api("POST", `/api/v1/sessions/${session.id}/start`);
      }
      form.title.value = "";
      say(`Session “${session.title}” created.`, "success");
      if (this.page === 1 && (!this.status || this.status === session.status) &&
          (!currentPool() || session.pool === currentPool()) &&
          !this.items.some((s) => s.id === session.id)) {
        this.items = [session, ...this.items].slice(0, PAGE_SIZE); // its event changes nothing
        this.total += 1;
        this.render();
      }
    } catch (error) {
      const text = failure("Could not create the session", error);
      if (text) say(text, "error");
    } finally {
      submit.disabled = false;
    }
  }
}
