// Rounding and number text as Python writes them, on values where a naive port goes wrong: exact ties
// (odd multiples of 2^-7), tiny and huge values, whole numbers, negatives; and the box rounding.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readJson } from "./goldens.mjs";
import { clipBox, pyFloat, pyRound, roundHalfEven } from "../src/rows.js";
import { rgbaToRgb } from "../src/engine.js";

const formats = readJson("formats.json");

test("pyRound and pyFloat equal Python's round(x, 6) and repr", () => {
  for (const { value, rounded, repr, rounded_repr: roundedRepr } of formats.floats) {
    assert.equal(pyRound(value), rounded, `round(${repr}, 6)`);
    assert.equal(pyFloat(value), repr);
    assert.equal(pyFloat(pyRound(value)), roundedRepr);
  }
});

test("clipBox equals fer_runtime.pipeline.clip_box", () => {
  for (const { box, size, clipped } of formats.boxes) assert.deepEqual(clipBox(box, ...size), clipped, JSON.stringify(box));
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, 3.49].map(roundHalfEven), [0, 2, 2, 0, 3]);
});

test("RGBA to RGB drops every fourth byte", () => {
  assert.deepEqual(Array.from(rgbaToRgb(Uint8Array.from([1, 2, 3, 255, 4, 5, 6, 0]))), [1, 2, 3, 4, 5, 6]);
});
