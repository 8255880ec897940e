"""The viewer's page (stream.sinks.viewer): plain HTML, CSS and JavaScript, nothing fetched from
anywhere but the sink itself (no CDN: the page works on a network with no internet).

Tiles: one per stream in `/streams.json`, each fed by a loop that fetches `/frame.jpg?stream=ID
&after=VERSION` (the sink waits for a newer frame), shows it, and once the browser is about to
paint it POSTs `/shown` with the time (`performance.timeOrigin + performance.now()`, wall clock
ms): the sink turns that into display latency. Model panel, legend and card notice from the
render stage's live stats; a chart of glass-to-glass and display latency p50/p99 over the last
minute and of drops per second by reason (from `/stats.json`, polled each second); the stats
table with times as local clock times and durations in ms.
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif;
  overflow-x: hidden; }
header { padding: 6px 12px; background: #222; font-weight: 600; }
header small { font-weight: 400; color: #999; margin-left: 12px; }
main { display: flex; gap: 12px; padding: 12px; align-items: flex-start; }
#tiles { display: flex; flex-wrap: wrap; gap: 8px; flex: 1 1 auto; min-width: 0;
  align-items: flex-start; }
.tile { position: relative; margin: 0; background: #000; line-height: 0; }
.tile img { display: block; max-width: calc(100vw - 400px); max-height: 88vh; }
.tile.many img { max-width: calc((100vw - 440px) / 2); max-height: 44vh; }
.tile figcaption { position: absolute; left: 0; bottom: 0; line-height: 1.3;
  background: rgba(0, 0, 0, 0.6); color: #eee; padding: 1px 6px; font-size: 12px; }
table { border-collapse: collapse; min-width: 260px; }
td { padding: 2px 8px; border-bottom: 1px solid #333; font-variant-numeric: tabular-nums; }
td:first-child { color: #999; }
#status { color: #f55; }
#side { flex: 0 0 330px; width: 330px; }
#more-models section { border-top: 1px solid #333; padding-top: 6px; margin-top: 6px; }
#more-models .notice { color: #fb0; font-weight: 600; }
#notice { color: #fb0; font-weight: 600; margin-bottom: 8px; }
#gate { color: #f55; font-weight: 600; margin-bottom: 8px; }
#legend, .legend { list-style: none; padding: 0; margin: 0 0 8px 0; }
#legend li, .legend li { margin: 2px 0; }
#confidence-bar { height: 10px; width: 160px; margin: 2px 0 8px 0; border: 1px solid #555; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px;
  vertical-align: -1px; border: 1px solid #555; }
dt { color: #999; } dd { margin: 0 0 6px 0; }
h3 { font-size: 13px; color: #aaa; margin: 10px 0 4px 0; font-weight: 600; }
canvas { background: #181818; border: 1px solid #333; display: block; }
.key { font-size: 12px; color: #bbb; margin: 2px 0 6px 0; }
.key span { margin-right: 10px; white-space: nowrap; }
</style></head>
<body><header>{title} <small id="clock"></small> <span id="status"></span></header>
<main><section id="tiles"></section>
<div id="side">
<aside id="model" hidden><div id="notice"></div><div id="gate"></div>
<ul id="legend"></ul>
<div id="confidence" hidden>confidence 0 - 1<div id="confidence-bar"></div></div>
<dl><dt>model</dt><dd id="model-name"></dd><dt>intended use</dt><dd id="intended-use"></dd>
<dt>training data</dt><dd id="training-data"></dd></dl></aside>
<div id="more-models"></div>
<h3>latency, last minute (ms)</h3>
<canvas id="chart" width="320" height="130"></canvas><div class="key" id="chart-key"></div>
<h3>drops per second, by reason</h3>
<canvas id="drops" width="320" height="70"></canvas><div class="key" id="drops-key"></div>
<table id="stats"></table></div></main>
<script>
const Q = "{query}";
function url(path, params) {
  const p = new URLSearchParams(Q ? Q.slice(1) : "");
  for (const [k, v] of Object.entries(params || {})) p.set(k, v);
  const s = p.toString();
  return s ? path + "?" + s : path;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function clock(ms) {  // a wall-clock time in ms as local time with milliseconds
  const d = new Date(ms);
  return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function text(id, value) { document.getElementById(id).textContent = value || ""; }

// ---- tiles: one per stream, each a fetch loop that reports when its frame is on screen
const tiles = new Map();
let streamModels = {};
function addTile(id) {
  const fig = document.createElement("figure"), img = document.createElement("img");
  const cap = document.createElement("figcaption");
  fig.className = "tile"; fig.dataset.stream = id; img.alt = "stream " + id; cap.textContent = id;
  fig.append(img, cap);
  document.getElementById("tiles").appendChild(fig);
  tiles.set(id, fig);
  for (const f of tiles.values()) f.classList.toggle("many", tiles.size > 1);
  feed(id, img, cap);
}
function report(stream, seq, shownMs) {
  fetch(url("/shown"), {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({stream: stream, seq: seq, shown_ms: shownMs})}).catch(() => {});
}
async function feed(id, img, cap) {
  let after = 0;
  for (;;) {
    try {
      const r = await fetch(url("/frame.jpg", {stream: id, after: after}), {cache: "no-store"});
      if (r.status === 204) continue;  // nothing newer within the sink's wait
      if (!r.ok) { await sleep(1000); continue; }
      const seq = Number(r.headers.get("X-Frame-Seq"));
      after = Number(r.headers.get("X-Frame-Version"));
      const captured = Number(r.headers.get("X-Capture-Ns")) / 1e6;
      const src = URL.createObjectURL(await r.blob());
      const old = img.src;
      img.src = src;
      await img.decode();
      if (old) URL.revokeObjectURL(old);
      await new Promise((done) => requestAnimationFrame(() => {
        const shown = performance.timeOrigin + performance.now();
        report(id, seq, shown);
        const model = streamModels[id] ? " \\u00b7 " + streamModels[id] : "";
        cap.textContent = id + model + " \\u00b7 #" + seq + " \\u00b7 captured " + clock(captured) +
          " \\u00b7 on screen after " + (shown - captured).toFixed(0) + " ms";
        done();
      }));
    } catch (e) {
      await sleep(1000);
    }
  }
}
async function refreshStreams() {
  try {
    const r = await fetch(url("/streams.json"), {cache: "no-store"});
    for (const s of (await r.json()).streams) if (!tiles.has(s.id)) addTile(s.id);
  } catch (e) { /* the poll below says disconnected */ }
}

// ---- model panel
function showModel(card, model) {
  const box = document.getElementById("model");
  box.hidden = !card;
  if (!card) return;
  text("notice", card.notice);
  text("model-name", model);
  text("intended-use", card.intended_use);
  text("training-data", card.training_data);
  const g = card.applicability;
  text("gate", g && !g.applicable ? "Model not applicable to this image (score " +
    g.score + " > threshold " + g.threshold + ")" : "");
  const stops = (card.confidence_colors || []).filter((c) => /^#[0-9a-f]{6}$/i.test(c));
  document.getElementById("confidence").hidden = stops.length < 2;
  if (stops.length >= 2) document.getElementById("confidence-bar").style.background =
    "linear-gradient(to right, " + stops.join(", ") + ")";
  document.getElementById("legend").replaceChildren(...legendItems(card));
}
function legendItems(card) {
  return (card.labels || []).map((l) => {
    const li = document.createElement("li"), sw = document.createElement("span");
    sw.className = "swatch";
    if (/^#[0-9a-f]{6}$/i.test(l.color)) sw.style.background = l.color;
    li.appendChild(sw); li.appendChild(document.createTextNode(l.name)); return li;
  });
}
function showOtherModels(streams, shown) {  // every other stream's model: name, notice, legend
  const box = document.getElementById("more-models");
  box.replaceChildren(...Object.entries(streams || {}).filter(([, v]) =>
    v.model && v.model !== shown && v.model_card).map(([id, v]) => {
    const sec = document.createElement("section"), head = document.createElement("div");
    head.textContent = id + ": " + v.model;
    const notice = document.createElement("div"), ul = document.createElement("ul");
    notice.className = "notice"; notice.textContent = v.model_card.notice || "";
    ul.id = "legend-" + id; ul.className = "legend"; ul.replaceChildren(...legendItems(v.model_card));
    sec.append(head, notice, ul); return sec;
  }));
}

// ---- chart: the last minute of polls
const WINDOW_MS = 60000;
const history = [];
const SERIES = [["glass p50", "#4c4", (s) => s.g50], ["glass p99", "#fa3", (s) => s.g99],
  ["display p50", "#4cf", (s) => s.d50], ["display p99", "#c6f", (s) => s.d99]];
const COLOURS = ["#f55", "#fb0", "#5bf", "#b7f", "#7d7", "#f8c", "#ccc"];
function key(id, items) {
  document.getElementById(id).replaceChildren(...items.map(([name, colour]) => {
    const span = document.createElement("span"), sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = colour;
    span.append(sw, document.createTextNode(name)); return span;
  }));
}
function drawChart() {
  const c = document.getElementById("chart"), g = c.getContext("2d"), now = Date.now();
  g.clearRect(0, 0, c.width, c.height);
  const values = history.flatMap((h) => SERIES.map(([, , f]) => f(h))).filter((v) => v != null);
  const top = Math.max(1, ...values) * 1.15, x = (t) => 30 + (c.width - 34) * (1 - (now - t) / WINDOW_MS);
  const y = (v) => c.height - 14 - (c.height - 20) * v / top;
  g.fillStyle = "#888"; g.font = "10px sans-serif";
  g.fillText(top.toFixed(0), 2, 12); g.fillText("0", 2, c.height - 14);
  g.fillText("-60 s", 30, c.height - 2); g.fillText("now", c.width - 24, c.height - 2);
  for (const [, colour, f] of SERIES) {
    g.strokeStyle = colour; g.lineWidth = 1.5; g.beginPath(); let on = false;
    for (const h of history) {
      const v = f(h);
      if (v == null) { on = false; continue; }
      if (on) g.lineTo(x(h.t), y(v)); else g.moveTo(x(h.t), y(v));
      on = true;
    }
    g.stroke();
  }
  const last = history[history.length - 1] || {};
  key("chart-key", SERIES.map(([name, colour, f]) =>
    [name + " " + (f(last) == null ? "-" : f(last).toFixed(1)), colour]));
  const d = document.getElementById("drops"), dg = d.getContext("2d");
  dg.clearRect(0, 0, d.width, d.height);
  const reasons = [...new Set(history.flatMap((h) => Object.keys(h.rate)))].sort();
  const most = Math.max(1, ...history.map((h) => Object.values(h.rate).reduce((a, b) => a + b, 0)));
  for (const h of history) {
    let base = d.height - 2;
    reasons.forEach((r, i) => {
      const n = h.rate[r] || 0, px = (d.height - 12) * n / most;
      dg.fillStyle = COLOURS[i % COLOURS.length]; dg.fillRect(x(h.t) - 2, base - px, 4, px);
      base -= px;
    });
  }
  dg.fillStyle = "#888"; dg.font = "10px sans-serif"; dg.fillText(most.toFixed(0) + "/s", 2, 10);
  const totals = last.drops || {};
  key("drops-key", reasons.length ? reasons.map((r, i) =>
    [r + " " + (totals[r] || 0), COLOURS[i % COLOURS.length]]) : [["no drops", "#333"]]);
}
function record(stats) {
  const now = Date.now(), prev = history[history.length - 1];
  const drops = stats.drops || {}, rate = {};
  if (prev) for (const [r, n] of Object.entries(drops))
    rate[r] = Math.max(0, n - (prev.drops[r] || 0)) * 1000 / Math.max(1, now - prev.t);
  const g = stats.glass_to_glass_ms || {}, d = stats.display_ms || {};
  history.push({t: now, g50: g.p50, g99: g.p99, d50: d.p50, d99: d.p99, drops: drops, rate: rate});
  while (history.length && now - history[0].t > WINDOW_MS) history.shift();
}

// ---- stats table: durations in ms, times as local clock times, never raw ns
function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (!prefix && (k === "model_card" || k === "streams")) continue;  // shown elsewhere
    const key = prefix ? prefix + "." + k : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else if (typeof v === "number" && k.endsWith("_ns")) out.push([key.slice(0, -3), clock(v / 1e6)]);
    else out.push([key, typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v]);
  }
  return out;
}
async function poll() {
  try {
    const r = await fetch(url("/stats.json"), {cache: "no-store"});
    const s = await r.json();
    const st = s.stats || {};
    streamModels = Object.fromEntries(Object.entries(st.streams || {}).map(([k, v]) => [k, v.model]));
    const rows = flatten(st, "", []).concat(flatten(s.viewer, "viewer", []));
    showModel(st.model_card, st.model);
    showOtherModels(st.streams, st.model);
    const t = document.getElementById("stats");
    t.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      for (const x of [k, v]) { const td = document.createElement("td");
        td.textContent = String(x); tr.appendChild(td); }
      return tr;
    }));
    record(st); drawChart();
    text("clock", "updated " + clock(Date.now()));
    document.getElementById("status").textContent = "";
  } catch (e) {
    document.getElementById("status").textContent = "(disconnected)";
  }
  refreshStreams();
}
setInterval(poll, 1000); poll();
</script></body></html>
"""
