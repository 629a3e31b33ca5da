// Small SVG line charts for the training view: linear or log axes, many series, a shaded band (an ES module).
const NS = "http://www.w3.org/2000/svg";
const W = 640, H = 300, M = { left: 64, right: 14, top: 10, bottom: 34 };
const MAX_DRAWN = 600; // points drawn per series: longer series are averaged in buckets

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

// Average consecutive points so that at most `max` remain (keeps the last point exact).
function thin(points, max) {
  if (points.length <= max) return points;
  const size = points.length / max, out = [];
  for (let b = 0; b < max; b++) {
    const lo = Math.floor(b * size), hi = Math.min(points.length, Math.floor((b + 1) * size));
    let sx = 0, sy = 0;
    for (let k = lo; k < hi; k++) { sx += points[k][0]; sy += points[k][1]; }
    out.push([sx / (hi - lo), sy / (hi - lo)]);
  }
  out[out.length - 1] = points[points.length - 1];
  return out;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= step0) || 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function format(v) {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e6) return (v / 1e6).toPrecision(3).replace(/\.?0+$/, "") + "M";
  if (a >= 1e4) return (v / 1e3).toPrecision(3).replace(/\.?0+$/, "") + "k";
  if (a < 1e-2) return v.toExponential(0);
  return +v.toPrecision(3) + "";
}

// draw(container, {series: [{label, color, points: [[x, y]], width, opacity, dash, dots}], logY, band: [lo, hi], refY})
function draw(container, opts) {
  const logY = !!opts.logY;
  const tf = y => (logY ? Math.log10(y) : y);
  const series = opts.series.map(s => ({ ...s, points: thin(s.points.filter(p => isFinite(p[0]) && isFinite(p[1]) && (!logY || p[1] > 0)), MAX_DRAWN) }))
    .filter(s => s.points.length);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points": series.reduce((n, s) => n + s.points.length, 0) });
  container.replaceChildren(svg);
  if (!series.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no data yet";
    return;
  }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const s of series) for (const [x, y] of s.points) {
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, tf(y)); y1 = Math.max(y1, tf(y));
  }
  if (opts.band) { y0 = Math.min(y0, opts.band[0]); y1 = Math.max(y1, opts.band[1]); }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const px = x => M.left + (x - x0) / (x1 - x0) * (W - M.left - M.right);
  const py = y => H - M.bottom - (y - y0) / (y1 - y0) * (H - M.top - M.bottom);
  if (opts.band) {
    el("rect", { class: "band", x: M.left, width: W - M.left - M.right, y: py(opts.band[1]), height: py(opts.band[0]) - py(opts.band[1]) }, svg);
  }
  for (const t of niceTicks(y0, y1, 5)) {
    el("line", { class: "gridline", x1: M.left, x2: W - M.right, y1: py(t), y2: py(t) }, svg);
    el("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end" }, svg).textContent = logY ? format(Math.pow(10, t)) : format(t);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    el("text", { x: px(t), y: H - M.bottom + 18, "text-anchor": "middle" }, svg).textContent = format(t);
  }
  el("text", { x: W - M.right, y: H - 4, "text-anchor": "end" }, svg).textContent = "iteration";
  if (opts.refY !== undefined) {
    el("line", { x1: M.left, x2: W - M.right, y1: py(opts.refY), y2: py(opts.refY), stroke: "currentColor", "stroke-dasharray": "4 4", opacity: 0.5 }, svg);
  }
  for (const s of series) {
    if (s.dots) {
      for (const [x, y] of s.points) el("circle", { cx: px(x).toFixed(1), cy: py(tf(y)).toFixed(1), r: 4, fill: s.color }, svg);
      continue;
    }
    const d = s.points.map(([x, y], k) => `${k ? "L" : "M"}${px(x).toFixed(1)},${py(tf(y)).toFixed(1)}`).join("");
    el("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-opacity": s.opacity || 1,
                 "stroke-dasharray": s.dash || "none", "stroke-linejoin": "round" }, svg);
  }
  if (opts.legend) {
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of series.filter(s => s.label)) {
      const item = document.createElement("span");
      item.innerHTML = s.dots ? `<svg width="28" height="10"><circle cx="14" cy="5" r="4" fill="${s.color}"/></svg>`
        : `<svg width="28" height="10"><line x1="0" y1="5" x2="28" y2="5" stroke="${s.color}" stroke-width="3" stroke-opacity="${s.opacity || 1}" stroke-dasharray="${s.dash || "none"}"/></svg>`;
      item.append(s.label);
      legend.appendChild(item);
    }
    container.appendChild(legend);
  }
}

// Exponential moving average (bias-corrected), for smoothed loss curves.
function smooth(points, weight) {
  const out = [];
  let avg = 0, k = 0;
  for (const [x, y] of points) { avg = weight * avg + (1 - weight) * y; k++; out.push([x, avg / (1 - Math.pow(weight, k))]); }
  return out;
}

const PALETTE = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f59f00", "#0c8599", "#e64980", "#5c940d"];
export { draw, smooth, thin, PALETTE };
