/* Dashboard: the token (kept in the tab's sessionStorage), the form that asks for it, and
 * what it allows: the role comes from the token's claims (a JWT's payload is not secret;
 * the server checks the signature), and a token that may not write sees no write controls. */

import { startApp, stopApp } from "./app.js";
import { api } from "./http.js";
import { $, TOKEN_KEY, body, config, notice } from "./util.js";

const WRITERS = new Set(["admin", "operator"]);
const PROBE_EVERY_MS = 60000;

/** The claims of a JWT, unverified (for display only); null when it is not one. */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4,
      "=")), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    const value = JSON.parse(json);
    return value && typeof value === "object" ? value : null;
  } catch (error) {
    return null;
  }
}

export const auth = {
  token: window.sessionStorage.getItem(TOKEN_KEY) || null,
  probing: false,
  lastProbe: 0,

  /** The token's role; null without a token (development: the server lets it write). */
  role() {
    if (!this.token) return null;
    const found = claims(this.token);
    return (found && found.role) || "unknown";
  },

  canWrite() {
    return !this.token || WRITERS.has(this.role());
  },

  /** The page's controls follow the role: CSS hides .write-control where it may not. */
  applyRole() {
    body.dataset.canWrite = this.canWrite() ? "true" : "false";
    const role = this.role();
    $("#role").textContent = role ? `${role}${this.canWrite() ? "" : " (read only)"}` : "";
    $("#role").hidden = !role;
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
    $("#token-button").textContent = this.token ? "Sign out" : "Set token";
  },
};
