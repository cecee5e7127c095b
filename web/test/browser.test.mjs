// The app in a real headless Chromium, with and without cross-origin isolation (2 WASM threads and 1):
// it loads with no request to anything but its own server, photos (opened, or dropped) give the Python
// runtime's faces, and a fake camera playing a clip of moving faces gives per-frame rows whose track ids
// stay with the faces; both downloads carry fer-predict's video columns.
// Screenshots go to $FER_WEB_SCREENSHOTS when it is set.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { GOLDENS, readJson } from "./goldens.mjs";
import { launch, openApp, serve } from "./browser.mjs";
import { columns } from "../src/rows.js";

const photos = readJson("photos.json");
const camera = readJson("camera.json");
const SHOTS = process.env.FER_WEB_SCREENSHOTS;
// The bounds this test holds the browser to; what it measured is printed beside them. Boxes within 1 px,
// labels equal, and probabilities within 1e-4 on at least 90% of faces: WASM adds YuNet's convolutions in
// another order than x86 ONNX Runtime, so now and then a crop pixel lands one grey level away, which moves
// that face's probabilities by more (2.5e-4 on the 40 px face of eight-faces.png here; 1.6e-3 in
// docs/PORTABLE.md's Node run); every face stays within 5e-3.
const PHOTO_CHECKS = { box_px: 1, probability: 1e-4, share_within: 0.9, every_face: 5e-3 };

async function screenshot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

async function withApp(options, body) {
  const server = await serve({ isolation: options.isolation });
  const { browser, close } = await launch({ video: options.video });
  try {
    const app = await openApp(browser, server.origin, { query: "?threads=2", permissions: options.permissions });
    await body(app);
    assert.deepEqual(app.foreign, [], "requests to anything but the app's own server");
    assert.deepEqual(app.errors, [], "errors in the page");
  } finally {
    await close();
    await server.close();
  }
}

for (const isolation of [true, false]) {
  const mode = isolation ? "cross-origin isolated, 2 threads" : "not isolated, 1 thread";
  const tag = isolation ? "isolated" : "not-isolated";

  test(`${mode}: loads from its own files only and says which backend it runs`, async () => {
    await withApp({ isolation }, async (app) => {
      const info = await app.page.evaluate(() => ({ isolated: globalThis.crossOriginIsolated,
        threads: globalThis.ferEdge.state.model.threads, status: document.querySelector("#status").textContent,
        privacy: document.querySelector("#privacy").textContent }));
      assert.equal(info.isolated, isolation);
      assert.equal(info.threads, isolation ? 2 : 1);
      assert.match(info.status, isolation ? /WASM \(SIMD\), 2 threads; cross-origin isolated/ : /1 thread;.*one thread only/);
      assert.match(info.privacy, /never leave this device/);
      // The page's own Content-Security-Policy stops a connection elsewhere before it leaves the browser.
      const attempt = await app.page.evaluate(() => fetch("https://example.com/").then(() => "sent", () => "refused"));
      assert.equal(attempt, "refused");
      assert.deepEqual(app.foreign, [], "the refused fetch reached the network layer");
      const csp = app.errors.filter((e) => /Content Security Policy/.test(e));
      assert.ok(csp.length >= 1, "no CSP violation reported");
      app.errors.splice(0, app.errors.length, ...app.errors.filter((e) => !csp.includes(e)));
      const own = app.requests.map((r) => new URL(r.url).pathname);
      assert.ok(own.includes("/vendor/ort/ort-wasm-simd-threaded.wasm") && own.some((p) => p.endsWith(".frame.onnx")), own.join(" "));
    });
  });

  test(`${mode}: photos give the Python runtime's faces`, async (t) => {
    await withApp({ isolation }, async (app) => {
      const files = photos.photos.map((p) => path.join(GOLDENS, p.file));
      if (isolation) {
        await app.page.setInputFiles("#files", files); // opened with the file input
      } else { // dropped on the page
        const dataTransfer = await app.page.evaluateHandle((list) => {
          const dt = new DataTransfer();
          for (const { name, b64 } of list) {
            dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type: "image/png" }));
          }
          return dt;
        }, files.map((f) => ({ name: path.basename(f), b64: fs.readFileSync(f).toString("base64") })));
        await app.page.dispatchEvent("#drop", "drop", { dataTransfer });
      }
      await app.page.waitForFunction((n) => globalThis.ferEdge.state.photos.length === n, files.length, { timeout: 120000 });
      const got = await app.page.evaluate(() => globalThis.ferEdge.state.photos.map((p) => ({ ...p,
        faces: p.faces.map((f) => ({ box: f.box, detectorBox: f.detectorBox, score: f.score,
          probabilities: Array.from(f.probabilities), crop: Array.from(f.crop) })) })));
      const worst = { box: 0, detectorBox: 0, probability: 0, score: 0 };
      let faces = 0;
      let within = 0;
      let sameCrops = 0;
      photos.photos.forEach((want, i) => {
        assert.equal(got[i].source, want.file);
        assert.equal(got[i].faces.length, want.faces.length, `${want.file}: face count`);
        want.faces.forEach((w, k) => {
          const g = got[i].faces[k];
          g.box.forEach((v, j) => { worst.box = Math.max(worst.box, Math.abs(v - w.box[j])); });
          g.detectorBox.forEach((v, j) => { worst.detectorBox = Math.max(worst.detectorBox, Math.abs(v - w.detector_box[j])); });
          const diff = Math.max(...g.probabilities.map((v, j) => Math.abs(v - w.probabilities[j])));
          worst.probability = Math.max(worst.probability, diff);
          within += Number(diff <= PHOTO_CHECKS.probability);
          sameCrops += Number(g.crop.every((v, j) => v === w.crop[j]));
          worst.score = Math.max(worst.score, Math.abs(g.score - w.score));
          const best = g.probabilities.indexOf(Math.max(...g.probabilities));
          assert.equal(photos.labels[best], w.label, `${want.file} face ${k}: label`);
          faces += 1;
        });
      });
      t.diagnostic(`${faces} faces in ${files.length} photos: max |box diff| ${worst.box} px (detector's float ` +
        `boxes ${worst.detectorBox.toExponential(1)} px), |score diff| ${worst.score.toExponential(1)}, ` +
        `${sameCrops}/${faces} crops identical, probabilities within ${PHOTO_CHECKS.probability} on ${within}/${faces} ` +
        `faces, max |probability diff| ${worst.probability.toExponential(1)}`);
      assert.ok(faces >= 10, "the photos hold the test faces");
      assert.ok(worst.box <= PHOTO_CHECKS.box_px, `max |box diff| ${worst.box} px`);
      assert.ok(within >= PHOTO_CHECKS.share_within * faces, `probabilities within 1e-4 on ${within}/${faces} faces`);
      assert.ok(worst.probability <= PHOTO_CHECKS.every_face, `max |probability diff| ${worst.probability}`);
      // The download: fer-predict's video columns, one row per face, a no_face row per photo without one.
      const [download] = await Promise.all([app.page.waitForEvent("download"), app.page.click("#csv")]);
      const lines = fs.readFileSync(await download.path(), "utf8").trimEnd().split("\n");
      assert.equal(lines[0], columns(photos.labels, true).join(","));
      assert.equal(lines.length - 1, photos.photos.reduce((n, p) => n + Math.max(1, p.faces.length), 0));
      await screenshot(app.page, `photos-${tag}.png`);
    });
  });

  test(`${mode}: a fake camera's moving faces keep their track ids`, async (t) => {
    const video = path.join(GOLDENS, camera.file);
    await withApp({ isolation, video, permissions: ["camera"] }, async (app) => {
      await app.page.click("#camera");
      // Rows from the clip's first pass only (it loops, and the faces jump back when it does).
      const horizon = camera.seconds - 1.5;
      await app.page.waitForFunction((h) => globalThis.ferEdge.state.rows.some((r) => r.time_s > h), horizon, { timeout: 120000 });
      await screenshot(app.page, `webcam-${tag}.png`);
      await app.page.click("#camera");
      const all = await app.page.evaluate(() => globalThis.ferEdge.state.rows);
      // The JSON Lines download: every row so far, fer-predict's video columns in order.
      const [download] = await Promise.all([app.page.waitForEvent("download"), app.page.click("#jsonl")]);
      const lines = fs.readFileSync(await download.path(), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.equal(lines.length, all.length);
      for (const line of lines) assert.deepEqual(Object.keys(line), columns(photos.labels, true));
      assert.deepEqual(lines.map((l) => [l.source, l.frame, l.track]), all.map((r) => ["camera 0", r.frame, r.track ?? null]));
      const rows = all.filter((r) => r.time_s <= horizon);
      const frames = new Set(rows.map((r) => r.frame));
      const tracks = new Set(rows.filter((r) => r.status === "ok").map((r) => r.track));
      const full = [...frames].filter((f) => rows.filter((r) => r.frame === f && r.status === "ok").length === camera.faces);
      const stats = await app.page.textContent("#live-stats");
      t.diagnostic(`${frames.size} frames in ${horizon} s of clip, ${full.length} with both faces, track ids ` +
        `${[...tracks].join(", ")}; ${stats}`);
      assert.ok(frames.size >= 8, `only ${frames.size} frames processed`);
      assert.ok(full.length >= 0.9 * frames.size, `both faces in ${full.length} of ${frames.size} frames`);
      assert.deepEqual([...tracks].sort(), [1, 2], "one track id per face over the whole pass");
      for (const track of tracks) { // a track's box never jumps: it stays on its face
        const boxes = rows.filter((r) => r.track === track).sort((a, b) => a.frame - b.frame);
        for (let i = 1; i < boxes.length; i++) {
          const step = Math.hypot(boxes[i].x - boxes[i - 1].x, boxes[i].y - boxes[i - 1].y);
          const dt = boxes[i].time_s - boxes[i - 1].time_s;
          assert.ok(step <= 40 + 250 * dt, `track ${track} jumped ${step.toFixed(0)} px in ${dt.toFixed(2)} s`);
        }
      }
    });
  });
}
