/* The orchestrator dashboard: plain JavaScript, no build step, no dependencies.
 *
 * Each view loads a snapshot over HTTP and follows one WebSocket stream (plus /ws/system
 * for the health strip). Ordering: the stream is opened first and the snapshot fetched once
 * it is open, so no event falls between the two; events that arrive while a snapshot is in
 * flight are replayed on top of it. Events carry absolute values (a task's new status), so
 * replaying one the snapshot already holds is harmless. A dropped stream reconnects with
 * ?last_event_id= and receives what it missed; "events.dropped" means too much was missed,
 * and the view reloads over HTTP.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "orchestrator.dashboard.token";
  const PAGE_SIZE = 20;
  const REFRESH_MS = 1500; // at most one coalesced reload per view and this period
  const AGENTS_BACKSTOP_MS = 15000; // held-task counts change without an agent event
  const TASK_COLORS_ORDER = [
    "COMPLETED", "IN_PROGRESS", "ASSIGNED", "PENDING", "BLOCKED", "FAILED", "CANCELLED",
  ];
  const SESSION_ACTIONS = ["start", "pause", "resume", "cancel", "complete"];
  const PAST = { start: "started", pause: "paused", resume: "resumed", cancel: "cancelled",
    complete: "completed" };
  const HELD = new Set(["ASSIGNED", "IN_PROGRESS"]);

  const body = document.body;
  const config = {
    authRequired: body.dataset.authRequired === "true",
    flowerPort: body.dataset.flowerPort || "5555",
    flowerUrl: body.dataset.flowerUrl || "",
  };
  const $ = (selector) => document.querySelector(selector);

  /* ---------- small helpers ---------- */

  function el(tag, attrs, ...children) {
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

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function badge(status) {
    return el("span", { class: "badge", dataset: { status }, text: status });
  }

  function shortId(id) {
    return id ? String(id).slice(0, 8) : "";
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  /** Calls fn at most once per `wait` ms, never two at once; calls during a run or the
   * wait are coalesced into one more run. */
  function throttled(fn, wait) {
    let timer = null;
    let running = false;
    let again = false;
    let last = 0;
    const run = async () => {
      timer = null;
      running = true;
      last = Date.now();
      try {
        await fn();
      } finally {
        running = false;
        if (again) {
          again = false;
          schedule();
        }
      }
    };
    const schedule = () => {
      if (running) {
        again = true;
      } else if (!timer) {
        timer = setTimeout(run, Math.max(0, last + wait - Date.now()));
      }
    };
    schedule.cancel = () => {
      clearTimeout(timer);
      timer = null;
      again = false;
    };
    return schedule;
  }

  /* ---------- messages ---------- */

  let messageTimer = null;

  function say(text, kind = "info") {
    const box = $("#message");
    $("#message-text").textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
    clearTimeout(messageTimer);
    if (kind !== "error") messageTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function notice(text) {
    $("#notice").textContent = text;
  }

  /* ---------- HTTP ---------- */

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, payload, token = auth.token) {
    const headers = { Accept: "application/json" };
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: payload === undefined ? undefined : JSON.stringify(payload),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "NETWORK", "The server did not answer (is it running?)");
    }
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (error) {
        data = null;
      }
    }
    if (response.ok) return data;
    const detail = (data && data.error) || {};
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    const error = new ApiError(
      response.status,
      detail.code || `HTTP_${response.status}`,
      detail.message || response.statusText || `HTTP ${response.status}`,
      retryAfter,
    );
    if (response.status === 401 && token === auth.token) auth.refused(error.message);
    throw error;
  }

  /** Every item of a paginated list (pages of 100, at most 20 pages). */
  async function apiAll(path, params = {}) {
    const items = [];
    for (let page = 1; page <= 20; page += 1) {
      const query = new URLSearchParams({ ...params, page, page_size: 100 });
      const data = await api("GET", `${path}?${query}`);
      items.push(...data.items);
      if (!data.has_more) break;
    }
    return items;
  }

  /* ---------- WebSocket streams ---------- */

  const streams = new Set();

  function showConnection() {
    const line = $("#connection");
    const list = [...streams];
    let state = "live";
    if (list.length === 0) state = "idle";
    else if (list.some((s) => !s.up && s.opened)) state = "reconnecting";
    else if (list.some((s) => !s.up)) state = "connecting";
    const text = { live: "Live", idle: "Not connected", connecting: "Connecting…",
      reconnecting: "Reconnecting…" }[state];
    if (line.textContent !== text) {
      line.textContent = text;
      line.dataset.state = state;
    }
  }

  class Stream {
    /** handlers: onEvent(message), onReady(kind: "first" | "resumed" | "fresh"),
     * onResync(), onFatal(reason). */
    constructor(path, handlers) {
      this.path = path;
      this.handlers = handlers;
      this.lastId = null;
      this.ws = null;
      this.up = false;
      this.closed = false;
      this.opened = false;
      this.failures = 0;
      this.timer = null;
    }

    url() {
      const url = new URL(this.path, window.location.href);
      url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
      if (auth.token) url.searchParams.set("token", auth.token);
      if (this.lastId !== null) url.searchParams.set("last_event_id", this.lastId);
      return url.toString();
    }

    open() {
      if (this.closed) return;
      streams.add(this);
      showConnection();
      const resuming = this.lastId !== null;
      const ws = new WebSocket(this.url());
      let opened = false;
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        this.failures = 0;
        this.up = true;
        showConnection();
        const kind = !this.opened ? "first" : resuming ? "resumed" : "fresh";
        this.opened = true;
        if (this.handlers.onReady) this.handlers.onReady(kind);
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        if (message.type === "pong" || message.type === "error") return;
        if (/^\d+$/.test(String(message.id))) this.lastId = String(message.id);
        if (message.type === "events.dropped") {
          if (this.handlers.onResync) this.handlers.onResync();
          return;
        }
        this.handlers.onEvent(message);
      };
      ws.onclose = (event) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.up = false;
        showConnection();
        if (this.closed) return;
        if (event.code === 4404 || event.code === 4400) {
          this.closed = true;
          streams.delete(this);
          showConnection();
          if (this.handlers.onFatal) this.handlers.onFatal(event.reason || "Not found");
          return;
        }
        this.failures += 1;
        // Refused before the upgrade (a token gone bad?) looks like any failed connect:
        // an HTTP call tells which, and a 401 there brings the token form.
        if (!opened && this.failures >= 3) auth.probe();
        const backoff = event.code === 1001 ? 250 : Math.min(5000, 400 * 2 ** (this.failures - 1));
        this.timer = setTimeout(() => this.open(), backoff + Math.random() * 250);
      };
    }

    close() {
      this.closed = true;
      clearTimeout(this.timer);
      streams.delete(this);
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.close(1000);
      }
      this.up = false;
      showConnection();
    }
  }

  /* ---------- a view fed by a snapshot and a stream ---------- */

  class LiveView {
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

  function progressBar(progress) {
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

  function countTasks(tasks) {
    const byStatus = {};
    for (const task of tasks) byStatus[task.status] = (byStatus[task.status] || 0) + 1;
    return { total: tasks.length, by_status: byStatus };
  }

  /* ---------- session actions (list and detail) ---------- */

  function actionButtons(getSession, onDone) {
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

  function labelActions(group, title) {
    for (const button of group.querySelectorAll("button")) {
      button.setAttribute("aria-label", `${button.textContent} session ${title}`);
    }
  }

  /* ---------- Sessions view ---------- */

  class SessionsView extends LiveView {
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
      return api("GET", `/api/v1/sessions?${new URLSearchParams(params)}`);
    }

    snapshot(data) {
      this.items = data.items;
      this.total = data.total;
      this.hasMore = data.has_more;
    }

    apply(message) {
      const p = message.payload || {};
      const onPage = this.items.find((s) => s.id === p.session_id);
      if (message.type === "session.created") {
        if (!this.status || this.status === p.status) this.refresh(); // pages shift by one
      } else if (message.type === "session.status_changed") {
        if (onPage) onPage.status = p.status;
        // the row's other fields (progress after a cancel) and the filter's membership
        if (onPage || (this.status && p.status === this.status)) this.refresh();
      } else if (message.type.startsWith("task.") && onPage) {
        this.refresh(); // progress counts come from the server: events hold no counts
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
      $("#sessions-empty").hidden = this.items.length > 0 || this.stale;
      const pages = Math.max(1, Math.ceil(this.total / PAGE_SIZE));
      $("#page-info").textContent =
        `Page ${this.page} of ${pages} · ${plural(this.total, "session", "sessions")}`;
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
        if (this.status) this.refresh();
      });
      row.append(
        el("th", { scope: "row", class: "title-cell" }, el("a", {}), el("span", { class: "sub" })),
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
      cells[0].lastChild.textContent = session.type;
      const key = JSON.stringify([session.status, session.priority, session.progress,
        session.created_at, session.title]);
      if (row.dataset.key === key) return;
      row.dataset.key = key;
      row.dataset.status = session.status;
      cells[1].replaceChildren(badge(session.status));
      cells[2].replaceChildren(el("span", { class: "priority", dataset: { priority:
        session.priority }, text: session.priority }));
      cells[3].replaceChildren(progressBar(session.progress));
      cells[4].textContent = when(session.created_at);
      labelActions(cells[5].firstChild, session.title);
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
        let session = await api("POST", "/api/v1/sessions", {
          title,
          type: form.type.value,
          priority: form.priority.value,
        });
        if (form.start.checked) {
          session = await api("POST", `/api/v1/sessions/${session.id}/start`);
        }
        form.title.value = "";
        say(`Session “${session.title}” created.`, "success");
        this.refresh();
      } catch (error) {
        if (error.status !== 401) say(`Could not create the session: ${error.message}`, "error");
      } finally {
        submit.disabled = false;
      }
    }
  }

  /* ---------- Session detail view: the task graph ---------- */

  class SessionView extends LiveView {
    constructor() {
      super($("#session-view"));
      this.id = null;
      this.session = null;
      this.tasks = new Map();
      this.agents = new Map();
      this.askedAgents = new Set();
      this.loadAgents = throttled(() => this.fetchAgents(), REFRESH_MS);
      this.actions = actionButtons(() => this.session, (updated) => {
        this.session = updated;
        this.render();
      });
      $("#session-actions").append(this.actions);
      $("#task-form").addEventListener("submit", (event) => this.createTask(event));
      $("#decompose-form").addEventListener("submit", (event) => this.decompose(event));
      $("#decompose-template").addEventListener("change", () => this.showSteps());
      window.addEventListener("resize", () => this.active && this.drawEdges());
      this.showSteps();
    }

    enter(params, id) {
      this.show();
      this.id = id;
      this.session = null;
      this.tasks = new Map();
      $("#session-title-heading").textContent = "Session";
      for (const button of this.actions.querySelectorAll("button")) button.disabled = true;
      $("#session-summary").replaceChildren();
      $("#graph").replaceChildren();
      this.follow(`/ws/sessions/${id}`);
      this.loadAgents();
    }

    async fetch() {
      const [session, tasks] = await Promise.all([
        api("GET", `/api/v1/sessions/${this.id}`),
        apiAll("/api/v1/tasks", { session_id: this.id }),
      ]);
      return { session, tasks };
    }

    snapshot(data) {
      this.session = data.session;
      this.tasks = new Map(data.tasks.map((task) => [task.id, task]));
    }

    async fetchAgents() {
      try {
        const agents = await apiAll("/api/v1/agents");
        for (const agent of agents) this.agents.set(agent.id, agent);
        if (this.active) this.queueRender();
      } catch (error) {
        /* names are a nicety: ids are shown meanwhile */
      }
    }

    agentName(id) {
      if (!id) return "";
      const agent = this.agents.get(id);
      if (agent) return agent.name;
      if (!this.askedAgents.has(id)) {
        this.askedAgents.add(id);
        this.loadAgents();
      }
      return `agent ${shortId(id)}`;
    }

    apply(message) {
      const p = message.payload || {};
      if (message.type === "session.status_changed") {
        if (this.session) this.session.status = p.status;
        this.refresh(); // started_at, completed_at, error
      } else if (message.type === "task.created" || message.type === "task.decomposed") {
        this.refresh();
      } else if (message.type === "task.status_changed" || message.type === "task.assigned") {
        const task = this.tasks.get(p.task_id);
        if (!task) {
          this.refresh();
          return;
        }
        task.status = p.status;
        if ("agent_id" in p) task.assigned_agent_id = p.agent_id;
      }
    }

    loadFailed(error) {
      if (error.status === 404) this.fatal(error.message);
      else super.loadFailed(error);
    }

    fatal(reason) {
      $("#session-title-heading").textContent = "Session not found";
      say(`This session does not exist (${reason}).`, "error");
    }

    render() {
      if (!this.session) return;
      const session = this.session;
      const tasks = [...this.tasks.values()];
      $("#session-title-heading").textContent = session.title;
      labelActions(this.actions, session.title);
      if (!this.actions.querySelector("button[aria-busy]")) {
        for (const button of this.actions.querySelectorAll("button")) button.disabled = false;
      }
      const progress = countTasks(tasks);
      const summary = [
        ["Status", badge(session.status)],
        ["Priority", session.priority],
        ["Type", session.type],
        ["Progress", progressBar(progress)],
        ["Created", when(session.created_at)],
      ];
      if (session.started_at) summary.push(["Started", when(session.started_at)]);
      if (session.completed_at) summary.push(["Finished", when(session.completed_at)]);
      if (session.error) summary.push(["Error", session.error]);
      $("#session-summary").replaceChildren(...summary.map(([term, value]) =>
        el("div", { class: "summary-item" }, el("dt", { text: term }), el("dd", {}, value))));
      $("#session-summary").dataset.status = session.status;
      this.renderGraph(tasks);
      this.renderFormOptions(tasks);
    }

    renderGraph(tasks) {
      const graph = $("#graph");
      const children = new Map();
      for (const task of tasks) {
        const parent = task.parent_id && this.tasks.has(task.parent_id) ? task.parent_id : null;
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(task);
      }
      for (const list of children.values()) {
        list.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
      }
      // A group (the root tasks, or one task's subtasks) is laid out in lanes: a task sits
      // one lane after its latest dependency in the group. The lanes of the root tasks are
      // columns (left to right), those of subtasks rows (top to bottom), and so on, turn
      // and turn about: a parent's tall frame then never stands between two root tasks.
      const group = (list, level) => {
        const depth = layerDepths(list);
        const direction = level % 2 === 0 ? "columns" : "rows";
        const lanes = [];
        // in each lane, single tasks before parents: their edges stay clear of the frames
        const ordered = [...list].sort((a, b) => children.has(a.id) - children.has(b.id));
        for (const task of ordered) {
          const d = depth.get(task.id);
          while (lanes.length <= d) lanes.push([]);
          const item = this.node(task, children.get(task.id), (sub) => group(sub, level + 1));
          item.firstChild.dataset.flow = direction;
          lanes[d].push(item);
        }
        return el("div", { class: `layer-group ${direction}`, role: "list" },
          lanes.map((items) => el("div", { class: "layer", role: "none" }, items)));
      };
      const roots = children.get(null) || [];
      const canvas = el("div", { class: "graph-canvas" }, group(roots, 0));
      graph.replaceChildren(canvas);
      $("#graph-empty").hidden = tasks.length > 0;
      this.drawEdges();
    }

    node(task, subtasks, group) {
      const after = (task.depends_on || []).map((id) => this.tasks.get(id)).filter(Boolean);
      const holder = task.assigned_agent_id ? this.agentName(task.assigned_agent_id) : "";
      let agentLine = null;
      if (holder && HELD.has(task.status)) agentLine = `held by ${holder}`;
      else if (holder && task.status === "COMPLETED") agentLine = `done by ${holder}`;
      const card = el(
        "div",
        { class: "node", dataset: { taskId: task.id, status: task.status } },
        el("div", { class: "node-head" },
          el("span", { class: "node-title", text: task.title }),
          badge(task.status)),
        el("div", { class: "node-meta" },
          agentLine ? el("span", { class: "node-agent", text: agentLine }) : null,
          task.status === "IN_PROGRESS" && task.progress
            ? el("span", { class: "node-progress", text: `${task.progress}%` }) : null,
          task.decomposition_template
            ? el("span", { class: "node-template", text: task.decomposition_template }) : null,
          el("span", { class: "node-caps", text: (task.required_capabilities || []).join(", ") })),
        after.length
          ? el("span", { class: "visually-hidden",
            text: `after ${after.map((t) => t.title).join(", ")}` })
          : null,
      );
      const item = el("div", { class: "graph-item", role: "listitem" }, card);
      if (subtasks && subtasks.length) {
        card.classList.add("has-children");
        card.append(el("div", { class: "subtasks", "aria-label": `Subtasks of ${task.title}` },
          group(subtasks)));
      }
      return item;
    }

    drawEdges() {
      const canvas = document.querySelector("#graph .graph-canvas");
      if (!canvas) return;
      const old = canvas.querySelector("svg.edges");
      if (old) old.remove();
      const box = canvas.getBoundingClientRect();
      const layer = svg("svg", {
        class: "edges",
        width: canvas.scrollWidth,
        height: canvas.scrollHeight,
        "aria-hidden": "true",
      });
      const defs = svg("defs");
      const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
      marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
      defs.append(marker);
      layer.append(defs);
      const place = (id) => {
        const node = canvas.querySelector(`.node[data-task-id="${id}"]`);
        if (!node) return null;
        const rect = node.getBoundingClientRect();
        const head = node.querySelector(".node-head").getBoundingClientRect();
        // a parent's edges meet its heading, not the middle of its subtasks
        const parent = node.classList.contains("has-children");
        return {
          flow: node.dataset.flow,
          left: rect.left - box.left,
          right: rect.right - box.left,
          top: rect.top - box.top,
          bottom: rect.bottom - box.top,
          x: (parent ? head.left + 60 : (rect.left + rect.right) / 2) - box.left,
          y: (parent ? (head.top + head.bottom) / 2 : (rect.top + rect.bottom) / 2) - box.top,
        };
      };
      for (const task of this.tasks.values()) {
        const to = place(task.id);
        if (!to) continue;
        for (const dep of task.depends_on || []) {
          const from = place(dep);
          if (!from) continue;
          const source = this.tasks.get(dep);
          const siblings = (source.parent_id || null) === (task.parent_id || null);
          const across = siblings ? to.flow === "columns" : to.left >= from.right;
          let d;
          if (across) { // lanes left to right: right edge to left edge
            const bend = Math.max(16, (to.left - from.right) / 2);
            d = `M ${from.right} ${from.y} C ${from.right + bend} ${from.y}, ` +
              `${to.left - 2 - bend} ${to.y}, ${to.left - 2} ${to.y}`;
          } else { // lanes top to bottom: bottom edge to top edge
            const bend = Math.max(14, Math.abs(to.top - from.bottom) / 2);
            d = `M ${from.x} ${from.bottom} C ${from.x} ${from.bottom + bend}, ` +
              `${to.x} ${to.top - 2 - bend}, ${to.x} ${to.top - 2}`;
          }
          const path = svg("path", { d, class: "edge", "marker-end": "url(#arrow)" });
          path.dataset.from = dep;
          path.dataset.to = task.id;
          layer.append(path);
        }
      }
      canvas.prepend(layer);
    }

    renderFormOptions(tasks) {
      const sorted = [...tasks].sort((a, b) => a.created_at.localeCompare(b.created_at));
      const fill = (select, list, first) => {
        const key = JSON.stringify(list.map((t) => [t.id, t.title, t.status]));
        if (select.dataset.key === key) return; // an open list is left alone
        select.dataset.key = key;
        const chosen = new Set([...select.selectedOptions].map((o) => o.value));
        const options = list.map((t) => el("option", {
          value: t.id, text: `${t.title} (${t.status})`, selected: chosen.has(t.id) }));
        select.replaceChildren(...(first ? [first] : []), ...options);
      };
      const open = sorted.filter((t) => !["COMPLETED", "FAILED", "CANCELLED"].includes(t.status));
      fill($("#task-depends"), open);
      const parents = open.filter((t) => !HELD.has(t.status));
      fill($("#task-parent"), parents, el("option", { value: "", text: "(none)" }));
      const hasChildren = new Set(sorted.map((t) => t.parent_id).filter(Boolean));
      const decomposable = sorted.filter(
        (t) => t.status === "PENDING" && !t.decomposition_template && !hasChildren.has(t.id));
      fill($("#decompose-task"), decomposable);
    }

    showSteps() {
      const option = $("#decompose-template").selectedOptions[0];
      $("#template-steps").textContent = option ? `Subtasks: ${option.dataset.steps}` : "";
    }

    async createTask(event) {
      event.preventDefault();
      const form = event.target;
      const title = form.title.value.trim();
      if (!title) {
        say("A task needs a title.", "error");
        form.title.focus();
        return;
      }
      const capabilities = [...form.querySelectorAll("input[name=capability]:checked")]
        .map((box) => box.value);
      const payload = { session_id: this.id, title, complexity: form.complexity.value };
      if (capabilities.length) payload.required_capabilities = capabilities;
      const dependsOn = [...$("#task-depends").selectedOptions].map((o) => o.value);
      if (dependsOn.length) payload.depends_on = dependsOn;
      if (form.parent_id.value) payload.parent_id = form.parent_id.value;
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const task = await api("POST", "/api/v1/tasks", payload);
        this.tasks.set(task.id, task);
        form.title.value = "";
        say(`Task “${task.title}” created.`, "success");
        this.queueRender();
      } catch (error) {
        if (error.status !== 401) say(`Could not create the task: ${error.message}`, "error");
      } finally {
        submit.disabled = false;
      }
    }

    async decompose(event) {
      event.preventDefault();
      const form = event.target;
      const taskId = form.task_id.value;
      if (!taskId) {
        say("Choose a pending task to decompose.", "error");
        return;
      }
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const task = await api("POST", `/api/v1/tasks/${taskId}/decompose`,
          { template: form.template.value });
        say(`“${task.title}” is being decomposed (${form.template.value}); its subtasks appear ` +
          "as the worker makes them.", "success");
      } catch (error) {
        if (error.status !== 401) say(`Could not decompose: ${error.message}`, "error");
      } finally {
        submit.disabled = false;
      }
    }
  }

  /** Rows of a group: a task sits one row below its latest dependency in the group. */
  function layerDepths(list) {
    const ids = new Set(list.map((t) => t.id));
    const byId = new Map(list.map((t) => [t.id, t]));
    const depth = new Map();
    const visit = (task, trail) => {
      if (depth.has(task.id)) return depth.get(task.id);
      if (trail.has(task.id)) return 0; // the server refuses cycles; never loop anyway
      trail.add(task.id);
      let d = 0;
      for (const dep of task.depends_on || []) {
        if (ids.has(dep)) d = Math.max(d, visit(byId.get(dep), trail) + 1);
      }
      depth.set(task.id, d);
      return d;
    };
    for (const task of list) visit(task, new Set());
    return depth;
  }

  /* ---------- Agents view ---------- */

  class AgentsView extends LiveView {
    constructor() {
      super($("#agents-view"));
      this.agents = new Map();
      this.ticker = null;
      this.backstop = null;
    }

    enter() {
      this.show();
      this.render();
      this.follow("/ws/agents");
      this.ticker = setInterval(() => this.tick(), 1000);
      this.backstop = setInterval(() => this.refresh(), AGENTS_BACKSTOP_MS);
    }

    leave() {
      super.leave();
      clearInterval(this.ticker);
      clearInterval(this.backstop);
    }

    fetch() {
      return apiAll("/api/v1/agents");
    }

    snapshot(agents) {
      this.agents = new Map(agents.map((agent) => [agent.id, agent]));
    }

    apply(message) {
      const p = message.payload || {};
      const agent = this.agents.get(p.agent_id);
      if (message.type === "agent.deregistered") {
        this.agents.delete(p.agent_id);
        return;
      }
      if (!agent || message.type === "agent.registered") {
        this.refresh();
        return;
      }
      if (p.status) agent.status = p.status;
      if (typeof p.current_load === "number") agent.current_load = p.current_load;
      if (typeof p.active_tasks === "number") agent.active_tasks = p.active_tasks;
      if (message.type === "agent.heartbeat") agent.last_heartbeat_at = message.timestamp;
      // A status change is a change of held tasks (or load): the count comes from the server.
      if (message.type === "agent.status_changed") this.refresh();
    }

    render() {
      const tbody = $("#agents-body");
      const agents = [...this.agents.values()].sort(
        (a, b) => b.created_at.localeCompare(a.created_at) || a.id.localeCompare(b.id));
      tbody.replaceChildren(...agents.map((agent) => {
        const capacity = agent.max_concurrent_tasks || 1;
        return el(
          "tr",
          { dataset: { agentId: agent.id, status: agent.status } },
          el("th", { scope: "row" }, el("span", { class: "agent-name", text: agent.name }),
            el("span", { class: "sub", text: agent.type })),
          el("td", { class: "status-cell" }, badge(agent.status)),
          el("td", { class: "caps-cell" },
            el("ul", { class: "chips" }, (agent.capabilities || []).map((c) =>
              el("li", { class: "chip", text: c })))),
          el("td", { class: "load-cell" },
            meter(agent.current_load, 100, `${agent.current_load}%`)),
          el("td", { class: "held-cell" },
            meter(agent.active_tasks, capacity, `${agent.active_tasks} / ${capacity}`)),
          el("td", { class: "heartbeat-cell", dataset: { at: agent.last_heartbeat_at || "" },
            text: ago(agent.last_heartbeat_at) }),
        );
      }));
      $("#agents-empty").hidden = agents.length > 0 || this.stale;
      const online = agents.filter((a) => a.status !== "OFFLINE").length;
      $("#agents-count").textContent =
        `${plural(agents.length, "agent", "agents")} registered, ${online} online`;
    }

    tick() {
      for (const cell of document.querySelectorAll("#agents-body .heartbeat-cell")) {
        const text = ago(cell.dataset.at);
        if (cell.textContent !== text) cell.textContent = text;
      }
    }
  }

  function meter(value, max, text) {
    const share = Math.max(0, Math.min(1, (value || 0) / (max || 1)));
    const level = share >= 1 ? "full" : share >= 0.75 ? "high" : "ok";
    return el("div", { class: "meter" },
      el("span", { class: "meter-text", text }),
      el("span", { class: "meter-bar", "aria-hidden": "true" },
        el("span", { class: "meter-fill", dataset: { level },
          style: { width: `${share * 100}%` } })));
  }

  /* ---------- the system strip ---------- */

  const system = {
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

  const auth = {
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

  const views = {};
  let current = null;
  let currentKey = null;
  let running = false;

  function query(params) {
    const entries = Object.entries(params).filter(([, v]) => v !== "" && v !== undefined);
    return entries.length ? `?${new URLSearchParams(entries)}` : "";
  }

  function go(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  }

  function parseHash() {
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

  function route() {
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

  function startApp(tokenChecked = false) {
    stopApp();
    running = true;
    auth.updateButton();
    system.start();
    route();
    // A kept token may have expired: a refused WebSocket says nothing of why, HTTP does.
    if (auth.token && !tokenChecked) auth.probe();
  }

  function stopApp() {
    running = false;
    if (current) current.leave();
    current = null;
    currentKey = null;
    system.stop();
    showConnection();
  }

  /* ---------- start ---------- */

  function init() {
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

  init();
})();
