// cm-api example dashboard: every list is kept fresh by long-poll (RFC 7240 `Prefer: wait`)
// with a plain-poll fallback, and shows the X-Cache and Age of the last answer. One tab of the
// browser polls; the other tabs show its answers (README.md says why).
"use strict";

const query = new URLSearchParams(location.search);
const config = {
  api: (query.get("api") || location.origin).replace(/\/+$/, ""),
  wait: seconds("wait", 25), // Prefer: wait=<this>; 0 turns long-poll off
  poll: seconds("poll", 30), // seconds between plain polls
  token: query.get("token"), // sent as Authorization: Bearer <token>
};
const MAX_BACKOFF = 30; // seconds between retries of a failed request, at most
// After a long-poll request failed (perhaps a CORS preflight that refuses Prefer, from an
// older server), poll plainly this many seconds before asking to be held again.
const LONG_POLL_RETRY = 60;

function seconds(name, fallback) {
  const value = Number(query.get(name) ?? fallback);
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

// One entry per <section data-resource>: its rows, their ETag, and what the status line says.
const lists = new Map();
for (const section of document.querySelectorAll("section[data-resource]")) {
  const status = { mode: "starting", note: "", http: null, xCache: null, age: null };
  Object.assign(status, { changedAt: null, error: null });
  lists.set(section.dataset.resource, { section, etag: null, rows: null, version: 0, status });
}

// -- showing a list ---------------------------------------------------------------------------

function renderRows(list) {
  const { section, rows } = list;
  const columns = rows.length > 0 ? Object.keys(rows[0]) : [];
  const head = document.createElement("tr");
  head.append(...columns.map((name) => cell("th", name)));
  const body = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = row[section.dataset.key];
    tr.append(...columns.map((name) => cell("td", row[name])));
    body.append(tr);
  }
  section.querySelector("thead").replaceChildren(head);
  section.querySelector("tbody").replaceChildren(body);
  list.version += 1;
  section.dataset.version = list.version; // bumped on every render (every 200)
  section.dataset.renderedAt = Date.now(); // when this tab showed these rows
}

function cell(tag, value) {
  const element = document.createElement(tag);
  if (value === null) element.className = "null";
  // textContent, never innerHTML: the data is text, not markup.
  element.textContent = typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
  return element;
}

function renderStatus(list) {
  const { mode, note, http, xCache, age, changedAt, error } = list.status;
  const line = list.section.querySelector(".status");
  line.textContent = [
    `mode: ${mode}${note ? ` (${note})` : ""}`,
    `HTTP ${http ?? "–"}`,
    `X-Cache: ${xCache ?? "–"}`,
    `Age: ${age ?? "–"} s`,
    `changed: ${changedAt ? new Date(changedAt).toLocaleTimeString() : "–"}`,
  ].join(" · ");
  if (error) {
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = ` · error: ${error}`;
    line.append(span);
  }
  Object.assign(list.section.dataset, { mode, http: http ?? "", xCache: xCache ?? "" });
  Object.assign(list.section.dataset, { age: age ?? "", error: error ?? "" });
}

// -- one tab polls, every tab shows ---------------------------------------------------------
// A browser opens at most 6 HTTP/1.1 connections to a server: tabs that each held two
// long-polls would queue behind each other for whole waits. So the tab holding a Web Lock
// polls and posts each answer to the others; when it closes, the next tab takes the lock.

const name = `cm-api-dashboard ${config.api}`;
const channel = new BroadcastChannel(name);
let polling = false;

function publish(resource, list, withRows) {
  const rows = withRows ? list.rows : undefined;
  channel.postMessage({ resource, etag: list.etag, rows, status: list.status });
}

channel.onmessage = ({ data }) => {
  if (data.hello) {
    // A new tab: send it what we show.
    if (polling) for (const [resource, list] of lists) if (list.rows) publish(resource, list, true);
    return;
  }
  const list = lists.get(data.resource);
  if (!list) return;
  if (data.rows) {
    Object.assign(list, { rows: data.rows, etag: data.etag });
    renderRows(list);
  }
  list.status = data.status;
  renderStatus(list);
};

function setRole(role, text) {
  document.body.dataset.role = role;
  document.getElementById("role").textContent = text;
}

async function pollEveryList() {
  polling = true;
  setRole("poller", "this tab polls the API");
  await Promise.all([...lists].map(([resource, list]) => follow(resource, list)));
}

// -- the polling loop of one list -------------------------------------------------------------

async function follow(resource, list) {
  let backoff = 1;
  let longPollFrom = 0; // Date.now() from which a request may ask to be held
  const canLongPoll = () => config.wait > 0 && Date.now() >= longPollFrom;
  for (;;) {
    const longPoll = list.etag !== null && canLongPoll(); // the first request is never held
    const headers = {};
    if (config.token) headers.Authorization = `Bearer ${config.token}`;
    if (list.etag !== null) headers["If-None-Match"] = list.etag;
    if (longPoll) headers.Prefer = `wait=${config.wait}`;
    let response;
    let rows;
    let error = null;
    try {
      // no-store: the browser's cache neither answers nor revalidates for us, so the 304 that
      // answers our own If-None-Match reaches this script.
      response = await fetch(`${config.api}/${resource}/`, { headers, cache: "no-store" });
      if (response.status === 200) rows = await response.json();
      else if (response.status !== 304) error = await describe(response);
    } catch (failure) {
      // No answer (network, CORS, a cut body): keep showing the rows, say so, retry later.
      if (longPoll) longPollFrom = Date.now() + LONG_POLL_RETRY * 1000;
      Object.assign(list.status, { error: `no answer: ${failure.message}`, http: null });
      show(resource, list, false);
      await sleep(backoff);
      backoff = Math.min(2 * backoff, MAX_BACKOFF);
      continue;
    }

    const held = longPoll && response.headers.has("Preference-Applied");
    const { status } = list;
    status.http = response.status;
    status.xCache = response.headers.get("X-Cache");
    status.age = response.headers.get("Age");
    status.error = error;
    if (error === null) {
      [status.mode, status.note] = mode(longPoll, held, longPollFrom);
    }
    if (rows !== undefined) {
      Object.assign(list, { rows, etag: response.headers.get("ETag") });
      status.changedAt = Date.now();
      renderRows(list);
    }
    show(resource, list, rows !== undefined);

    if (error !== null) {
      // 503 says when to come back (Retry-After); anything else backs off.
      const retryAfter = Number(response.headers.get("Retry-After") ?? NaN);
      await sleep(Number.isFinite(retryAfter) ? retryAfter : backoff);
      backoff = Math.min(2 * backoff, MAX_BACKOFF);
      continue;
    }
    backoff = 1;
    // A held answer, or new rows, and we may long-poll: ask again at once (a server that does
    // not hold requests then answers 304 at once, and we wait below).
    if (held || (rows !== undefined && canLongPoll())) continue;
    await sleep(config.poll);
  }
}

// The status line's mode after an answer: [mode, why].
function mode(longPoll, held, longPollFrom) {
  if (held) return ["long-poll", ""];
  if (longPoll) return ["polling", "the server did not hold the request"];
  if (config.wait === 0) return ["polling", "wait=0"];
  if (Date.now() < longPollFrom) {
    return ["polling", `long-poll failed; again at ${new Date(longPollFrom).toLocaleTimeString()}`];
  }
  return ["long-poll", ""]; // the first answer: the next request asks to be held
}

function show(resource, list, withRows) {
  renderStatus(list);
  publish(resource, list, withRows);
}

async function describe(response) {
  try {
    const { error } = await response.json(); // {"error": {"code": …, "message": …}}
    return `${response.status} ${error.code}: ${error.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// -- start ------------------------------------------------------------------------------------

document.getElementById("api").textContent = config.api;
if (navigator.locks) {
  setRole("listener", "another tab polls the API; this one shows its answers");
  navigator.locks.request(name, pollEveryList); // granted when no other tab holds it
  channel.postMessage({ hello: true });
} else {
  pollEveryList(); // no Web Locks (not a secure context): every tab polls on its own
}
