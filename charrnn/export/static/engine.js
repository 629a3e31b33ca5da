// charrnn's sampling engine in plain JavaScript, run inside a Web Worker by the exported page.
// It follows charrnn/sampling/engine.py step for step: the same prepared weights, the same
// sampling rule (float64 weights, top-k then top-p with ties kept, inverse CDF in token order)
// and the same SplitMix64 random stream, so a seed gives the text `charrnn sample --seed` gives.
// Storage is float32 like the engine's; dot products accumulate in float64 and round once, which
// keeps every step within a few float32 ulps of NumPy's result.
"use strict";

const MASK = (1n << 64n) - 1n;
const GAMMA = 0x9E3779B97F4A7C15n;

function mix(x) {  // SplitMix64's finaliser, 64-bit wrapping arithmetic in BigInt
  x ^= x >> 30n; x = (x * 0xBF58476D1CE4E5B9n) & MASK;
  x ^= x >> 27n; x = (x * 0x94D049BB133111EBn) & MASK;
  return x ^ (x >> 31n);
}
function seedKey(seed) { return mix(BigInt.asUintN(64, BigInt(seed))); }
function uniform(key, count) {  // draw number `count` of a stream: 53 random bits in [0, 1)
  const x = mix((key + (BigInt(count) + 1n) * GAMMA) & MASK);
  return Number(x >> 11n) * 2 ** -53;
}

function halfToFloat(bits) {  // IEEE binary16 -> float32 values (the page's --weights fp16)
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
    out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1024 + m) * 2 ** (e - 25);
  }
  return out;
}

function unpack(manifest, buffer) {  // named Float32Arrays out of the page's one weight blob
  const arrays = {};
  for (const [name, spec] of Object.entries(manifest.arrays)) {
    if (manifest.dtype === "float16") arrays[name] = halfToFloat(new Uint16Array(buffer, spec.offset * 2, spec.size));
    else arrays[name] = new Float32Array(buffer, spec.offset * 4, spec.size);
  }
  return arrays;
}

// The weights arrive as NumPy's row-major (K, N) matrices (x @ W); the engine keeps each one
// transposed, (N, K), so that every output is one dot product over contiguous memory.
function transpose(W, w0, K, N, count) {
  const out = new Float32Array(K * N * count);
  for (let m = 0; m < count; m++) {
    const a = w0 + m * K * N, b = m * K * N;
    for (let i = 0; i < K; i++) for (let j = 0; j < N; j++) out[b + j * K + i] = W[a + i * N + j];
  }
  return out;
}

// out[j] = bias[b0 + j] + sum_i x[x0 + i] * Wt[w0 + j*K + i], summed in float64, rounded to float32 once
function affine(out, x, x0, K, Wt, w0, N, bias, b0) {
  for (let j = 0; j < N; j++) {
    const r = w0 + j * K;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
    for (; i + 3 < K; i += 4) {
      s0 += x[x0 + i] * Wt[r + i]; s1 += x[x0 + i + 1] * Wt[r + i + 1];
      s2 += x[x0 + i + 2] * Wt[r + i + 2]; s3 += x[x0 + i + 3] * Wt[r + i + 3];
    }
    for (; i < K; i++) s0 += x[x0 + i] * Wt[r + i];
    out[j] = Math.fround((s0 + s1) + (s2 + s3)) + bias[b0 + j];
  }
}

class Net {
  constructor(m, a) {
    Object.assign(this, { kind: m.kind, H: m.H, L: m.L, G: m.G, V: m.vocab_size }, a);
    const H = this.H, L = this.L, GH = this.G * H;
    if (this.kind === "gru") {
      this.whh = transpose(a.whh, 0, H, GH, L);
      this.wih = transpose(a.wih, 0, H, GH, L - 1);
    } else {
      this.whh0 = transpose(a.whh0, 0, H, GH, 1);
      this.wcat = transpose(a.wcat, 0, 2 * H, GH, L - 1);
    }
    this.head_w = transpose(a.head_w, 0, H, this.V, 1);
    this.gh = new Float32Array(GH);
    this.gates = new Float32Array(GH);
    this.scores = new Float32Array(this.V);
    this.w = new Float64Array(this.V);
    this.sorted = new Float64Array(this.V);
  }
  state() { return { h: new Float32Array(this.L * this.H), c: new Float32Array(this.L * this.H) }; }

  feed(st, token) {  // one input token (0-based id): every layer, as engine._feed_numpy
    const { H, L, G } = this, GH = G * H, a = this.gates, h = st.h, c = st.c;
    for (let l = 0; l < L; l++) {
      const own = l * H;
      if (this.kind === "gru") { this.gru(st, l, token); continue; }
      if (l === 0) {
        affine(a, h, 0, H, this.whh0, 0, GH, this.table0, token * GH);
      } else {
        affine(a, h, (l - 1) * H, 2 * H, this.wcat, (l - 1) * 2 * H * GH, GH, this.bias, (l - 1) * GH);
      }
      if (this.kind === "rnn") { for (let j = 0; j < H; j++) h[own + j] = Math.tanh(a[j]); continue; }
      for (let j = 0; j < GH; j++) a[j] = Math.tanh(a[j]);
      for (let j = 0; j < 3 * H; j++) a[j] = a[j] * 0.5 + 0.5;
      for (let j = 0; j < H; j++) {  // gates i, f, o, g (sigmoids as 0.5 tanh(x/2) + 0.5)
        c[own + j] = Math.fround(c[own + j] * a[H + j]) + Math.fround(a[j] * a[3 * H + j]);
        h[own + j] = a[2 * H + j] * Math.fround(Math.tanh(c[own + j]));
      }
    }
  }

  gru(st, l, token) {
    const { H } = this, GH = 3 * H, h = st.h, own = l * H, gx = this.gates, gh = this.gh;
    if (l === 0) gx.set(this.table0.subarray(token * GH, (token + 1) * GH));
    else affine(gx, h, (l - 1) * H, H, this.wih, (l - 1) * H * GH, GH, this.bih, (l - 1) * GH);
    affine(gh, h, own, H, this.whh, l * H * GH, GH, this.bhh, l * GH);
    for (let j = 0; j < 2 * H; j++) gx[j] = Math.fround(0.5 * Math.fround(Math.tanh(Math.fround(0.5 * Math.fround(gx[j] + gh[j])))) + 0.5);
    for (let j = 0; j < H; j++) {
      const n = Math.fround(Math.tanh(Math.fround(gx[2 * H + j] + Math.fround(gx[j] * gh[2 * H + j]))));
      h[own + j] = Math.fround(n + Math.fround(gx[H + j] * Math.fround(h[own + j] - n)));
    }
  }

  head(st) {  // float32 scores of the next token
    const { H, L, V } = this;
    affine(this.scores, st.h, (L - 1) * H, H, this.head_w, 0, V, this.head_b, 0);
    return this.scores;
  }

  pick(scores, p, u) {  // engine.sample_rows for one row
    const V = this.V;
    let best = 0;
    for (let j = 1; j < V; j++) if (scores[j] > scores[best]) best = j;
    if (p.temperature === 0) return best;
    const w = this.w, top = scores[best];
    for (let j = 0; j < V; j++) w[j] = Math.exp((scores[j] - top) / p.temperature);
    if ((p.top_k > 0 && p.top_k < V) || p.top_p < 1) this.cut(w, p.top_k, p.top_p);
    let total = 0;
    for (let j = 0; j < V; j++) total += w[j];
    const target = u * total;
    let cum = 0;
    for (let j = 0; j < V; j++) { cum += w[j]; if (cum > target) return j; }
    for (let j = V - 1; j >= 0; j--) if (w[j] > 0) return j;  // u * total rounded up to total
    return V - 1;
  }

  cut(w, k, p) {  // zero the weights outside top-k, then outside top-p (ties at a cut are kept)
    const V = this.V, s = this.sorted;
    s.set(w); s.sort(); s.reverse();
    const kk = k > 0 && k < V ? k : V, kth = s[kk - 1];
    for (let j = 0; j < V; j++) if (!(s[j] >= kth)) s[j] = 0;
    let total = 0;
    for (let j = 0; j < V; j++) total += s[j];
    let thr = kth;
    if (p < 1) {
      const limit = p * total;
      let at = 0, cum = 0;
      for (let j = 0; j < V; j++) { cum += s[j]; if (cum < limit) at++; }
      thr = Math.max(s[Math.min(at, V - 1)], kth);
    }
    for (let j = 0; j < V; j++) if (!(w[j] >= thr)) w[j] = 0;
  }

  logprobs(scores, out, o) {  // the model's own distribution (temperature 1), as natural logs
    const V = this.V;
    let top = -Infinity, sum = 0;
    for (let j = 0; j < V; j++) if (scores[j] > top) top = scores[j];
    for (let j = 0; j < V; j++) sum += Math.exp(scores[j] - top);
    const ls = Math.log(sum);
    for (let j = 0; j < V; j++) out[o + j] = scores[j] - top - ls;
  }
}

// -- one sample: prompt, draws, stop strings ------------------------------------------------------
class Row {
  constructor(net, vocab, req) {
    Object.assign(this, { net, vocab, req, st: net.state(), count: 0, produced: 0, text: "", done: false, finish: null });
    this.key = seedKey(req.seed);
    this.stops = req.stop || [];
    this.hold = Math.max(1, ...this.stops.map((s) => s.length)) - 1;
    this.sent = 0;  // characters of this.text already emitted
    for (const t of req.tokens) net.feed(this.st, t);
    this.first = req.tokens.length === 0;
  }

  step(probs) {  // one generated token; returns its probability when asked (colouring)
    const net = this.net, V = net.V;
    let tok, prob = null;
    const u = uniform(this.key, this.count++);
    if (this.first) {
      tok = this.req.temperature === 0 ? 0 : Math.min(Math.floor(u * V), V - 1);
      this.first = false;
    } else {
      const scores = net.head(this.st);
      tok = net.pick(scores, this.req, u);
      if (probs) { net.logprobs(scores, net.w, 0); prob = Math.exp(net.w[tok]); }
    }
    net.feed(this.st, tok);
    this.produced++;
    this.text += this.vocab[tok];
    if (this.stops.length) this.checkStop();
    if (!this.done && this.produced >= this.req.max_tokens) { this.done = true; this.finish = "length"; }
    return prob;
  }

  checkStop() {
    let cut = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, Math.max(0, this.text.length - s.length - 2));  // new ones end here
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) { this.text = this.text.slice(0, cut); this.done = true; this.finish = "stop"; }
  }

  take() {  // text that can be shown now (a tail that could begin a stop string waits)
    const upto = this.done ? this.text.length : Math.max(this.sent, this.text.length - this.hold);
    const piece = this.text.slice(this.sent, upto);
    this.sent = upto;
    return piece;
  }
}

// -- the worker's side of the page --------------------------------------------------------------
let net = null, vocab = null;
const runs = new Map();

function load(msg) {
  const bin = atob(msg.weights), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  net = new Net(msg.manifest.model, unpack(msg.manifest, bytes.buffer));
  vocab = msg.vocab;
  postMessage({ type: "ready" });
}

function start(msg) {
  const rows = msg.rows.map((r) => new Row(net, vocab, r));
  const run = { id: msg.id, rows, colour: !!msg.colour, stopped: false };
  runs.set(msg.id, run);
  tick(run);
}

function tick(run) {  // a time slice of every row, then yield so that a Stop message can arrive
  const end = performance.now() + 30;
  const pieces = run.rows.map(() => ({ text: "", probs: [] }));
  while (!run.stopped && performance.now() < end && run.rows.some((r) => !r.done)) {
    run.rows.forEach((row, j) => {
      for (let n = 0; n < 64 && !row.done; n++) {
        const before = row.text.length;
        const p = row.step(run.colour);
        if (run.colour && row.text.length > before) pieces[j].probs.push(p);
      }
    });
  }
  run.rows.forEach((row, j) => { pieces[j].text = row.take(); });
  const finished = run.stopped || run.rows.every((r) => r.done);
  postMessage({ type: "piece", id: run.id, pieces, done: finished,
                finish: run.rows.map((r) => r.finish || "stop"), counts: run.rows.map((r) => r.produced) });
  if (finished) runs.delete(run.id);
  else later(() => tick(run));
}

const channel = new MessageChannel(), queue = [];  // yields without setTimeout's 4 ms clamp
channel.port1.onmessage = () => queue.shift()();
function later(fn) { queue.push(fn); channel.port2.postMessage(0); }

function probs(msg) {  // next-token log-probabilities after each token of a text
  const st = net.state(), V = net.V, out = new Float64Array(msg.tokens.length * V);
  msg.tokens.forEach((t, i) => { net.feed(st, t); net.logprobs(net.head(st), out, i * V); });
  postMessage({ type: "probs", id: msg.id, logprobs: out }, [out.buffer]);
}

if (typeof self !== "undefined" && typeof window === "undefined") {
  self.onmessage = (e) => {
    const msg = e.data;
    try {
      if (msg.type === "load") load(msg);
      else if (msg.type === "run") start(msg);
      else if (msg.type === "stop") { const r = runs.get(msg.id); if (r) r.stopped = true; }
      else if (msg.type === "probs") probs(msg);
    } catch (err) {
      postMessage({ type: "error", id: msg.id, message: String(err && err.message || err) });
    }
  };
}
