/* Dashboard: the token (kept in the tab's sessionStorage) and what its claims say. A JWT's
 * payload is not secret and is read here for display only (the server checks the
 * signature): the role decides which controls show. No DOM, no HTTP: http.js and
 * streams.js send the token, auth.js asks for it, and a refusal (401) is told to whoever
 * listens (onRefused) rather than to a module this one would import. */

import { TOKEN_KEY } from "./util.js";

const WRITERS = new Set(["admin", "operator"]);

let token = window.sessionStorage.getItem(TOKEN_KEY) || null;
const refusedListeners = new Set();

export function currentToken() {
  return token;
}

export function keepToken(value) {
  token = value;
  window.sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  token = null;
  window.sessionStorage.removeItem(TOKEN_KEY);
}

/** The claims of a JWT, unverified (for display only); null when it is not one. */
export function claims(value) {
  try {
    const part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4,
      "=")), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    const found = JSON.parse(json);
    return found && typeof found === "object" ? found : null;
  } catch (error) {
    return null;
  }
}

/** The token's role; null without a token (development: the server lets it write). */
export function role() {
  if (!token) return null;
  const found = claims(token);
  return (found && found.role) || "unknown";
}

export function canWrite() {
  return !token || WRITERS.has(role());
}

/** fn(message) when the server refused the current token (a 401). */
export function onRefused(fn) {
  refusedListeners.add(fn);
  return () => refusedListeners.delete(fn);
}

export function refused(message) {
  for (const fn of refusedListeners) fn(message);
}
