// semsearch web page: plain JS, no build step. State lives in the URL (?tab=&q=&similar=&focus=&sort=).
// Filters (after:, before:, in:, camera:, near:) are words of the query itself, shown as chips.
"use strict";

const $ = (id) => document.getElementById(id);
const K = 30;

// ---- token: ?token= is moved to sessionStorage and removed from the address bar
(function takeToken() {
  const url = new URL(location.href);
  const t = url.searchParams.get("token");
  if (t) {
    sessionStorage.setItem("semsearch-token", t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
})();
const token = () => sessionStorage.getItem("semsearch-token") || "";

function withToken(path) {
  const t = token();
  return t ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(t) : path;
}
const thumbUrl = (id) => withToken(`/api/images/${id}/thumb`);
const originalUrl = (id) => withToken(`/api/images/${id}/original`);

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const res = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    let msg = body && body.detail ? body.detail : res.statusText;
    if (Array.isArray(msg)) msg = msg.map((d) => d.msg).join("; ");
    if (res.status === 401) msg = "this server needs a token: open the page as /?token=…";
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return { body, headers: res.headers };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v; // CSSOM, allowed by the page's CSP
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
const basename = (p) => p.split(/[\\/]/).pop();

// ---- state <-> URL
function readState() {
  const p = new URLSearchParams(location.search);
  return {
    tab: p.get("tab") || "images",
    q: p.get("q") || "",
    similar: p.get("similar") || "",
    focus: p.get("focus") || "",
    threshold: p.get("threshold") || "",
    sort: p.get("sort") || "score",
  };
}
function writeState(state, push = true) {
  const p = new URLSearchParams();
  if (state.tab && state.tab !== "images") p.set("tab", state.tab);
  if (state.q) p.set("q", state.q);
  if (state.similar) p.set("similar", state.similar);
  if (state.focus) p.set("focus", state.focus);
  if (state.threshold) p.set("threshold", state.threshold);
  if (state.sort && state.sort !== "score") p.set("sort", state.sort);
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  render();
}

// ---- filters: words of the query such as after:2019-06 or in:"My Trips" (parsed again by the server)
const FILTER = /(^|\s)(after|before|in|camera|near):("[^"]*"|\S+)/gi;
function filtersOf(q) {
  return [...q.matchAll(FILTER)].map((m) => ({ key: m[2].toLowerCase(), value: m[3], raw: m[0].trim() }));
}
const filterText = (q) => filtersOf(q).map((f) => f.raw).join(" ");
const textOf = (q) => q.replace(FILTER, " ").replace(/\s+/g, " ").trim();
function withFilter(q, key, value, replace = true) {
  const kept = replace ? filtersOf(q).filter((f) => f.key !== key) : filtersOf(q);
  const token = `${key}:${/\s/.test(value) ? '"' + value + '"' : value}`;
  return [textOf(q), ...kept.map((f) => f.raw), token].filter(Boolean).join(" ");
}
function withoutFilter(q, raw) {
  return [textOf(q), ...filtersOf(q).filter((f) => f.raw !== raw).map((f) => f.raw)].filter(Boolean).join(" ");
}
function showChips(q) {
  $("chips").replaceChildren(...filtersOf(q).map((f) => el("span", { class: "chip" }, f.raw,
    el("button", { type: "button", title: "remove this filter", "aria-label": "remove " + f.raw,
      onclick: () => { const s = readState(); writeState(Object.assign(s, { q: withoutFilter(s.q, f.raw) })); } }, "×"))));
}
function addTypedFilters() {
  const s = readState();
  let q = $("q").value.trim();
  // <input type=month> gives YYYY-MM, which after:/before: take as it is
  if ($("f-after").value) q = withFilter(q, "after", $("f-after").value);
  if ($("f-before").value) q = withFilter(q, "before", $("f-before").value);
  if ($("f-in").value.trim()) q = withFilter(q, "in", $("f-in").value.trim(), false);
  if ($("f-camera").value.trim()) q = withFilter(q, "camera", $("f-camera").value.trim(), false);
  if ($("f-near").value.trim()) q = withFilter(q, "near", $("f-near").value.replace(/\s+/g, ""));
  for (const id of ["f-after", "f-before", "f-in", "f-camera", "f-near"]) $(id).value = "";
  writeState(Object.assign(s, { tab: "images", q }));
}

// ---- facets: a histogram of dates taken and a scatter of GPS positions (SVG, no map tiles: offline)
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS($("timeline").namespaceURI, tag); // the page's own SVG namespace
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}
const titled = (node, text) => { node.append(svg("title", {}, text)); return node; };

async function loadFacets(q) {
  const filters = filterText(q);
  let body;
  try { body = (await api("/api/facets" + (filters ? "?filter=" + encodeURIComponent(filters) : ""))).body; }
  catch (e) { $("facets").hidden = true; return; }
  if (filterText(readState().q) !== filters) return; // the query moved on meanwhile
  const cameras = body.cameras.map((c) => el("option", { value: c.camera }));
  if (cameras.length) $("cameras").replaceChildren(...cameras);
  drawTimeline(body.dates, q);
  drawPlaces(body.places, body.places_total, q);
  $("facets").hidden = !body.dates.bins.length && !body.places.length;
}

function drawTimeline(dates, q) {
  const bins = dates.bins, W = 600, H = 140, top = 8, base = H - 20;
  $("timeline-box").hidden = !bins.length;
  const total = bins.reduce((n, b) => n + b.count, 0);
  $("timeline-note").textContent = `· ${total} dated, by ${dates.unit} · click a bar to keep it`;
  const after = (filtersOf(q).find((f) => f.key === "after") || {}).value;
  const max = Math.max(1, ...bins.map((b) => b.count));
  const w = W / Math.max(1, bins.length);
  const every = Math.ceil(bins.length / 8);
  $("timeline").setAttribute("viewBox", `0 0 ${W} ${H}`);
  $("timeline").replaceChildren(...bins.flatMap((b, i) => {
    const h = b.count ? Math.max(2, (base - top) * b.count / max) : 0;
    const bar = titled(svg("rect", { class: "tbar" + (b.start === after ? " on" : ""), x: i * w + 1, y: base - h,
      width: Math.max(1, w - 2), height: h, "data-start": b.start,
      onclick: () => { const s = readState(); writeState(Object.assign(s, { tab: "images", q: withFilter(withFilter(s.q, "after", b.start), "before", b.end) })); } }),
      `${b.start}: ${b.count} photo${b.count === 1 ? "" : "s"}`);
    const hit = svg("rect", { x: i * w, y: top, width: w, height: base - top, fill: "transparent", onclick: () => bar.dispatchEvent(new Event("click")) });
    const parts = [hit, bar];
    if (i % every === 0) parts.push(svg("text", { class: "axis", x: i * w + 1, y: H - 5 }, b.start));
    return parts;
  }));
}

function drawPlaces(places, total, q) {
  const W = 400, H = 140, pad = 12;
  $("places-box").hidden = !places.length;
  $("places-note").textContent = `· ${total} with GPS${total > places.length ? `, ${places.length} shown` : ""} · click to search near`;
  if (!places.length) return $("places").replaceChildren();
  const lats = places.map((p) => p.lat), lons = places.map((p) => p.lon);
  const mid = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.max(0.2, Math.cos(mid * Math.PI / 180)); // degrees of longitude are shorter away from the equator
  let x0 = Math.min(...lons) * k, x1 = Math.max(...lons) * k, y0 = Math.min(...lats), y1 = Math.max(...lats);
  const span = Math.max(x1 - x0, y1 - y0, 0.02) * 1.15;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const scale = Math.min((W - 2 * pad) / span, (H - 2 * pad) / span);
  const px = (lon) => W / 2 + (lon * k - cx) * scale, py = (lat) => H / 2 - (lat - cy) * scale;
  const km = span * 111.2; // the view's width in km, roughly
  const ground = svg("rect", { class: "ground", x: 0, y: 0, width: W, height: H, onclick: (e) => {
    const box = $("places").getBoundingClientRect();
    const f = Math.min(box.width / W, box.height / H), ox = (box.width - W * f) / 2, oy = (box.height - H * f) / 2;
    const x = (e.clientX - box.left - ox) / f, y = (e.clientY - box.top - oy) / f;
    const lat = cy - (y - H / 2) / scale, lon = (cx + (x - W / 2) / scale) / k;
    const radius = Math.max(0.1, km / 10);
    const s = readState();
    writeState(Object.assign(s, { tab: "images", q: withFilter(s.q, "near", `${lat.toFixed(4)},${lon.toFixed(4)},${radius.toPrecision(2)}km`) }));
  } });
  const parts = [ground];
  const near = filtersOf(q).find((f) => f.key === "near");
  if (near) {
    const [lat, lon, r] = near.value.split(",");
    const radius = parseFloat(r || "10") * (/mi$/i.test(r || "") ? 1.609 : /\dm$/i.test(r || "") ? 0.001 : 1);
    parts.push(svg("circle", { class: "ring", cx: px(+lon), cy: py(+lat), r: Math.max(3, radius / 111.2 * scale) }));
  }
  for (const p of places) {
    parts.push(titled(svg("circle", { class: "place", cx: px(p.lon), cy: py(p.lat), r: 4, "data-id": p.id,
      onclick: (e) => { e.stopPropagation(); openDetail(p.id); } }), `#${p.id} · ${p.lat}, ${p.lon}`));
  }
  $("places").setAttribute("viewBox", `0 0 ${W} ${H}`);
  $("places").replaceChildren(...parts);
}

// ---- views
function setStatus(text, kind = "") {
  const s = $("status");
  s.className = "status " + kind;
  s.replaceChildren(...(Array.isArray(text) ? text : [text]));
}

function showGrid(rows) {
  const grid = $("grid");
  grid.replaceChildren(...rows.map((r) => {
    const card = el("button", { class: "card", "data-id": r.id, title: r.path, onclick: () => openDetail(r.id) },
      el("img", { src: thumbUrl(r.id), alt: basename(r.path), loading: "lazy" }),
      el("span", { class: "score" }, r.score.toFixed(3)),
      el("span", { class: "name" }, basename(r.path)),
      el("span", { class: "when" }, [r.taken ? r.taken.slice(0, 10) : "", r.camera || ""].filter(Boolean).join(" · ")));
    const also = r.also || [];
    if (also.length) {
      card.title = [r.path, ...also].join("\n");
      card.append(el("span", { class: "copies" }, `+${also.length} identical`));
    }
    return card;
  }));
}

function showWords(rows) {
  const max = rows.length ? Math.max(...rows.map((r) => r.score)) : 1;
  $("words").replaceChildren(...rows.map((r) => el("li", {},
    el("a", { href: "?tab=words&q=" + encodeURIComponent(r.word), class: "word",
      onclick: (e) => { e.preventDefault(); writeState({ tab: "words", q: r.word }); } }, r.word),
    el("span", { class: "bar" }, el("span", { style: `width:${Math.max(4, 100 * r.score / max)}%` })),
    el("span", { class: "wscore" }, r.score.toFixed(3)))));
}

let seq = 0;
async function run(label, fn) {
  const mine = ++seq;
  const t0 = performance.now();
  setStatus("Searching…", "busy");
  try {
    const n = await fn(() => mine === seq);
    if (mine !== seq) return;
    const ms = Math.round(performance.now() - t0);
    setStatus([el("b", {}, String(n)), ` results ${label} `, el("span", { class: "muted" }, `· ${ms} ms`)]);
  } catch (e) {
    if (mine === seq) setStatus(e.message, "error");
  }
}

function clearResults() {
  $("grid").replaceChildren();
  $("words").replaceChildren();
}

async function render() {
  const s = readState();
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === s.tab);
  $("q").value = s.q;
  $("focus").value = s.focus;
  $("sort").value = s.sort;
  showChips(s.q);
  $("image-options").hidden = s.tab !== "images";
  $("filters").hidden = s.tab !== "images";
  if (s.tab === "images") loadFacets(s.q); else $("facets").hidden = true;
  $("searchbar").hidden = s.tab === "map" || s.tab === "dupes";
  $("map").hidden = s.tab !== "map";
  $("dupes").hidden = s.tab !== "dupes";
  $("grid").hidden = s.tab !== "images";
  $("words").hidden = s.tab !== "words";
  $("q").placeholder = s.tab === "words" ? "A word or phrase, e.g. ocean" : "Describe what you are looking for…";
  clearResults();
  const k = `&k=${K}`;
  if (s.tab === "map") {
    setStatus("");
    return loadMap();
  }
  if (s.tab === "dupes") return loadDupes(s.threshold);
  if (s.tab === "words") {
    if (!s.q) return setStatus("Type a word to see its nearest words.");
    return run(`like “${s.q}”`, async (current) => {
      const { body, headers } = await api(`/api/words?q=${encodeURIComponent(s.q)}${k}`);
      if (current()) showWords(body);
      const unknown = decodeURIComponent(headers.get("X-Unknown-Words") || "");
      if (unknown) setTimeout(() => $("status").append(el("span", { class: "muted" }, ` · not known: ${unknown}`)), 0);
      return body.length;
    });
  }
  const focus = s.focus ? `&focus=${encodeURIComponent(s.focus)}` : "";
  const sort = s.sort !== "score" ? `&sort=${encodeURIComponent(s.sort)}` : "";
  if (s.similar) {
    const filter = filterText(s.q) ? `&filter=${encodeURIComponent(filterText(s.q))}` : "";
    return run(`similar to id:${s.similar}${s.focus ? ", focus " + s.focus : ""}`, async (current) => {
      const { body } = await api(`/api/similar/${encodeURIComponent(s.similar)}?${k.slice(1)}${focus}${filter}${sort}`);
      if (current()) showGrid(body);
      return body.length;
    });
  }
  if (s.q) {
    return run(`for “${s.q}”`, async (current) => {
      const { body } = await api(`/api/search?q=${encodeURIComponent(s.q)}${k}${sort}`);
      if (current()) showGrid(body);
      return body.length;
    });
  }
  setStatus("Search by words, or drop a photo anywhere on the page.");
}

async function searchUpload(file) {
  if (!file) return;
  const s = readState();
  history.pushState(null, "", location.pathname + (s.focus ? "?focus=" + encodeURIComponent(s.focus) : ""));
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === "images");
  $("q").value = "";
  clearResults();
  const focus = s.focus ? `&focus=${encodeURIComponent(s.focus)}` : "";
  const preview = el("img", { class: "preview", src: URL.createObjectURL(file), alt: "" });
  await run(`similar to ${file.name}`, async (current) => {
    const { body } = await api(`/api/similar?k=${K}${focus}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    if (current()) showGrid(body);
    return body.length;
  });
  $("status").prepend(preview);
}

// ---- detail view
async function openDetail(id) {
  $("modal").hidden = false;
  $("detail-img").src = thumbUrl(id);
  $("detail-img").dataset.id = id;
  const full = new Image();
  full.onload = () => { if ($("detail-img").dataset.id == id) $("detail-img").src = full.src; };
  full.src = originalUrl(id);
  $("detail-name").textContent = `#${id}`;
  $("detail-path").textContent = "";
  $("detail-info").replaceChildren();
  $("detail-text").hidden = $("detail-text-title").hidden = true;
  $("detail-tags").replaceChildren(el("li", { class: "muted" }, "…"));
  const focus = readState().focus;
  $("detail-more").href = `?similar=${id}` + (focus ? `&focus=${encodeURIComponent(focus)}` : "");
  $("detail-original").href = originalUrl(id);
  try {
    const { body } = await api(`/api/images/${id}`);
    $("detail-name").textContent = body.name;
    $("detail-path").textContent = body.path;
    const facts = [
      ["taken", body.taken && `${body.taken.replace("T", " ")}${body.taken_from === "file" ? " (file time)" : ""}`],
      ["camera", body.camera],
      ["place", body.gps && body.gps.map((v) => v.toFixed(5)).join(", ")],
      ["size", body.width && `${body.width} × ${body.height}`],
    ].filter(([, v]) => v);
    $("detail-info").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("detail-text").textContent = body.text || "";
    $("detail-text").hidden = $("detail-text-title").hidden = !body.text;
  } catch (e) { $("detail-path").textContent = e.message; }
  try {
    const { body } = await api(`/api/images/${id}/tags?k=10`);
    $("detail-tags").replaceChildren(...body.map((t) => el("li", { class: "tag", title: t.score.toFixed(3) },
      el("a", { href: `?q=${encodeURIComponent(t.word)}`,
        onclick: (e) => { e.preventDefault(); closeDetail(); writeState({ tab: "images", q: t.word }); } }, t.word))));
  } catch (e) { $("detail-tags").replaceChildren(el("li", { class: "muted" }, e.message)); }
}
function closeDetail() { $("modal").hidden = true; $("detail-img").removeAttribute("src"); }

// ---- duplicates view: groups side by side, identical files marked
function dupeGroup(group, number) {
  const copyOf = new Map();
  for (const ids of group.identical) for (const id of ids.slice(1)) copyOf.set(id, ids[0]);
  const best = new Map(group.ids.map((id) => [id, 0]));
  for (const p of group.pairs) for (const id of [p.a, p.b]) best.set(id, Math.max(best.get(id), p.score));
  const identical = group.identical.reduce((n, ids) => n + ids.length - 1, 0);
  return el("section", { class: "dupe-group", "data-ids": group.ids.join(",") },
    el("h3", {}, `Group ${number} · ${group.ids.length} photos`,
      identical ? el("span", { class: "muted" }, ` · ${identical} identical ${identical > 1 ? "copies" : "copy"}`) : ""),
    el("div", { class: "dupe-row" }, ...group.ids.map((id, i) => el("button", {
      class: "card dupe", "data-id": id, title: group.paths[i], onclick: () => openDetail(id) },
      el("img", { src: thumbUrl(id), alt: basename(group.paths[i]), loading: "lazy" }),
      el("span", { class: "score" }, copyOf.has(id) ? `= #${copyOf.get(id)}` : best.get(id).toFixed(3)),
      el("span", { class: "name" }, basename(group.paths[i])),
      el("span", { class: "where" }, group.paths[i])))));
}

async function loadDupes(threshold) {
  $("threshold").value = threshold || $("threshold").value;
  const query = threshold ? `?threshold=${encodeURIComponent(threshold)}` : "";
  const mine = ++seq;
  setStatus("Comparing photos…", "busy");
  $("dupe-groups").replaceChildren();
  try {
    const { body } = await api(`/api/duplicates${query}`);
    if (mine !== seq) return;
    $("threshold").value = body.threshold;
    $("dupe-groups").replaceChildren(...body.groups.map((g, i) => dupeGroup(g, i + 1)));
    const shown = body.groups.length < body.total ? ` (the ${body.groups.length} largest shown)` : "";
    setStatus([el("b", {}, String(body.total)), ` groups of duplicates at similarity ≥ ${body.threshold}${shown}`]);
  } catch (e) {
    if (mine === seq) setStatus(e.message, "error");
  }
}

// ---- map view
let mapData = null;
const view = { scale: 1, x: 0, y: 0 };
function applyView() {
  $("map-inner").style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  $("map-inner").style.setProperty("--inv", String(1 / view.scale));
}
async function loadMap() {
  const inner = $("map-inner");
  if (!mapData) {
    setStatus("Placing the collection…", "busy");
    try { mapData = (await api("/api/map")).body; } catch (e) { return setStatus(e.message, "error"); }
  }
  setStatus([el("b", {}, String(mapData.points.length)), " images, placed by their features"]);
  const size = Math.max(800, Math.sqrt(mapData.points.length) * 90);
  const cell = Math.max(36, Math.min(72, size / Math.sqrt(Math.max(1, mapData.points.length)) * 0.9));
  inner.style.width = inner.style.height = size + "px";
  inner.replaceChildren(
    ...mapData.points.map((p) => el("img", {
      class: "dot", src: thumbUrl(p.id), loading: "lazy", alt: "", "data-id": p.id,
      style: `left:${p.x * (size - cell)}px;top:${p.y * (size - cell)}px;width:${cell}px;height:${cell}px`,
    })),
    ...mapData.clusters.filter((c) => c.label).map((c) => el("div", {
      class: "cluster", style: `left:${c.x * (size - cell) + cell / 2}px;top:${c.y * (size - cell) + cell / 2}px`,
    }, c.label)));
  resetView();
}
function resetView() {
  const box = $("map").getBoundingClientRect();
  const size = parseFloat($("map-inner").style.width) || 800;
  view.scale = Math.min(box.width / size, box.height / size) * 0.95;
  view.x = (box.width - size * view.scale) / 2;
  view.y = (box.height - size * view.scale) / 2;
  applyView();
}
function setupMap() {
  const map = $("map");
  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = map.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    const f = Math.exp(-e.deltaY * 0.0015);
    const s = Math.min(20, Math.max(0.05, view.scale * f));
    view.x = mx - (mx - view.x) * (s / view.scale);
    view.y = my - (my - view.y) * (s / view.scale);
    view.scale = s;
    applyView();
  }, { passive: false });
  let drag = null;
  map.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false }; });
  window.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    view.x = drag.vx + dx; view.y = drag.vy + dy; applyView();
  });
  window.addEventListener("pointerup", (e) => {
    if (drag && !drag.moved && e.target.classList && e.target.classList.contains("dot")) openDetail(e.target.dataset.id);
    drag = null;
  });
  map.addEventListener("dblclick", resetView);
}

// ---- wiring
async function init() {
  for (const t of document.querySelectorAll(".tab")) {
    t.addEventListener("click", () => {
      const s = readState();
      const browse = t.dataset.tab === "map" || t.dataset.tab === "dupes";
      writeState({ tab: t.dataset.tab, q: browse ? "" : s.q, focus: s.focus, sort: s.sort });
    });
  }
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const s = readState();
    const q = $("q").value.trim();
    const similar = s.similar && !textOf(q) ? s.similar : ""; // filters alone keep narrowing "more like this"
    writeState({ tab: s.tab === "map" ? "images" : s.tab, q, similar, focus: $("focus").value.trim(), sort: s.sort });
  });
  $("sort").addEventListener("change", () => writeState(Object.assign(readState(), { sort: $("sort").value })));
  $("f-add").addEventListener("click", addTypedFilters);
  $("focus").addEventListener("change", () => {
    const s = readState();
    if (s.tab === "images") writeState(Object.assign(s, { focus: $("focus").value.trim() }));
  });
  $("dupes-form").addEventListener("submit", (e) => {
    e.preventDefault();
    writeState({ tab: "dupes", threshold: $("threshold").value.trim() });
  });
  $("file").addEventListener("change", (e) => { searchUpload(e.target.files[0]); e.target.value = ""; });
  $("modal-close").addEventListener("click", closeDetail);
  $("modal").addEventListener("click", (e) => { if (e.target === $("modal")) closeDetail(); });
  $("detail-more").addEventListener("click", (e) => {
    e.preventDefault(); closeDetail();
    const id = new URLSearchParams($("detail-more").getAttribute("href").slice(1));
    writeState({ tab: "images", similar: id.get("similar"), focus: id.get("focus") || "" });
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
  window.addEventListener("popstate", render);
  // drag and drop anywhere
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; $("drop-overlay").hidden = false; });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop-overlay").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; $("drop-overlay").hidden = true;
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) searchUpload(f);
  });
  setupMap();
  render();
  try {
    const { body } = await api("/api/stats");
    $("stats").textContent = `${body.images} images · ${body.model || ""}`;
  } catch (e) { /* shown by the searches */ }
  try {
    const { body } = await api("/api/classes");
    $("classes").replaceChildren(...body.map((c) => el("option", { value: c.name })));
  } catch (e) { /* focus stays free text */ }
}
init();
