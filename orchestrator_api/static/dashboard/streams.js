/* Dashboard: the page's side of the WebSocket streams. The sockets live in a SharedWorker
 * (stream_worker.js) shared by every tab of this origin, so five tabs hold three sockets,
 * not ten; where SharedWorker is missing (or fails to start), the same hub runs in the
 * page (one socket per stream per tab). Shows the connection state, and says so plainly
 * when the server refuses a socket. */

import { auth } from "./auth.js";
import { StreamHub } from "./stream_hub.js";
import { currentToken } from "./token.js";
import { $, banner, config } from "./util.js";

const ALIVE_MS = 30000;

export const streams = new Set();
const bySub = new Map(); // sub id -> Stream
const taps = new Set();
const tabId = Math.random().toString(36).slice(2, 10);
let counter = 0;
let transport = null;

/** Every message this tab receives, once each (several subscriptions share one socket). */
export function tap(fn) {
  taps.add(fn);
  return () => taps.delete(fn);
}

function dispatch(data) {
  if (data.op === "hello" || data.op === "dropped") {
    if (data.op === "dropped") for (const stream of streams) stream.subscribe();
    return;
  }
  if (data.op === "backlog") {
    const stream = bySub.get(data.sub);
    if (stream && stream.handlers.onBacklog) stream.handlers.onBacklog(data.messages);
    return;
  }
  if (data.op === "event") for (const fn of taps) fn(data.message, data.path);
  for (const sub of data.subs || []) {
    const stream = bySub.get(sub);
    if (stream) stream.receive(data);
  }
  showConnection();
}

function workerTransport() {
  const url = new URL("stream_worker.js", import.meta.url);
  url.searchParams.set("v", config.version);
  const worker = new SharedWorker(url, { type: "module", name: "orchestrator-streams" });
  const port = worker.port;
  port.onmessage = (event) => dispatch(event.data);
  port.start();
  worker.onerror = () => fallBack(); // e.g. module workers unsupported
  setInterval(() => port.postMessage({ op: "alive" }), ALIVE_MS);
  window.addEventListener("pagehide", () => port.postMessage({ op: "bye" }));
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) for (const stream of streams) stream.subscribe();
  });
  return { shared: true, post: (message) => port.postMessage(message) };
}

function localTransport() {
  const hub = new StreamHub(window.location.origin);
  const client = { post: (message) => queueMicrotask(() => dispatch(message)) };
  window.addEventListener("pagehide", () => hub.receive(client, { op: "bye" }));
  return { shared: false, post: (message) => hub.receive(client, message) };
}

function fallBack() {
  if (transport && !transport.shared) return;
  transport = localTransport();
  for (const stream of streams) stream.subscribe();
}

function getTransport() {
  if (!transport) {
    try {
      transport = "SharedWorker" in window && !config.noSharedWorker
        ? workerTransport() : localTransport();
    } catch (error) {
      transport = localTransport();
    }
  }
  return transport;
}

/** True when the sockets are shared between tabs (then following more streams is free). */
export function sharedStreams() {
  return getTransport().shared;
}

/* ---------- one subscription ---------- */

export class Stream {
  /** handlers: onEvent(message), onReady(kind: "first" | "resumed" | "fresh"), onResync(),
   * onFatal(reason), onDown(info), onBacklog(messages). */
  constructor(path, handlers, options = {}) {
    this.path = path;
    this.handlers = handlers;
    this.backlog = Boolean(options.backlog);
    this.sub = null;
    this.up = false;
    this.opened = false;
    this.down = null;
    this.closed = false;
  }

  open() {
    streams.add(this);
    this.subscribe();
    showConnection();
  }

  subscribe() {
    if (this.closed) return;
    if (this.sub) bySub.delete(this.sub);
    counter += 1;
    this.sub = `${tabId}:${counter}`;
    bySub.set(this.sub, this);
    getTransport().post({ op: "subscribe", sub: this.sub, path: this.path,
      token: currentToken() || "", backlog: this.backlog && !this.opened });
  }

  receive(data) {
    const on = this.handlers;
    if (data.op === "event") {
      on.onEvent(data.message);
    } else if (data.op === "ready") {
      this.up = true;
      this.down = null;
      // A tab joining a live socket gets "first"; this subscription's own history decides.
      const kind = !this.opened ? "first" : data.kind === "first" ? "fresh" : data.kind;
      this.opened = true;
      if (on.onReady) on.onReady(kind);
    } else if (data.op === "resync") {
      if (on.onResync) on.onResync();
    } else if (data.op === "down") {
      this.up = false;
      this.down = data.info;
      if (on.onDown) on.onDown(data.info);
      // A refusal may be the token (401): HTTP says so, and a 401 brings the token form.
      if (data.info.state === "refused") auth.probe(); // at most once a minute
    } else if (data.op === "fatal") {
      this.close();
      if (on.onFatal) on.onFatal(data.reason);
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    streams.delete(this);
    if (this.sub) {
      bySub.delete(this.sub);
      getTransport().post({ op: "unsubscribe", sub: this.sub });
    }
    this.up = false;
    showConnection();
  }
}

/* ---------- the connection line and the refusal banner ---------- */

export function showConnection() {
  const line = $("#connection");
  const list = [...streams];
  let state = "live";
  const refused = list.find((s) => !s.up && s.down && s.down.state === "refused");
  if (list.length === 0) state = "idle";
  else if (refused) state = "refused";
  else if (list.some((s) => !s.up && s.opened)) state = "reconnecting";
  else if (list.some((s) => !s.up)) state = "connecting";
  const text = { live: "Live", idle: "Not connected", connecting: "Connecting…",
    reconnecting: "Reconnecting…", refused: "Refused" }[state];
  if (line.textContent !== text) {
    line.textContent = text;
    line.dataset.state = state;
  }
  banner("#stream-banner", refused ? refusalText(refused.down) : "");
}

function refusalText(info) {
  const at = new Date(info.retryAt).toLocaleTimeString();
  const why = info.code
    ? `closed it at once (code ${info.code}${info.reason ? `: ${info.reason}` : ""})`
    : "refused it (most likely its limit of WebSocket connections per client, " +
      "WS_MAX_CONNECTIONS_PER_CLIENT: other tabs, windows or programs hold them)";
  return `No live updates: the server ${why}. Figures that need the stream show “—” ` +
    `until it connects. Next try at ${at}.`;
}
