/* Dashboard: the streams of every tab of this origin, one socket per (path, token), each
 * relayed to every subscriber. It runs in the SharedWorker (stream_worker.js), where the
 * clients are the tabs' ports, or in a page without SharedWorker, with the page as its one
 * client. A client is anything with post(message).
 *
 * Client -> hub: {op: "subscribe", sub, path, token, backlog}, {op: "unsubscribe", sub},
 * {op: "bye"}. Hub -> client: {op: "ready", subs, kind}, {op: "event", subs, path, message},
 * {op: "resync", subs}, {op: "down", subs, info}, {op: "fatal", subs, reason},
 * {op: "backlog", sub, messages}. A socket nobody follows any more is closed after LINGER_MS
 * (a tab moving between views keeps its socket). */

import { ReconnectingSocket } from "./socket.js";

const LINGER_MS = 10000;
const BACKLOG = 1000; // the newest messages of each stream, for tabs that open later

export class StreamHub {
  constructor(origin) {
    this.origin = origin; // "http(s)://host:port"
    this.channels = new Map(); // key -> channel
    this.subs = new Map(); // sub id -> {client, channel}
  }

  receive(client, data) {
    if (data.op === "subscribe") this.subscribe(client, data);
    else if (data.op === "unsubscribe") this.unsubscribe(data.sub);
    else if (data.op === "bye") {
      for (const [sub, entry] of this.subs) if (entry.client === client) this.unsubscribe(sub);
    }
  }

  subscribe(client, { sub, path, token, backlog }) {
    if (this.subs.has(sub)) this.unsubscribe(sub);
    const key = `${path} ${token || ""}`;
    let channel = this.channels.get(key);
    if (!channel) {
      channel = this.open(key, path, token);
      this.channels.set(key, channel);
    }
    clearTimeout(channel.linger);
    channel.subs.set(sub, client);
    this.subs.set(sub, { client, channel });
    if (backlog && channel.backlog.length) {
      client.post({ op: "backlog", sub, messages: channel.backlog.slice() });
    }
    if (channel.socket.up) client.post({ op: "ready", subs: [sub], kind: "first" });
    else if (channel.fatal) client.post({ op: "fatal", subs: [sub], reason: channel.fatal });
    else if (channel.socket.down) client.post({ op: "down", subs: [sub], info: channel.socket.down });
  }

  unsubscribe(sub) {
    const entry = this.subs.get(sub);
    if (!entry) return;
    this.subs.delete(sub);
    const { channel } = entry;
    channel.subs.delete(sub);
    if (channel.subs.size === 0) {
      clearTimeout(channel.linger);
      channel.linger = setTimeout(() => {
        if (channel.subs.size) return;
        channel.socket.close();
        this.channels.delete(channel.key);
      }, channel.fatal ? 0 : LINGER_MS);
    }
  }

  open(key, path, token) {
    const channel = { key, path, subs: new Map(), backlog: [], linger: null, fatal: null };
    const send = (build) => {
      const byClient = new Map();
      for (const [sub, client] of channel.subs) {
        if (!byClient.has(client)) byClient.set(client, []);
        byClient.get(client).push(sub);
      }
      for (const [client, subs] of byClient) client.post(build(subs));
    };
    const url = (lastId) => {
      const address = new URL(path, this.origin);
      address.protocol = address.protocol === "https:" ? "wss:" : "ws:";
      if (token) address.searchParams.set("token", token);
      if (lastId !== null) address.searchParams.set("last_event_id", lastId);
      return address.toString();
    };
    channel.socket = new ReconnectingSocket(url, {
      onReady: (kind) => send((subs) => ({ op: "ready", subs, kind })),
      onMessage: (message) => {
        channel.backlog.push(message);
        if (channel.backlog.length > BACKLOG) channel.backlog.splice(0, BACKLOG / 10);
        send((subs) => ({ op: "event", subs, path, message }));
      },
      onResync: () => {
        channel.backlog = [];
        send((subs) => ({ op: "resync", subs }));
      },
      onDown: (info) => send((subs) => ({ op: "down", subs, info })),
      onFatal: (reason) => {
        channel.fatal = reason;
        send((subs) => ({ op: "fatal", subs, reason }));
      },
    });
    channel.socket.open();
    return channel;
  }
}
