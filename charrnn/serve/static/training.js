// The Training view: polls each run's stats file for new lines and redraws the charts (an ES module).
import * as Charts from "./charts.js";
import { $, fetchJSON } from "./dom.js";

const runs = new Map(); // name -> run
const DASHES = ["none", "8 4", "2 4", "12 4 2 4", "4 2"];
let timer = null, busy = false;

function newRun(name, k) {
  return { name, color: Charts.PALETTE[k % Charts.PALETTE.length], offset: 0, shown: true, loss: [], val: [], lr: [],
           grad: [], speed: [], ratio: {}, samples: [], last: null, end: null };
}

function truncate(run, iteration) {
  const keep = a => a.filter(p => p[0] <= iteration);
  for (const key of ["loss", "val", "lr", "grad", "speed"]) run[key] = keep(run[key]);
  for (const layer of Object.keys(run.ratio)) run.ratio[layer] = keep(run.ratio[layer]);
  run.samples = run.samples.filter(s => s.i <= iteration);
  run.end = null;
}

function add(run, rec) {
  const i = rec.i;
  switch (rec.type) {
    case "start": truncate(run, rec.iteration); run.model = rec.model; run.parameters = rec.parameters; break;
    case "train": {
      const losses = rec.losses || [];
      losses.forEach((l, k) => run.loss.push([i - losses.length + 1 + k, l]));
      if (rec.lr != null) run.lr.push([i, rec.lr]);
      if (rec.grad_norm != null) run.grad.push([i, rec.grad_norm]);
      if (rec.chars_per_s != null) run.speed.push([i, rec.chars_per_s]);
      for (const [layer, r] of Object.entries(rec.update_ratio || {})) {
        if (r != null && isFinite(r)) (run.ratio[layer] = run.ratio[layer] || []).push([i, r]);  // already log10
      }
      run.last = { i, loss: losses[losses.length - 1], speed: rec.chars_per_s };
      break;
    }
    case "val": run.val.push([i, rec.val_loss]); break;
    case "sample": run.samples.push(rec); if (run.samples.length > 20) run.samples.shift(); break;
    case "end": run.end = rec.reason; break;
  }
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    const list = await fetchJSON("/api/runs");
    let changed = false;
    for (const { name } of list.runs) {
      if (!runs.has(name)) { runs.set(name, newRun(name, runs.size)); changed = true; }
    }
    for (const run of runs.values()) {
      const data = await fetchJSON(`/api/run?name=${encodeURIComponent(run.name)}&offset=${run.offset}`);
      if (data.reset && run.offset) { Object.assign(run, newRun(run.name, 0), { color: run.color, shown: run.shown }); }
      run.offset = data.offset;
      for (const rec of data.records) add(run, rec);
      changed = changed || data.records.length > 0;
    }
    if (changed) render();
    if (!runs.size) $("training-status").textContent = "No training runs yet: start `charrnn train` with --checkpoint-name in a served directory, or pass --runs.";
  } catch (e) {
    $("training-status").textContent = "dashboard: " + e.message;
  } finally {
    busy = false;
  }
}

function renderRunList() {
  const list = $("run-list");
  list.replaceChildren(...[...runs.values()].map(run => {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" ${run.shown ? "checked" : ""}><i class="swatch" style="background:${run.color}"></i>`;
    label.append(run.name);
    label.querySelector("input").onchange = e => { run.shown = e.target.checked; render(); };
    return label;
  }));
}

function render() {
  renderRunList();
  const shown = [...runs.values()].filter(r => r.shown);
  const loss = [];
  for (const r of shown) {
    const window = Math.max(1, r.loss.length * 0.02);
    loss.push({ color: r.color, points: r.loss, width: 1, opacity: 0.3 });
    loss.push({ label: r.name, color: r.color, points: Charts.smooth(r.loss, 1 - 1 / window), width: 2.5 });
    loss.push({ color: r.color, points: r.val, dots: true });
  }
  Charts.draw($("chart-loss"), { series: loss, legend: true });
  const ratio = [];
  for (const r of shown) {
    Object.entries(r.ratio).forEach(([layer, points], k) =>
      ratio.push({ label: `${r.name} ${layer}`, color: r.color, points, dash: DASHES[k % DASHES.length], width: 2 }));
  }
  Charts.draw($("chart-ratio"), { series: ratio, band: [-4, -2], refY: -3, legend: true });
  Charts.draw($("chart-lr"), { series: shown.map(r => ({ label: r.name, color: r.color, points: r.lr, width: 2.5 })), logY: true });
  Charts.draw($("chart-grad"), { series: shown.map(r => ({ label: r.name, color: r.color, points: r.grad, width: 2 })) });
  Charts.draw($("chart-speed"), { series: shown.map(r => ({ label: r.name, color: r.color, points: r.speed, width: 2 })) });
  const samples = $("samples-list");
  samples.replaceChildren(...shown.flatMap(r => r.samples.slice(-3).reverse().map(s => {
    const div = document.createElement("div");
    div.innerHTML = `<i class="swatch" style="background:${r.color}"></i> `;
    div.append(`${r.name}, iteration ${s.i}, temperature ${s.temperature}`);
    const pre = document.createElement("pre");
    pre.textContent = s.text;
    div.appendChild(pre);
    return div;
  })));
  $("training-status").textContent = shown.map(r => {
    const last = r.last ? `iteration ${r.last.i}, loss ${r.last.loss?.toFixed(3)}` : "waiting for data";
    const speed = r.last?.speed ? `, ${Math.round(r.last.speed).toLocaleString()} chars/s` : "";
    return `${r.name}: ${last}${speed}${r.end ? ` (ended: ${r.end})` : ""}`;
  }).join(" · ") || "\u00a0";
}

function start() {
  if (timer) return;
  poll();
  timer = setInterval(() => { if (!$("view-training").hidden) poll(); }, 2000);
}
export { start, runs, poll };
