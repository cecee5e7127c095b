// The row spec of fer_runtime/rows.py, written as fer-predict writes it: the same columns
// (columns(labels, raw=True) for outputs that hold video), the same rounding (Python's round(x, 6))
// and the same text (Python's float repr in CSV and JSON Lines, csv's minimal quoting, json.dumps'
// separators and ASCII escapes), so a downloaded file equals fer-predict's byte for byte
// (test/rows.test.mjs compares them with files the Python sinks wrote).

export const DECIMALS = 6;
export const INT_COLUMNS = new Set(["frame", "track", "face", "x", "y", "w", "h"]);
export const TEXT_COLUMNS = new Set(["source", "label", "status", "error"]);

/** The column names, in order; `raw`: with raw_p_<label> (outputs that hold video). */
export function columns(labels, raw = false) {
  return ["source", "frame", "time_s", "track", "face", "x", "y", "w", "h", "detector_score", "label",
    "confidence", ...labels.map((l) => `p_${l}`), ...(raw ? labels.map((l) => `raw_p_${l}`) : []), "status", "error"];
}

/** Python's round(x, decimals): correctly rounded, an exact tie to the even neighbour. */
export function pyRound(x, decimals = DECIMALS) {
  if (x === null || x === undefined) return null;
  const ax = Math.abs(x);
  let out = Number(ax.toFixed(decimals)); // the exact value rounded; an exact tie goes up
  // x * 10^d is an exact tie (n + 1/2) only when x * 2^(d+1) is an odd whole number; Python takes the even n.
  const t = ax * 2 ** (decimals + 1);
  if (Number.isInteger(t) && t % 2 === 1) {
    const n = Math.floor(ax * 10 ** decimals);
    out = (n % 2 === 0 ? n : n + 1) / 10 ** decimals;
  }
  return x < 0 ? -out : out;
}

/** Python's repr of a float: the shortest digits that round-trip, laid out as CPython does. */
export function pyFloat(x) {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mantissa, exp] = Math.abs(x).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const e = Number(exp);
  if (e < -4 || e >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
  }
  if (e < 0) return `${sign}0.${"0".repeat(-e - 1)}${digits}`;
  const whole = digits.slice(0, e + 1).padEnd(e + 1, "0");
  const frac = digits.slice(e + 1);
  return `${sign}${whole}.${frac || "0"}`;
}

function cell(name, value) {
  if (value === null || value === undefined) return null;
  if (TEXT_COLUMNS.has(name)) return String(value);
  if (INT_COLUMNS.has(name)) return String(Math.trunc(value));
  return pyFloat(value);
}

/** `row` with exactly `names`; a missing raw_p_<label> takes p_<label>, anything else missing is empty. */
export function complete(row, names) {
  const out = {};
  for (const name of names) {
    if (name in row) out[name] = row[name];
    else if (name.startsWith("raw_p_")) out[name] = row[name.slice(4)] ?? null;
    else out[name] = null;
  }
  return out;
}

const quoteCsv = (text) => (/[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text);

/** A header line and one line per row, as Python's csv.writer (lineterminator "\n"). */
export function toCsv(rows, names) {
  const lines = [names.map(quoteCsv).join(",")];
  for (const row of rows) {
    const full = complete(row, names);
    lines.push(names.map((n) => quoteCsv(cell(n, full[n]) ?? "")).join(","));
  }
  return `${lines.join("\n")}\n`;
}

/** A JSON string as json.dumps writes it (ensure_ascii: every non-ASCII character as \uXXXX). */
function pyJsonString(text) {
  return JSON.stringify(text).replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** One JSON object per row and line, as json.dumps(row) writes it. */
export function toJsonLines(rows, names) {
  return rows.map((row) => {
    const full = complete(row, names);
    const fields = names.map((n) => {
      const v = cell(n, full[n]);
      return `${pyJsonString(n)}: ${v === null ? "null" : TEXT_COLUMNS.has(n) ? pyJsonString(v) : v}`;
    });
    return `{${fields.join(", ")}}\n`;
  }).join("");
}

/** Python's int(round(v)) for a box edge: to the nearest whole number, halves to even. */
export function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The detector's float box clipped to the image in whole pixels (fer_runtime.pipeline.clip_box). */
export function clipBox([x, y, w, h], height, width) {
  const x0 = roundHalfEven(Math.min(Math.max(0, x), width));
  const y0 = roundHalfEven(Math.min(Math.max(0, y), height));
  const x1 = roundHalfEven(Math.min(width, x + w));
  const y1 = roundHalfEven(Math.min(height, y + h));
  return [x0, y0, Math.max(0, x1 - x0), Math.max(0, y1 - y0)];
}

/** The first index of the largest value (NumPy's argmax). */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** One face's row. `face`: {box (whole pixels), score, probabilities (this frame's own), smoothed
 * (optional: what the row reports), track (optional), index}. */
export function faceRow(source, face, labels, { frame = null, timeS = null } = {}) {
  const reported = face.smoothed ?? face.probabilities;
  const best = argmax(reported);
  const [x, y, w, h] = face.box;
  const row = {
    source, frame, time_s: pyRound(timeS), track: face.track ?? null, face: face.index, x, y, w, h,
    detector_score: pyRound(face.score), label: labels[best], confidence: pyRound(reported[best]),
  };
  labels.forEach((l, i) => { row[`p_${l}`] = pyRound(reported[i]); });
  labels.forEach((l, i) => { row[`raw_p_${l}`] = pyRound(face.probabilities[i]); });
  return { ...row, status: "ok", error: null };
}

/** The rows of one image or frame: one per face, or one no_face row. */
export function frameRows(source, faces, labels, where = {}) {
  if (faces.length) return faces.map((f) => faceRow(source, f, labels, where));
  return [{ source, frame: where.frame ?? null, time_s: pyRound(where.timeS ?? null), status: "no_face", error: null }];
}
