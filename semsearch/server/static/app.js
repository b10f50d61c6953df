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
    history.replaceState(history.state, "", url);
  }
})();
const token = () => sessionStorage.getItem("semsearch-token") || "";

function withToken(path) {
  const t = token();
  return t ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(t) : path;
}
const thumbUrl = (id) => withToken(`/api/images/${id}/thumb`);
const originalUrl = (id) => withToken(`/api/images/${id}/original`);

/** A failed request: the server's one-line `detail`, its HTTP status (0: the server could not be reached). */
class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  let res;
  try { res = await fetch(path, Object.assign({}, options, { headers })); }
  catch (e) { throw new ApiError("the server did not answer", 0); }
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    let msg = body && body.detail ? body.detail : res.statusText;
    if (Array.isArray(msg)) msg = msg.map((d) => d.msg).join("; "); // a validation error list
    throw new ApiError(String(msg), res.status);
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
const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

// ---- names and paths that wrap between their words, never inside one
/** The parts of a file name with a line-break opportunity after each separator (_ - . space) of its stem;
 * the extension stays with the last word. */
function breakable(name) {
  const dot = name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name, ext = dot > 0 ? name.slice(dot) : "";
  const words = stem.split(/(?<=[_\-.\s])/);
  words[words.length - 1] += ext;
  return words.flatMap((w, i) => (i ? [el("wbr"), w] : [w]));
}
/** A path as nodes: its folders, breakable after each separator, then the file name on a line of its own. */
function pathNodes(path) {
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1;
  const folders = path.slice(0, cut).split(/(?<=[\\/])/).filter(Boolean);
  return [
    el("span", { class: "folder" }, ...folders.flatMap((f) => [f, el("wbr")])),
    el("span", { class: "file" }, ...breakable(path.slice(cut))),
  ];
}

// ---- state <-> URL; history entries count how deep into the page's own history they are
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
const depth = () => (history.state && history.state.depth) || 0;
function writeState(state, push = true) {
  const p = new URLSearchParams();
  if (state.tab && state.tab !== "images") p.set("tab", state.tab);
  if (state.q) p.set("q", state.q);
  if (state.similar) p.set("similar", state.similar);
  if (state.focus) p.set("focus", state.focus);
  if (state.threshold) p.set("threshold", state.threshold);
  if (state.sort && state.sort !== "score") p.set("sort", state.sort);
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (push) history.pushState({ depth: depth() + 1 }, "", url); else history.replaceState(history.state, "", url);
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
function chip(text, remove) {
  return el("span", { class: "chip" }, text,
    el("button", { type: "button", title: "remove this filter", "aria-label": "remove " + text, onclick: remove }, "×"));
}
function showChips(q, focus) {
  const chips = filtersOf(q).map((f) => chip(f.raw, () => { const s = readState(); writeState(Object.assign(s, { q: withoutFilter(s.q, f.raw) })); }));
  if (focus) chips.push(chip(`focus:${focus}`, () => writeState(Object.assign(readState(), { focus: "" }))));
  $("chips").replaceChildren(...chips);
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
let filtersOpen = false;
function toggleFilters() {
  filtersOpen = !filtersOpen;
  $("filters-toggle").setAttribute("aria-expanded", String(filtersOpen));
  $("filters").hidden = !filtersOpen;
  if (filtersOpen) $("f-after").focus();
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
  const now = readState();
  if (filterText(now.q) !== filters || now.tab !== "images") return; // the page moved on meanwhile
  const cameras = body.cameras.map((c) => el("option", { value: c.camera }));
  if (cameras.length) $("cameras").replaceChildren(...cameras);
  drawTimeline(body.dates, q);
  drawPlaces(body.places, body.places_total, q);
  $("facets").hidden = $("timeline-box").hidden && $("places-box").hidden;
}

function drawTimeline(dates, q) {
  const bins = dates.bins, W = 600, H = 140, top = 8, base = H - 20;
  $("timeline-box").hidden = bins.length < 2; // one bar says nothing
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

// ---- status line and friendly errors
function setStatus(text, kind = "") {
  const s = $("status");
  s.className = "status " + kind;
  const parts = Array.isArray(text) ? text : [text];
  if (kind === "similar") s.replaceChildren(...parts);
  else s.replaceChildren(...(text === "" ? [] : [el("span", { class: "status-text" }, ...parts)]));
}

/** What went wrong, in words, and what to try: by HTTP status, then by what the page was doing. */
const TRY_BY_CONTEXT = {
  search: (q) => [`“${q}” could not be searched`,
    "Check the filters (after:2019-06, before:2020, in:Trips, camera:canon, near:48.85,2.35,20km), or try other words."],
  words: (q) => [`No words near “${q}”`, "Check the spelling, or try a more common word: the word list is English."],
  similar: () => ["No photos like this one", "The photo may have left the collection: search by words, or run semsearch index again."],
  upload: (name) => [`${name} could not be used`, "Choose a photo (JPEG, PNG, WebP, GIF…) and try again."],
  detail: () => ["This photo cannot be shown", "It may have been moved or deleted: run semsearch index again to update the collection."],
  map: () => ["The map could not be drawn", "Try again in a moment."],
  dupes: () => ["Duplicates could not be grouped", "Choose a similarity between 0.5 and 1."],
  start: () => ["The collection could not be read", "Check that the server still runs, then reload the page."],
};
function explain(err, context, subject = "") {
  const [title, hint] = (TRY_BY_CONTEXT[context] || (() => ["Something went wrong", "Try again."]))(subject);
  switch (err.status) {
    case 0: return { title: "The server cannot be reached", hint: "Check that semsearch serve is still running, then try again.", retry: true };
    case 401: return { title: "This server needs a token", hint: "Open the page with the address semsearch serve printed: it ends in ?token=…" };
    case 413: return { title: "That photo is too large", hint: "Choose a smaller file, or start the server with a larger --max-upload-mb." };
    case 429: case 503: return { title: "The server is busy", hint: "Wait a moment and try again.", retry: true };
    default:
      if (err.status >= 500) return { title: "Something went wrong on the server", hint: "Try again; if it keeps happening, look at the server's log.", retry: true };
      return { title, hint };
  }
}
function showError(err, context, subject = "") {
  const { title, hint, retry } = explain(err, context, subject);
  setStatus("");
  const detail = err.message || "";
  $("notice").className = "notice error";
  $("notice").replaceChildren(
    el("div", { class: "notice-icon", "aria-hidden": "true" }, "!"),
    el("div", { class: "notice-body" },
      el("strong", { class: "notice-title" }, title),
      detail ? el("p", { class: "notice-detail" }, detail.endsWith(".") ? detail : detail + ".") : "",
      el("p", { class: "notice-hint" }, hint),
      el("div", { class: "notice-actions" },
        retry ? el("button", { type: "button", class: "primary", onclick: () => render() }, "Try again") : "",
        el("a", { href: "/", class: "ghost button", onclick: (e) => { e.preventDefault(); writeState({ tab: "images" }); } }, "Start page"))));
  $("notice").hidden = false;
}
function showEmpty(title, hint) {
  $("notice").className = "notice info";
  $("notice").replaceChildren(el("div", { class: "notice-body" }, el("strong", { class: "notice-title" }, title),
    el("p", { class: "notice-hint" }, hint)));
  $("notice").hidden = false;
}
function clearNotice() { $("notice").hidden = true; $("notice").replaceChildren(); }

// ---- results
function card(r, { score = true } = {}) {
  const node = el("button", { type: "button", class: "card", "data-id": r.id, title: r.path, onclick: () => openDetail(r.id) },
    el("img", { src: thumbUrl(r.id), alt: basename(r.path), loading: "lazy" }),
    score ? el("span", { class: "score" }, r.score.toFixed(3)) : "",
    el("span", { class: "name" }, basename(r.path)),
    el("span", { class: "when" }, [r.taken ? r.taken.slice(0, 10) : "", r.camera || ""].filter(Boolean).join(" · ")));
  const also = r.also || [];
  if (also.length) {
    node.title = [r.path, ...also].join("\n");
    node.append(el("span", { class: "copies" }, `+${also.length} identical`));
  }
  return node;
}
function showGrid(rows) { $("grid").replaceChildren(...rows.map((r) => card(r))); }

function showWords(rows) {
  const max = rows.length ? Math.max(...rows.map((r) => r.score)) : 1;
  $("words").replaceChildren(...rows.map((r) => el("li", {},
    el("a", { href: "?tab=words&q=" + encodeURIComponent(r.word), class: "word", title: `words near “${r.word}”`,
      onclick: (e) => { e.preventDefault(); writeState({ tab: "words", q: r.word }); } }, r.word),
    el("span", { class: "bar" }, el("span", { style: `width:${Math.max(4, 100 * r.score / max)}%` })),
    el("span", { class: "wscore" }, r.score.toFixed(3)),
    el("a", { href: "?q=" + encodeURIComponent(r.word), class: "to-photos", title: `photos of “${r.word}”`,
      "aria-label": `photos of ${r.word}`, onclick: (e) => { e.preventDefault(); writeState({ tab: "images", q: r.word }); } }, "photos →"))));
}

/** The heading of "more like this": the query photo itself, its name, and how many results. */
function similarHeading(image, n, ms, focus) {
  return [
    el("button", { type: "button", class: "query-photo", title: "show this photo", onclick: () => openDetail(image.id) },
      el("img", { src: thumbUrl(image.id), alt: image.name })),
    el("span", { class: "query-text" },
      el("span", { class: "query-label" }, "More like this photo"),
      el("span", { class: "query-name" }, ...breakable(image.name)),
      el("span", {}, el("b", {}, String(n)), " similar photos", focus ? `, focus ${focus}` : "",
        el("span", { class: "muted" }, ` · ${ms} ms`))),
  ];
}

let seq = 0;
/** Runs one search; `fn` returns the status line (or a count); errors become a message box. */
async function run(context, subject, label, fn) {
  const mine = ++seq;
  const t0 = performance.now();
  setStatus([el("span", { class: "spinner", "aria-hidden": "true" }), "Searching…"], "busy");
  try {
    const out = await fn(() => mine === seq, () => Math.round(performance.now() - t0));
    if (mine !== seq) return;
    if (typeof out === "number") {
      const ms = Math.round(performance.now() - t0);
      setStatus([el("b", {}, String(out)), ` results ${label} `, el("span", { class: "muted" }, `· ${ms} ms`)]);
      if (!out) showEmpty(`Nothing found ${label}`, "Remove a filter, or try other words.");
    } else setStatus(out.status || out, out.kind || "");
  } catch (e) {
    if (mine === seq) showError(e, context, subject);
  }
}

function clearResults() {
  $("grid").replaceChildren();
  $("words").replaceChildren();
  clearNotice();
}

async function render() {
  const s = readState();
  document.body.dataset.tab = s.tab;
  for (const t of document.querySelectorAll(".tab")) {
    t.classList.toggle("active", t.dataset.tab === s.tab);
    t.setAttribute("aria-selected", String(t.dataset.tab === s.tab));
  }
  $("q").value = s.q;
  $("focus").value = s.focus;
  $("sort").value = s.sort;
  showChips(s.q, s.tab === "images" ? s.focus : "");
  const start = s.tab === "images" && !s.q && !s.similar;
  document.body.classList.toggle("at-start", start);
  $("hero").hidden = $("start").hidden = !start;
  if (!start) $("examples-box").hidden = true;
  $("image-options").hidden = s.tab !== "images";
  $("filters").hidden = s.tab !== "images" || !filtersOpen;
  if (s.tab === "images" && !start) loadFacets(s.q); else $("facets").hidden = true;
  $("searchbar").hidden = s.tab === "map" || s.tab === "dupes";
  $("atlas").hidden = s.tab !== "map";
  $("dupes").hidden = s.tab !== "dupes";
  $("grid").hidden = s.tab !== "images" || start;
  $("words").hidden = s.tab !== "words";
  const narrow = matchMedia("(max-width: 760px)").matches;
  $("q").placeholder = s.tab === "words" ? "A word or phrase, e.g. ocean" : narrow ? "What are you looking for?" : "Describe what you are looking for…";
  clearResults();
  const k = `&k=${K}`;
  if (s.tab === "map") {
    setStatus("");
    return loadMap();
  }
  if (s.tab === "dupes") return loadDupes(s.threshold);
  if (s.tab === "words") {
    if (!s.q) return setStatus("Type a word to see the words nearest to it in meaning.");
    return run("words", s.q, `like “${s.q}”`, async (current) => {
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
    return run("similar", s.similar, "", async (current, elapsed) => {
      const [image, { body }] = await Promise.all([
        api(`/api/images/${encodeURIComponent(s.similar)}`).then((r) => r.body),
        api(`/api/similar/${encodeURIComponent(s.similar)}?${k.slice(1)}${focus}${filter}${sort}`),
      ]);
      if (current()) showGrid(body);
      if (!body.length) showEmpty("No similar photos", "Remove a filter to see more.");
      return { status: similarHeading(image, body.length, elapsed(), s.focus), kind: "similar" };
    });
  }
  if (s.q) {
    return run("search", s.q, `for “${s.q}”`, async (current) => {
      const { body, headers } = await api(`/api/search?q=${encodeURIComponent(s.q)}${k}${sort}`);
      if (current()) showGrid(body);
      const notes = decodeURIComponent(headers.get("X-Search-Notes") || "").split("|").filter(Boolean);
      if (notes.length) setTimeout(() => $("status").append(...notes.map((n) => el("span", { class: "note" }, n))), 0);
      return body.length;
    });
  }
  return loadStart();
}

// ---- start page: the collection, example queries to click, the newest photos
async function loadStart() {
  const mine = ++seq;
  setStatus("");
  let overview = null;
  try { overview = (await api("/api/overview")).body; }
  catch (e) {
    if (e.status !== 404) return mine === seq && showError(e, "start");
    try { // a server without /api/overview: what /api/stats says
      const stats = (await api("/api/stats")).body;
      overview = { count: stats.images, model: stats.model, recent: [], examples: [] };
    } catch (e2) { return mine === seq && showError(e2, "start"); }
  }
  if (mine !== seq) return;
  const n = overview.count || 0;
  $("hero-title").textContent = n ? `Search ${plural(n, "photo")} by what is in them` : "This collection is empty";
  $("hero-sub").textContent = n
    ? "Describe what you are looking for in your own words, or drop a photo anywhere to find similar ones."
    : "Add photos with semsearch index FOLDER, then reload this page.";
  const examples = overview.examples || [];
  $("examples-box").hidden = !examples.length;
  $("examples").replaceChildren(...examples.map((q) => el("button", { type: "button", class: "example",
    onclick: () => writeState({ tab: "images", q }) }, q)));
  const recent = overview.recent || [];
  $("recent-title").hidden = !recent.length;
  $("recent").replaceChildren(...recent.map((r) => card(r, { score: false })));
}

async function searchUpload(file) {
  if (!file) return;
  const s = readState();
  history.pushState({ depth: depth() + 1 }, "", location.pathname + (s.focus ? "?focus=" + encodeURIComponent(s.focus) : ""));
  await render(); // the images tab, no query
  $("hero").hidden = $("start").hidden = true;
  document.body.classList.remove("at-start");
  $("grid").hidden = false;
  const focus = s.focus ? `&focus=${encodeURIComponent(s.focus)}` : "";
  const preview = URL.createObjectURL(file);
  await run("upload", file.name, "", async (current, elapsed) => {
    const { body } = await api(`/api/similar?k=${K}${focus}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
    if (current()) showGrid(body);
    return { kind: "similar", status: [
      el("span", { class: "query-photo" }, el("img", { src: preview, alt: file.name })),
      el("span", { class: "query-text" }, el("span", { class: "query-label" }, "More like your photo"),
        el("span", { class: "query-name" }, ...breakable(file.name)),
        el("span", {}, el("b", {}, String(body.length)), " similar photos", el("span", { class: "muted" }, ` · ${elapsed()} ms`))),
    ] };
  });
}

// ---- detail view: the photo large, its path, details, tags and "more like this"; ← → walk the results
let detailFrom = null; // the card that opened the detail view, focused again when it closes
const visibleCards = () => [...document.querySelectorAll("main .card")].filter((c) => c.offsetParent !== null);

async function openDetail(id) {
  id = String(id);
  const opener = visibleCards().find((c) => c.dataset.id === id);
  if ($("modal").hidden) detailFrom = opener || document.activeElement;
  else if (opener) detailFrom = opener;
  $("modal").hidden = false;
  document.body.classList.add("modal-open");
  $("modal-card").dataset.id = id;
  const img = $("detail-img");
  img.src = thumbUrl(id); // shown at once, then replaced by the original
  $("detail-backdrop").src = thumbUrl(id);
  const full = new Image();
  full.onload = () => { if ($("modal-card").dataset.id === id) img.src = full.src; };
  full.src = originalUrl(id);
  const cards = visibleCards(), at = cards.findIndex((c) => c.dataset.id === id);
  $("detail-prev").hidden = at <= 0;
  $("detail-next").hidden = at < 0 || at >= cards.length - 1;
  $("detail-name").textContent = `#${id}`;
  $("detail-path").replaceChildren();
  $("detail-info").replaceChildren();
  $("detail-text").hidden = $("detail-text-title").hidden = true;
  $("detail-tags").replaceChildren(el("li", { class: "muted" }, "…"));
  const focus = readState().focus;
  $("detail-more").href = `?similar=${id}` + (focus ? `&focus=${encodeURIComponent(focus)}` : "");
  $("detail-original").href = originalUrl(id);
  $("modal-card").focus();
  const [info, tags] = await Promise.allSettled([api(`/api/images/${id}`), api(`/api/images/${id}/tags?k=10`)]);
  if ($("modal-card").dataset.id !== id) return; // another photo was opened meanwhile
  if (info.status === "fulfilled") {
    const body = info.value.body;
    img.alt = body.name;
    $("detail-name").replaceChildren(...breakable(body.name));
    $("detail-path").replaceChildren(...pathNodes(body.path));
    const taken = body.taken && new Date(body.taken.length > 10 ? body.taken : body.taken + "T00:00");
    const facts = [
      ["Taken", taken && !isNaN(taken) ? taken.toLocaleString(undefined, { dateStyle: "long", timeStyle: "short" }) +
        (body.taken_from === "file" ? " (file date)" : "") : body.taken],
      ["Camera", body.camera],
      ["Place", body.gps && body.gps.map((v) => v.toFixed(4)).join(", ")],
      ["Size", body.width && `${body.width} × ${body.height} px`],
      ["Folder", body.label],
    ].filter(([, v]) => v);
    $("detail-info").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("detail-text").textContent = body.text || "";
    $("detail-text").hidden = $("detail-text-title").hidden = !body.text;
  } else {
    const { title, hint } = explain(info.reason, "detail");
    $("detail-name").textContent = title;
    $("detail-path").replaceChildren(info.reason.message + ". " + hint);
  }
  if (tags.status === "fulfilled") {
    $("detail-tags").replaceChildren(...tags.value.body.map((t) => el("li", { class: "tag", title: `score ${t.score.toFixed(3)}` },
      el("a", { href: `?q=${encodeURIComponent(t.word)}`,
        onclick: (e) => { e.preventDefault(); closeDetail(false); writeState({ tab: "images", q: t.word }); } }, t.word))));
  } else $("detail-tags").replaceChildren(el("li", { class: "muted" }, tags.reason.message));
}
function stepDetail(by) {
  const cards = visibleCards(), at = cards.findIndex((c) => c.dataset.id === $("modal-card").dataset.id);
  const next = cards[at + by];
  if (at >= 0 && next) openDetail(next.dataset.id);
}
function closeDetail(refocus = true) {
  if ($("modal").hidden) return;
  $("modal").hidden = true;
  document.body.classList.remove("modal-open");
  $("detail-img").removeAttribute("src");
  $("modal-card").dataset.id = "";
  if (refocus && detailFrom && detailFrom.isConnected) detailFrom.focus();
  detailFrom = null;
}

// ---- keyboard: arrows move through results, Enter opens one, Esc closes the photo or goes back, / searches
function neighbour(cards, from, key) {
  const at = cards.indexOf(from);
  if (key === "ArrowRight") return cards[at + 1];
  if (key === "ArrowLeft") return cards[at - 1];
  const r = from.getBoundingClientRect(), x = r.left + r.width / 2;
  const down = key === "ArrowDown";
  const rows = cards.map((c) => c.getBoundingClientRect())
    .filter((b) => (down ? b.top >= r.bottom - 1 : b.bottom <= r.top + 1));
  if (!rows.length) return undefined;
  const row = down ? Math.min(...rows.map((b) => b.top)) : Math.max(...rows.map((b) => b.top));
  let best, gap = Infinity;
  for (const c of cards) {
    const b = c.getBoundingClientRect();
    const d = Math.abs(b.left + b.width / 2 - x);
    if (Math.abs(b.top - row) < b.height / 2 && d < gap) { best = c; gap = d; } // a hovered card sits 2 px higher
  }
  return best;
}
function onKey(e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);
  if (!$("modal").hidden) {
    if (e.key === "Escape") { e.preventDefault(); closeDetail(); }
    else if (e.key === "ArrowLeft" || e.key === "ArrowRight") { e.preventDefault(); stepDetail(e.key === "ArrowLeft" ? -1 : 1); }
    else if (e.key === "Tab") trapFocus(e);
    return;
  }
  if (e.key === "/" && !typing && readState().tab !== "map") { e.preventDefault(); $("q").focus(); $("q").select(); return; }
  const arrows = ["ArrowRight", "ArrowLeft", "ArrowUp", "ArrowDown"];
  const cards = visibleCards();
  if (arrows.includes(e.key) && cards.length) {
    const onCard = cards.includes(e.target);
    if (!onCard && !(e.target === $("q") && e.key === "ArrowDown") && (typing || e.target.closest("button, a, .map"))) return;
    e.preventDefault();
    const next = onCard ? neighbour(cards, e.target, e.key) : cards[0];
    if (next) { next.focus(); next.scrollIntoView({ block: "nearest" }); }
    return;
  }
  if (e.key === "Escape" && !typing && depth() > 0) { e.preventDefault(); history.back(); }
}
function trapFocus(e) { // Tab stays inside the dialog while it is open
  const inside = [...$("modal-card").querySelectorAll("button, a[href]")].filter((n) => n.offsetParent !== null);
  if (!inside.length) return;
  const first = inside[0], last = inside[inside.length - 1];
  if (e.shiftKey && (document.activeElement === first || document.activeElement === $("modal-card"))) { e.preventDefault(); last.focus(); }
  else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
}

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
      type: "button", class: "card dupe", "data-id": id, title: group.paths[i], onclick: () => openDetail(id) },
      el("img", { src: thumbUrl(id), alt: basename(group.paths[i]), loading: "lazy" }),
      el("span", { class: "score" }, copyOf.has(id) ? `= #${copyOf.get(id)}` : best.get(id).toFixed(3)),
      el("span", { class: "name" }, basename(group.paths[i])),
      el("span", { class: "where" }, ...pathNodes(group.paths[i]))))));
}

async function loadDupes(threshold) {
  $("threshold").value = threshold || $("threshold").value;
  const query = threshold ? `?threshold=${encodeURIComponent(threshold)}` : "";
  const mine = ++seq;
  setStatus([el("span", { class: "spinner", "aria-hidden": "true" }), "Comparing photos…"], "busy");
  $("dupe-groups").replaceChildren();
  try {
    const { body } = await api(`/api/duplicates${query}`);
    if (mine !== seq) return;
    $("threshold").value = body.threshold;
    $("dupe-groups").replaceChildren(...body.groups.map((g, i) => dupeGroup(g, i + 1)));
    const shown = body.groups.length < body.total ? ` (the ${body.groups.length} largest shown)` : "";
    setStatus([el("b", {}, String(body.total)), ` groups of duplicates at similarity ≥ ${body.threshold}${shown}`]);
  } catch (e) {
    if (mine === seq) showError(e, "dupes");
  }
}

// ---- map view: thumbnails where the server's 2-D projection puts them, spread on a grid so that none
// covers another; each group of similar photos has a colour, named in the legend beside the map
const PALETTE = ["#4f5bd5", "#e8590c", "#2f9e44", "#c2255c", "#1098ad", "#f08c00", "#7048e8", "#5c940d",
  "#d6336c", "#0b7285", "#862e9c", "#a61e4d", "#364fc7", "#e67700", "#087f5b", "#495057"];
const PITCH = 72, THUMB = 64; // grid step and thumbnail size, in map pixels
let mapData = null, mapLayout = null;
const view = { scale: 1, x: 0, y: 0 };

/** [x, y] of a cluster: its "x"/"y" fields, or a "centre"/"center"/"position" as [x, y] or {x, y}. */
function centreOf(c) {
  const p = c.centre || c.center || c.position;
  if (Array.isArray(p)) return [+p[0], +p[1]];
  if (p && typeof p === "object") return [+p.x, +p.y];
  return [+c.x, +c.y];
}
const labelOf = (c, i) => c.label || c.name || (Array.isArray(c.words) ? c.words.join(", ") : "") || `Group ${i + 1}`;

/** The group of each point: its own "cluster" field, the clusters' member lists, or the nearest centre. */
function groupsOf(points, clusters) {
  if (points.every((p) => Number.isInteger(p.cluster) && p.cluster >= 0 && p.cluster < clusters.length)) {
    return points.map((p) => p.cluster);
  }
  const member = new Map();
  clusters.forEach((c, i) => { for (const id of c.ids || c.members || []) member.set(id, i); });
  const centres = clusters.map(centreOf);
  return points.map((p) => {
    if (member.has(p.id)) return member.get(p.id);
    let best = 0, d = Infinity;
    centres.forEach(([x, y], i) => { const e = (p.x - x) ** 2 + (p.y - y) ** 2; if (e < d) { d = e; best = i; } });
    return best;
  });
}

/** Grid cells for the points: each goes to the free cell nearest to where the projection puts it (ranks
 * blended in so that dense regions spread out), cluster cores first so that groups stay together. */
function gridLayout(points, groups, clusters) {
  const n = points.length, side = Math.max(1, Math.ceil(Math.sqrt(n * 1.35)));
  const rank = (key) => {
    const order = points.map((_, i) => i).sort((a, b) => points[a][key] - points[b][key]);
    const r = new Float64Array(n);
    order.forEach((i, j) => { r[i] = n > 1 ? j / (n - 1) : 0.5; });
    return r;
  };
  const rx = rank("x"), ry = rank("y");
  const tx = points.map((p, i) => (0.5 * (+p.x || 0) + 0.5 * rx[i]) * (side - 1));
  const ty = points.map((p, i) => (0.5 * (+p.y || 0) + 0.5 * ry[i]) * (side - 1));
  const centres = clusters.map(centreOf);
  const away = points.map((p, i) => { const c = centres[groups[i]] || [p.x, p.y]; return (p.x - c[0]) ** 2 + (p.y - c[1]) ** 2; });
  const taken = new Uint8Array(side * side), cells = new Array(n);
  for (const i of points.map((_, j) => j).sort((a, b) => away[a] - away[b])) {
    const cx = Math.round(tx[i]), cy = Math.round(ty[i]);
    let best = -1, bestD = Infinity;
    for (let r = 0; best < 0 || r <= Math.ceil(Math.sqrt(bestD)); r++) { // rings around the wanted cell
      for (let y = cy - r; y <= cy + r; y++) {
        if (y < 0 || y >= side) continue;
        const step = y === cy - r || y === cy + r ? 1 : 2 * r;
        for (let x = cx - r; x <= cx + r; x += Math.max(1, step)) {
          if (x < 0 || x >= side || taken[y * side + x]) continue;
          const d = (x - tx[i]) ** 2 + (y - ty[i]) ** 2;
          if (d < bestD) { bestD = d; best = y * side + x; }
        }
      }
      if (r > side) break;
    }
    taken[best] = 1;
    cells[i] = [best % side, Math.floor(best / side)];
  }
  return { side, cells };
}

function applyView() {
  $("map-inner").style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  if (!thumbsPending) { thumbsPending = true; requestAnimationFrame(showThumbs); }
}
/** Thumbnails only for the photos on screen, once they are large enough to see: a map of 10,000 photos
 * first shows coloured squares and asks the server for the few hundred thumbnails it zooms in on. */
let thumbsPending = false;
function showThumbs() {
  thumbsPending = false;
  if (!mapLayout || THUMB * view.scale < 16 || $("atlas").hidden) return;
  const box = $("map").getBoundingClientRect();
  const x0 = -view.x / view.scale - PITCH, x1 = (box.width - view.x) / view.scale;
  const y0 = -view.y / view.scale - PITCH, y1 = (box.height - view.y) / view.scale;
  const dots = $("map-inner").children;
  mapLayout.cells.forEach(([cx, cy], i) => {
    const x = cx * PITCH, y = cy * PITCH, dot = dots[i];
    if (x >= x0 && x <= x1 && y >= y0 && y <= y1 && dot && !dot.src) dot.src = thumbUrl(dot.dataset.id);
  });
}
async function loadMap() {
  const mine = ++seq;
  if (!mapData) {
    setStatus([el("span", { class: "spinner", "aria-hidden": "true" }), "Placing the collection…"], "busy");
    try { mapData = (await api("/api/map")).body; }
    catch (e) { return mine === seq && showError(e, "map"); }
    if (mine !== seq) return;
    mapLayout = null;
  }
  const points = mapData.points || [], clusters = mapData.clusters || [];
  setStatus([el("b", {}, plural(points.length, "photo")), ", similar ones close together"]);
  if (!mapLayout) {
    const groups = groupsOf(points, clusters);
    mapLayout = { groups, ...gridLayout(points, groups, clusters) };
  }
  const { groups, side, cells } = mapLayout;
  const inner = $("map-inner");
  inner.style.width = inner.style.height = side * PITCH + "px";
  inner.replaceChildren(...points.map((p, i) => {
    const colour = PALETTE[groups[i] % PALETTE.length];
    return el("img", { class: "dot", alt: "", "data-id": p.id, "data-group": groups[i],
      style: `left:${cells[i][0] * PITCH}px;top:${cells[i][1] * PITCH}px;width:${THUMB}px;height:${THUMB}px;` +
        `border-color:${colour};background-color:${colour}` });
  }));
  const counts = clusters.map((_, i) => groups.filter((g) => g === i).length);
  const order = clusters.map((_, i) => i).filter((i) => counts[i]).sort((a, b) => counts[b] - counts[a]);
  $("legend-list").replaceChildren(...order.map((i) => el("li", {},
    el("button", { type: "button", class: "group", "data-group": i,
      onclick: () => zoomToGroup(i), onmouseenter: () => highlight(i), onmouseleave: () => highlight(null),
      onfocus: () => highlight(i), onblur: () => highlight(null) },
    el("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }),
    el("span", { class: "group-label" }, labelOf(clusters[i], i)),
    el("span", { class: "group-count" }, String(counts[i]))))));
  resetView();
}
function highlight(group) {
  $("map-inner").classList.toggle("dim", group !== null);
  for (const d of $("map-inner").children) d.classList.toggle("hl", group !== null && d.dataset.group === String(group));
}
function fit(x0, y0, x1, y1) {
  const box = $("map").getBoundingClientRect();
  view.scale = Math.min(4, Math.min(box.width / (x1 - x0), box.height / (y1 - y0)) * 0.92);
  view.x = box.width / 2 - (x0 + x1) / 2 * view.scale;
  view.y = box.height / 2 - (y0 + y1) / 2 * view.scale;
  applyView();
}
function zoomToGroup(group) {
  const cells = mapLayout.cells.filter((_, i) => mapLayout.groups[i] === group);
  const xs = cells.map((c) => c[0] * PITCH), ys = cells.map((c) => c[1] * PITCH);
  fit(Math.min(...xs) - PITCH, Math.min(...ys) - PITCH, Math.max(...xs) + 2 * PITCH, Math.max(...ys) + 2 * PITCH);
}
function resetView() {
  if (!mapLayout || !mapLayout.cells.length) return fit(0, 0, 800, 800);
  const xs = mapLayout.cells.map((c) => c[0] * PITCH), ys = mapLayout.cells.map((c) => c[1] * PITCH);
  fit(Math.min(...xs), Math.min(...ys), Math.max(...xs) + PITCH, Math.max(...ys) + PITCH);
}
function zoomBy(f, mx, my) {
  const box = $("map").getBoundingClientRect();
  if (mx === undefined) { mx = box.width / 2; my = box.height / 2; }
  const s = Math.min(20, Math.max(0.02, view.scale * f));
  view.x = mx - (mx - view.x) * (s / view.scale);
  view.y = my - (my - view.y) * (s / view.scale);
  view.scale = s;
  applyView();
}
function setupMap() {
  const map = $("map");
  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = map.getBoundingClientRect();
    zoomBy(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  $("map-in").addEventListener("click", () => zoomBy(1.5));
  $("map-out").addEventListener("click", () => zoomBy(1 / 1.5));
  $("map-reset").addEventListener("click", resetView);
  let drag = null;
  $("map-inner").addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false }; });
  map.addEventListener("pointerdown", (e) => { if (e.target === map) drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false }; });
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
  if (!history.state) history.replaceState({ depth: 0 }, "", location.href);
  for (const t of document.querySelectorAll(".tab")) {
    t.addEventListener("click", () => {
      const s = readState();
      const browse = t.dataset.tab === "map" || t.dataset.tab === "dupes";
      writeState({ tab: t.dataset.tab, q: browse ? "" : s.q, focus: s.focus, sort: s.sort });
    });
  }
  $("brand").addEventListener("click", (e) => { e.preventDefault(); writeState({ tab: "images" }); });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const s = readState();
    const q = $("q").value.trim();
    const similar = s.similar && !textOf(q) ? s.similar : ""; // filters alone keep narrowing "more like this"
    writeState({ tab: s.tab === "map" ? "images" : s.tab, q, similar, focus: $("focus").value.trim(), sort: s.sort });
  });
  $("sort").addEventListener("change", () => writeState(Object.assign(readState(), { sort: $("sort").value })));
  $("filters-toggle").addEventListener("click", toggleFilters);
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
  $("modal-close").addEventListener("click", () => closeDetail());
  $("detail-prev").addEventListener("click", () => stepDetail(-1));
  $("detail-next").addEventListener("click", () => stepDetail(1));
  $("modal").addEventListener("click", (e) => { if (e.target === $("modal")) closeDetail(); });
  $("detail-more").addEventListener("click", (e) => {
    e.preventDefault(); closeDetail(false);
    const id = new URLSearchParams($("detail-more").getAttribute("href").slice(1));
    writeState({ tab: "images", similar: id.get("similar"), focus: id.get("focus") || "" });
    window.scrollTo(0, 0);
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("popstate", () => { closeDetail(false); render(); });
  // drag and drop anywhere
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); dragDepth++; $("drop-overlay").hidden = false; });
  document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; $("drop-overlay").hidden = true; } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); dragDepth = 0; $("drop-overlay").hidden = true;
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) searchUpload(f);
  });
  setupMap();
  render();
  try {
    const { body } = await api("/api/stats");
    $("stats").textContent = `${plural(body.images, "photo")} · ${body.model || ""}`;
  } catch (e) { /* shown by the searches */ }
  try {
    const { body } = await api("/api/classes");
    $("classes").replaceChildren(...body.map((c) => el("option", { value: c.name })));
  } catch (e) { /* focus stays free text */ }
}
init();
