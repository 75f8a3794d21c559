/* Dashboard: one WebSocket stream that reconnects with ?last_event_id=. No DOM: it runs
 * in the SharedWorker (stream_worker.js) and, where there is none, in the page.
 *
 * A socket that closes before it opened was refused before the upgrade (401, 403, 429 for
 * WS_MAX_CONNECTIONS_PER_CLIENT, 503) or the server is away; the browser does not say
 * which, but /health (open, not rate limited) tells the two apart. A socket closed 1008 or
 * 1013 within a moment of opening is a refusal too. A socket that was live and then fails
 * to reconnect while /health answers is more likely a server restarting (it refuses new
 * sockets while it drains): refused only after REFUSALS_AFTER_LIVE tries. Refused sockets
 * try again at growing intervals, up to the 20 s of the server's Retry-After. */

const REFUSED_FIRST_MS = 2500;
const REFUSED_MAX_MS = 20000;
const REFUSALS_AFTER_LIVE = 3;
const MAX_BACKOFF_MS = 5000;
const QUICK_CLOSE_MS = 1500;

export class ReconnectingSocket {
  /** url(lastId) -> string; handlers: onReady(kind: "first" | "resumed" | "fresh"),
   * onMessage(message), onResync(), onDown(info), onFatal(reason). */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.lastId = null;
    this.ws = null;
    this.up = false;
    this.opened = false;
    this.closed = false;
    this.failures = 0;
    this.refusals = 0;
    this.timer = null;
    this.down = null; // the last onDown info while not up
  }

  open() {
    if (this.closed) return;
    const resuming = this.lastId !== null;
    const ws = new WebSocket(this.url(this.lastId));
    let openedAt = 0;
    let heard = false;
    this.ws = ws;
    ws.onopen = () => {
      openedAt = Date.now();
      this.up = true;
      this.down = null;
      this.refusals = 0;
      const kind = !this.opened ? "first" : resuming ? "resumed" : "fresh";
      this.opened = true;
      this.handlers.onReady(kind);
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (!message || message.type === "pong" || message.type === "error") return;
      heard = true;
      this.failures = 0;
      if (/^\d+$/.test(String(message.id))) this.lastId = String(message.id);
      if (message.type === "events.dropped") {
        this.handlers.onResync();
        return;
      }
      this.handlers.onMessage(message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.up = false;
      if (this.closed) return;
      if (event.code === 4404 || event.code === 4400) {
        this.closed = true;
        this.handlers.onFatal(event.reason || "Not found");
        return;
      }
      this.failures += 1;
      const quick = openedAt && !heard && Date.now() - openedAt < QUICK_CLOSE_MS;
      if (openedAt && !quick) {
        // It was live: 1001 (shutting down), 1008 (pings), 1013 (did not keep up).
        this.failures = Math.min(this.failures, 1);
        this.retry(event.code === 1001 ? 250 : 400, { state: "reconnecting", code: event.code });
      } else if (openedAt && (event.code === 1008 || event.code === 1013)) {
        this.refused({ code: event.code, reason: event.reason || "" });
      } else {
        this.diagnose();
      }
    };
  }

  /** Closed before it opened: refused if the server answers /health, else away. */
  async diagnose() {
    let serverUp = false;
    try {
      const response = await fetch(new URL("/health", this.url(null)
        .replace(/^ws/, "http")).toString(), { cache: "no-store" });
      serverUp = response.ok;
    } catch (error) {
      serverUp = false;
    }
    if (this.closed) return;
    if (serverUp && (!this.opened || this.failures >= REFUSALS_AFTER_LIVE)) {
      this.refused({ code: 0, reason: "" });
    } else {
      const backoff = Math.min(MAX_BACKOFF_MS, 400 * 2 ** (this.failures - 1));
      this.retry(backoff, { state: this.opened ? "reconnecting" : "connecting", code: 0 });
    }
  }

  refused(info) {
    this.refusals += 1;
    const delay = Math.min(REFUSED_MAX_MS, REFUSED_FIRST_MS * 2 ** (this.refusals - 1));
    this.retry(delay, { state: "refused", ...info });
  }

  retry(delay, info) {
    const wait = delay + Math.random() * 250;
    this.down = { ...info, failures: this.failures, retryAt: Date.now() + wait };
    this.handlers.onDown(this.down);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), wait);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.up = false;
  }
}
