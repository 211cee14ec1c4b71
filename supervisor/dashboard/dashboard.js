// The operator's dashboard: plain DOM, no library. Every call goes to this worker's API with the
// token the operator typed (Authorization: Bearer), kept in sessionStorage for this tab only and
// never put in a URL. Data from the API is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "wa-worker-token";
const REFRESH_MS = 10000; // process figures (CPU, memory) change without events: one list call per period
const $ = (id) => document.getElementById(id);

const state = {
  sessions: new Map(), // sessionId -> GET /sessions item
  rows: new Map(), // sessionId -> {sig, tr}: the table row last built for it, and what it showed
  sort: { key: "sessionId", dir: 1 },
  stream: null, // AbortController of the event stream
  lastEventId: null,
  current: null, // the session id whose page is shown
  qrTimer: null,
  pageTimer: null,
  refreshTimer: null,
  listPending: false,
  engine: null,
  renderQueued: false,
};

// -- the API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// ``answers``: statuses besides 2xx whose body is the answer (GET /health's 503 carries its figures).
async function api(method, path, body, answers = []) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "NETWORK", "The worker cannot be reached (" + e.message + "). Is it running?");
  }
  let answer = null;
  try {
    answer = await resp.json();
  } catch (e) {
    answer = null;
  }
  if (answers.includes(resp.status) && answer !== null) return answer;
  if (!resp.ok || (answer && answer.success === false)) {
    const retry = resp.headers.get("Retry-After");
    throw new ApiError(resp.status, answer && answer.code, (answer && answer.error) || resp.statusText, retry);
  }
  // /health is not enveloped; every other answer is {success, data}.
  return answer && "data" in answer ? answer.data : answer;
}

// The worker's health: answered with 503 when it is unhealthy or draining, and with the figures that say why.
function getHealth() {
  return api("GET", "/health", undefined, [503]);
}

// What the operator can do about an error, in words.
function advice(err) {
  const what = err.message || "error";
  switch (err.status) {
    case 0:
      return what;
    case 401:
    case 403:
      return "The API token was refused (" + what + "). Sign in again with the worker's token.";
    case 404:
      return "Not found: " + what + ". It may have been deleted; go back to the sessions list.";
    case 409:
      return "Not possible in the session's current state: " + what + (err.retryAfter ? " Try again in " + err.retryAfter + " s." : "");
    case 429:
      return "Too many requests: " + what + ". Wait " + (err.retryAfter || "a few") + " s and try again.";
    case 503:
      return "The worker cannot take this now: " + what + (err.code === "SHUTTING_DOWN" ? " (it is shutting down)." : ". Free capacity or try again later.");
    case 507:
      return "The worker's disk is full: " + what + ". Free space, then retry.";
    default:
      return "Error " + err.status + (err.code ? " " + err.code : "") + ": " + what;
  }
}

function showError(err) {
  $("error-text").textContent = typeof err === "string" ? err : advice(err);
  $("error").hidden = false;
  if (err && (err.status === 401 || err.status === 403)) signOut(false);
}

function clearError() {
  $("error").hidden = true;
}

// Run an action from a button or form: the button is disabled meanwhile and an error is shown, never thrown.
async function act(button, fn) {
  if (button) button.disabled = true;
  try {
    clearError();
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// -- formatting -----------------------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.floor(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? "" : (bytes / 1048576).toFixed(1) + " MiB";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function exitText(exit) {
  if (!exit) return "";
  return exit.reason + " (" + when(exit.at) + ")";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c === null || c === undefined ? "" : c);
  return node;
}

function badge(status) {
  return el("span", { class: "badge st-" + status }, status);
}

// -- views ----------------------------------------------------------------------------------------

const VIEWS = ["signin", "sessions", "session", "overview", "create"];

function show(view) {
  for (const v of VIEWS) $("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#/" + view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function route() {
  clearInterval(state.pageTimer);
  clearInterval(state.qrTimer);
  state.current = null;
  if (!token()) {
    $("nav").hidden = true;
    show("signin");
    $("token").focus();
    return;
  }
  $("nav").hidden = false;
  startStream();
  const hash = location.hash || "#/sessions";
  const [, view, arg] = hash.split("/");
  if (view === "session" && arg) {
    show("session");
    openSession(decodeURIComponent(arg));
  } else if (view === "overview") {
    show("overview");
    loadOverview();
    state.pageTimer = setInterval(loadOverview, REFRESH_MS);
  } else if (view === "create") {
    show("create");
  } else {
    show("sessions");
    loadSessions();
  }
}

function signOut(navigate = true) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.sessions.clear();
  state.rows.clear();
  clearInterval(state.refreshTimer);
  state.refreshTimer = null;
  $("live").hidden = true;
  if (navigate) location.hash = "#/sessions";
  route();
}

// -- sessions table -------------------------------------------------------------------------------

async function loadSessions() {
  if (state.listPending) return;
  state.listPending = true;
  try {
    const data = await api("GET", "/sessions");
    state.sessions = new Map(data.sessions.map((s) => [s.sessionId, s]));
    queueRender();
    settleSoon(data.sessions);
  } catch (err) {
    showError(err);
  } finally {
    state.listPending = false;
  }
}

// Many events in a burst (500 sessions linking) render once per frame.
function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    renderTable();
  });
}

function sortValue(s, key) {
  if (key === "uss") return s.memory ? s.memory.uss : null;
  if (key === "lastExit") return s.lastExit ? s.lastExit.at : null;
  return s[key];
}

function rowOf(s) {
  const cells = [
    s.sessionName || "",
    s.phoneNumber || "",
    s.status,
    s.lastError || "",
    s.processState,
    s.pid === null ? "" : String(s.pid),
    s.pid === null ? "" : duration(s.uptime),
    String(s.restarts),
    s.cpuPercent === null ? "" : s.cpuPercent.toFixed(1),
    mib(s.memory && s.memory.uss),
    exitText(s.lastExit),
  ];
  const sig = cells.join("\u0000");
  const cached = state.rows.get(s.sessionId);
  if (cached && cached.sig === sig) return cached.tr;
  const [name, phone, status, reason, proc, pid, uptime, restarts, cpu, uss, exit] = cells;
  const statusCell = el("td", {}, badge(status));
  if (reason) statusCell.append(el("span", { class: "reason" }, reason));
  const tr = el(
    "tr",
    { "data-session": s.sessionId, "data-status": status },
    el("th", { scope: "row" }, el("a", { href: "#/session/" + encodeURIComponent(s.sessionId) }, s.sessionId)),
    el("td", { class: "opt" }, name),
    el("td", {}, phone),
    statusCell,
    el("td", { class: "opt" }, proc),
    el("td", { class: "num opt" }, pid),
    el("td", { class: "num" }, uptime),
    el("td", { class: "num", "data-col": "restarts" }, restarts),
    el("td", { class: "num" }, cpu),
    el("td", { class: "num" }, uss),
    el("td", { "data-col": "lastExit" }, exit)
  );
  state.rows.set(s.sessionId, { sig, tr });
  return tr;
}

function renderTable() {
  const query = $("search").value.trim().toLowerCase();
  const status = $("status-filter").value;
  const { key, dir } = state.sort;
  const rows = [...state.sessions.values()].filter(
    (s) =>
      (!status || s.status === status) &&
      (!query || [s.sessionId, s.sessionName, s.phoneNumber].some((f) => f && f.toLowerCase().includes(query)))
  );
  rows.sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (x === y) return a.sessionId < b.sessionId ? -1 : 1;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    return (x < y ? -1 : 1) * dir;
  });
  // A row is built again only when what it shows changed: sorting and filtering move existing rows.
  const rowsShown = rows.map(rowOf);
  for (const id of state.rows.keys()) if (!state.sessions.has(id)) state.rows.delete(id);
  $("sessions-body").replaceChildren(...rowsShown);
  $("sessions-empty").hidden = rows.length > 0;
  $("session-count").textContent = "(" + rows.length + " of " + state.sessions.size + ")";
  for (const th of document.querySelectorAll("#sessions-table th[scope=col]")) {
    const k = th.querySelector("button").dataset.sort;
    if (k === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

// -- the live stream ------------------------------------------------------------------------------

// EventSource cannot send an Authorization header, and the token must not go into a URL:
// the same SSE route is read with fetch() and a streaming reader.
async function startStream() {
  if (state.stream) return;
  const controller = new AbortController();
  state.stream = controller;
  if (!state.refreshTimer) state.refreshTimer = setInterval(refresh, REFRESH_MS);
  let delay = 1000;
  while (state.stream === controller) {
    try {
      if (state.lastEventId === null) {
        state.lastEventId = (await api("GET", "/events?limit=1")).latest || 0;
      }
      const headers = { Authorization: "Bearer " + token(), "Last-Event-ID": String(state.lastEventId) };
      const resp = await fetch("/events/stream", { headers, signal: controller.signal, cache: "no-store" });
      if (!resp.ok) {
        let answer = {};
        try {
          answer = await resp.json();
        } catch (e) {
          answer = {};
        }
        throw new ApiError(resp.status, answer.code, answer.error || resp.statusText, resp.headers.get("Retry-After"));
      }
      setLive(true);
      delay = 1000;
      await readStream(resp.body.getReader());
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        showError(err);
        return;
      }
    }
    if (state.stream !== controller) return;
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function setLive(on) {
  $("live").hidden = false;
  $("live").textContent = on ? "Live: updates as they happen" : "Reconnecting to the event stream…";
}

async function readStream(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let data = null;
      let id = null;
      for (const line of block.split("\n")) {
        if (line.startsWith("data: ")) data = line.slice(6);
        else if (line.startsWith("id: ")) id = Number(line.slice(4));
      }
      if (id !== null) state.lastEventId = id;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

const STATUS_EVENTS = { qr_ready: "qr_ready", connected: "connected", disconnected: "disconnected", logged_out: "logged_out", failed: "failed" };

let refreshSoon = null;

function onEvent(ev) {
  const s = state.sessions.get(ev.sessionId);
  if (s && STATUS_EVENTS[ev.event]) {
    s.status = STATUS_EVENTS[ev.event];
    if (ev.data.phoneNumber) s.phoneNumber = ev.data.phoneNumber;
    if (ev.event === "connected") s.lastError = null;
    if (ev.data.reason) s.lastError = ev.data.reason;
    queueRender();
  }
  if (ev.event === "session.deleted") {
    state.sessions.delete(ev.sessionId);
    queueRender();
  }
  if (ev.sessionId === state.current) onSessionEvent(ev);
  // A change of state may come with new process figures (a restart, a new pid), and a session not in
  // the table is new: one list call, at most once a second however many sessions change at once.
  if (!s || PROCESS_EVENTS.has(ev.event)) refreshThrottled();
}

const PROCESS_EVENTS = new Set(["connected", "disconnected", "logged_out", "failed"]);

// A process leaves these states with no event: STARTING turns RUNNING once it has stayed up
// RESTART_START_SECS after READY (a session is often connected before that), BACKOFF starts again when
// its delay is out, STOPPING ends. While one is shown, the list is read again a second later, not at the
// next 10 s period (a row would say STARTING, uptime 0 s, for seconds after the process was running).
const PASSING_STATES = new Set(["STARTING", "BACKOFF", "STOPPING"]);

function settleSoon(sessions) {
  if (sessions.some((s) => PASSING_STATES.has(s.processState))) refreshThrottled();
}

function refreshThrottled() {
  if (refreshSoon !== null) return;
  refreshSoon = setTimeout(() => {
    refreshSoon = null;
    refresh();
  }, 1000);
}

function refresh() {
  if (!token()) return;
  if (!$("view-sessions").hidden) loadSessions();
  if (state.current) loadSession();
}

// -- one session ----------------------------------------------------------------------------------

async function openSession(id) {
  state.current = id;
  $("s-id").textContent = id;
  $("s-history").replaceChildren();
  $("s-exits").replaceChildren();
  $("pair-code").textContent = "";
  $("send-result").textContent = "";
  $("phone-result").textContent = "";
  await loadEngine();
  await loadSession();
  await loadHistory(id);
  state.pageTimer = setInterval(() => loadCharts(id), REFRESH_MS);
}

async function loadEngine() {
  if (state.engine !== null) return;
  try {
    state.engine = (await getHealth()).engine || "";
  } catch (err) {
    // Unknown for now (the sim buttons stay hidden): asked again when a session's page opens.
  }
}

async function loadSession() {
  const id = state.current;
  if (!id) return;
  let detail;
  try {
    detail = await api("GET", "/session/" + encodeURIComponent(id) + "/process");
  } catch (err) {
    showError(err);
    return;
  }
  try {
    const tail = await api("GET", "/session/" + encodeURIComponent(id) + "/stderr");
    $("s-stderr").textContent = tail.lines.length ? tail.lines.join("\n") : "(nothing yet)";
  } catch (err) {
    $("s-stderr").textContent = "";
  }
  try {
    detail.outbox = await api("GET", "/session/" + encodeURIComponent(id) + "/outbox");
    detail.storage = await api("GET", "/session/" + encodeURIComponent(id) + "/storage");
  } catch (err) {
    detail.outbox = detail.outbox || null;
  }
  if (id !== state.current) return;
  state.sessions.set(id, detail);
  renderFacts();
  settleSoon([detail]);
  const exits = $("s-exits");
  exits.replaceChildren(
    ...(detail.exits.length
      ? detail.exits.map((e) =>
          el(
            "li",
            {},
            e.reason,
            e.code !== null ? ", exit code " + e.code : "",
            e.signal !== null ? ", signal " + e.signal : "",
            e.crashed ? " (crash)" : "",
            el("span", { class: "reason" }, when(e.at))
          )
        )
      : [el("li", {}, "none since the worker started")])
  );
  const sim = state.engine === "sim";
  $("sim-scan").hidden = !sim;
  $("phone-card").hidden = !sim || detail.status !== "connected";
  if (detail.status === "qr_ready" || detail.status === "initializing") loadQr(id);
  else hideQr();
  loadCharts(id);
}

function renderFacts() {
  const s = state.sessions.get(state.current);
  if (!s) return;
  const facts = [
    ["Status", badge(s.status)],
    ["Reason", s.lastError || "—"],
    ["Name", s.sessionName || "—"],
    ["Phone", s.phoneNumber || "—"],
    ["Process", s.processState + (s.pid !== null ? ", pid " + s.pid : "")],
    ["Uptime", s.pid !== null ? duration(s.uptime) : "—"],
    ["Restarts", String(s.restarts)],
    ["CPU", s.cpuPercent === null ? "—" : s.cpuPercent.toFixed(1) + " %"],
    ["Memory", s.memory && s.memory.uss !== null ? mib(s.memory.uss) + " USS, " + mib(s.memory.rss) + " RSS" : "—"],
    ["Last exit", exitText(s.lastExit) || "—"],
    ["Messages", String(s.messageCount)],
    ["Proxy", s.proxy || "none"],
  ];
  if (s.outbox) {
    const o = s.outbox;
    facts.push(["Outbox", o.pending + " pending, " + o.unknown + " unknown, " + o.failed + " failed" + (o.oldestPendingAt ? ", oldest " + when(o.oldestPendingAt) : "")]);
  }
  if (s.storage) {
    facts.push(["Lease", s.storage.lease === null ? "no object storage" : s.storage.lease]);
    facts.push(["Last backup", s.storage.lastBackupAt ? when(s.storage.lastBackupAt) : "none since the worker started"]);
  }
  const dl = $("s-facts");
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function hideQr() {
  $("qr-card").hidden = true;
  clearInterval(state.qrTimer);
}

async function loadQr(id) {
  let qr;
  try {
    qr = await api("GET", "/session/" + encodeURIComponent(id) + "/qr");
  } catch (err) {
    if (err.status !== 409) showError(err);
    return;
  }
  if (id !== state.current) return;
  if (!qr.qrCode) {
    hideQr();
    return;
  }
  $("qr-card").hidden = false;
  $("qr-img").src = qr.qrCode;
  $("qr-img").dataset.qr = qr.qr;
  const expires = qr.expiresAt ? new Date(qr.expiresAt).getTime() : null;
  clearInterval(state.qrTimer);
  const tick = () => {
    if (expires === null) {
      $("qr-expiry").textContent = "";
      return;
    }
    const left = Math.max(0, Math.round((expires - Date.now()) / 1000));
    $("qr-expiry").textContent = "Expires in " + left + " s (code " + qr.qrCount + ")";
  };
  tick();
  state.qrTimer = setInterval(tick, 1000);
}

async function loadHistory(id) {
  // The session's events, oldest first, a page at a time; the list shows the newest 50.
  const kept = [];
  let since = 0;
  try {
    for (let page = 0; page < 10; page++) {
      const data = await api("GET", "/events?limit=1000&sessionId=" + encodeURIComponent(id) + "&since=" + since);
      kept.push(...data.events);
      if (data.events.length < 1000) break;
      since = data.nextSince;
    }
  } catch (err) {
    showError(err);
    return;
  }
  if (id !== state.current) return;
  $("s-history").replaceChildren(...kept.slice(-50).reverse().map(historyItem));
}

function historyItem(ev) {
  const detail = ev.data.reason || ev.data.phoneNumber || ev.data.status || (ev.data.messageId ? "message " + ev.data.messageId : "");
  return el("li", {}, el("strong", {}, ev.event), detail ? " " + detail : "", el("span", { class: "reason" }, when(ev.timestamp)));
}

function onSessionEvent(ev) {
  const list = $("s-history");
  list.prepend(historyItem(ev));
  while (list.children.length > 50) list.lastChild.remove();
  if (ev.event === "qr_ready" && ev.data.qrCode) loadQr(ev.sessionId);
  if (ev.event === "session.deleted") location.hash = "#/sessions";
}

async function loadCharts(id) {
  let data;
  try {
    data = await api("GET", "/session/" + encodeURIComponent(id) + "/samples");
  } catch (err) {
    return; // the charts are extras: the figures above still show
  }
  if (id !== state.current) return;
  const parse = (p) => ({ ...p, at: new Date(p.at).getTime() / 1000 });
  const points = data.samples.map(parse);
  // The last hour; a younger process's samples span the whole width: at least a minute, or twenty
  // sampling intervals where sampling is faster (a line, not a dot at the right edge).
  const now = Date.now() / 1000;
  const least = Math.min(60, 20 * (data.interval || 3));
  const since = Math.max(now - 3600, Math.min(now - least, points.length ? points[0].at : now));
  const span = now - since;
  const cpuMax = Math.max(5, ...points.map((p) => p.cpuPercent));
  const memMax = Math.max(1, ...points.map((p) => p.rss));
  const line = (cls, field, max) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    node.setAttribute("class", cls);
    node.setAttribute(
      "points",
      points.map((p) => (((p.at - since) / span) * 600).toFixed(1) + "," + (118 - (p[field] / max) * 110).toFixed(1)).join(" ")
    );
    return node;
  };
  const last = points.length ? points[points.length - 1] : null;
  $("chart-cpu").replaceChildren(line("cpu", "cpuPercent", cpuMax));
  $("chart-mem").replaceChildren(line("rss", "rss", memMax), line("uss", "uss", memMax));
  $("chart-cpu-caption").textContent = points.length
    ? "CPU % of one core over the last " + duration(span) + "; now " + last.cpuPercent.toFixed(1) + " %, top of the chart " + cpuMax.toFixed(1) + " %"
    : "No samples yet (the process is not running, or the first sample is to come).";
  $("chart-mem-caption").textContent = points.length
    ? "Memory: USS (solid) " + mib(last.uss) + ", RSS (dashed) " + mib(last.rss) + "; top of the chart " + mib(memMax)
    : "";
}

// -- worker overview ------------------------------------------------------------------------------

// Why the worker is not healthy, in words, from /health's figures.
function healthReasons(h) {
  const reasons = [];
  const db = h.database || {};
  const storage = h.storage || {};
  const backend = h.backend || {};
  if (h.status === "draining") reasons.push("it is shutting down: new work is refused while sessions stop");
  if (db.status === "error") reasons.push("the database cannot be used (" + (db.error || "error") + ")");
  if (storage.status === "error") reasons.push("the storage directory " + (storage.path || "") + " cannot be written (" + (storage.error || "error") + ")");
  if (backend.status === "unreachable") reasons.push("the backend " + (backend.url || "") + " cannot be reached (" + (backend.error || "error") + ")");
  if (storage.lowSpace) reasons.push("the disk is low on space (" + mib(storage.freeBytes) + " free)");
  return reasons;
}

function healthLine(h) {
  const reasons = healthReasons(h);
  const why = reasons.length ? ": " + reasons.join("; ") + "." : ".";
  switch (h.status) {
    case "healthy":
      return "Healthy: /health answers 200.";
    case "degraded":
      return "Degraded (/health still answers 200)" + why;
    case "draining":
      return "Draining (/health answers 503: probes count the worker out)" + why;
    default:
      return "Unhealthy (/health answers 503: probes count the worker out)" + why;
  }
}

async function loadOverview() {
  // /health answers 503 with its figures when the worker is unhealthy or draining; /metrics may fail on its
  // own (it reads the database): each part shows what it has.
  const [h, m] = await Promise.allSettled([getHealth(), api("GET", "/metrics")]);
  if (h.status === "rejected" && m.status === "rejected") {
    showError(h.reason);
    return;
  }
  const health = h.status === "fulfilled" ? h.value : null;
  const metrics = m.status === "fulfilled" ? m.value : null;
  const card = (title, ...rows) => el("div", { class: "card" }, el("h3", {}, title), el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  const missing = (title, result) => el("div", { class: "card" }, el("h3", {}, title), el("p", { class: "muted" }, "Not available: " + advice(result.reason)));
  const pct = (v) => (v === null || v === undefined ? "—" : v.toFixed(1) + " %");
  const line = $("overview-state");
  line.className = "state " + (health ? "state-" + health.status : "state-unhealthy");
  line.textContent = health ? healthLine(health) : "/health did not answer: " + advice(h.reason);
  line.hidden = false;
  const cards = [];
  if (health) {
    const res = health.resources || {};
    const storage = health.storage || {};
    const db = health.database;
    const sessions = health.sessions || {};
    const counts = Object.entries(sessions).filter(([k]) => !["total", "max", "active"].includes(k)); // active: connected
    cards.push(
      card("Health", ["Status", badge(health.status)], ["Worker", health.workerId], ["Engine", health.engine || "—"], ["Uptime", duration(health.uptime)], ["Version", metrics ? metrics.worker.version : "—"]),
      card("Sessions", ["Total", String(sessions.total) + (sessions.max ? " of at most " + sessions.max : "")], ...counts.map(([k, v]) => [k, String(v)])),
      card(
        "Resources",
        ["CPU", pct(res.cpuUsage) + " of what the worker may use"],
        ["Memory", pct(res.memoryUsage) + " of " + (res.memoryTotal ? res.memoryTotal + " MB" : "what the worker may use")],
        ["Supervisor memory", res.supervisor && res.supervisor.memory && res.supervisor.memory.uss !== null ? mib(res.supervisor.memory.uss) + " USS" : "—"],
        ["Session processes", res.sessions ? res.sessions.processes + " using " + mib(res.sessions.memory ? res.sessions.memory.uss : null) + " USS" : "—"]
      ),
      card(
        "Storage and backend",
        ["Store", storage.type || "—"],
        ["Storage directory", storage.status === undefined ? "—" : storage.writable ? "writable" : "not writable (" + (storage.error || "error") + ")"],
        ["Free disk", storage.freeBytes !== undefined && storage.freeBytes !== null ? mib(storage.freeBytes) + (storage.lowSpace ? " (LOW)" : "") : "—"],
        ["MinIO connected", storage.minioConnected ? "yes" : "no"],
        ["Last backup", storage.lastBackupAt ? when(storage.lastBackupAt) : "none yet"],
        ["Database", db ? db.status + (db.error ? " (" + db.error + ")" : "") + (db.latencyMs !== undefined && db.latencyMs !== null ? ", " + db.latencyMs.toFixed(1) + " ms" : "") : "—"],
        ["Backend", health.backend ? health.backend.status + (health.backend.error ? " (" + health.backend.error + ")" : "") : "—"]
      )
    );
  } else {
    cards.push(missing("Health", h));
  }
  if (metrics) {
    // Each session's outbox (paced sends wait there): the ten that have waited longest.
    const queued = (metrics.outboxes || [])
      .filter((o) => o.pending > 0)
      .sort((a, b) => b.oldestPendingAge - a.oldestPendingAge)
      .slice(0, 10)
      .map((o) => [o.sessionId, o.pending + " waiting, the oldest for " + duration(o.oldestPendingAge)]);
    const lag = (metrics.eventConsumers || []).map((c) => [c.name, c.oldestUndeliveredAge ? duration(c.oldestUndeliveredAge) + " behind" : "up to date"]);
    cards.push(
      card("Messages", ["Sent", String(metrics.messages.sent)], ["Received", String(metrics.messages.received)], ["Failed", String(metrics.messages.failed)], ["Last hour", String(metrics.messages.lastHour)]),
      card("Event delivery", ...(lag.length ? lag : [["Consumers", "none"]])),
      card("Outboxes", ...(queued.length ? queued : [["Waiting", "nothing"]]))
    );
  } else {
    cards.push(missing("Messages and event delivery (/metrics)", m));
  }
  $("overview").replaceChildren(...cards);
}

// -- wiring ---------------------------------------------------------------------------------------

function sessionPath(suffix) {
  return "/session/" + encodeURIComponent(state.current) + suffix;
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const given = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, given);
    const ok = await act(e.submitter, () => api("GET", "/sessions"));
    if (ok === undefined) {
      sessionStorage.removeItem(TOKEN_KEY);
      return;
    }
    $("token").value = "";
    if (!location.hash || location.hash === "#/") location.hash = "#/sessions";
    route();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("error-close").addEventListener("click", clearError);
  $("search").addEventListener("input", queueRender);
  $("status-filter").addEventListener("change", queueRender);
  for (const button of document.querySelectorAll("#sessions-table th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      queueRender();
    });
  }
  $("act-restart").addEventListener("click", (e) => act(e.target, async () => {
    await api("POST", sessionPath("/restart"));
    await loadSession();
  }));
  $("act-logout").addEventListener("click", (e) => act(e.target, async () => {
    if (!confirm("Log out session " + state.current + "? The phone is unlinked; a new QR follows.")) return;
    await api("POST", sessionPath("/logout"));
    await loadSession();
  }));
  $("act-delete").addEventListener("click", (e) => act(e.target, async () => {
    if (!confirm("Delete session " + state.current + "? Its auth state and history are removed for good.")) return;
    await api("DELETE", sessionPath(""));
    state.sessions.delete(state.current);
    location.hash = "#/sessions";
  }));
  $("pair-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const data = await api("POST", sessionPath("/pair-code"), { phoneNumber: $("pair-phone").value.trim() });
      $("pair-code").textContent = data.pairingCode;
    });
  });
  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const data = await api("POST", sessionPath("/send"), { to: $("send-to").value.trim(), text: $("send-text").value });
      $("send-result").textContent = "Message " + data.messageId + ": " + data.status;
    });
  });
  $("sim-scan").addEventListener("click", (e) => act(e.target, async () => {
    const data = await api("POST", sessionPath("/sim/scan"), { qr: $("qr-img").dataset.qr || null });
    $("qr-expiry").textContent = "Scanned by simulated phone " + data.phoneNumber;
  }));
  $("phone-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const data = await api("POST", sessionPath("/sim/message"), { phoneNumber: $("phone-from").value.trim(), text: $("phone-text").value });
      $("phone-result").textContent = "Sent from " + data.phoneNumber + " as " + data.messageId;
    });
  });
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(e.submitter, async () => {
      const body = { sessionId: $("c-id").value.trim() };
      if ($("c-name").value.trim()) body.sessionName = $("c-name").value.trim();
      if ($("c-proxy").value.trim()) body.proxy = $("c-proxy").value.trim();
      if ($("c-webhook").value.trim()) body.webhook = { url: $("c-webhook").value.trim() };
      const data = await api("POST", "/session/create", body);
      e.target.reset();
      location.hash = "#/session/" + encodeURIComponent(data.sessionId);
    });
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (e) => showError("Unexpected error: " + (e.reason && e.reason.message ? e.reason.message : e.reason)));
  route();
});
