/* Dashboard: WebSocket streams that reconnect with ?last_event_id= and show the
 * connection state. */

import { auth } from "./app.js";
import { $ } from "./util.js";

/* ---------- WebSocket streams ---------- */

export const streams = new Set();

export function showConnection() {
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

export class Stream {
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
