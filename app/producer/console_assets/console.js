// The Sluice console: polls console/stats and dlq, tails effects/stream, draws the tables. No dependencies.
"use strict";

const KEY_ITEM = "sluice.console.key";
const STATS_EVERY_MS = 1000;
const REFUSED_EVERY_MS = 3000;
const HISTORY = 60; // points of each sparkline: about a minute of polls
const TAIL_MOST = 50; // effects kept in the live tail
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed"];

const $ = (id) => document.getElementById(id);

class Refused extends Error {} // the server refused the key: back to the form

let session = null; // the open console: {key, abort, ...}; null while the form shows

// --- the key ---------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    $("key").value = "";
    sessionStorage.setItem(KEY_ITEM, key);
    open(key);
  });
  $("sign-out").addEventListener("click", () => close(""));
  $("tail-topic").addEventListener("change", () => session && follow(session, $("tail-topic").value));
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) open(key);
  else close("");
}

function open(key) {
  session = {
    key,
    abort: new AbortController(),
    counters: null, // the last {at, accepted, refused} from the server
    effectsSeen: 0,
    effectsWas: null, // {clock, seen} at the last stats answer
    history: { accepted: [], refused: [], effects: [], lag: [] },
    tail: null, // {abort, lastEventId, retry} of the live tail, once the topics are known
  };
  $("key-form").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  repeat(session, STATS_EVERY_MS, stats, "stats-note");
  repeat(session, REFUSED_EVERY_MS, refused, "refused-note");
}

function close(message) {
  if (session) session.abort.abort();
  session = null;
  sessionStorage.removeItem(KEY_ITEM);
  // Nothing of the last key's tenant stays on the page for the next key.
  for (const id of ["refused", "tail", "charts", "lag-chart", "tail-topic"]) {
    const element = $(id);
    (element.tBodies ? element.tBodies[0] : element).replaceChildren();
  }
  for (const name of ["accepted", "refused", "effects", "lag"]) $(`${name}-spark`).replaceChildren();
  for (const id of ["accepted-rate", "refused-rate", "effects-rate", "lag-total", "accepted-total", "refused-total"]) {
    $(id).textContent = "–";
    delete $(id).dataset.value;
  }
  $("tenant").textContent = "";
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("key-form").hidden = false;
  $("key-error").textContent = message;
  $("key").focus();
}

async function call(path, signal, headers = {}) {
  const response = await fetch(path, {
    headers: { ...headers, Authorization: `Bearer ${session.key}` },
    cache: "no-store",
    signal,
  });
  if (response.status === 401) throw new Refused(await reason(response));
  return response;
}

async function reason(response) {
  try {
    const error = (await response.json()).error;
    return error.field ? `${error.field}: ${error.message}` : error.message;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

// Runs step(s) every `every` ms while `s` is the open console; a failure shows in `note` and is retried.
async function repeat(s, every, step, note) {
  while (!s.abort.signal.aborted) {
    try {
      await step(s);
      $(note).textContent = "";
    } catch (error) {
      if (s.abort.signal.aborted) return;
      if (error instanceof Refused) return close(`The key was refused (${error.message}).`);
      $(note).textContent = error.message;
    }
    await sleep(every, s.abort.signal);
  }
}

// --- numbers ---------------------------------------------------------------------------------

async function stats(s) {
  const response = await call("console/stats", s.abort.signal);
  if (!response.ok) throw new Error(`stats: ${await reason(response)}`);
  const body = await response.json();
  if (s.abort.signal.aborted) return;
  $("tenant").textContent = `tenant ${body.tenant}`;
  if (s.tail === null) topics(s, body);
  counters(s, body);
  lag(s, body.lag);
  tables(body.tables);
}

function counters(s, body) {
  const now = { at: body.at, accepted: body.events_accepted, refused: body.events_refused };
  const was = s.counters;
  // The server says when it read its counters: the rate divides by its time, not by the network's.
  if (was !== null && now.at > was.at) {
    const seconds = (now.at - was.at) / 1000;
    for (const name of ["accepted", "refused"]) {
      // A producer restart starts its counters over: no negative rate.
      plot(s, name, Math.max(0, now[name] - was[name]) / seconds);
    }
  }
  if (was === null || now.at > was.at) s.counters = now;
  show("accepted-total", now.accepted);
  show("refused-total", now.refused);
  const clock = performance.now();
  if (s.effectsWas !== null) {
    plot(s, "effects", (s.effectsSeen - s.effectsWas.seen) / ((clock - s.effectsWas.clock) / 1000));
  }
  s.effectsWas = { clock, seen: s.effectsSeen };
}

function plot(s, name, rate) {
  show(`${name}-rate`, rate);
  const history = s.history[name];
  history.push(rate);
  if (history.length > HISTORY) history.shift();
  spark($(`${name}-spark`), history);
}

function show(id, value) {
  const element = $(id);
  element.dataset.value = String(value);
  element.textContent = number(value);
}

function number(value) {
  if (value === null || value === undefined) return "–";
  if (!Number.isInteger(value) && Math.abs(value) < 10) return value.toFixed(1);
  return Math.round(value).toLocaleString("en");
}

function lag(s, lag) {
  $("lag-note").textContent = lag === null ? "Kafka did not answer" : "all tenants' events not yet applied";
  $("lag-note").className = lag === null ? "sub error" : "sub";
  if (lag === null) {
    $("lag-total").textContent = "–";
    $("lag-total").dataset.value = "";
    return;
  }
  show("lag-total", lag.total);
  s.history.lag.push(lag.total);
  if (s.history.lag.length > HISTORY) s.history.lag.shift();
  spark($("lag-spark"), s.history.lag);
  const partitions = Object.keys(lag.partitions).sort((a, b) => a - b);
  bars($("lag-chart"), partitions, partitions.map((p) => lag.partitions[p]));
}

// --- refused events --------------------------------------------------------------------------

async function refused(s) {
  const response = await call("dlq?limit=20&order=newest", s.abort.signal);
  if (!response.ok) throw new Error(`refused events: ${await reason(response)}`);
  const body = await response.json();
  if (s.abort.signal.aborted) return;
  const rows = body.records.map((record) => {
    const row = element("tr");
    row.dataset.id = record.id;
    const body = typeof record.body === "string" ? record.body : JSON.stringify(record.body);
    for (const [text, name] of [
      [clockTime(record.received_at), "time"],
      [record.code, "code"],
      [record.field ?? "", "field"],
      [record.message, "message"],
      [record.source ?? "", "source"],
      [truncate(body ?? "", 160), "body"],
    ]) {
      row.append(element("td", text, name));
    }
    return row;
  });
  $("refused").tBodies[0].replaceChildren(...rows);
  $("refused-note").textContent = rows.length ? "" : "No refused event kept.";
}

function truncate(text, most) {
  return text.length > most ? `${text.slice(0, most)}…` : text;
}

// --- the live tail ---------------------------------------------------------------------------

function topics(s, body) {
  // A key limited to topics must name one: it gets no "every topic" stream.
  const choices = body.topic_limited ? body.topics : ["", ...body.topics];
  $("tail-topic").replaceChildren(
    ...choices.map((topic) => {
      const option = element("option", topic || "every topic");
      option.value = topic;
      return option;
    }),
  );
  follow(s, choices[0] ?? "");
}

// (Re)starts the tail on `topic`. The stream's cursor is the effects topic's, whatever the filter,
// so a new filter resumes where the last stream stopped.
function follow(s, topic) {
  const lastEventId = s.tail?.lastEventId ?? null;
  s.tail?.abort.abort();
  const tail = { abort: new AbortController(), lastEventId, retry: 1000 };
  s.abort.signal.addEventListener("abort", () => tail.abort.abort(), { once: true });
  s.tail = tail;
  stream(s, tail, topic);
}

// EventSource cannot send an Authorization header: the stream is read with fetch, and
// reconnects as EventSource would, after `retry` ms, sending the last id as Last-Event-ID.
async function stream(s, tail, topic) {
  const signal = tail.abort.signal;
  const path = topic ? `effects/stream?topic=${encodeURIComponent(topic)}` : "effects/stream";
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (tail.lastEventId) headers["Last-Event-ID"] = tail.lastEventId;
      const response = await call(path, signal, headers);
      if (response.status === 400 && tail.lastEventId) {
        // The position is gone (Kafka no longer holds it): follow from now instead.
        tail.lastEventId = null;
        status(`could not resume (${await reason(response)}); following from now`);
        continue;
      }
      if (!response.ok) throw new Error(await reason(response));
      status("live");
      await events(response.body, tail, (event) => event.type === "effect" && effect(s, JSON.parse(event.data), event.id));
      status("reconnecting…");
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof Refused) return close(`The key was refused (${error.message}).`);
      status(`reconnecting: ${error.message}`);
    }
    await sleep(tail.retry, signal);
  }
}

function status(text) {
  $("tail-status").textContent = text;
}

// A Server-Sent Events parser (the WHATWG "event stream interpretation") over a fetch body.
async function events(body, tail, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let type = "";
  let id = tail.lastEventId;
  const line = (text) => {
    if (text === "") {
      tail.lastEventId = id; // an event's id counts once the event is whole, even one without data
      if (data.length) dispatch({ type: type || "message", data: data.join("\n"), id });
      data = [];
      type = "";
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const name = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") data.push(value);
    else if (name === "event") type = value;
    else if (name === "id" && !value.includes("\0")) id = value;
    else if (name === "retry" && /^\d+$/.test(value)) tail.retry = Number(value);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A chunk may end between the CR and the LF of one line break.
      const held = buffer.endsWith("\r") ? "\r" : "";
      const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      lines.forEach(line);
    }
  } finally {
    reader.releaseLock();
  }
}

function effect(s, record, cursor) {
  s.effectsSeen += 1;
  const item = element("li");
  item.dataset.eventId = record.event_id;
  item.dataset.cursor = cursor; // where a stream resumes after this effect
  item.append(
    element("time", clockTime(record.occurred_at)),
    element("span", record.user_id, "user"),
    element("span", `${record.topic} · ${record.event_type || "event"}`),
    element("span", changes(record), "changes"),
    element("span", record.event_id, "id"),
  );
  const list = $("tail");
  list.prepend(item);
  while (list.children.length > TAIL_MOST) list.lastElementChild.remove();
}

function changes(record) {
  const c = record.changes || {};
  const parts = [];
  if (c.coins) parts.push(`${signed(c.coins)} coins`);
  for (const [name, n] of Object.entries(c.points || {})) if (name !== "coins") parts.push(`${signed(n)} ${name}`);
  for (const [name, n] of Object.entries(c.counters || {})) parts.push(`${name} ${signed(n)}`);
  for (const [name, n] of Object.entries(c.tokens || {})) parts.push(`${signed(n)} ${name} tokens`);
  for (const badge of c.badges_awarded || []) parts.push(`badge ${badge}`);
  for (const custom of c.custom || []) parts.push(custom.name);
  if (record.replayed) parts.push("replayed");
  return parts.join(", ") || "no change";
}

function signed(n) {
  return n < 0 ? String(n) : `+${n}`;
}

// --- tables ----------------------------------------------------------------------------------

function tables(list) {
  const charts = $("charts");
  $("charts-note").textContent = list.length ? "" : "No windowed table on the topics of this key.";
  const names = new Set(list.map((table) => table.name));
  for (const figure of [...charts.children]) if (!names.has(figure.dataset.table)) figure.remove();
  for (const table of list) {
    let figure = [...charts.children].find((f) => f.dataset.table === table.name);
    if (!figure) {
      figure = element("figure");
      figure.dataset.table = table.name;
      const svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 600 180");
      svg.setAttribute("class", "chart");
      svg.setAttribute("role", "img");
      svg.setAttribute("aria-label", table.name);
      figure.append(element("figcaption"), svg, element("ul", null, "legend"));
      charts.append(figure);
    }
    const [caption, svg, legend] = figure.children;
    const aggregate = typeof table.aggregate === "string" ? table.aggregate : Object.entries(table.aggregate)[0].join(" ");
    const by = table.group_by.length ? ` by ${table.group_by.join(", ")}` : "";
    const drawn = table.keys ? `${table.keys} keys; the busiest ${Math.min(table.keys, COLOURS.length)} drawn` : "no window yet";
    caption.replaceChildren(
      table.name,
      element("span", `${aggregate}${by}, ${table.window.kind} ${duration(table.window.size_ms)} windows`, "note"),
      element("span", table.error ?? drawn, table.error ? "error" : "note"),
    );
    const series = new Map();
    for (const row of table.rows) {
      const label = Object.values(row.key).join(" / ") || "all";
      if (!series.has(label)) series.set(label, []);
      if (row.value !== null) series.get(label).push([Date.parse(row.window_start), row.value]);
    }
    lines(svg, [...series.entries()], Date.parse(table.from), Date.parse(table.to));
    legend.replaceChildren(
      ...[...series.keys()].map((label, n) => {
        const item = element("li");
        const swatch = element("span", null, "swatch");
        swatch.style.background = COLOURS[n % COLOURS.length];
        item.append(swatch, label);
        return item;
      }),
    );
  }
}

function duration(ms) {
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["m", 60000], ["s", 1000]]) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

// --- drawing ---------------------------------------------------------------------------------

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = text;
  if (className) made.className = className;
  return made;
}

function svgChild(parent, tag, attributes, text) {
  const made = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, String(value));
  if (text !== undefined) made.textContent = text;
  parent.append(made);
  return made;
}

function spark(svg, values) {
  const top = Math.max(...values, 1);
  const step = 100 / Math.max(HISTORY - 1, 1);
  const start = 100 - (values.length - 1) * step;
  const points = values.map((v, n) => `${(start + n * step).toFixed(2)},${(23 - (v / top) * 22).toFixed(2)}`);
  svg.replaceChildren();
  svgChild(svg, "polyline", { points: points.join(" ") });
}

// A rounded maximum for an axis: 1, 2 or 5 times a power of ten.
function ceiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((v) => v >= value);
}

function bars(svg, labels, values) {
  const [width, height, left, bottom] = [600, 120, 44, 18];
  const top = ceiling(Math.max(...values, 0));
  svg.replaceChildren();
  axis(svg, width, height, left, bottom, top);
  const slot = (width - left) / Math.max(labels.length, 1);
  labels.forEach((label, n) => {
    const h = ((height - bottom - 8) * values[n]) / top;
    const x = left + n * slot + slot * 0.15;
    svgChild(svg, "rect", { class: "bar", x, y: height - bottom - h, width: slot * 0.7, height: h });
    svgChild(svg, "text", { x: x + slot * 0.35, y: height - 4, "text-anchor": "middle" }, label);
  });
}

function lines(svg, series, from, to) {
  const [width, height, left, bottom] = [600, 180, 44, 18];
  const values = series.flatMap(([, points]) => points.map(([, v]) => v));
  const top = ceiling(Math.max(...values, 0));
  const low = Math.min(0, ...values);
  svg.replaceChildren();
  axis(svg, width, height, left, bottom, top, low);
  const x = (t) => left + 6 + ((width - left - 12) * (t - from)) / Math.max(to - from, 1);
  const y = (v) => height - bottom - ((height - bottom - 8) * (v - low)) / (top - low || 1);
  svgChild(svg, "text", { x: left, y: height - 4 }, moment(from));
  svgChild(svg, "text", { x: width, y: height - 4, "text-anchor": "end" }, moment(to));
  series.forEach(([label, points], n) => {
    const colour = COLOURS[n % COLOURS.length];
    const ordered = [...points].sort((a, b) => a[0] - b[0]);
    svgChild(svg, "polyline", {
      points: ordered.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none",
      stroke: colour,
      "stroke-width": 2,
    });
    for (const [t, v] of ordered) {
      const dot = svgChild(svg, "circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: colour });
      svgChild(dot, "title", {}, `${label}: ${v} (window from ${moment(t)})`);
    }
  });
}

function axis(svg, width, height, left, bottom, top, low = 0) {
  svgChild(svg, "line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom });
  svgChild(svg, "line", { class: "axis", x1: left, y1: 8, x2: left, y2: height - bottom });
  svgChild(svg, "text", { x: left - 6, y: 14, "text-anchor": "end" }, number(top));
  svgChild(svg, "text", { x: left - 6, y: height - bottom, "text-anchor": "end" }, number(low));
}

// A chart's ends: the day too, since a chart of hourly or daily windows spans days.
function moment(ms) {
  const date = new Date(ms);
  return `${date.toLocaleDateString("en-GB", { day: "numeric", month: "short" })} ${date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}`;
}

function clockTime(value) {
  if (value === null || value === undefined) return "";
  const date = new Date(typeof value === "number" ? value : Date.parse(value));
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString("en-GB");
}

start();
