/* The dashboard's entry point, the one module the page loads (with a version in its URL).
 * Nothing imports it: a module imported under two URLs would run twice. */

import { init } from "./app.js";

init();
