/* Dashboard: the pool the page shows ("" for every pool), kept in localStorage so a reload
 * keeps it (router.js also writes it into the hash route, ?pool=), and the pools it can
 * offer: those of the sessions, agents and events it has seen plus any typed in, or, for a
 * token scoped to pools (its `pools` claim), those only. Views filter their events with
 * inPool(); there is one socket per stream whatever the pool (the SharedWorker's). */

import { claims, currentToken } from "./token.js";
import { el } from "./util.js";

const POOL_KEY = "orchestrator.dashboard.pool";
const KNOWN_KEY = "orchestrator.dashboard.pools";
const MAX_KNOWN = 100;
export const POOL_NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/;
export const POOL_RULE = "1-40 characters: lower-case letters, digits, - and _, beginning " +
  "with a letter or digit";

let pool = read(POOL_KEY, "");
const known = new Set(read(KNOWN_KEY, []));
const listeners = new Set();

function read(key, fallback) {
  try {
    const value = JSON.parse(window.localStorage.getItem(key));
    return value === null ? fallback : value;
  } catch (error) {
    return fallback;
  }
}

function write(key, value) {
  try {
    window.localStorage.setItem(key, JSON.stringify(value));
  } catch (error) {
    /* storage full or disabled: it lasts for this page */
  }
}

function changed() {
  for (const fn of listeners) fn();
}

/** fn() when the pool or the pools on offer change. */
export function onPool(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The token's pools (its `pools` claim), or null when it sees every pool. */
export function scopedPools() {
  const token = currentToken();
  const found = token ? claims(token) : null;
  const list = found && Array.isArray(found.pools) ? found.pools.filter((p) => POOL_NAME.test(p))
    : [];
  return list.length ? list : null;
}

/** The pool shown, "" for every pool. */
export function currentPool() {
  return pool;
}

/** May the page show this pool ("" every pool)? A scoped token: only its pools. */
export function allowedPool(name) {
  const scope = scopedPools();
  if (scope) return scope.includes(name);
  return name === "" || POOL_NAME.test(name);
}

/** Show `name` ("" every pool); false when it may not be shown. */
export function setPool(name) {
  if (!allowedPool(name)) return false;
  if (name) learnPools([name]);
  if (name === pool) return true;
  pool = name;
  write(POOL_KEY, pool);
  changed();
  return true;
}

/** After a token change: a scoped token shows one of its pools (the first by default). */
export function settlePool() {
  const scope = scopedPools();
  if (scope && !scope.includes(pool)) setPool(scope[0]);
}

/** The pools on offer, sorted; "" (every pool) is not among them. */
export function offeredPools() {
  const scope = scopedPools();
  if (scope) return [...scope];
  const list = new Set(known);
  if (pool) list.add(pool);
  return [...list].sort();
}

export function learnPools(names) {
  let news = false;
  for (const name of names) {
    if (typeof name === "string" && POOL_NAME.test(name) && !known.has(name)) {
      known.add(name);
      news = true;
    }
  }
  if (!news) return;
  while (known.size > MAX_KNOWN) known.delete(known.values().next().value);
  write(KNOWN_KEY, [...known]);
  changed();
}

/** Is this event in the pool shown? Every session, task and agent event carries its pool;
 * one without a pool is shown only when every pool is. */
export function inPool(message) {
  return !pool || Boolean(message && message.payload && message.payload.pool === pool);
}

/** A small badge with a session's or agent's pool. */
export function poolBadge(name) {
  return el("span", { class: "pool-badge", title: "Pool", text: name });
}
