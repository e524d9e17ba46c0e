// slotkv console: renders the views the console's server sends as
// server-sent events (/events) and posts the forms' actions to /api/....
// No framework, no build step.
"use strict";

const SLOTS = 16384;
const SVGNS = "http://www.w3.org/2000/svg";
const page = document.body.dataset.page;
const state = {};

function $(sel) { return document.querySelector(sel); }

// el builds an element: el("td", {class: "num"}, "text", child...).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  setAttrs(e, attrs);
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
}

function fmtNum(n) { return Number(n || 0).toLocaleString("en-US"); }

function fmtBytes(n) {
  n = Number(n || 0);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
}

function fmtRate(n) { return fmtBytes(n) + "/s"; }

function fmtDur(s) {
  s = Math.round(Number(s || 0));
  if (s <= 0) return "–";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${m}m` : m ? `${m}m${r}s` : `${r}s`;
}

// bar is a progress bar: {root, set(percent, label, cls)}.
function bar() {
  const fill = el("div", {class: "fill"});
  const label = el("span", {class: "label"});
  const root = el("div", {class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0}, fill, label);
  return {
    root,
    set(pct, text, cls) {
      pct = Math.max(0, Math.min(100, Number(pct || 0)));
      fill.style.width = pct + "%";
      root.setAttribute("aria-valuenow", pct.toFixed(1));
      label.textContent = text != null ? text : pct.toFixed(0) + "%";
      root.className = "bar" + (cls ? " " + cls : "");
    },
  };
}

// --- the event stream ---

function connect() {
  const live = $("#live");
  const es = new EventSource("/events");
  es.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  es.onerror = () => {
    live.textContent = "reconnecting…"; live.className = "live off";
    // A lost session answers 401 and EventSource gives up: log in again.
    if (es.readyState === EventSource.CLOSED) {
      fetch("/api/state").then((r) => { if (r.status === 401) location.href = "/login?next=" + encodeURIComponent(location.pathname); else setTimeout(connect, 2000); });
    }
  };
  for (const kind of ["cluster", "traffic", "migrations", "bulkloads"]) {
    es.addEventListener(kind, (ev) => {
      state[kind] = JSON.parse(ev.data);
      render(kind);
    });
  }
}

function render(kind) {
  if (kind === "cluster") { renderLinks(); renderErrors(); }
  if (page === "cluster" && kind === "cluster") renderCluster();
  if (page === "migrations" && kind === "cluster") fillNodeSelects();
  if (page === "migrations" && kind === "migrations") renderMigrations();
  if (page === "bulkloads" && kind === "bulkloads") renderBulkloads();
  if (page === "traffic" && kind === "traffic") renderTraffic();
}

function renderErrors() {
  const ul = $("#errors");
  ul.replaceChildren(...(state.cluster.errors || []).map((e) => el("li", {}, e)));
}

function renderLinks() {
  const links = (state.cluster.links || []).map((l) => el("a", {href: l.url, target: "_blank", rel: "noopener"}, l.name));
  $("#links").replaceChildren(...(links.length ? links : ["none known"]));
}

// --- cluster ---

function renderCluster() {
  const c = state.cluster;
  $("#topo-version").textContent = c.version ? `topology v${c.version} (from ${c.from})` : "";
  // Dead nodes: in the topology, not registered in etcd; their slots are
  // not served.
  const dead = c.dead || [];
  const deadBox = $("#dead");
  deadBox.hidden = dead.length === 0;
  deadBox.replaceChildren(...dead.map((id) => {
    const n = (c.nodes || []).find((x) => x.id === id) || {};
    return el("li", {"data-node": id}, el("b", {}, `${id} is dead`),
      `: in the topology${n.ranges ? " (slots " + n.ranges + ")" : ""} but not registered in etcd; its slots are not served.`);
  }));
  const owners = $("#slot-owners");
  owners.replaceChildren(...(c.owners || []).map((o) =>
    svg("rect", {class: "owner" + (o.dead ? " dead" : ""), x: o.start, y: 0, width: o.end - o.start + 1, height: 30, fill: o.color, "data-node": o.node, "data-start": o.start, "data-end": o.end},
      svg("title", {}, `${o.start}-${o.end}: ${o.node}${o.dead ? " (dead)" : ""}`))));
  const marks = $("#slot-marks");
  marks.replaceChildren(...(c.marks || []).map((m) => {
    const fill = m.state === "frozen" ? "#00b7ff" : `url(#hatch-${m.state})`;
    const y = m.state === "importing" ? 37 : 32;
    return svg("rect", {class: "mark " + m.state, x: m.start, y, width: Math.max(m.end - m.start + 1, 24), height: m.state === "importing" ? 7 : (m.state === "frozen" ? 12 : 5), fill, "data-state": m.state, "data-node": m.node, "data-start": m.start, "data-end": m.end},
      svg("title", {}, `${m.start}-${m.end}: ${m.state} on ${m.node}${m.peer ? " (peer " + m.peer + ")" : ""}${m.job ? ", job " + m.job : ""}`));
  }));
  const legend = $("#legend");
  legend.replaceChildren(
    ...(c.nodes || []).map((n) => { const sw = el("span", {class: "sw"}); sw.style.background = n.color; return el("span", {}, sw, n.id + (n.health === "dead" ? " (dead)" : "")); }),
    el("span", {}, el("span", {class: "sw migrating"}), "migrating"),
    el("span", {}, el("span", {class: "sw importing"}), "importing"),
    el("span", {}, el("span", {class: "sw frozen"}), "frozen"));
  $("#nodes").replaceChildren(...(c.nodes || []).map((n) => {
    const sw = el("span", {class: "sw"}); sw.style.background = n.color;
    const states = (n.states || []).map((s) => `${s.state} ${s.start}-${s.end}${s.peer ? " ↔ " + s.peer : ""}`).join(", ");
    // A dead node that still answers shows its figures; one that does not
    // has none.
    const silent = n.health === "down" || (n.health === "dead" && !n.topology_version);
    const reg = n.registered === undefined ? "" : (n.registered ? " · registered" : "");
    const where = n.in_topology === false ? " (not in the topology yet)" : "";
    return el("tr", {"data-node": n.id, "data-health": n.health, class: n.health === "dead" ? "dead" : ""},
      el("td", {}, el("span", {class: "dot " + n.health, title: n.health + (n.error ? ": " + n.error : "")})),
      el("td", {class: "node-id"}, sw, n.id, n.health === "dead" ? el("span", {class: "badge dead"}, "DEAD") : ""),
      el("td", {}, n.grpc), el("td", {}, n.http || "–"),
      el("td", {class: "num"}, silent ? "–" : fmtNum(n.keys)),
      el("td", {class: "num"}, silent ? "–" : fmtBytes(n.disk_bytes)),
      el("td", {class: "num"}, fmtNum(n.slots)),
      el("td", {}, n.ranges || "–"),
      el("td", {}, n.health === "down" || n.health === "dead" ? n.error || n.health : "v" + n.topology_version + reg + where),
      el("td", {}, states || "–"));
  }));
}

// --- migrations ---

function fillNodeSelects() {
  const ids = (state.cluster.nodes || []).map((n) => n.id);
  for (const sel of [$("#mig-source"), $("#mig-destination")]) {
    if (!sel) continue;
    const have = [...sel.options].map((o) => o.value);
    if (have.join() === ids.join()) continue;
    const cur = sel.value;
    sel.replaceChildren(...ids.map((id) => el("option", {value: id}, id)));
    if (ids.includes(cur)) sel.value = cur;
  }
  const src = $("#mig-source"), dst = $("#mig-destination");
  if (src && dst && dst.value === src.value && ids.length > 1 && !dst.dataset.touched) dst.value = ids.find((i) => i !== src.value);
}

// post sends a JSON body to the console's API and returns the parsed
// answer; a refusal throws an Error with the service's message.
async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {}), credentials: "same-origin"});
  let data = {};
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

function formBody(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = String(v);
  return out;
}

function showError(p, err) {
  if (!p) return;
  p.textContent = err ? err.message || String(err) : "";
  p.hidden = !err;
}

function wireForm(formSel, errSel, url, after) {
  const form = $(formSel);
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const btn = form.querySelector("button[type=submit]");
    btn.disabled = true;
    try {
      const v = await post(url, formBody(form));
      showError($(errSel), null);
      if (after) after(v);
    } catch (e) {
      showError($(errSel), e);
    } finally {
      btn.disabled = false;
    }
  });
}

const migCards = new Map();

function migrationCard(id) {
  const c = {};
  c.badge = el("span", {class: "badge"});
  c.route = el("span", {class: "route"});
  c.bar = bar();
  c.stats = el("div", {class: "stats"});
  c.streams = el("tbody");
  c.msg = el("p", {class: "error msg", role: "alert", hidden: true});
  c.rate = el("input", {name: "rate", placeholder: "new rate, e.g. 5MiB", class: "rate-input"});
  c.setRate = el("button", {type: "button", class: "plain set-rate"}, "Set rate");
  c.cancel = el("button", {type: "button", class: "danger cancel"}, "Cancel");
  c.controls = el("div", {class: "controls"}, c.rate, c.setRate, c.cancel);
  c.setRate.addEventListener("click", () => act(c, `/api/migrations/${encodeURIComponent(id)}/rate`, {rate: c.rate.value}, () => { c.rate.value = ""; }));
  c.cancel.addEventListener("click", () => act(c, `/api/migrations/${encodeURIComponent(id)}/cancel`, {}));
  c.root = el("section", {class: "job migration", "data-id": id},
    el("div", {class: "head"}, el("span", {class: "id"}, id), c.badge, c.route),
    c.bar.root, c.stats,
    el("table", {class: "grid streams"}, el("thead", {}, el("tr", {}, el("th", {}, "stream"), el("th", {}, "ranges"), el("th", {class: "num"}, "keys"), el("th", {class: "num"}, "bytes"), el("th", {class: "num"}, "rate"), el("th", {}, "progress"))), c.streams),
    c.controls, c.msg);
  return c;
}

async function act(card, url, body, ok) {
  try {
    await post(url, body);
    showError(card.msg, null);
    if (ok) ok();
  } catch (e) {
    showError(card.msg, e);
  }
}

function renderJobs(box, list, cards, make, update) {
  const jobs = (list && list.jobs) || [];
  const seen = new Set();
  if (!jobs.length) {
    if (!box.querySelector(".empty")) box.replaceChildren(el("p", {class: "empty"}, box.id === "migrations" ? "No migration yet." : "No bulk load yet."));
  } else {
    const empty = box.querySelector(".empty");
    if (empty) empty.remove();
  }
  jobs.forEach((j, i) => {
    let c = cards.get(j.id);
    if (!c) { c = make(j.id); cards.set(j.id, c); }
    update(c, j);
    // Move a card only when its place changed, so a focused input keeps
    // its focus.
    const at = box.querySelector(":scope > .list-error") ? i + 1 : i;
    if (box.children[at] !== c.root) box.insertBefore(c.root, box.children[at] || null);
    seen.add(j.id);
  });
  for (const [id, c] of cards) if (!seen.has(id)) { c.root.remove(); cards.delete(id); }
  renderListError(box, list && list.error);
}

// renderListError shows why the list could not be read (the service is
// down, say), or removes the message once it can.
function renderListError(box, msg) {
  let p = box.querySelector(":scope > .list-error");
  if (!msg) { if (p) p.remove(); return; }
  if (!p) { p = el("p", {class: "error list-error"}); box.prepend(p); }
  p.textContent = msg;
}

function stat(label, value) { return el("span", {}, label + " ", el("b", {}, value)); }

function updateMigration(c, j) {
  c.root.dataset.phase = j.phase;
  c.badge.textContent = j.phase; c.badge.className = "badge " + j.phase;
  c.route.textContent = `${j.source} → ${j.destination} · slots ${j.ranges}`;
  const cls = j.phase === "SUCCEEDED" ? "done" : (j.phase === "FAILED" || j.phase === "CANCELED") ? "failed" : "";
  c.bar.set(j.percent, `${j.percent.toFixed(0)}% · ${fmtNum(j.keys)}${j.keys_total ? " / " + fmtNum(j.keys_total) : ""} keys`, cls);
  c.stats.replaceChildren(
    stat("rate", fmtRate(j.rate)),
    stat("limit", j.rate_limit ? fmtRate(j.rate_limit) : "unlimited"),
    stat("ETA", fmtDur(j.eta_seconds)),
    stat("copied", fmtBytes(j.bytes)),
    stat("streams", String(j.parallelism)),
    stat("lag", fmtNum(j.lag)),
    stat("write pause", j.write_pause_ms ? j.write_pause_ms.toFixed(1) + " ms" : "–"));
  c.stats.querySelectorAll("b")[1].classList.add("rate-limit");
  c.streams.replaceChildren(...(j.streams || []).map((s) => {
    const b = bar();
    b.set(s.percent, `${s.percent.toFixed(0)}%`, s.done ? "done" : s.error ? "failed" : "");
    return el("tr", {class: "stream", "data-index": s.index},
      el("td", {}, "#" + s.index), el("td", {class: "ranges", title: s.ranges}, s.ranges),
      el("td", {class: "num"}, fmtNum(s.keys) + (s.total ? " / " + fmtNum(s.total) : "")),
      el("td", {class: "num"}, fmtBytes(s.bytes)), el("td", {class: "num"}, fmtRate(s.rate)),
      el("td", {}, b.root, s.error ? el("div", {class: "error"}, s.error) : null));
  }));
  c.controls.hidden = j.ended;
  if (j.error) {
    c.msg.textContent = j.error + (j.error_range ? ` (slots ${j.error_range})` : "");
    c.msg.hidden = false;
  }
}

function renderMigrations() {
  renderJobs($("#migrations"), state.migrations, migCards, migrationCard, updateMigration);
}

// --- bulk loads ---

const blCards = new Map();

function bulkCard(id) {
  const c = {};
  c.badge = el("span", {class: "badge"});
  c.url = el("span", {class: "route"});
  c.dl = bar(); c.ing = bar();
  c.stats = el("div", {class: "stats"});
  c.files = el("tbody");
  c.msg = el("p", {class: "error msg", role: "alert", hidden: true});
  const btn = (name, cls) => {
    const b = el("button", {type: "button", class: cls + " " + name}, name[0].toUpperCase() + name.slice(1));
    b.addEventListener("click", () => act(c, `/api/bulkloads/${encodeURIComponent(id)}/${name}`, {}));
    return b;
  };
  c.pause = btn("pause", "plain"); c.resume = btn("resume", "plain"); c.cancel = btn("cancel", "danger");
  c.controls = el("div", {class: "controls"}, c.pause, c.resume, c.cancel);
  c.root = el("section", {class: "job bulkload", "data-id": id},
    el("div", {class: "head"}, el("span", {class: "id"}, id), c.badge, c.url),
    el("table", {class: "grid"}, el("tbody", {},
      el("tr", {}, el("td", {}, "download"), el("td", {}, c.dl.root)),
      el("tr", {}, el("td", {}, "ingest"), el("td", {}, c.ing.root)))),
    c.stats,
    el("table", {class: "grid files"}, el("thead", {}, el("tr", {}, el("th", {}, "file"), el("th", {}, "state"), el("th", {}, "slots"), el("th", {}, "download"), el("th", {}, "ingest"), el("th", {}, "nodes"), el("th", {class: "num"}, "attempts"))), c.files),
    c.controls, c.msg);
  return c;
}

function updateBulk(c, j) {
  c.root.dataset.state = j.state;
  c.badge.textContent = j.state; c.badge.className = "badge " + j.state;
  c.url.textContent = j.manifest_url;
  const cls = j.state === "SUCCEEDED" ? "done" : (j.state === "FAILED" || j.state === "CANCELED") ? "failed" : "";
  c.dl.set(j.download.percent, `${j.download.percent.toFixed(0)}% · ${fmtBytes(j.download.done)} / ${fmtBytes(j.download.total)}`, cls);
  c.ing.set(j.ingest.percent, `${j.ingest.percent.toFixed(0)}% · ${fmtNum(j.ingest.done)} / ${fmtNum(j.ingest.total)} records`, cls);
  c.stats.replaceChildren(
    stat("files", String(j.file_count)),
    stat("download", fmtRate(j.download.rate)),
    stat("ingest", fmtNum(Math.round(j.ingest.rate)) + " records/s"),
    stat("ETA", fmtDur(j.ingest.eta_seconds || j.download.eta_seconds)),
    ...(j.nodes || []).map((n) => stat(n.id, `${fmtNum(n.records)} records`)));
  c.files.replaceChildren(...(j.files || []).map((f) => {
    const d = bar(), i = bar();
    const fc = f.state === "SUCCEEDED" ? "done" : f.state === "FAILED" ? "failed" : "";
    d.set(f.download.percent, null, fc); i.set(f.ingest.percent, null, fc);
    return el("tr", {class: "file", "data-name": f.name, "data-state": f.state},
      el("td", {}, f.name), el("td", {}, el("span", {class: "badge " + f.state}, f.state)), el("td", {}, f.slots),
      el("td", {}, d.root), el("td", {}, i.root), el("td", {}, (f.nodes || []).join(", ")),
      el("td", {class: "num"}, String(f.attempts)));
  }));
  c.controls.hidden = j.ended;
  c.pause.hidden = j.state === "PAUSED";
  c.resume.hidden = j.state !== "PAUSED";
  if (j.error) { c.msg.textContent = j.error; c.msg.hidden = false; }
}

function renderBulkloads() {
  renderJobs($("#bulkloads"), state.bulkloads, blCards, bulkCard, updateBulk);
}

// --- traffic ---

// chart draws one series as an SVG line chart: values may be null (a gap).
function chart(points, key, color, unit) {
  const W = 400, H = 100, pad = 4;
  const vals = points.map((p) => p[key]).filter((v) => v != null);
  const maxV = Math.max(1e-9, ...vals);
  const top = niceMax(maxV);
  const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t) => pad + (W - 2 * pad) * (t1 === t0 ? 1 : (t - t0) / (t1 - t0));
  const y = (v) => H - pad - (H - 2 * pad) * (v / top);
  const lines = [];
  let cur = [];
  for (const p of points) {
    if (p[key] == null) { if (cur.length) lines.push(cur); cur = []; continue; }
    cur.push(`${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`);
  }
  if (cur.length) lines.push(cur);
  const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "series", "data-key": key, "data-points": vals.length},
    svg("line", {x1: 0, x2: W, y1: y(top / 2), y2: y(top / 2), stroke: "#e3e7ee"}),
    svg("text", {x: W - 4, y: 12, "text-anchor": "end", "font-size": 10, fill: "#667085"}, `${fmtShort(top)} ${unit}`),
    ...lines.map((l) => l.length === 1
      ? svg("circle", {cx: l[0].split(",")[0], cy: l[0].split(",")[1], r: 2, fill: color})
      : svg("polyline", {points: l.join(" "), fill: "none", stroke: color, "stroke-width": 1.8, "vector-effect": "non-scaling-stroke"})));
  return s;
}

function niceMax(v) {
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

function fmtShort(v) { return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k" : v >= 10 ? v.toFixed(0) : v.toPrecision(2); }

function renderTraffic() {
  const t = state.traffic;
  const box = $("#traffic");
  if (!t.nodes || !t.nodes.length) return;
  box.replaceChildren(...t.nodes.map((n) => {
    const last = (k) => { for (let i = n.points.length - 1; i >= 0; i--) if (n.points[i][k] != null) return n.points[i][k]; return null; };
    const r = last("rate"), l = last("latency_ms");
    return el("section", {class: "card chart", "data-node": n.id},
      el("h2", {}, n.id),
      el("h3", {}, "requests / s"), chart(n.points, "rate", n.color, "req/s"),
      el("div", {class: "now"}, r == null ? "–" : r.toFixed(1) + " req/s"),
      el("h3", {}, "mean latency (ms)"), chart(n.points, "latency_ms", n.color, "ms"),
      el("div", {class: "now"}, l == null ? "–" : l.toFixed(2) + " ms"));
  }));
}

// --- start ---

wireForm("#mig-form", "#mig-error", "/api/migrations", () => {});
wireForm("#bl-form", "#bl-error", "/api/bulkloads", () => { $("#bl-id").value = ""; });
const dst = $("#mig-destination");
if (dst) dst.addEventListener("change", () => { dst.dataset.touched = "1"; });
connect();
