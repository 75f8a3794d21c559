/* Dashboard: starting and stopping the app (views, streams, the system strip). The token
 * form must do both, and app.js, which knows how, imports the form: app.js hands the two
 * functions over here at start, so nothing but main.js imports app.js. */

let hooks = { start: () => {}, stop: () => {} };

export function setLifecycle(start, stop) {
  hooks = { start, stop };
}

export function startApp() {
  hooks.start();
}

export function stopApp() {
  hooks.stop();
}
