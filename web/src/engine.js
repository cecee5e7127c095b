// The portable frame model on onnxruntime-web (WASM), loaded from the app's own files: one RGBA image
// (a canvas' ImageData) in, the faces out. No network but the app's origin: the runtime's files and the
// model come from ./vendor/ort/ and ./models/ (npm run build puts them there).
import { clipBox } from "./rows.js";

const BASE = new URL("../", import.meta.url);

/** How many WASM threads the page uses: threads need SharedArrayBuffer, hence cross-origin isolation. By
 * default onnxruntime-web's own choice, half the cores up to 4 (on 2 busy cores a second thread measured
 * slower, BENCHMARKS.md); `requested` (?threads=N) up to the core count. */
export function threadsAvailable(requested) {
  if (!globalThis.crossOriginIsolated) return 1;
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(requested ?? Math.min(4, Math.ceil(cores / 2)), cores));
}

/** RGBA bytes (ImageData.data) -> RGB bytes, the frame model's input layout. */
export function rgbaToRgb(rgba, out = new Uint8Array((rgba.length / 4) * 3)) {
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i];
    out[j + 1] = rgba[i + 1];
    out[j + 2] = rgba[i + 2];
  }
  return out;
}

export class FrameModel {
  /** Load onnxruntime-web and the model named in models/models.json; `threads` as threadsAvailable. */
  static async load({ threads } = {}) {
    const ort = await import(new URL("vendor/ort/ort.wasm.min.mjs", BASE).href);
    ort.env.wasm.wasmPaths = new URL("vendor/ort/", BASE).href; // never a CDN
    ort.env.wasm.numThreads = threadsAvailable(threads);
    ort.env.wasm.proxy = false;
    const manifest = await (await fetch(new URL("models/models.json", BASE))).json();
    const started = performance.now();
    const session = await ort.InferenceSession.create(new URL(`models/${manifest.frame}`, BASE).href,
      { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    return new FrameModel(ort, session, manifest, performance.now() - started);
  }

  constructor(ort, session, manifest, loadMs) {
    Object.assign(this, { ort, session, manifest, loadMs });
    this.labels = manifest.labels;
    this.threads = ort.env.wasm.numThreads;
    this.backend = `WASM (SIMD), ${this.threads} thread${this.threads === 1 ? "" : "s"}`;
    this.rgb = null;
  }

  /** The faces of one image: [{box (whole pixels, clipped), detectorBox (the detector's float box), score,
   * landmarks, probabilities (Float32Array), crop (its grey 48x48 crop before equalization), index}], best
   * detector score first. */
  async detect({ data, width, height }) {
    if (!this.rgb || this.rgb.length !== width * height * 3) this.rgb = new Uint8Array(width * height * 3);
    const frame = new this.ort.Tensor("uint8", rgbaToRgb(data, this.rgb), [height, width, 3]);
    const out = await this.session.run({ frame });
    const n = out.scores.data.length;
    const k = this.labels.length;
    const faces = [];
    for (let i = 0; i < n; i++) {
      const detectorBox = Array.from(out.boxes.data.slice(4 * i, 4 * i + 4));
      faces.push({
        index: i, detectorBox, box: clipBox(detectorBox, height, width), score: out.scores.data[i],
        landmarks: Array.from(out.landmarks.data.slice(10 * i, 10 * i + 10)),
        probabilities: out.probabilities.data.slice(k * i, k * i + k),
        crop: out.crops.data.slice((out.crops.data.length / n) * i, (out.crops.data.length / n) * (i + 1)),
      });
    }
    for (const t of Object.values(out)) t.dispose?.();
    return faces;
  }
}
