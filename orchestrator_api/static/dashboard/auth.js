/* Dashboard: the form that asks for a token, checks it and keeps it (token.js), the page's
 * controls following the token's role, and the probe that tells a refused socket's cause. */

import { api } from "./http.js";
import { startApp, stopApp } from "./lifecycle.js";
import { canWrite, currentToken, forgetToken, keepToken, onRefused, role } from "./token.js";
import { $, body, config, notice } from "./util.js";

const PROBE_EVERY_MS = 60000;

export const auth = {
  probing: false,
  lastProbe: 0,

  /** The page's controls follow the role: CSS hides .write-control where it may not. */
  applyRole() {
    body.dataset.canWrite = canWrite() ? "true" : "false";
    const name = role();
    $("#role").textContent = name ? `${name}${canWrite() ? "" : " (read only)"}` : "";
    $("#role").hidden = !name;
  },

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
    const hadToken = Boolean(currentToken());
    forgetToken();
    this.show(hadToken
      ? `The server refused the token: ${message}. Enter another token.`
      : `This server requires a token: ${message}.`, true);
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
    keepToken(token);
    error.textContent = "";
    notice("Token accepted.");
    startApp();
  },

  /** After refused WebSocket connects: a 401 over HTTP brings the token form. At most
   * once a minute (it spends the rate budget). */
  async probe() {
    if (this.probing || Date.now() - this.lastProbe < PROBE_EVERY_MS) return;
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
    $("#token-button").textContent = currentToken() ? "Sign out" : "Set token";
  },
};

onRefused((message) => auth.refused(message));
