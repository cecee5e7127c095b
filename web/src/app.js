// The page: photos (open or drop) and a live webcam mode over the portable frame model, the faces
// followed by the Python runtime's tracker and smoother, every face kept as a row of fer-predict's
// video columns for download. Everything runs here; nothing is sent anywhere.
import { FrameModel } from "./engine.js";
import { FaceFollower } from "./tracking.js";
import { argmax, columns, frameRows, toCsv, toJsonLines } from "./rows.js";
import { Timeline } from "./timeline.js";

const COLORS = ["#d62728", "#8c564b", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e", "#7f7f7f"];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = { model: null, rows: [], photos: [], live: null };

function setStatus(text, warn = false) {
  $("status").textContent = text;
  $("status").classList.toggle("warn", warn);
}

function drawFaces(ctx, faces, labels, { tracked = false } = {}) {
  ctx.lineWidth = Math.max(2, ctx.canvas.width / 320);
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px system-ui, sans-serif`;
  for (const face of faces) {
    const probs = face.smoothed ?? face.probabilities;
    const best = argmax(probs);
    const [x, y, w, h] = face.box;
    ctx.strokeStyle = COLORS[best];
    ctx.strokeRect(x, y, w, h);
    const text = `${tracked ? `#${face.track} ` : ""}${labels[best]} ${probs[best].toFixed(2)}`;
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font, 10) + 6;
    ctx.fillStyle = COLORS[best];
    ctx.fillRect(x, Math.max(0, y - th), tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x + 4, Math.max(0, y - th) + th - 6);
  }
}

function faceTable(faces, labels) {
  const table = document.createElement("table");
  const head = table.insertRow();
  for (const name of ["face", "box x, y, w, h", "detector", "label", ...labels]) {
    const th = document.createElement("th");
    th.textContent = name;
    th.className = name === "label" ? "l" : "";
    head.appendChild(th);
  }
  for (const f of faces) {
    const best = argmax(f.probabilities);
    const row = table.insertRow();
    const cells = [f.index, f.box.join(", "), f.score.toFixed(3), labels[best], ...Array.from(f.probabilities, (p) => p.toFixed(3))];
    cells.forEach((v, i) => {
      const td = row.insertCell();
      td.textContent = v;
      if (i === 3) td.className = "l";
    });
  }
  return table;
}

function updateRowCount() {
  $("row-count").textContent = `${state.rows.length} row${state.rows.length === 1 ? "" : "s"}`;
  for (const id of ["csv", "jsonl", "clear"]) $(id).disabled = state.rows.length === 0;
}

async function imageData(file) {
  const bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { canvas, ctx, data: ctx.getImageData(0, 0, canvas.width, canvas.height) };
}

async function addPhotos(files) {
  for (const file of files) {
    const item = document.createElement("div");
    item.className = "photo";
    $("photo-results").appendChild(item);
    try {
      const { canvas, ctx, data } = await imageData(file);
      const faces = await state.model.detect(data);
      state.photos.push({ source: file.name, width: data.width, height: data.height, faces });
      state.rows.push(...frameRows(file.name, faces, state.model.labels));
      drawFaces(ctx, faces, state.model.labels);
      const caption = document.createElement("p");
      caption.textContent = `${file.name}: ${faces.length} face${faces.length === 1 ? "" : "s"}`;
      const info = document.createElement("div");
      info.append(caption);
      if (faces.length) info.append(faceTable(faces, state.model.labels));
      item.append(canvas, info);
    } catch (err) {
      item.textContent = `${file.name}: ${err.message}`;
      state.rows.push({ source: file.name, status: "error", error: String(err.message) });
    }
    updateRowCount();
  }
}

/** Resolves with the next video frame's metadata (requestVideoFrameCallback, or the next animation frame). */
function nextFrame(video) {
  return new Promise((resolve) => {
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback((now, meta) => resolve(meta));
    else requestAnimationFrame(() => resolve(null));
  });
}

async function startCamera() {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  const canvas = $("overlay");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const live = { stream, follower: new FaceFollower(), timelines: new Map(), frames: 0, times: [], ms: [],
    start: performance.now(), running: true, dropped: 0 };
  state.live = live;
  $("timelines").replaceChildren(); // a new run starts its track ids from 1 again
  $("camera").textContent = "Stop the camera";
  let firstPresented = null;
  let lastPresented = null;
  while (live.running) {
    const meta = await nextFrame(video);
    if (!live.running) break;
    const t0 = performance.now();
    const time = (t0 - live.start) / 1000;
    if (meta && lastPresented !== null) live.dropped += Math.max(0, meta.presentedFrames - lastPresented - 1);
    if (meta) lastPresented = meta.presentedFrames;
    firstPresented ??= lastPresented;
    // The frame's number since the camera started, counting dropped frames (as the Python runtime's live sources)
    const index = meta ? meta.presentedFrames - firstPresented : live.frames;
    live.frames += 1;
    ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const found = await state.model.detect(data);
    if (!live.running) break; // stopped while this frame was processed: it is not reported
    const faces = live.follower.step(found, time);
    state.rows.push(...frameRows("camera 0", faces, state.model.labels, { frame: index, timeS: time }));
    ctx.putImageData(data, 0, 0);
    drawFaces(ctx, faces, state.model.labels, { tracked: true });
    updateTimelines(live, faces, time);
    const ms = performance.now() - t0;
    live.ms.push(ms);
    live.times.push(performance.now());
    while (live.times[0] < performance.now() - 1000) live.times.shift();
    if (live.ms.length > 30) live.ms.shift();
    const mean = live.ms.reduce((a, b) => a + b, 0) / live.ms.length;
    $("live-stats").textContent = `${live.times.length} frames/s, ${mean.toFixed(1)} ms per frame ` +
      `(${canvas.width}x${canvas.height}, ${state.model.backend}), frame ${index}, dropped ${live.dropped}`;
    updateRowCount();
  }
}

function updateTimelines(live, faces, time) {
  for (const face of faces) {
    if (!live.timelines.has(face.track)) {
      const timeline = new Timeline(face.track, COLORS);
      live.timelines.set(face.track, timeline);
      $("timelines").appendChild(timeline.element);
    }
    live.timelines.get(face.track).add(time, face.smoothed);
  }
  for (const [track, timeline] of live.timelines) {
    timeline.draw(time);
    if (timeline.empty(time)) {
      timeline.element.remove();
      live.timelines.delete(track);
    }
  }
}

function stopCamera() {
  if (!state.live) return;
  state.live.running = false;
  for (const track of state.live.stream.getTracks()) track.stop();
  state.live = null;
  $("camera").textContent = "Start the camera";
}

function download(kind) {
  const names = columns(state.model.labels, true);
  const text = kind === "csv" ? toCsv(state.rows, names) : toJsonLines(state.rows, names);
  const url = URL.createObjectURL(new Blob([text], { type: kind === "csv" ? "text/csv" : "application/x-ndjson" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `fer-edge-rows.${kind}`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function main() {
  const threads = params.has("threads") ? Number(params.get("threads")) : undefined;
  state.model = await FrameModel.load({ threads });
  const m = state.model;
  const isolation = globalThis.crossOriginIsolated ? "cross-origin isolated"
    : "not cross-origin isolated, so one thread only (serve with npm run serve for threads)";
  setStatus(`${m.manifest.model} on ${m.backend}; ${isolation}; model loaded in ${m.loadMs.toFixed(0)} ms. ` +
    "WebGPU is not used.", !globalThis.crossOriginIsolated);
  $("legend").replaceChildren(...m.labels.map((label, i) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i];
    span.append(swatch, label);
    return span;
  }));
  $("files").addEventListener("change", (e) => addPhotos([...e.target.files]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addPhotos([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
  $("camera").disabled = !navigator.mediaDevices?.getUserMedia;
  $("camera").addEventListener("click", () => {
    if (state.live) stopCamera();
    else startCamera().catch((err) => { setStatus(`camera: ${err.message}`, true); stopCamera(); });
  });
  $("csv").addEventListener("click", () => download("csv"));
  $("jsonl").addEventListener("click", () => download("jsonl"));
  $("clear").addEventListener("click", () => { state.rows = []; updateRowCount(); });
  updateRowCount();
}

// For tests and the benchmark (same page, same code): the state, and the model's per-frame call.
const ready = main().then(() => state, (err) => { setStatus(`error: ${err.message}`, true); throw err; });
globalThis.ferEdge = { ready, state, columns: () => columns(state.model.labels, true), toCsv, toJsonLines };
