/* The orchestrator dashboard: plain JavaScript modules, no build step, no dependencies.
 * This one starts it: the views, the token flow, the system strip. Only main.js imports it.
 *
 * Each view loads a snapshot over HTTP once and then follows WebSocket streams (plus
 * /ws/system for the health strip), which a SharedWorker holds for every tab of the origin
 * (streams.js). Ordering: the stream is opened first and the snapshot fetched once it is
 * open, so no event falls between the two; events that arrive while a snapshot is in flight
 * are replayed on top of it, where they set absolute values (a task's new status) and never
 * relative ones (a count). A dropped stream reconnects with ?last_event_id= and receives what
 * it missed; "events.dropped" means too much was missed, and the view reloads over HTTP.
 * Anything else fetched over HTTP is what events cannot tell, in the background, within the
 * rate budget (budget.js).
 */

import { start as startActivity, stop as stopActivity } from "./activity.js";
import { ActivityView } from "./activity_view.js";
import { AgentsView } from "./agents_view.js";
import { auth } from "./auth.js";
import { setLifecycle } from "./lifecycle.js";
import { settlePool } from "./pool.js";
import { initPoolPicker, renderPoolPicker } from "./pool_picker.js";
import { registerView, startRouting, stopRouting } from "./router.js";
import { SessionView } from "./session_view.js";
import { SessionsView } from "./sessions_view.js";
import { showConnection } from "./streams.js";
import { startSystemStrip, stopSystemStrip } from "./system_strip.js";
import { currentToken, forgetToken } from "./token.js";
import { $, config, notice } from "./util.js";

function startApp() {
  stopApp();
  auth.updateButton();
  auth.applyRole();
  settlePool(); // a token scoped to pools shows one of them
  renderPoolPicker();
  startSystemStrip();
  startActivity();
  startRouting();
  // A kept token that expired shows in the views' first requests (401), or, when the
  // sockets are refused first, in the probe streams.js makes then.
}

function stopApp() {
  stopRouting();
  stopSystemStrip();
  stopActivity();
  showConnection();
}

export function init() {
  setLifecycle(startApp, stopApp);
  initPoolPicker();
  registerView("sessions", new SessionsView());
  registerView("session", new SessionView());
  registerView("agents", new AgentsView());
  registerView("activity", new ActivityView());
  $("#message-close").addEventListener("click", () => { $("#message").hidden = true; });
  $("#auth-form").addEventListener("submit", (event) => auth.submit(event));
  $("#auth-cancel").addEventListener("click", () => startApp());
  $("#token-button").addEventListener("click", () => {
    if (currentToken()) {
      forgetToken();
      if (config.authRequired) auth.show("Signed out. Enter a token to continue.", false);
      else startApp();
      notice("Signed out.");
    } else {
      auth.show("A token is optional on this server; one that is sent must be valid.", false);
    }
  });
  if (config.authRequired && !currentToken()) {
    auth.show("", false);
  } else {
    startApp();
  }
}
