/* Dashboard: the SharedWorker that holds the WebSocket streams for every tab of this origin
 * (stream_hub.js), so that any number of tabs use one socket per stream against
 * WS_MAX_CONNECTIONS_PER_CLIENT. Each tab talks to it over its own port; a tab says "bye"
 * when it goes away (pagehide), and a port that stays silent for PORT_TIMEOUT_MS (a tab
 * that crashed) loses its subscriptions; a tab that was only asleep re-subscribes. */

import { StreamHub } from "./stream_hub.js";

const PORT_TIMEOUT_MS = 5 * 60 * 1000; // hidden tabs' timers may run once a minute
const SWEEP_MS = 60 * 1000;

const hub = new StreamHub(self.location.origin);
const clients = new Set();

self.onconnect = (event) => {
  const port = event.ports[0];
  const client = {
    heard: Date.now(),
    post: (message) => port.postMessage(message),
  };
  clients.add(client);
  port.onmessage = (message) => {
    client.heard = Date.now();
    if (message.data.op === "alive") return;
    hub.receive(client, message.data);
    if (message.data.op === "bye") clients.delete(client);
  };
  port.start();
  client.post({ op: "hello" });
};

setInterval(() => {
  for (const client of clients) {
    if (Date.now() - client.heard > PORT_TIMEOUT_MS) {
      hub.receive(client, { op: "bye" });
      clients.delete(client);
      client.post({ op: "dropped" });
    }
  }
}, SWEEP_MS);
