// A face's last minute: one column per processed frame, as tall as the smoothed label's probability,
// in that label's colour; time runs right to left, "now" at the right edge.
const WINDOW_S = 60;

export class Timeline {
  constructor(track, colors, { width = 360, height = 36 } = {}) {
    this.track = track;
    this.colors = colors;
    this.samples = [];
    this.element = document.createElement("div");
    this.element.className = "timeline";
    const label = document.createElement("span");
    label.textContent = `#${track}`;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.element.append(label, this.canvas);
  }

  add(time, probabilities) {
    let best = 0;
    for (let i = 1; i < probabilities.length; i++) if (probabilities[i] > probabilities[best]) best = i;
    this.samples.push([time, best, probabilities[best]]);
  }

  /** No sample within the last minute (the face left long ago). */
  empty(now) {
    while (this.samples.length && this.samples[0][0] < now - WINDOW_S) this.samples.shift();
    return this.samples.length === 0;
  }

  draw(now) {
    const { width, height } = this.canvas;
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const step = width / WINDOW_S;
    for (const [time, label, p] of this.samples) {
      const x = width - (now - time) * step;
      if (x < 0) continue;
      ctx.fillStyle = this.colors[label];
      ctx.fillRect(Math.floor(x), height * (1 - p), Math.max(1, Math.ceil(step / 10)), height * p);
    }
  }
}
