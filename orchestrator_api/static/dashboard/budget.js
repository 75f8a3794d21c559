/* Dashboard: what the page spends of the client's RATE_LIMIT (default 60 requests a minute
 * over all of /api/v1, shared by every tab, the CLI and anything else of this client).
 *
 * Views follow the streams and fetch over HTTP only what events cannot tell (a new
 * session's title, a new task's fields). Those background fetches go through refresher():
 * a burst of events makes one fetch, at most one per view every MIN_GAP_MS, and all tabs
 * of the origin together let them go only while the origin's requests of the last minute
 * are fewer than BACKGROUND_PER_MINUTE (the tabs tell each other of every request over a
 * BroadcastChannel). What the user does (a click, a form) is
 * never held back, and a hidden tab makes its background fetches when it is shown again. A
 * 429 pauses background fetches in every tab until its Retry-After, and one line says so,
 * with the time of the next try: no toasts. */

import { banner } from "./util.js";

export const WINDOW_MS = 60000;
export const BACKGROUND_PER_MINUTE = 30;
export const MIN_GAP_MS = 10000;
export const DEBOUNCE_MS = 400;

const sent = []; // the times of every /api/v1 request of this origin's tabs
let pausedUntil = 0;
let bannerTimer = null;
const whenShown = new Set(); // runs a hidden tab put off

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  const runs = [...whenShown];
  whenShown.clear();
  for (const run of runs) run();
});
const channel = "BroadcastChannel" in window
  ? new BroadcastChannel("orchestrator.dashboard.budget") : null;

if (channel) {
  channel.onmessage = (event) => {
    const data = event.data || {};
    if (data.op === "sent") remember(data.at);
    else if (data.op === "limited") pause(data.until, false);
  };
}

function remember(at) {
  sent.push(at);
  const cutoff = Date.now() - WINDOW_MS;
  while (sent.length && sent[0] < cutoff) sent.shift();
}

/** Count one request (http.js calls it for each /api/v1 call, the user's ones too: they
 * leave the background fetches less room). */
export function spent() {
  const at = Date.now();
  remember(at);
  if (channel) channel.postMessage({ op: "sent", at });
}

/** Requests of this origin's tabs in the last minute. */
export function used() {
  const cutoff = Date.now() - WINDOW_MS;
  return sent.filter((at) => at >= cutoff).length;
}

/** A 429: no background fetch in any tab before `until` (epoch ms). */
export function limited(retryAfterSeconds) {
  pause(Date.now() + Math.max(1, retryAfterSeconds || 5) * 1000, true);
}

function pause(until, tell) {
  if (until <= pausedUntil) return;
  pausedUntil = until;
  if (tell && channel) channel.postMessage({ op: "limited", until });
  const at = new Date(until).toLocaleTimeString();
  banner("#rate-banner", "The API's rate limit for this client is reached (RATE_LIMIT, shared " +
    `by every tab and program using this address or token). Updates wait; next try at ${at}.`);
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => banner("#rate-banner", ""), until - Date.now() + 500);
}

/** Milliseconds before a background fetch may go. */
export function backgroundDelay() {
  const now = Date.now();
  if (pausedUntil > now) return pausedUntil - now + 100;
  const recent = sent.filter((at) => at >= now - WINDOW_MS);
  if (recent.length < BACKGROUND_PER_MINUTE) return 0;
  return recent[recent.length - BACKGROUND_PER_MINUTE] + WINDOW_MS - now + 50;
}

export function isPaused() {
  return pausedUntil > Date.now();
}

/** schedule() asks for one run of fn (async, background); calls while one is waiting or
 * running are folded into it (or one more run after it). schedule.cancel() forgets them.
 * fn runs DEBOUNCE_MS after the first ask, MIN_GAP_MS after the previous run, and when the
 * origin's background budget allows. */
export function refresher(fn, minGap = MIN_GAP_MS) {
  let timer = null;
  let running = false;
  let again = false;
  let last = -Infinity;
  const run = async () => {
    timer = null;
    if (document.hidden) { // nobody looks: fetch when someone does
      timer = -1;
      whenShown.add(run);
      return;
    }
    const wait = backgroundDelay();
    if (wait > 0) {
      timer = setTimeout(run, wait);
      return;
    }
    running = true;
    last = Date.now();
    try {
      await fn();
    } catch (error) {
      /* fn reports its own failures */
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (running) {
      again = true;
    } else if (!timer) {
      const wait = Math.max(DEBOUNCE_MS, last + minGap - Date.now());
      timer = setTimeout(run, wait);
    }
  };
  schedule.cancel = () => {
    clearTimeout(timer);
    whenShown.delete(run);
    timer = null;
    again = false;
  };
  schedule.pending = () => Boolean(timer) || running;
  return schedule;
}
