// The labelling page: draw operations on an image, the server paints them
// (raster.js paints the same operations here, for display).
// A label is a base layer (the saved mask, the model's pre-label or empty)
// and the operations drawn on it; "save" sends both and the server
// rasterises them (chameleon_jax/labelling/raster.py), so the PNG on disk
// never depends on this canvas. The brush drawn here follows the server's
// rule exactly (pixel centres within the radius of the stroke); polygons
// and boxes are previews until the saved mask comes back.
"use strict";

const CONFIG = JSON.parse(document.getElementById("label-config").textContent);
const ALPHA = 110;  // Mask overlay opacity (0-255).

const state = {
  queue: [], id: null, width: 0, height: 0, revision: "none",
  saved: null, prelabel: null, score: null, alarm: null,
  base: "empty", ops: [], undo: [], redo: [],
  tool: "brush", cls: Math.min(1, CONFIG.classes.length - 1), radius: 4,
  zoom: 1, panX: 0, panY: 0, showMask: true,
  drawing: null, polygon: null, panning: null, space: false,
  opened: 0, pendingLeave: false, busy: false,
};
const view = document.getElementById("view");
const ctx = view.getContext("2d");
let imageBitmap = null;
let classes = null;                       // Uint8Array(H * W): what is shown.
const maskCanvas = document.createElement("canvas");
const maskCtx = maskCanvas.getContext("2d");

// --- The server -----------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {"X-Label-Token": CONFIG.token, ...(options.headers || {})},
  });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) {}
    throw new Error(`${response.status}: ${message}`);
  }
  return response;
}

function decode(b64, size) {
  if (b64 === null) return null;
  const text = atob(b64);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = text.charCodeAt(i);
  return out;
}

function status(text, kind = "") {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = kind;
}

// --- Painting (raster.js: the server's rules) --------------------------------
function grid() { return {data: classes, width: state.width, height: state.height}; }

function baseLayer() {
  const size = state.width * state.height;
  if (state.base === "saved" && state.saved) return state.saved.slice();
  if (state.base === "prelabel" && state.prelabel) return state.prelabel.slice();
  return new Uint8Array(size);
}

function recompute() {
  classes = baseLayer();
  for (const op of state.ops) Raster.paint(grid(), op);
  refreshMask();
}

function refreshMask(region = null) {
  // The overlay of `classes`; `region` [x0, y0, x1, y1] redraws only that
  // rectangle (a brush segment on a 3000 px image, not 36 MB per move).
  const [x0, y0, x1, y1] = region ?
      [Math.max(Math.floor(region[0]), 0), Math.max(Math.floor(region[1]), 0),
       Math.min(Math.ceil(region[2]) + 1, state.width),
       Math.min(Math.ceil(region[3]) + 1, state.height)] :
      [0, 0, state.width, state.height];
  if (x1 > x0 && y1 > y0) {
    const img = maskCtx.createImageData(x1 - x0, y1 - y0);
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const k = classes[y * state.width + x];
        if (k === 0) continue;
        const c = CONFIG.classes[k] ? CONFIG.classes[k].colour : [255, 255, 255];
        const o = 4 * ((y - y0) * (x1 - x0) + (x - x0));
        img.data[o] = c[0]; img.data[o + 1] = c[1];
        img.data[o + 2] = c[2]; img.data[o + 3] = ALPHA;
      }
    }
    maskCtx.putImageData(img, x0, y0);
  }
  render();
}

// --- History: snapshots of (base, operations) ------------------------------
function snapshot() { return {base: state.base, ops: state.ops.slice()}; }
function commit(change) {
  state.undo.push(snapshot());
  state.redo = [];
  change();
  recompute();
  updateInfo();
}
function undo() {
  if (!state.undo.length) return;
  state.redo.push(snapshot());
  Object.assign(state, state.undo.pop());
  recompute(); updateInfo();
}
function redo() {
  if (!state.redo.length) return;
  state.undo.push(snapshot());
  Object.assign(state, state.redo.pop());
  recompute(); updateInfo();
}
function dirty() { return state.undo.length > 0; }

// --- View -------------------------------------------------------------------
function resizeView() {
  const rect = view.getBoundingClientRect();
  view.width = Math.round(rect.width);
  view.height = Math.round(rect.height);
  render();
}

function fit() {
  if (!state.width) return;
  const z = Math.min(view.width / state.width, view.height / state.height);
  state.zoom = z >= 1 ? Math.floor(z) : z;   // Whole zooms keep pixels square.
  state.panX = Math.round((view.width - state.width * state.zoom) / 2);
  state.panY = Math.round((view.height - state.height * state.zoom) / 2);
  render();
}

function toImage(event) {
  const rect = view.getBoundingClientRect();
  return [(event.clientX - rect.left - state.panX) / state.zoom,
          (event.clientY - rect.top - state.panY) / state.zoom];
}

function toClient(x, y) {  // For tests and tools: image -> viewport pixels.
  const rect = view.getBoundingClientRect();
  return [rect.left + state.panX + x * state.zoom,
          rect.top + state.panY + y * state.zoom];
}

function render() {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, view.width, view.height);
  if (!imageBitmap) return;
  ctx.setTransform(state.zoom, 0, 0, state.zoom, state.panX, state.panY);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(imageBitmap, 0, 0);
  if (state.showMask) ctx.drawImage(maskCanvas, 0, 0);
  ctx.lineWidth = 1 / state.zoom;
  ctx.strokeStyle = "#fff";
  const pending = state.polygon || (state.drawing && state.drawing.tool === "box" &&
      boxCorners(state.drawing.points));
  if (pending && pending.length) {
    ctx.beginPath();
    ctx.moveTo(...pending[0]);
    for (const p of pending.slice(1)) ctx.lineTo(...p);
    if (state.drawing && state.drawing.tool === "box") ctx.closePath();
    ctx.stroke();
  }
}

function boxCorners(points) {
  const [[ax, ay], [bx, by]] = [points[0], points[points.length - 1]];
  return [[ax, ay], [bx, ay], [bx, by], [ax, by]];
}

function clamp(p) {
  return [Math.min(Math.max(p[0], 0), state.width),
          Math.min(Math.max(p[1], 0), state.height)];
}

// --- Pointer ------------------------------------------------------------------
view.addEventListener("contextmenu", e => e.preventDefault());
view.addEventListener("pointerdown", event => {
  view.focus();
  if (!state.id) return;
  if (event.button === 1 || event.button === 2 || state.space) {
    state.panning = [event.clientX - state.panX, event.clientY - state.panY];
    view.setPointerCapture(event.pointerId);
    return;
  }
  if (event.button !== 0) return;
  const p = clamp(toImage(event));
  if (state.tool === "polygon") {
    state.polygon = state.polygon || [];
    state.polygon.push(p);
    render();
    return;
  }
  view.setPointerCapture(event.pointerId);
  state.undo.push(snapshot());
  state.redo = [];
  if (state.tool === "box") {
    state.drawing = {tool: "box", class: state.cls, points: [p, p]};
  } else {
    state.drawing = {tool: state.tool, radius: state.radius, points: [p]};
    if (state.tool === "brush") state.drawing.class = state.cls;
    Raster.paint(grid(), state.drawing);
    const r = state.radius;
    refreshMask([p[0] - r, p[1] - r, p[0] + r, p[1] + r]);
  }
});
view.addEventListener("pointermove", event => {
  if (state.panning) {
    state.panX = event.clientX - state.panning[0];
    state.panY = event.clientY - state.panning[1];
    render();
    return;
  }
  if (!state.drawing) return;
  const p = clamp(toImage(event));
  const d = state.drawing;
  if (d.tool === "box") {
    d.points[1] = p;
    render();
    return;
  }
  const last = d.points[d.points.length - 1];
  if (last[0] === p[0] && last[1] === p[1]) return;
  d.points.push(p);
  Raster.stroke(grid(), [last, p], d.radius, d.tool === "eraser" ? 0 : d.class);
  refreshMask([Math.min(last[0], p[0]) - d.radius, Math.min(last[1], p[1]) - d.radius,
               Math.max(last[0], p[0]) + d.radius, Math.max(last[1], p[1]) + d.radius]);
});
function endPointer() {
  state.panning = null;
  const d = state.drawing;
  if (!d) return;
  state.drawing = null;
  state.ops.push(d);
  recompute(); updateInfo();
}
view.addEventListener("pointerup", endPointer);
view.addEventListener("pointercancel", endPointer);
view.addEventListener("dblclick", () => closePolygon(true));
view.addEventListener("wheel", event => {
  event.preventDefault();
  const rect = view.getBoundingClientRect();
  const mx = event.clientX - rect.left, my = event.clientY - rect.top;
  const factor = event.deltaY < 0 ? 1.25 : 0.8;
  const zoom = Math.min(Math.max(state.zoom * factor, 0.05), 64);
  state.panX = mx - (mx - state.panX) * zoom / state.zoom;
  state.panY = my - (my - state.panY) * zoom / state.zoom;
  state.zoom = zoom;
  render();
}, {passive: false});

function closePolygon(fromDoubleClick = false) {
  let points = state.polygon;
  state.polygon = null;
  if (!points) return;
  if (fromDoubleClick) {  // The double click's two clicks added one vertex twice.
    points = points.filter((p, i) => i === 0 ||
        p[0] !== points[i - 1][0] || p[1] !== points[i - 1][1]);
  }
  if (points.length < 3) { status("a polygon needs 3 points", "error"); render(); return; }
  commit(() => state.ops.push({tool: "polygon", class: state.cls, points}));
}

// --- Images -------------------------------------------------------------------
async function loadQueue() {
  const data = await (await api("/api/images")).json();
  state.queue = data.images;
  const list = document.getElementById("queue");
  list.replaceChildren(...state.queue.map(row => {
    const li = document.createElement("li");
    li.dataset.id = row.id;
    li.className = (row.labelled ? "labelled " : "") + (row.id === state.id ? "current" : "");
    const name = document.createElement("span");
    name.className = "name"; name.textContent = row.id;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = row.score === null ? "" : row.score.toFixed(2);
    li.append(name, score);
    li.addEventListener("click", () => openImage(row.id));
    return li;
  }));
  const done = state.queue.filter(r => r.labelled).length;
  document.getElementById("queue-count").textContent = `${done}/${state.queue.length} labelled`;
}

async function openImage(id, force = false, note = "") {
  if (dirty() && !force && !state.pendingLeave) {
    state.pendingLeave = true;
    status("unsaved changes: S saves, the same key again discards them", "error");
    return;
  }
  state.pendingLeave = false;
  state.busy = true;
  try {
    const [maskResponse, imageResponse] = await Promise.all([
      api(`/api/mask?id=${encodeURIComponent(id)}`),
      api(`/api/image?id=${encodeURIComponent(id)}`)]);
    const data = await maskResponse.json();
    const blob = await imageResponse.blob();
    imageBitmap = await createImageBitmap(blob);
    Object.assign(state, {
      id, width: data.width, height: data.height, revision: data.revision,
      score: data.score, alarm: data.alarm, ops: [], undo: [], redo: [],
      polygon: null, drawing: null, opened: performance.now()});
    const size = data.width * data.height;
    state.saved = decode(data.mask, size);
    state.prelabel = decode(data.prelabel, size);
    state.base = state.saved ? "saved" : state.prelabel ? "prelabel" : "empty";
    maskCanvas.width = data.width; maskCanvas.height = data.height;
    fit();
    recompute();
    updateInfo();
    for (const li of document.querySelectorAll("#queue li")) {
      li.classList.toggle("current", li.dataset.id === id);
    }
    status(note ? `${note} · opened ${id}` : `opened ${id}`, note ? "ok" : "");
  } catch (e) {
    status(String(e.message || e), "error");
  } finally {
    state.busy = false;
  }
}

function updateInfo() {
  document.getElementById("image-name").textContent = state.id || "—";
  const parts = [`${state.width}×${state.height}`, `layer: ${state.base}`,
                 `${state.ops.length} operations`];
  if (state.score !== null) {
    parts.push(`p(defect) ${state.score.toFixed(3)} (threshold ${CONFIG.threshold.toFixed(3)})`);
    parts.push(state.alarm ? "model: alarm" : "model: no alarm");
  }
  parts.push(state.revision === "none" ? "unlabelled" : `saved ${state.revision.slice(0, 8)}`);
  document.getElementById("image-info").textContent = parts.join(" · ");
  for (const b of document.querySelectorAll("#tool-buttons button")) {
    b.classList.toggle("active", b.dataset.tool === state.tool);
  }
  for (const b of document.querySelectorAll("#palette button")) {
    b.classList.toggle("active", Number(b.dataset.class) === state.cls);
  }
  document.getElementById("radius").value = state.radius;
  document.getElementById("radius-value").textContent = state.radius;
  document.getElementById("accept").disabled = !state.prelabel;
}

async function save() {
  if (!state.id || state.busy) return false;
  state.busy = true;
  const body = JSON.stringify({
    id: state.id, base_revision: state.revision, base: state.base,
    operations: state.ops,
    seconds: (performance.now() - state.opened) / 1000});
  try {
    const result = await (await api("/api/save", {
      method: "POST", body, headers: {"Content-Type": "application/json"}})).json();
    state.busy = false;
    const id = state.id;
    state.undo = [];
    await loadQueue();
    const message = `saved ${id} (${result.defect_pixels} defect pixels, pre-label ${result.prelabel})`;
    await openImage(id, true);   // Shows the mask as written.
    status(message, "ok");
    return message;
  } catch (e) {
    status(`not saved: ${e.message || e}`, "error");
    state.busy = false;
    return null;
  } finally {
    window.labeller.saves += 1;   // Tests wait on this.
  }
}

function step(delta) {
  if (!state.queue.length) return;
  const i = state.queue.findIndex(r => r.id === state.id);
  const next = state.queue[Math.min(Math.max(i + delta, 0), state.queue.length - 1)];
  if (next) openImage(next.id);
}

function nextUnlabelled(note) {
  const row = state.queue.find(r => !r.labelled && r.id !== state.id);
  if (row) openImage(row.id, true, note);
}

async function acceptPrelabel() {
  if (!state.prelabel) { status("no pre-label for this image", "error"); return; }
  commit(() => { state.base = "prelabel"; state.ops = []; });
  const message = await save();
  if (message) nextUnlabelled(message);
}

async function defectFree() {
  commit(() => { state.base = "empty"; state.ops = []; });
  const message = await save();
  if (message) nextUnlabelled(message);
}

// --- Controls -------------------------------------------------------------------
function setTool(tool) { state.tool = tool; state.polygon = null; updateInfo(); render(); }
function setClass(k) { if (k > 0 && k < CONFIG.classes.length) { state.cls = k; updateInfo(); } }
function setRadius(r) { state.radius = Math.min(Math.max(Math.round(r), 1), 64); updateInfo(); }

document.addEventListener("keydown", event => {
  if (event.target.tagName === "INPUT") return;
  const key = event.key;
  const ctrl = event.ctrlKey || event.metaKey;
  if (key !== "n" && key !== "ArrowRight" && key !== "ArrowLeft") state.pendingLeave = false;
  if (ctrl && (key === "z" || key === "Z")) { event.preventDefault(); event.shiftKey ? redo() : undo(); return; }
  if (ctrl && key === "y") { event.preventDefault(); redo(); return; }
  if (ctrl && key === "s") { event.preventDefault(); save(); return; }
  if (ctrl) return;
  if (key === " ") { state.space = true; event.preventDefault(); return; }
  const actions = {
    b: () => setTool("brush"), e: () => setTool("eraser"),
    g: () => setTool("polygon"), r: () => setTool("box"),
    "[": () => setRadius(state.radius - 1), "]": () => setRadius(state.radius + 1),
    s: save, a: acceptPrelabel, "0": defectFree,
    x: () => commit(() => { state.base = "empty"; state.ops = []; }),
    n: () => step(1), ArrowRight: () => step(1), ArrowLeft: () => step(-1),
    f: fit, m: () => { state.showMask = !state.showMask; render(); },
    Enter: () => closePolygon(), Escape: () => { state.polygon = null; render(); },
    "+": () => { state.zoom *= 1.25; render(); }, "-": () => { state.zoom *= 0.8; render(); },
  };
  if (/^[1-9]$/.test(key)) { setClass(Number(key)); return; }
  if (actions[key]) { event.preventDefault(); actions[key](); }
});
document.addEventListener("keyup", event => { if (event.key === " ") state.space = false; });

for (const b of document.querySelectorAll("#tool-buttons button")) {
  b.addEventListener("click", () => setTool(b.dataset.tool));
}
document.getElementById("radius").addEventListener("input", e => setRadius(Number(e.target.value)));
document.getElementById("save").addEventListener("click", save);
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("redo").addEventListener("click", redo);
document.getElementById("accept").addEventListener("click", acceptPrelabel);
document.getElementById("erase-prelabel").addEventListener("click",
    () => commit(() => { state.base = "empty"; state.ops = []; }));
document.getElementById("defect-free").addEventListener("click", defectFree);
document.getElementById("prev").addEventListener("click", () => step(-1));
document.getElementById("next").addEventListener("click", () => step(1));
document.getElementById("fit").addEventListener("click", fit);
document.getElementById("toggle-mask").addEventListener("click",
    () => { state.showMask = !state.showMask; render(); });

const palette = document.getElementById("palette");
CONFIG.classes.forEach((c, k) => {
  if (k === 0) return;  // Background is what the eraser paints.
  const b = document.createElement("button");
  b.dataset.class = k;
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = `rgb(${c.colour.join(",")})`;
  const key = document.createElement("kbd");
  key.textContent = k <= 9 ? String(k) : "";
  b.append(swatch, c.name, key);
  b.addEventListener("click", () => setClass(k));
  palette.append(b);
});

window.addEventListener("resize", () => { resizeView(); fit(); });
window.labeller = {state, toClient, save, openImage, undo, redo, get classes() { return classes; },
                   ready: false, saves: 0};
(async () => {
  resizeView();
  try {
    await loadQueue();
    if (state.queue.length) await openImage(state.queue[0].id, true);
  } catch (e) {
    status(String(e.message || e), "error");
  }
  window.labeller.ready = true;
})();
