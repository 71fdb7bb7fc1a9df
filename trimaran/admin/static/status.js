/* Trimaran status page (SPEC OPS-3): polls /status/deployment every second and redraws.
 *
 * Every value from the server reaches the DOM as text (text nodes, setAttribute),
 * never as markup. The page keeps the last few minutes of backup lag per direction
 * for its charts; everything else comes from the latest document.
 */
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 3000;
const STALE_MS = 5000;
const LAG_WINDOW_MS = 5 * 60 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

/* State -> badge colour. Anything not listed is shown neutral. */
const TONES = {
  up: "ok", live: "ok", steady: "ok", normal: "ok", serving: "ok", principal: "ok",
  draining: "warn", degraded: "warn", behind: "warn", suspect: "warn", recovering: "warn",
  "failing-over": "warn", "failing-back": "warn", final: "warn", stale: "warn",
  mirror: "info", down: "bad", broken: "bad", "failed-over": "bad", failed: "bad",
  disconnected: "bad",
};

const lagHistory = new Map();   // "source>target" -> [[epoch ms, lag seconds], ...]
let lastSuccess = 0;
let lastError = "";

/* --- DOM helpers ------------------------------------------------------------------- */

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function badge(text, state) {
  const tone = TONES[state] || "neutral";
  return el("span", { class: `badge ${tone}` }, text);
}

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function show(id, ...children) {
  document.getElementById(id).replaceChildren(...children.flat());
}

/* --- formatting ---------------------------------------------------------------------- */

function dash(value) {
  return value === null || value === undefined || value === "" ? "—" : String(value);
}

function clock(epochSeconds) {
  if (typeof epochSeconds !== "number") {
    return "—";
  }
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function seconds(value) {
  if (typeof value !== "number") {
    return "—";
  }
  if (value < 10) {
    return `${value.toFixed(value < 1 ? 3 : 1)} s`;
  }
  return value < 120 ? `${Math.round(value)} s` : `${Math.round(value / 60)} min`;
}

function yesNo(value) {
  return value === true ? "yes" : value === false ? "no" : "—";
}

/* --- sections ------------------------------------------------------------------------ */

function renderHeader(doc) {
  document.getElementById("deployment").textContent = doc.deployment;
  document.getElementById("served-by").textContent = doc.served_by;
  document.getElementById("updated").textContent = clock(doc.generated_at);
  document.title = `Trimaran status: ${doc.deployment}`;
}

function serverRow(server) {
  return el("tr", { "data-server": server.name, "data-state": server.state },
    el("td", { title: `SIP ${server.address}:${server.sip_port}, admin port ${server.admin_port}` },
      server.name),
    el("td", {}, badge(server.state, server.state)),
    el("td", { class: "reason" }, dash(server.reason)),
    el("td", { class: "num" }, dash(server.bindings)),
    el("td", {}, dash(server.mode)));
}

function poolCard(pool, servers) {
  const record = pool.failover;
  const facts = [pool.role, pool.edition, pool.paired_with ? `paired with ${pool.paired_with}` : null,
    pool.auto_failover ? "automatic failover" : null].filter(Boolean).join(" · ");
  return el("div", { class: "pool", "data-pool": pool.name,
    "data-failover": record ? record.state : null },
  el("h4", {}, pool.name, " ",
    record ? badge(record.state, record.state) : null,
    el("span", { class: "muted" }, ` ${pool.servers_up}/${pool.servers.length} up`,
      pool.role === "frontend" ? ` · ${pool.bindings} bindings` : "")),
  el("p", { class: "muted" }, facts),
  pool.seen_by.length ? el("ul", { class: "seen" }, pool.seen_by.map((view) =>
    el("li", {}, `${view.observer} sees it `, badge(view.state, view.state),
      view.reason ? ` ${view.reason}` : ""))) : null,
  table(["Server", "State", "Why", "Bindings", "Mode"],
    servers.filter((s) => s.pool === pool.name).map(serverRow)));
}

function renderSites(doc) {
  show("sites", doc.sites.map((site) => el("article", { class: "card", "data-site": site.name },
    el("h3", {}, site.name, " ", el("span", { class: "muted" }, site.kind),
      site.failed ? [" ", badge(`failed (${site.failed.mode}) since ${clock(site.failed.since)}`,
        "failed")] : null),
    doc.pools.filter((pool) => pool.site === site.name).map((pool) => poolCard(pool, doc.servers)))));
}

function renderFailover(doc) {
  if (!doc.failover.length) {
    show("failover", el("p", { class: "muted" }, "No failover record reported (no Front End answers)."));
    return;
  }
  show("failover", table(["Pool", "State", "Term", "Backup pool", "Mode", "Since", "Reported by"],
    doc.failover.map((r) => el("tr", { "data-failover-pool": r.pool, "data-state": r.state },
      el("td", {}, r.pool), el("td", {}, badge(r.state, r.state)),
      el("td", { class: "num" }, dash(r.term)), el("td", {}, dash(r.backup)),
      el("td", {}, dash(r.mode)), el("td", {}, r.since ? clock(r.since) : "—"),
      el("td", { class: "muted" }, dash(r.reported_by))))));
}

function rememberLag(doc) {
  const now = Date.now();
  for (const direction of doc.backup) {
    const key = `${direction.source}>${direction.target}`;
    const points = lagHistory.get(key) || [];
    if (typeof direction.lag_seconds === "number") {
      points.push([now, direction.lag_seconds]);
    }
    while (points.length && now - points[0][0] > LAG_WINDOW_MS) {
      points.shift();
    }
    lagHistory.set(key, points);
  }
}

function sparkline(points) {
  const width = 260;
  const height = 48;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const top = Math.max(1, ...points.map((p) => p[1]));
  const now = Date.now();
  const span = Math.min(LAG_WINDOW_MS, Math.max(60000, points.length ? now - points[0][0] : 0));
  const x = (t) => (width * (1 - (now - t) / span)).toFixed(1);
  const y = (v) => (height - 2 - (height - 4) * (v / top)).toFixed(1);
  const axis = document.createElementNS(SVG_NS, "line");
  for (const [name, value] of [["x1", 0], ["x2", width], ["y1", y(0)], ["y2", y(0)]]) {
    axis.setAttribute(name, String(value));
  }
  axis.setAttribute("class", "axis");
  svg.append(axis);
  if (points.length) {
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("points", points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "));
    svg.append(line);
  }
  svg.setAttribute("aria-label", `backup lag over the last ${Math.round(span / 1000)} s`);
  const label = document.createElementNS(SVG_NS, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "11");
  label.textContent = `lag, last ${Math.round(span / 60000)} min (top ${top.toFixed(1)} s)`;
  svg.append(label);
  return svg;
}

function renderBackup(doc) {
  rememberLag(doc);
  if (!doc.backup.length) {
    show("backup", el("p", { class: "muted" }, "No paired pools: nothing is backed up."));
    return;
  }
  show("backup", doc.backup.map((d) => el("article", { class: "card",
    "data-direction": `${d.source}>${d.target}`, "data-state": d.state },
  el("h3", {}, `${d.source} → ${d.target} `, badge(d.state, d.state)),
  el("p", {}, `lag ${seconds(d.lag_seconds)} · ${dash(d.lag_changes)} change(s) · applied `,
    `${dash(d.applied_seq)} of ${dash(d.last_seq)}`),
  el("p", { class: "reason" }, dash(d.reason)),
  sparkline(lagHistory.get(`${d.source}>${d.target}`) || []),
  el("p", { class: "muted" }, d.reported_by ? `measured by ${d.reported_by} at ${clock(d.measured_at)}`
    : ""))));
}

function decisionText(decision) {
  return decision ? `${decision.action}: ${decision.reason}` : "—";
}

function renderBackends(doc) {
  if (!doc.backends.length) {
    show("backends", el("p", { class: "muted" },
      "No mirrored Back End (Standard Edition pools keep their data in an embedded store)."));
    return;
  }
  show("backends", doc.backends.map((b) => el("div", { class: "backend", "data-backend": b.pool },
    el("h3", {}, `${b.pool} `, el("span", { class: "muted" },
      `principal ${dash(b.principal)} · term ${dash(b.term)}`)),
    b.witness ? el("p", { class: "muted" }, `witness ${b.witness.server}: term ${dash(b.witness.term)}, `,
      `principal ${dash(b.witness.principal)}, exposed ${yesNo(b.witness.exposed)}, principal heard `,
      `${seconds(b.witness.principal_silent_for)} ago`) : null,
    table(["Instance", "Agent", "Role", "Term", "Serving", "Synchronous", "Exposed", "Standby lag (B)",
      "Last decision"],
    b.nodes.map((n) => el("tr", { "data-instance": n.name, "data-state": n.state },
      el("td", {}, n.name), el("td", {}, badge(n.state, n.state), n.reason ? ` ${n.reason}` : ""),
      el("td", {}, n.role ? badge(n.role, n.role) : "—"), el("td", { class: "num" }, dash(n.term)),
      el("td", {}, yesNo(n.serving)), el("td", {}, yesNo(n.synchronous)),
      el("td", {}, yesNo(n.exposed)), el("td", { class: "num" }, dash(n.lag_bytes)),
      el("td", { class: "reason" }, decisionText(n.decision))))))));
}

function renderCms(doc) {
  const cms = doc.cms;
  show("cms",
    el("p", {}, "master ", el("strong", { "data-cms-master": dash(cms.master) }, dash(cms.master)),
      ` · term ${dash(cms.term)} · newest version ${dash(cms.version)}`),
    table(["Server", "Replica version", "Master", "Term", "Pulled", "Error"],
      cms.replicas.map((r) => el("tr", { "data-replica": r.server,
        class: r.version !== null && r.version === cms.version ? null : "behind" },
      el("td", {}, r.server), el("td", { class: "num" }, dash(r.version)),
      el("td", {}, dash(r.master)), el("td", { class: "num" }, dash(r.term)),
      el("td", {}, r.pulled_at ? clock(r.pulled_at) : "—"),
      el("td", { class: "reason" }, dash(r.error))))));
}

function renderDecisions(doc) {
  if (!doc.decisions.length) {
    show("decisions", el("p", { class: "muted" }, "No HA decision reported yet."));
    return;
  }
  show("decisions", table(["Time", "Kind", "By", "Decision", "About", "Term", "Reason"],
    doc.decisions.map((d) => el("tr", { "data-kind": d.kind, "data-action": d.action,
      "data-subject": d.subject },
    el("td", {}, clock(d.at)), el("td", {}, d.kind), el("td", {}, d.by),
    el("td", {}, el("strong", {}, d.action)), el("td", {}, d.subject),
    el("td", { class: "num" }, dash(d.term)), el("td", { class: "reason" }, d.reason)))));
}

function render(doc) {
  renderHeader(doc);
  renderSites(doc);
  renderFailover(doc);
  renderBackup(doc);
  renderBackends(doc);
  renderCms(doc);
  renderDecisions(doc);
}

/* --- connection ---------------------------------------------------------------------- */

function showConnection() {
  const age = Date.now() - lastSuccess;
  let state = "live";
  let text = "live";
  if (lastError) {
    state = "disconnected";
    text = lastSuccess ? `disconnected (${lastError}): last update ${Math.round(age / 1000)} s ago`
      : `disconnected (${lastError})`;
  } else if (!lastSuccess) {
    state = "connecting";
    text = "connecting";
  } else if (age > STALE_MS) {
    state = "stale";
    text = `stale: last update ${Math.round(age / 1000)} s ago`;
  }
  const indicator = document.getElementById("connection");
  indicator.textContent = text;
  indicator.className = `badge ${TONES[state] || "neutral"}`;
  indicator.setAttribute("data-connection", state);
  document.body.classList.toggle("outdated", state === "stale" || state === "disconnected");
}

async function fetchDocument() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    const response = await fetch("/status/deployment", { cache: "no-store", signal: abort.signal });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

async function poll() {
  let doc = null;
  try {
    doc = await fetchDocument();
    lastError = "";
    lastSuccess = Date.now();
  } catch (error) {
    lastError = error.name === "AbortError" ? "no answer" : error.message;
  }
  setTimeout(poll, POLL_MS);
  showConnection();
  if (doc !== null) {
    render(doc);
  }
}

setInterval(showConnection, POLL_MS);
poll();
