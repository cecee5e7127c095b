// The portable models in onnxruntime-web (WASM, run in Node) and onnxruntime-node, held to golden
// outputs of the Python runtime. tests/test_portable.py writes the golden files, sets FER_GOLDEN_DIR
// and runs `node --test` here; the tolerances come with the goldens (manifest.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { classifyCrops, detectFaces, open } from "./example.mjs";

const dir = process.env.FER_GOLDEN_DIR;
if (!dir) throw new Error("FER_GOLDEN_DIR is not set: run python -m pytest tests/test_portable.py, which writes the goldens");
const manifest = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));

const ARRAYS = { uint8: Uint8Array, float32: Float32Array, int64: BigInt64Array };

function read(entry) {
  const bytes = fs.readFileSync(path.join(dir, entry.file));
  const Type = ARRAYS[entry.dtype];
  return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
}

function maxDiff(got, expected) {
  assert.equal(got.length, expected.length, "output sizes differ");
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(Number(got[i]) - Number(expected[i])));
  return worst;
}

const runtimes = {
  "onnxruntime-web (WASM)": async () => {
    const ort = await import("onnxruntime-web");
    ort.env.wasm.numThreads = 1;
    return ort;
  },
  "onnxruntime-node": async () => import("onnxruntime-node"),
};

for (const [name, load] of Object.entries(runtimes)) {
  test(`${name}: crop model`, async (t) => {
    const ort = await load();
    let worst = 0;
    const session = await open(ort, fs.readFileSync(path.join(dir, manifest.models.crop)));
    const checks = manifest.crop_checks;
    for (const c of manifest.crops) {
      const [count, height, width] = c.input.shape;
      const got = await classifyCrops(ort, session, read(c.input), count, height, width);
      const diff = maxDiff(got.probabilities, read(c.probabilities));
      assert.ok(diff <= checks.probabilities, `${c.name}: |probability diff| ${diff} > ${checks.probabilities}`);
      worst = Math.max(worst, diff);
      for (let i = 0; i < count; i++) {
        const row = Array.from(got.probabilities.slice(i * 7, i * 7 + 7));
        assert.equal(Number(got.label[i]), row.indexOf(Math.max(...row)), `${c.name}: label is not the argmax`);
      }
    }
    t.diagnostic(`${manifest.crops.length} crop batches: max |probability diff| ${worst.toExponential(1)}`);
  });

  test(`${name}: crop model preprocessing is bit-exact`, async () => {
    const ort = await load();
    const session = await open(ort, fs.readFileSync(path.join(dir, manifest.models.crop)));
    for (const c of manifest.crops) {
      const out = await session.run({ image: new ort.Tensor("uint8", read(c.input), c.input.shape) });
      assert.equal(maxDiff(out.preprocessed.data, read(c.preprocessed)), 0, `${c.name}: preprocessing differs`);
    }
  });

  test(`${name}: frame model`, async (t) => {
    const ort = await load();
    const worst = {};
    let sameCrops = 0;
    const session = await open(ort, fs.readFileSync(path.join(dir, manifest.models.frame)));
    const checks = manifest.frame_checks;
    let faces = 0;
    let agree = 0;
    for (const f of manifest.frames) {
      const [height, width] = f.input.shape;
      const got = await detectFaces(ort, session, read(f.input), height, width);
      assert.equal(got.scores.length, f.faces, `${f.name}: ${got.scores.length} faces, expected ${f.faces}`);
      for (const output of ["boxes", "landmarks", "scores", "probabilities"]) {
        const diff = maxDiff(got[output], read(f[output]));
        assert.ok(diff <= checks[output], `${f.name}: |${output} diff| ${diff} > ${checks[output]}`);
        worst[output] = Math.max(worst[output] ?? 0, diff);
      }
      const crops = read(f.crops);
      const size = crops.length / Math.max(f.faces, 1);
      for (let i = 0; i < f.faces; i++) {
        sameCrops += Number(maxDiff(got.crops.slice(i * size, (i + 1) * size), crops.slice(i * size, (i + 1) * size)) === 0);
      }
      const labels = read(f.labels);
      for (let i = 0; i < f.faces; i++) agree += Number(got.labels[i] === labels[i]);
      faces += f.faces;
    }
    assert.ok(faces > 0, "the goldens hold no face");
    assert.ok(agree / faces >= checks.label_agreement, `labels agree on ${agree}/${faces}`);
    const shown = Object.entries(worst).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(", ");
    t.diagnostic(`${faces} faces: labels agree on ${agree}, crops identical ${sameCrops}; max |diff| ${shown}`);
  });
}
