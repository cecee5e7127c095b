// The tracker, the smoother and the rows against VideoAnalyzer on the same scripted detections: the
// same track ids, the same smoothed probabilities and the same CSV and JSON Lines text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readJson, readText } from "./goldens.mjs";
import { FaceFollower, IouTracker, EmaSmoother } from "../src/tracking.js";
import { clipBox, columns, frameRows, toCsv, toJsonLines } from "../src/rows.js";

const { labels, scenarios } = readJson("tracking.json");

function follow(scenario) {
  const o = scenario.options;
  const follower = new FaceFollower({ smoothingS: o.smoothing_s ?? 0.5, iouThreshold: o.iou_threshold ?? 0.3,
    maxAgeS: o.max_age_s ?? 1.0 });
  const [height, width] = scenario.size;
  return scenario.frames.map((frame) => {
    const faces = frame.faces.map((f, index) => ({ index, detectorBox: f.box, box: clipBox(f.box, height, width),
      score: f.score, probabilities: Float32Array.from(f.probabilities) }));
    return { frame, faces: follower.step(faces, frame.time_s) };
  });
}

for (const scenario of scenarios) {
  test(`${scenario.name}: track ids and smoothed probabilities equal VideoAnalyzer's`, (t) => {
    let worst = 0;
    let faces = 0;
    follow(scenario).forEach(({ frame, faces: got }, i) => {
      const want = scenario.expected[i];
      assert.deepEqual(got.map((f) => f.track), want.tracks, `frame ${frame.index}: track ids`);
      got.forEach((f, k) => f.smoothed.forEach((v, j) => { worst = Math.max(worst, Math.abs(v - want.smoothed[k][j])); }));
      faces += got.length;
    });
    assert.equal(worst, 0, `max |smoothed diff| ${worst}`);
    const ids = new Set(scenario.expected.flatMap((e) => e.tracks));
    t.diagnostic(`${scenario.frames.length} frames, ${faces} faces, ${ids.size} tracks: ids and float32 probabilities identical`);
  });

  test(`${scenario.name}: CSV and JSON Lines equal the Python sinks' byte for byte`, () => {
    const rows = follow(scenario).flatMap(({ frame, faces }) =>
      frameRows(scenario.name, faces, labels, { frame: frame.index, timeS: frame.time_s }));
    const names = columns(labels, true);
    assert.equal(toCsv(rows, names), readText(scenario.csv));
    assert.equal(toJsonLines(rows, names), readText(scenario.jsonl));
  });
}

test("the tracker and smoother refuse settings out of range, as the Python classes do", () => {
  assert.throws(() => new IouTracker({ iouThreshold: 0 }), RangeError);
  assert.throws(() => new IouTracker({ maxAgeS: -1 }), RangeError);
  assert.throws(() => new IouTracker({ velocitySmoothing: 1.5 }), RangeError);
  assert.throws(() => new EmaSmoother(Infinity), RangeError);
  assert.throws(() => new EmaSmoother(-0.1), RangeError);
});
