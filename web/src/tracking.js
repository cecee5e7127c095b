// Faces followed over time: the Python runtime's IouTracker (IoU matching with constant-velocity
// prediction, maximum age in seconds) and EmaSmoother (time-aware exponential moving average),
// operation for operation, in float64 like NumPy. Held to fer_runtime/tracking.py by golden sequences
// the Python classes write (test/tracking.test.mjs).

/** IoU of every box of `a` with every box of `b` (boxes [x, y, w, h]) -> rows of `b.length` numbers. */
export function iouMatrix(a, b) {
  return a.map(([ax, ay, aw, ah]) => b.map(([bx, by, bw, bh]) => {
    const iw = Math.max(Math.min(ax + aw, bx + bw) - Math.max(ax, bx), 0);
    const ih = Math.max(Math.min(ay + ah, by + bh) - Math.max(ay, by), 0);
    const inter = iw * ih;
    const union = aw * ah + bw * bh - inter;
    return union > 0 ? inter / union : 0;
  }));
}

/** [row, column] pairs, best IoU first (ties in row-major order), each row and column used once. */
export function greedyMatch(iou, threshold) {
  const candidates = [];
  iou.forEach((row, r) => row.forEach((v, c) => { if (v >= threshold) candidates.push([r, c, v]); }));
  candidates.sort((p, q) => q[2] - p[2]); // Array.prototype.sort is stable, as NumPy's kind="stable"
  const usedR = new Set();
  const usedC = new Set();
  const pairs = [];
  for (const [r, c] of candidates) {
    if (!usedR.has(r) && !usedC.has(c)) {
      pairs.push([r, c]);
      usedR.add(r);
      usedC.add(c);
    }
  }
  return pairs;
}

export class Track {
  constructor(id, box, time) {
    this.id = id;
    this.box = box;
    this.lastTime = time;
    this.firstTime = time;
    this.velocity = [0, 0];
    this.hits = 1;
  }

  /** The box moved by its velocity to `time` (seconds). */
  predicted(time) {
    const dt = time - this.lastTime;
    const [x, y, w, h] = this.box;
    return [x + this.velocity[0] * dt, y + this.velocity[1] * dt, w, h];
  }
}

export class IouTracker {
  constructor({ iouThreshold = 0.3, maxAgeS = 1.0, velocitySmoothing = 0.5 } = {}) {
    if (!(iouThreshold > 0 && iouThreshold <= 1) || !(maxAgeS >= 0) || !(velocitySmoothing >= 0 && velocitySmoothing <= 1)) {
      throw new RangeError(`iouThreshold must be in (0, 1], maxAgeS >= 0 and velocitySmoothing in [0, 1]; got ${iouThreshold}, ${maxAgeS}, ${velocitySmoothing}`);
    }
    Object.assign(this, { iouThreshold, maxAgeS, velocitySmoothing });
    this.tracks = [];
    this.nextId = 1;
  }

  /** The track id of each box detected at `time` (seconds, not decreasing), in order. */
  update(boxes, time, sinceLastS = 0) {
    const age = Math.max(this.maxAgeS, sinceLastS);
    this.tracks = this.tracks.filter((t) => time - t.lastTime <= age);
    const predicted = this.tracks.map((t) => t.predicted(time));
    const ids = boxes.map(() => 0);
    for (const [r, c] of greedyMatch(iouMatrix(predicted, boxes), this.iouThreshold)) {
      this.follow(this.tracks[r], boxes[c], time);
      ids[c] = this.tracks[r].id;
    }
    boxes.forEach((box, c) => {
      if (ids[c] === 0) {
        this.tracks.push(new Track(this.nextId, [...box], time));
        ids[c] = this.nextId++;
      }
    });
    return ids;
  }

  follow(track, box, time) {
    const dt = time - track.lastTime;
    if (dt > 0) {
      const [x0, y0, w0, h0] = track.box;
      const [x1, y1, w1, h1] = box;
      const vx = ((x1 + w1 / 2) - (x0 + w0 / 2)) / dt;
      const vy = ((y1 + h1 / 2) - (y0 + h0 / 2)) / dt;
      const a = track.hits > 1 ? this.velocitySmoothing : 1.0;
      track.velocity = [a * vx + (1 - a) * track.velocity[0], a * vy + (1 - a) * track.velocity[1]];
    }
    track.box = [...box];
    track.lastTime = time;
    track.hits += 1;
  }
}

export class EmaSmoother {
  constructor(timeConstantS = 0.5) {
    if (!(timeConstantS >= 0) || !Number.isFinite(timeConstantS)) {
      throw new RangeError(`timeConstantS must be a finite number >= 0, got ${timeConstantS}`);
    }
    this.timeConstantS = timeConstantS;
    this.state = new Map();
  }

  /** The smoothed values (a new float64 array) of `track` after `values` seen at `time`. */
  update(track, values, time) {
    const v = Float64Array.from(values);
    const prev = this.state.get(track);
    let out = v;
    if (prev !== undefined && this.timeConstantS !== 0) {
      const a = 1.0 - Math.exp(-Math.max(0.0, time - prev.time) / this.timeConstantS);
      out = prev.values.map((p, i) => p + a * (v[i] - p));
    }
    this.state.set(track, { values: out, time });
    return out;
  }

  /** Drop the state of tracks not in `keep` (ended tracks), so memory stays constant. */
  forget(keep) {
    for (const track of [...this.state.keys()]) if (!keep.has(track)) this.state.delete(track);
  }
}

/** One live source's tracker and smoother, composed per frame as fer_runtime's VideoAnalyzer does
 * with detection on every frame: track the detector's boxes, forget ended tracks, smooth each face's
 * probabilities. `faces`: [{detectorBox: [x, y, w, h] (the detector's float box, not the clipped one),
 * probabilities}] -> the same faces with `track` and `smoothed` (float32, as the Python Prediction
 * stores them). */
export class FaceFollower {
  constructor({ smoothingS = 0.5, iouThreshold = 0.3, maxAgeS = 1.0 } = {}) {
    this.tracker = new IouTracker({ iouThreshold, maxAgeS });
    this.smoother = new EmaSmoother(smoothingS);
  }

  step(faces, time) {
    const ids = this.tracker.update(faces.map((f) => f.detectorBox), time, 1e-9);
    this.smoother.forget(new Set(this.tracker.tracks.map((t) => t.id)));
    return faces.map((face, i) => ({
      ...face,
      track: ids[i],
      smoothed: Float32Array.from(this.smoother.update(ids[i], face.probabilities, time)),
    }));
  }
}
