// The portable models from JavaScript: onnxruntime-web (browsers; Node through WASM) or onnxruntime-node.
// `ort` is either module; `model` the .onnx file's bytes (a Uint8Array) or, in a browser, its URL.
export const open = (ort, model) => ort.InferenceSession.create(model); // once per model, then reuse

export async function classifyCrops(ort, session, rgb, count, height, width) {
  const image = new ort.Tensor("uint8", rgb, [count, height, width, 3]); // RGB bytes, row by row
  const { probabilities, label } = await session.run({ image });
  return { probabilities: probabilities.data, label: label.data }; // Float32Array (count x 7), BigInt64Array
}

export async function detectFaces(ort, session, rgb, height, width) {
  const out = await session.run({ frame: new ort.Tensor("uint8", rgb, [height, width, 3]) });
  // per face: boxes x, y, w, h (frame pixels), scores, landmarks (5 x, y), probabilities (7), labels
  return Object.fromEntries(Object.entries(out).map(([name, tensor]) => [name, tensor.data]));
}
