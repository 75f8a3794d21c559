/* Dashboard: calls to the API, with the token; the contract's error body as ApiError;
 * every page of a list. Each call is counted (budget.js); a 429 pauses the page's
 * background fetches until its Retry-After instead of raising a message per call. */

import { limited, spent } from "./budget.js";
import { currentToken, refused } from "./token.js";

/* ---------- HTTP ---------- */

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export async function api(method, path, payload, token = currentToken()) {
  const headers = { Accept: "application/json" };
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  spent();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: payload === undefined ? undefined : JSON.stringify(payload),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "NETWORK", "The server did not answer (is it running?)");
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
  }
  if (response.ok) return data;
  const detail = (data && data.error) || {};
  const retryAfter = Number(response.headers.get("Retry-After")) || 0;
  const error = new ApiError(
    response.status,
    detail.code || `HTTP_${response.status}`,
    detail.message || response.statusText || `HTTP ${response.status}`,
    retryAfter,
  );
  if (response.status === 401 && token === currentToken()) refused(error.message);
  if (response.status === 429) limited(retryAfter);
  throw error;
}

/** Every item of a paginated list (pages of 100, at most 20 pages). */
export async function apiAll(path, params = {}) {
  const items = [];
  for (let page = 1; page <= 20; page += 1) {
    const query = new URLSearchParams({ ...params, page, page_size: 100 });
    const data = await api("GET", `${path}?${query}`);
    items.push(...data.items);
    if (!data.has_more) break;
  }
  return items;
}

/** The message for a failed call the user made, or null when another line already says
 * it (401: the token form; 429: the rate-limit line). */
export function failure(what, error) {
  if (error.status === 401) return null;
  if (error.status === 429) {
    return `${what}: the rate limit is reached; try again in ${error.retryAfter || "a few"} s.`;
  }
  return `${what}: ${error.message}`;
}
