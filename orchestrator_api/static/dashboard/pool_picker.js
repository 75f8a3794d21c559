/* Dashboard: the pool selector in the header: "All pools" and the pools the page has seen,
 * or "Another pool…" to type a name; for a token scoped to pools, those pools only (fixed
 * when there is one). The choice goes through the router (router.js: the hash's ?pool=
 * and every view) and is kept (pool.js). */

import { POOL_NAME, POOL_RULE, currentPool, offeredPools, onPool, scopedPools } from "./pool.js";
import { choosePool } from "./router.js";
import { $, body, el, say } from "./util.js";

const OTHER = "*other*"; // never a pool name

export function initPoolPicker() {
  const select = $("#pool-select");
  const other = $("#pool-other");
  select.addEventListener("change", () => {
    if (select.value === OTHER) {
      other.hidden = false;
      other.value = "";
      other.focus();
      return;
    }
    other.hidden = true;
    choosePool(select.value);
  });
  $("#pool-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = other.value.trim();
    if (!POOL_NAME.test(name)) {
      say(`“${name}” is not a pool name: a pool name is ${POOL_RULE}.`, "error");
      other.focus();
      return;
    }
    other.hidden = true;
    if (!choosePool(name)) say(`This token may not read pool ${name}.`, "error");
    renderPoolPicker();
  });
  other.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    other.hidden = true;
    renderPoolPicker();
  });
  onPool(() => renderPoolPicker());
}

export function renderPoolPicker() {
  const select = $("#pool-select");
  const scope = scopedPools();
  const pools = offeredPools();
  const key = JSON.stringify([scope, pools]);
  if (select.dataset.key !== key) {
    select.dataset.key = key;
    select.replaceChildren(
      ...(scope ? [] : [el("option", { value: "", text: "All pools" })]),
      ...pools.map((name) => el("option", { value: name, text: name })),
      ...(scope ? [] : [el("option", { value: OTHER, text: "Another pool…" })]),
    );
  }
  if ($("#pool-other").hidden) select.value = currentPool();
  select.disabled = Boolean(scope && scope.length === 1);
  select.title = select.disabled ? "This token sees this pool only" : "";
  body.dataset.pool = currentPool();
}
