// The browser half of the web benchmark (bench.py runs it): in headless Chromium, the app's per-frame
// work (RGBA -> RGB, the frame model, tracking, rows; not drawing) on given frames with 1 and 2 WASM
// threads, and the first load (a fresh browser: empty cache) in time and bytes transferred.
//
//   node bench.mjs FRAMES_DIR ROUNDS   (FRAMES_DIR/frames.json lists raw RGB files) -> JSON on stdout
import fs from "node:fs";
import path from "node:path";
import { launch, openApp, serve } from "./test/browser.mjs";

const [dir, rounds = "40"] = process.argv.slice(2);
const frames = JSON.parse(fs.readFileSync(path.join(dir, "frames.json"), "utf8"));

async function timeFrames(browser, origin, threads) {
  const app = await openApp(browser, origin, { query: `?threads=${threads}` });
  for (const f of frames) {
    const rgb = fs.readFileSync(path.join(dir, f.file)).toString("base64");
    await app.page.evaluate(({ name, rgb, width, height }) => {
      const bytes = Uint8Array.from(atob(rgb), (c) => c.charCodeAt(0));
      const data = new Uint8ClampedArray(width * height * 4);
      for (let i = 0, j = 0; j < bytes.length; i += 4, j += 3) {
        data[i] = bytes[j]; data[i + 1] = bytes[j + 1]; data[i + 2] = bytes[j + 2]; data[i + 3] = 255;
      }
      (globalThis.benchFrames ??= {})[name] = { data, width, height };
    }, { name: f.name, rgb, width: f.width, height: f.height });
  }
  const result = await app.page.evaluate(async ({ names, rounds }) => {
    const { state } = globalThis.ferEdge;
    const { FaceFollower } = await import("./src/tracking.js");
    const { frameRows } = await import("./src/rows.js");
    const follower = new FaceFollower();
    let t = 0;
    const step = async (name) => {
      const faces = follower.step(await state.model.detect(globalThis.benchFrames[name]), (t += 1 / 30));
      return frameRows("bench", faces, state.model.labels, { frame: 0, timeS: t }).length;
    };
    for (const name of names) for (let i = 0; i < 5; i++) await step(name); // warm-up
    const times = Object.fromEntries(names.map((n) => [n, []]));
    const faces = {};
    for (let r = 0; r < rounds; r++) {
      const order = [...names].sort(() => Math.random() - 0.5);
      for (const name of order) {
        const t0 = performance.now();
        faces[name] = await step(name);
        times[name].push(performance.now() - t0);
      }
    }
    return { times, faces, threads: state.model.threads, isolated: globalThis.crossOriginIsolated };
  }, { names: frames.map((f) => f.name), rounds: Number(rounds) });
  await app.context.close();
  return result;
}

async function firstLoad(origin) {
  const { browser, close } = await launch();
  try {
    const app = await openApp(browser, origin, { query: "?threads=2" });
    await new Promise((r) => setTimeout(r, 200)); // let requestfinished events land
    const bytes = app.requests.reduce((n, r) => n + r.bytes, 0);
    return { ms: app.loadMs, bytes, requests: app.requests.length, foreign: app.foreign.length,
      largest: [...app.requests].sort((a, b) => b.bytes - a.bytes).slice(0, 3).map((r) => ({ path: new URL(r.url).pathname, bytes: r.bytes })) };
  } finally {
    await close();
  }
}

const server = await serve({ isolation: true });
try {
  const loads = [];
  for (let i = 0; i < 3; i++) loads.push(await firstLoad(server.origin));
  const { browser, close } = await launch();
  const timing = {};
  let chromium;
  try {
    chromium = browser.version();
    for (const threads of [1, 2]) timing[threads] = await timeFrames(browser, server.origin, threads);
  } finally {
    await close();
  }
  const version = JSON.parse(fs.readFileSync(new URL("./node_modules/onnxruntime-web/package.json", import.meta.url))).version;
  process.stdout.write(JSON.stringify({ loads, timing, onnxruntime_web: version, chromium }));
} finally {
  await server.close();
}
