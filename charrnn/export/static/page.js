// The exported page: window.charrnn (ready, info, complete, logprobs) over a Web Worker, and the UI.
"use strict";
{  // a block, not a function: the page's names stay out of the global object
  const $ = (id) => document.getElementById(id);
  const model = JSON.parse($("charrnn-model").textContent);
  const worker = new Worker(URL.createObjectURL(new Blob([$("charrnn-engine").textContent], { type: "text/javascript" })));
  const byteMode = model.vocab.byte_mode;
  const vocab = model.vocab.tokens.map((t) => (byteMode ? String.fromCharCode(t) : String.fromCodePoint(t)));
  const ids = new Map(vocab.map((ch, i) => [ch, i]));
  const pending = new Map();
  let nextId = 1;

  const ready = new Promise((resolve, reject) => {
    pending.set("load", { resolve, reject });
    worker.postMessage({ type: "load", manifest: model.weights, vocab, weights: $("charrnn-weights").textContent.trim() });
  });

  worker.onmessage = (e) => {
    const msg = e.data, key = msg.type === "ready" ? "load" : msg.id, job = pending.get(key);
    if (!job) return;
    if (msg.type === "ready") { pending.delete(key); job.resolve(); }
    else if (msg.type === "error") { pending.delete(key); job.reject(new Error(msg.message)); }
    else if (msg.type === "probs") { pending.delete(key); job.resolve(msg.logprobs); }
    else if (msg.type === "piece") { job.piece(msg); if (msg.done) pending.delete(key); }
  };
  worker.onerror = (e) => { for (const job of pending.values()) job.reject(new Error(e.message)); pending.clear(); };

  function utf8(s) { return Array.from(new TextEncoder().encode(s), (b) => String.fromCharCode(b)).join(""); }

  function encode(text) {  // 0-based token ids of a prompt, as the vocabulary reads it
    const out = [];
    for (const ch of byteMode ? utf8(text) : text) {
      if (!ids.has(ch)) throw new Error(`prompt has a character the model does not know: ${JSON.stringify(ch)}`);
      out.push(ids.get(ch));
    }
    return out;
  }

  function randomSeed() { const a = crypto.getRandomValues(new Uint32Array(2)); return (BigInt(a[0]) << 32n | BigInt(a[1])).toString(); }

  function check(req) {  // the server's request fields, checked as /v1/completions checks them
    const r = { prompt: "", max_tokens: 200, temperature: 1, top_k: 0, top_p: 1, seed: null, stop: [], ...req };
    const num = (k, ok, what) => { if (typeof r[k] !== "number" || !Number.isFinite(r[k]) || !ok(r[k])) throw new Error(`${k} ${what} (got ${JSON.stringify(r[k])})`); };
    if (typeof r.prompt !== "string") throw new Error("prompt must be a string");
    num("max_tokens", (v) => Number.isInteger(v) && v >= 1, "must be an integer >= 1");
    num("temperature", (v) => v >= 0, "must be a number >= 0");
    num("top_k", (v) => Number.isInteger(v) && v >= 0, "must be an integer >= 0");
    num("top_p", (v) => v > 0 && v <= 1, "must lie in (0, 1]");
    if (typeof r.stop === "string") r.stop = [r.stop];
    if (!Array.isArray(r.stop) || r.stop.length > 4 || r.stop.some((s) => typeof s !== "string" || !s)) throw new Error("stop must be up to 4 non-empty strings");
    if (r.seed === null || r.seed === undefined) r.seed = randomSeed();
    else if (!/^-?\d+$/.test(String(r.seed))) throw new Error(`seed must be an integer (got ${JSON.stringify(r.seed)})`);
    return { tokens: encode(r.prompt), max_tokens: r.max_tokens, temperature: r.temperature, top_k: r.top_k,
             top_p: r.top_p, seed: String(r.seed), stop: byteMode ? r.stop.map(utf8) : r.stop };
  }

  // rows: checked requests; onPiece(row, text, probs) as text arrives; resolves with [{text, finish_reason}]
  function run(rows, onPiece, colour) {
    const id = nextId++, texts = rows.map(() => ""), decoders = rows.map(() => new TextDecoder());
    const promise = ready.then(() => new Promise((resolve, reject) => {
      pending.set(id, { reject, piece(msg) {
        msg.pieces.forEach((p, j) => {
          const text = byteMode ? decoders[j].decode(Uint8Array.from(p.text, (c) => c.charCodeAt(0)), { stream: !msg.done }) : p.text;
          texts[j] += text;
          if (onPiece && text) onPiece(j, text, p.probs);
        });
        if (msg.done) resolve(texts.map((text, j) => ({ text, finish_reason: msg.finish[j] })));
      } });
      worker.postMessage({ type: "run", id, rows, colour: !!colour && !byteMode });
    }));
    promise.stop = () => worker.postMessage({ type: "stop", id });
    return promise;
  }

  function info() {  // the fields charrnn serve's /v1/models gives for this model
    return JSON.parse(JSON.stringify(model.info));
  }

  function complete(req = {}) {
    let row;
    try { row = check(req); } catch (err) { return Promise.reject(err); }
    return run([row]).then((out) => out[0]);
  }

  function logprobs(text) {  // after each character of text: the log-probabilities of the next one
    let tokens;
    try { tokens = encode(text); } catch (err) { return Promise.reject(err); }
    return ready.then(() => new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve: (flat) => {
        const V = vocab.length, rowsOut = [];
        for (let i = 0; i < tokens.length; i++) rowsOut.push(Array.from(flat.subarray(i * V, (i + 1) * V)));
        resolve(rowsOut);
      }, reject });
      worker.postMessage({ type: "probs", id, tokens });
    }));
  }

  window.charrnn = { ready, info, complete, logprobs, run, check };

  // -- the UI -------------------------------------------------------------------------------------
  const inf = model.info, arch = inf.architecture;
  $("about").textContent = `${arch.num_layers}×${arch.rnn_size} ${arch.model_type.toUpperCase()}` +
    `${arch.batchnorm ? " with batch norm" : ""}, ${inf.vocab_size} characters, iteration ${inf.iteration}` +
    (inf.val_loss == null ? "" : `, validation loss ${inf.val_loss.toFixed(4)}`) + `, ${model.weights.dtype} weights`;
  const root = document.documentElement, themeKey = "charrnn-export-theme";
  const setTheme = (t) => { root.dataset.theme = t; try { localStorage.setItem(themeKey, t); } catch (e) { /* file:// may refuse */ } };
  let saved = null;
  try { saved = localStorage.getItem(themeKey); } catch (e) { /* ignore */ }
  setTheme(saved || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  $("theme").onclick = () => setTheme(root.dataset.theme === "dark" ? "light" : "dark");
  $("temperature").oninput = () => { $("temperature-value").textContent = Number($("temperature").value).toFixed(2); };

  let current = null;
  const status = (text, error) => { $("status").textContent = text; $("status").classList.toggle("error", !!error); };
  const colourOf = (p) => `hsla(${Math.round(120 * p)}, 75%, 50%, 0.35)`;

  function panel(j, prompt) {
    const box = document.createElement("div"), head = document.createElement("div"), pre = document.createElement("pre");
    const copy = document.createElement("button");
    box.className = "sample"; head.className = "sample-head"; copy.type = "button"; copy.textContent = "Copy";
    head.append(`Sample ${j + 1}`, copy);
    if (prompt) { const b = document.createElement("span"); b.className = "prompt"; b.textContent = prompt; pre.append(b); }
    copy.onclick = () => navigator.clipboard && navigator.clipboard.writeText(pre.textContent);
    box.append(head, pre);
    return { box, pre };
  }

  function show(pre, text, probs) {
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (probs && probs.length) {
      const frag = document.createDocumentFragment();
      Array.from(text).forEach((ch, i) => {
        const s = document.createElement("span"), p = probs[i];
        s.textContent = ch;
        if (p != null) { s.title = `p = ${p.toFixed(3)}`; s.style.background = colourOf(p); }
        frag.append(s);
      });
      pre.append(frag);
    } else pre.append(text);
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  $("controls").onsubmit = (e) => {
    e.preventDefault();
    if (current) return;
    const n = Math.max(1, Math.min(8, parseInt($("samples").value, 10) || 1)), prompt = $("prompt").value;
    const seedText = $("seed").value.trim(), base = seedText ? BigInt(seedText) : BigInt(randomSeed());
    const length = parseInt($("length").value, 10);
    let rows;
    try {
      rows = Array.from({ length: n }, (_, j) => check({ prompt, max_tokens: length, temperature: Number($("temperature").value),
        top_k: parseInt($("top-k").value, 10) || 0, top_p: Number($("top-p").value) || 1, seed: (base + BigInt(j)).toString() }));
    } catch (err) { status(err.message, true); return; }
    const out = $("outputs");
    out.replaceChildren();
    out.style.setProperty("--columns", String(Math.min(n, 4)));
    const panels = rows.map((_, j) => panel(j, prompt));
    panels.forEach((p) => out.append(p.box));
    let shown = 0;
    const t0 = performance.now();
    document.body.dataset.state = "running";
    $("go").disabled = true; $("stop").disabled = false;
    status("Generating…");
    current = run(rows, (j, text, probs) => {
      show(panels[j].pre, text, probs); shown += Array.from(text).length;
      status(`Generating… ${shown} characters`);
    }, $("colour").checked);
    current.then((res) => {
      const s = (performance.now() - t0) / 1000;
      status(`done: ${shown} characters` + (res.some((r) => r.finish_reason === "stop") ? ", stopped" : ""));
      $("status").title = `${s.toFixed(2)} s, ${Math.round(shown / Math.max(s, 1e-3))} characters/s`;
    }, (err) => status(err.message, true)).finally(() => {
      current = null; document.body.dataset.state = "done";
      $("go").disabled = false; $("stop").disabled = true;
    });
  };
  $("stop").onclick = () => { if (current) current.stop(); };
  ready.then(() => { $("go").disabled = false; document.body.dataset.state = "ready"; status("Ready."); },
             (err) => status(`The model did not load: ${err.message}`, true));
}
