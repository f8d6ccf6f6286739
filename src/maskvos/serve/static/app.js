// The maskvos page: open a video, prompt objects (brush, eraser, clicks, box), propagate with live
// progress, scrub, correct, propagate again, export. Talks only to this server's /api.
import * as rle from "./rle.js";

const $ = (id) => document.getElementById(id);

const state = {
  health: null,
  session: null, // the API's session info
  frame: 0,
  objects: [], // [{id}]
  activeObj: null,
  tool: "brush",
  brush: 24,
  overlay: true,
  masks: new Map(), // frame -> Map(objId -> {mask: rle, score, is_prompt})
  clicks: new Map(), // "frame:obj" -> {points: [[x, y]], labels: [1|0], box: [x0, y0, x1, y1] | null}
  promptFrames: new Set(),
  propagating: false,
  timings: [], // {frame_idx, ms}: when each streamed frame arrived (performance.now())
  runs: 0,
};
// For tests and tools that drive the page.
window.maskvos = { state, rle };

// ------------------------------------------------------------------ helpers

function paletteColour(id) {
  // the DAVIS palette (the colours of the exported PNGs)
  let r = 0, g = 0, b = 0, c = id;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b];
}

function cssColour(id) {
  const [r, g, b] = paletteColour(id);
  return `rgb(${r}, ${g}, ${b})`;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (!resp.ok) {
    let message = `${method} ${path} failed (${resp.status})`;
    try { message = (await resp.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

async function apiJson(method, path, body) {
  return (await api(method, path, body)).json();
}

function sessionPath(suffix = "") {
  return `/api/sessions/${state.session.session_id}${suffix}`;
}

function can(kind) {
  return state.session && state.session.prompt_types.includes(kind);
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    state.health = await apiJson("GET", "/api/health");
    $("model-badge").textContent = `model: ${state.health.model}`;
    if (state.health.notice) {
      $("notice").textContent = state.health.notice;
      $("notice").hidden = false;
    }
    const list = await apiJson("GET", "/api/videos");
    const ul = $("video-list");
    ul.replaceChildren();
    for (const v of list.videos) {
      const li = document.createElement("li");
      li.textContent = v.name;
      li.dataset.source = v.source;
      li.title = v.source;
      li.addEventListener("click", () => openSource(v.source, v.name));
      ul.append(li);
    }
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function openSource(source, name) {
  if (state.propagating) return setStatus("Cancel the propagation before opening another video.", true);
  setStatus(`opening ${name} …`);
  try {
    const info = await apiJson("POST", "/api/sessions", { source });
    await openSession(info, name);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function upload(file) {
  setStatus(`uploading ${file.name} …`);
  const form = new FormData();
  form.append("file", file);
  try {
    const resp = await fetch("/api/sessions", { method: "POST", body: form });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error || `upload failed (${resp.status})`);
    await openSession(body, file.name);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function openSession(info, name) {
  if (state.session) {
    api("DELETE", sessionPath()).catch(() => {});
  }
  state.session = info;
  state.masks = new Map();
  state.clicks = new Map();
  state.promptFrames = new Set();
  state.objects = [];
  state.timings = [];
  state.frame = 0;
  for (const c of ["frame-canvas", "mask-canvas", "draw-canvas"]) {
    $(c).width = info.width;
    $(c).height = info.height;
  }
  $("stage").style.aspectRatio = `${info.width} / ${info.height}`;
  fitStage();
  $("placeholder").hidden = true;
  $("video-name").textContent = `${name}: ${info.num_frames} frames, ${info.width}×${info.height}`;
  $("scrubber").max = String(info.num_frames - 1);
  $("scrubber").disabled = false;
  $("add-object").disabled = false;
  for (const li of $("video-list").children) li.classList.toggle("active", li.dataset.source === info.source);
  for (const b of $("tools").querySelectorAll("button")) {
    const kind = { brush: "mask", eraser: "mask", click: "points", box: "box" }[b.dataset.tool];
    b.disabled = !can(kind);
    b.title = b.disabled ? `the ${info.model} model takes ${info.prompt_types.join(", ")} prompts only` : b.title;
  }
  if (!can(toolKind(state.tool))) selectTool("brush");
  addObject();
  updateButtons();
  await showFrame(0);
  setStatus(`opened ${name} (model ${info.model})`);
}

// ------------------------------------------------------------------ objects and tools

function addObject() {
  const id = state.objects.reduce((m, o) => Math.max(m, o.id), 0) + 1;
  state.objects.push({ id });
  state.activeObj = id;
  renderObjects();
}

function selectObject(id) {
  if (!state.objects.some((o) => o.id === id)) return;
  state.activeObj = id;
  renderObjects();
}

async function deleteObject(id) {
  if (state.propagating) return setStatus("Cancel the propagation before deleting an object.", true);
  const known = state.session && [...state.masks.values()].some((m) => m.has(id));
  try {
    if (known) await api("DELETE", sessionPath(`/objects/${id}`));
  } catch (e) {
    return setStatus(e.message, true);
  }
  for (const m of state.masks.values()) m.delete(id);
  for (const key of [...state.clicks.keys()]) if (key.endsWith(`:${id}`)) state.clicks.delete(key);
  state.objects = state.objects.filter((o) => o.id !== id);
  if (state.activeObj === id) state.activeObj = state.objects.length ? state.objects[0].id : null;
  renderObjects();
  drawMasks();
  drawTimeline();
}

function renderObjects() {
  const ul = $("object-list");
  ul.replaceChildren();
  for (const o of state.objects) {
    const li = document.createElement("li");
    li.dataset.obj = String(o.id);
    li.classList.toggle("active", o.id === state.activeObj);
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = cssColour(o.id);
    const label = document.createElement("span");
    label.textContent = `object ${o.id}`;
    const del = document.createElement("button");
    del.className = "delete";
    del.textContent = "×";
    del.title = `delete object ${o.id}`;
    del.addEventListener("click", (ev) => { ev.stopPropagation(); deleteObject(o.id); });
    li.append(sw, label, del);
    li.addEventListener("click", () => selectObject(o.id));
    ul.append(li);
  }
}

function toolKind(tool) {
  return { brush: "mask", eraser: "mask", click: "points", box: "box" }[tool];
}

function selectTool(tool) {
  if (state.session && !can(toolKind(tool))) {
    return setStatus(`The ${state.session.model} model takes ${state.session.prompt_types.join(", ")} prompts only.`, true);
  }
  state.tool = tool;
  for (const b of $("tools").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tool === tool);
}

function setBrush(size) {
  state.brush = Math.max(2, Math.min(120, Math.round(size)));
  $("brush-size").value = String(state.brush);
  $("brush-size-value").textContent = String(state.brush);
}

function updateButtons() {
  const open = !!state.session;
  $("propagate").disabled = !open || state.propagating;
  $("cancel").disabled = !state.propagating;
  $("export").disabled = !open || state.masks.size === 0;
}

// ------------------------------------------------------------------ frames and drawing

const images = new Map(); // frame -> HTMLImageElement (a few, most recent)

function loadImage(k) {
  if (images.has(k)) return images.get(k);
  const p = new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`frame ${k} could not be loaded`));
    img.src = sessionPath(`/frames/${k}`);
  });
  images.set(k, p);
  if (images.size > 48) images.delete(images.keys().next().value);
  return p;
}

async function showFrame(k) {
  if (!state.session) return;
  k = Math.max(0, Math.min(state.session.num_frames - 1, k));
  state.frame = k;
  $("scrubber").value = String(k);
  $("frame-label").textContent = `frame ${k} / ${state.session.num_frames - 1}`;
  const session = state.session;
  try {
    const img = await loadImage(k);
    if (state.session !== session || state.frame !== k) return;
    $("frame-canvas").getContext("2d").drawImage(img, 0, 0);
  } catch (e) {
    setStatus(e.message, true);
  }
  drawMasks();
  drawTimeline();
  if (k + 1 < session.num_frames) loadImage(k + 1).catch(() => {});
}

function frameMasks(k) {
  return state.masks.get(k) || new Map();
}

function drawMasks(working = null) {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  if (!state.session || !state.overlay) return drawClicks();
  const image = ctx.createImageData(w, h);
  const data = image.data;
  const paint = (idx, [r, g, b]) => {
    const o = idx * 4;
    data[o] = r; data[o + 1] = g; data[o + 2] = b; data[o + 3] = 130;
  };
  for (const [id, m] of [...frameMasks(state.frame).entries()].sort((a, b) => a[0] - b[0])) {
    if (working && working.obj === id) continue;
    const colour = paletteColour(id);
    rle.forEachPixel(m.mask, (idx) => paint(idx, colour));
  }
  if (working) {
    const colour = paletteColour(working.obj);
    const mask = working.mask;
    for (let i = 0; i < mask.length; i++) if (mask[i]) paint(i, colour);
  }
  ctx.putImageData(image, 0, 0);
  drawClicks();
}

function drawClicks() {
  const canvas = $("draw-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.session) return;
  const c = state.clicks.get(`${state.frame}:${state.activeObj}`);
  if (!c) return;
  const r = Math.max(4, canvas.width / 160);
  c.points.forEach(([x, y], i) => {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.labels[i] ? "#3ddc84" : "#ff5252";
    ctx.fill();
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.5;
    ctx.stroke();
  });
  if (c.box) {
    ctx.strokeStyle = "#ffd54a";
    ctx.lineWidth = 2;
    ctx.strokeRect(c.box[0], c.box[1], c.box[2] - c.box[0], c.box[3] - c.box[1]);
  }
}

function fitStage() {
  // the whole frame in view, undistorted: as wide as the viewer allows and short enough for the window
  const stage = $("stage");
  const w = state.session ? state.session.width : 4, h = state.session ? state.session.height : 3;
  const room = $("viewer").clientWidth;
  const tall = Math.max(window.innerHeight - 190, 200);
  stage.style.width = `${Math.floor(Math.min(room, (tall * w) / h))}px`;
}

function drawTimeline() {
  const canvas = $("timeline-strip");
  const width = canvas.clientWidth || 600;
  if (canvas.width !== width) canvas.width = width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.session) return;
  const n = state.session.num_frames;
  const cell = canvas.width / n;
  for (let k = 0; k < n; k++) {
    const m = state.masks.get(k);
    if (m && m.size) {
      ctx.fillStyle = "#2f8f5b";
      ctx.fillRect(k * cell, 4, Math.max(cell - (cell > 3 ? 1 : 0), 1), canvas.height - 4);
    }
    if (state.promptFrames.has(k)) {
      ctx.fillStyle = "#ffd54a";
      ctx.fillRect(k * cell, 0, Math.max(cell, 2), 4);
    }
  }
  ctx.fillStyle = "#4aa3ff";
  ctx.fillRect(state.frame * cell, 0, Math.max(cell, 2), canvas.height);
  canvas.dataset.framesDone = String([...state.masks.values()].filter((m) => m.size).length);
}

// ------------------------------------------------------------------ prompts

function storeFrame(frame) {
  const m = new Map();
  for (const o of frame.objects) m.set(o.obj_id, { mask: o.mask, score: o.score, is_prompt: o.is_prompt });
  state.masks.set(frame.frame_idx, m);
}

async function sendPrompt(body) {
  if (state.propagating) return setStatus("Cancel the propagation (Esc) before changing prompts.", true);
  setStatus(`prompting object ${body.obj_id} on frame ${body.frame_idx} …`);
  try {
    const frame = await apiJson("POST", sessionPath("/prompts"), body);
    storeFrame(frame);
    state.promptFrames.add(body.frame_idx);
    setStatus(`object ${body.obj_id} prompted on frame ${body.frame_idx}`);
  } catch (e) {
    setStatus(e.message, true);
  }
  if (state.frame === body.frame_idx) drawMasks();
  drawTimeline();
  updateButtons();
}

function canvasPoint(ev) {
  const canvas = $("draw-canvas");
  const rect = canvas.getBoundingClientRect();
  return [
    ((ev.clientX - rect.left) / rect.width) * canvas.width,
    ((ev.clientY - rect.top) / rect.height) * canvas.height,
  ];
}

let stroke = null; // {obj, mask, last: [x, y], erase}
let boxDrag = null; // {from: [x, y], to: [x, y]}

function stamp(mask, w, h, cx, cy, radius, value) {
  const r2 = radius * radius;
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(w - 1, Math.ceil(cx + radius));
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(h - 1, Math.ceil(cy + radius));
  for (let y = y0; y <= y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2) mask[y * w + x] = value;
    }
  }
}

function strokeTo(p) {
  const { width: w, height: h } = $("draw-canvas");
  const radius = state.brush / 2;
  const [lx, ly] = stroke.last;
  const dist = Math.hypot(p[0] - lx, p[1] - ly);
  const steps = Math.max(1, Math.ceil(dist / Math.max(radius / 2, 1)));
  for (let i = 1; i <= steps; i++) {
    stamp(stroke.mask, w, h, lx + ((p[0] - lx) * i) / steps, ly + ((p[1] - ly) * i) / steps, radius, stroke.erase ? 0 : 1);
  }
  stroke.last = p;
}

let drawPending = false;
function redrawWorking() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (stroke) drawMasks(stroke);
  });
}

function onPointerDown(ev) {
  if (!state.session || state.activeObj === null) return;
  if (state.propagating) return setStatus("Cancel the propagation (Esc) before changing prompts.", true);
  ev.preventDefault();
  const p = canvasPoint(ev);
  const { width: w, height: h } = $("draw-canvas");
  if (state.tool === "brush" || state.tool === "eraser") {
    const current = frameMasks(state.frame).get(state.activeObj);
    const mask = current ? rle.decode(current.mask) : new Uint8Array(w * h);
    stroke = { obj: state.activeObj, mask, last: p, erase: state.tool === "eraser" };
    stamp(mask, w, h, p[0], p[1], state.brush / 2, stroke.erase ? 0 : 1);
    $("draw-canvas").setPointerCapture(ev.pointerId);
    redrawWorking();
  } else if (state.tool === "click") {
    const negative = ev.shiftKey || ev.button === 2 || ev.altKey;
    const key = `${state.frame}:${state.activeObj}`;
    const c = state.clicks.get(key) || { points: [], labels: [], box: null };
    c.points.push([Math.round(p[0] * 10) / 10, Math.round(p[1] * 10) / 10]);
    c.labels.push(negative ? 0 : 1);
    state.clicks.set(key, c);
    drawClicks();
    sendPrompt({ frame_idx: state.frame, obj_id: state.activeObj, points: c.points, labels: c.labels, ...(c.box ? { box: c.box } : {}) });
  } else if (state.tool === "box") {
    boxDrag = { from: p, to: p };
    $("draw-canvas").setPointerCapture(ev.pointerId);
  }
}

function onPointerMove(ev) {
  if (stroke) {
    strokeTo(canvasPoint(ev));
    redrawWorking();
  } else if (boxDrag) {
    boxDrag.to = canvasPoint(ev);
    drawClicks();
    const ctx = $("draw-canvas").getContext("2d");
    const [x0, y0] = boxDrag.from, [x1, y1] = boxDrag.to;
    ctx.strokeStyle = "#ffd54a";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  }
}

function onPointerUp(ev) {
  const { width: w, height: h } = $("draw-canvas");
  if (stroke) {
    strokeTo(canvasPoint(ev));
    const done = stroke;
    stroke = null;
    drawMasks(done);
    sendPrompt({ frame_idx: state.frame, obj_id: done.obj, mask: rle.encode(done.mask, h, w) });
  } else if (boxDrag) {
    const [ax, ay] = boxDrag.from, [bx, by] = boxDrag.to;
    boxDrag = null;
    const box = [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)].map((v) => Math.round(v));
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return drawClicks();
    const key = `${state.frame}:${state.activeObj}`;
    const c = state.clicks.get(key) || { points: [], labels: [], box: null };
    c.box = box;
    state.clicks.set(key, c);
    drawClicks();
    const body = { frame_idx: state.frame, obj_id: state.activeObj, box };
    if (c.points.length) Object.assign(body, { points: c.points, labels: c.labels });
    sendPrompt(body);
  }
}

// ------------------------------------------------------------------ propagation

let currentRun = null;

async function propagate() {
  if (!state.session || state.propagating) return;
  state.propagating = true;
  updateButtons();
  const direction = $("direction").value;
  const began = performance.now();
  const run = { frames: 0, timings: [], began, total: null };
  currentRun = run;
  state.runs += 1;
  setStatus("propagating …");
  try {
    const resp = await api("POST", sessionPath("/propagate"), { direction });
    run.total = Number(resp.headers.get("X-Maskvos-Frames-Total")) || null;
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let finished = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line);
        if (msg.error) setStatus(msg.error, true);
        else if (msg.done) finished = msg;
        else onStreamedFrame(msg, run);
      }
    }
    if (finished) {
      const secs = (performance.now() - began) / 1000;
      const what = finished.cancelled ? "cancelled after" : "propagated";
      if (!$("status").classList.contains("error")) setStatus(`${what} ${finished.frames} frames in ${secs.toFixed(1)} s`);
      $("progress").textContent = `${what} ${finished.frames} frames (${(finished.frames / Math.max(secs, 1e-6)).toFixed(2)} frames/s)`;
      $("progress").dataset.done = finished.cancelled ? "cancelled" : "done";
    }
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    state.propagating = false;
    currentRun = null;
    updateButtons();
    drawTimeline();
  }
}

function onStreamedFrame(frame, run) {
  storeFrame(frame);
  const now = performance.now();
  run.frames += 1;
  state.timings.push({ run: state.runs, frame_idx: frame.frame_idx, ms: now - run.began });
  const rate = run.frames / Math.max((now - run.began) / 1000, 1e-6);
  $("progress").textContent = `${run.frames}${run.total ? ` / ${run.total}` : ""} frames, ${rate.toFixed(2)} frames/s`;
  $("progress").dataset.done = "";
  if (frame.frame_idx === state.frame) drawMasks();
  drawTimeline();
  updateButtons();
}

async function cancel() {
  if (!state.session || !state.propagating) return;
  try {
    await apiJson("POST", sessionPath("/cancel"));
    setStatus("cancelling …");
  } catch (e) {
    setStatus(e.message, true);
  }
}

// ------------------------------------------------------------------ export

async function exportMasks() {
  if (!state.session) return;
  const fmt = $("export-format").value;
  setStatus(`exporting ${fmt} …`);
  try {
    const resp = await api("GET", sessionPath(`/export?format=${fmt}`));
    const blob = await resp.blob();
    const disposition = resp.headers.get("Content-Disposition") || "";
    const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || `masks-${fmt}.zip`;
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    setStatus(`exported ${name}`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

// ------------------------------------------------------------------ wiring

function onKey(ev) {
  if (ev.target instanceof HTMLInputElement && ev.target.type !== "range" && ev.target.type !== "checkbox") return;
  if (ev.target instanceof HTMLSelectElement) return;
  const key = ev.key;
  const step = ev.shiftKey ? 10 : 1;
  const handled = {
    ArrowLeft: () => showFrame(state.frame - step),
    ArrowRight: () => showFrame(state.frame + step),
    Home: () => showFrame(0),
    End: () => showFrame(state.session ? state.session.num_frames - 1 : 0),
    b: () => selectTool("brush"),
    e: () => selectTool("eraser"),
    c: () => selectTool("click"),
    x: () => selectTool("box"),
    "[": () => setBrush(state.brush / 1.25),
    "]": () => setBrush(state.brush * 1.25),
    n: () => state.session && addObject(),
    o: () => { $("overlay").checked = !$("overlay").checked; state.overlay = $("overlay").checked; drawMasks(); },
    Enter: () => propagate(),
    Escape: () => cancel(),
    "?": () => $("help").showModal(),
  }[key.length === 1 ? key.toLowerCase() : key] || (/^[1-9]$/.test(key) ? () => selectObject(Number(key)) : null);
  if (handled) {
    ev.preventDefault();
    handled();
  }
}

function wire() {
  const draw = $("draw-canvas");
  draw.addEventListener("pointerdown", onPointerDown);
  draw.addEventListener("pointermove", onPointerMove);
  draw.addEventListener("pointerup", onPointerUp);
  draw.addEventListener("contextmenu", (ev) => ev.preventDefault());
  $("scrubber").addEventListener("input", (ev) => showFrame(Number(ev.target.value)));
  $("timeline-strip").addEventListener("click", (ev) => {
    if (!state.session) return;
    const rect = ev.target.getBoundingClientRect();
    showFrame(Math.floor(((ev.clientX - rect.left) / rect.width) * state.session.num_frames));
  });
  $("add-object").addEventListener("click", () => addObject());
  for (const b of $("tools").querySelectorAll("button")) b.addEventListener("click", () => selectTool(b.dataset.tool));
  $("brush-size").addEventListener("input", (ev) => setBrush(Number(ev.target.value)));
  $("overlay").addEventListener("change", (ev) => { state.overlay = ev.target.checked; drawMasks(); });
  $("clear-clicks").addEventListener("click", () => { state.clicks.delete(`${state.frame}:${state.activeObj}`); drawClicks(); });
  $("propagate").addEventListener("click", () => propagate());
  $("cancel").addEventListener("click", () => cancel());
  $("export").addEventListener("click", () => exportMasks());
  $("upload").addEventListener("change", (ev) => ev.target.files.length && upload(ev.target.files[0]));
  $("help-button").addEventListener("click", () => $("help").showModal());
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", () => { fitStage(); drawTimeline(); });
  selectTool("brush");
  setBrush(24);
}

wire();
start();
