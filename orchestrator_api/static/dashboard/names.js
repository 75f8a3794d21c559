/* Dashboard: the names behind ids. Agents' names are kept in localStorage (every tab of the
 * origin, and after the agent is gone: a finished task keeps its agent's id, and the page
 * still says "done by <name>" for an agent that has since deregistered, if any tab saw it
 * while it was registered). Sessions' and tasks' titles are kept for this tab, from what its
 * views loaded. An unknown agent is looked up once, in the background (budget.js): the list
 * of live agents first, then, for a deregistered one (a record the list leaves out), the
 * agent itself, a few at a time. */

import { refresher } from "./budget.js";
import { api, apiAll } from "./http.js";
import { shortId } from "./util.js";

const AGENTS_KEY = "orchestrator.dashboard.agent-names";
const MAX_AGENTS = 1000;
const LOOKUPS_PER_RUN = 5;

const agents = new Map(read());
const asked = new Set(); // ids wanted
const listed = new Set(); // wanted when the list of live agents was read
const looked = new Set(); // looked up one by one
const listeners = new Set();
export const sessionTitles = new Map();
export const taskTitles = new Map();

function read() {
  try {
    return JSON.parse(window.localStorage.getItem(AGENTS_KEY) || "[]");
  } catch (error) {
    return [];
  }
}

function write() {
  const entries = [...agents].slice(-MAX_AGENTS);
  try {
    window.localStorage.setItem(AGENTS_KEY, JSON.stringify(entries));
  } catch (error) {
    /* storage full or disabled: names last for this tab */
  }
}

window.addEventListener("storage", (event) => {
  if (event.key !== AGENTS_KEY) return;
  for (const [id, name] of read()) agents.set(id, name);
  changed();
});

function changed() {
  for (const fn of listeners) fn();
}

/** fn() after names were learnt (to re-render). */
export function onNames(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function learnAgents(list) {
  let news = false;
  for (const agent of list) {
    if (agents.get(agent.id) !== agent.name) {
      agents.delete(agent.id); // newest last: the oldest are forgotten first
      agents.set(agent.id, agent.name);
      news = true;
    }
  }
  if (news) {
    write();
    changed();
  }
}

export function learnTasks(list) {
  for (const task of list) taskTitles.set(task.id, task.title);
}

export function learnSessions(list) {
  for (const session of list) sessionTitles.set(session.id, session.title);
}

const fetchAgents = refresher(async () => {
  const missing = () => [...asked].filter((id) => !agents.has(id) && !looked.has(id));
  const unlisted = missing().filter((id) => !listed.has(id));
  if (unlisted.length) {
    for (const id of unlisted) listed.add(id);
    learnAgents(await apiAll("/api/v1/agents"));
  }
  for (const id of missing().slice(0, LOOKUPS_PER_RUN)) {
    looked.add(id);
    try {
      learnAgents([await api("GET", `/api/v1/agents/${id}`)]);
    } catch (error) {
      /* gone for good (404): its id is all there is */
    }
  }
  if (missing().length) fetchAgents();
});

/** The agent's name, else its id's first 8 characters (and one background look-up). */
export function agentName(id) {
  if (!id) return "";
  const name = agents.get(id);
  if (name) return name;
  if (!asked.has(id)) {
    asked.add(id);
    fetchAgents();
  }
  return shortId(id);
}

export function knownAgent(id) {
  return agents.has(id);
}
