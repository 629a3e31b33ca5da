// The page's entry module: theme, tabs, and the Generate view, which streams completions from
// /v1/completions into side-by-side panes.
import { $, fetchJSON, headers } from "./dom.js";
import * as Training from "./training.js";

let settings = null;     // the server's /api/settings
let controller = null;   // the running generation's AbortController

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("charrnn-theme", theme);
}
setTheme(localStorage.getItem("charrnn-theme") ||
         (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
$("theme").onclick = () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");

for (const tab of document.querySelectorAll(".tab")) {
  tab.onclick = () => showView(tab.dataset.view);
}
function showView(view) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.view === view);
  $("view-generate").hidden = view !== "generate";
  $("view-training").hidden = view !== "training";
  if (location.hash !== "#" + view) history.replaceState(null, "", "#" + view);
  if (view === "training") Training.start();
}

$("temperature").oninput = () => { $("temperature-value").textContent = (+$("temperature").value).toFixed(2); };
$("api-key").onchange = () => { localStorage.setItem("charrnn-key", $("api-key").value); loadSettings(); };

async function loadSettings() {
  try {
    settings = await fetchJSON("/api/settings");
  } catch (e) {
    status(e.message, true);
    return;
  }
  $("api-key").hidden = !settings.auth;
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...settings.models.map(m => {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = `${m.id} (${m.architecture.model_type} ${m.architecture.num_layers}×${m.architecture.rnn_size}, it ${m.iteration})`;
    return o;
  }));
  if (chosen) select.value = chosen;
  $("length").max = settings.max_tokens;
  $("samples").max = Math.min(8, settings.max_batch);
}

function status(text, error) {
  $("status").textContent = text || "\u00a0";
  $("status").classList.toggle("error", !!error);
}

function makePanes(n, prompt) {
  const outputs = $("outputs");
  outputs.style.setProperty("--columns", n);
  const panes = [];
  outputs.replaceChildren();
  for (let j = 0; j < n; j++) {
    const box = document.createElement("div");
    box.className = "sample";
    box.innerHTML = `<div class="sample-head"><span>Sample ${j + 1}</span><button type="button">Copy</button></div><pre></pre>`;
    const pre = box.querySelector("pre");
    pre.dataset.index = j;
    if (prompt) {
      const p = document.createElement("span");
      p.className = "prompt";
      p.textContent = prompt;
      pre.appendChild(p);
    }
    const text = document.createTextNode("");
    pre.appendChild(text);
    box.querySelector("button").onclick = async e => {
      await navigator.clipboard?.writeText(pre.textContent).catch(() => {});
      e.target.textContent = "Copied";
      setTimeout(() => { e.target.textContent = "Copy"; }, 1200);
    };
    outputs.appendChild(box);
    panes.push({ pre, text, count: 0 });
  }
  return panes;
}

// A character coloured by its probability: red (unlikely) through yellow to green (likely).
function colouredSpan(ch, logprob) {
  const s = document.createElement("span");
  s.textContent = ch;
  const p = Math.exp(logprob ?? 0);
  s.style.backgroundColor = `hsla(${Math.round(120 * p)}, 85%, 50%, 0.35)`;
  s.title = `p = ${p.toFixed(3)}`;
  return s;
}

function append(pane, choice, colour) {
  if (colour && choice.logprobs && choice.logprobs.tokens.length) {
    const frag = document.createDocumentFragment();
    const lp = choice.logprobs;
    let covered = "";
    for (let k = 0; k < lp.tokens.length; k++) { frag.appendChild(colouredSpan(lp.tokens[k], lp.token_logprobs[k])); covered += lp.tokens[k]; }
    if (choice.text.length > covered.length) frag.appendChild(document.createTextNode(choice.text.slice(covered.length)));
    pane.pre.appendChild(frag);
  } else {
    pane.text.appendData(choice.text);
  }
  pane.count += choice.text.length;
  const pre = pane.pre;
  if (pre.scrollHeight - pre.scrollTop - pre.clientHeight < 80) pre.scrollTop = pre.scrollHeight;
}

async function generate(event) {
  event.preventDefault();
  if (controller) return;
  const n = Math.max(1, Math.min(+$("samples").value || 1, +$("samples").max || 8));
  const colour = $("colour").checked;
  const prompt = $("prompt").value;
  const body = {
    model: $("model").value || undefined, prompt, max_tokens: +$("length").value || 500,
    temperature: +$("temperature").value, top_k: +$("top-k").value || 0, top_p: +$("top-p").value || 1,
    n, stream: true, stream_options: { include_usage: true },
  };
  if ($("seed").value !== "") body.seed = +$("seed").value;
  if (colour) body.logprobs = 1;
  const panes = makePanes(n, prompt);
  controller = new AbortController();
  $("go").disabled = true; $("stop").disabled = false;
  document.body.dataset.state = "streaming";
  status("generating…");
  const started = performance.now();
  let chars = 0, finish = [];
  try {
    const r = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error?.message || r.statusText);
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "", done = false;
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") { done = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) {
          append(panes[c.index], c, colour);
          chars += c.text.length;
          if (c.finish_reason) finish[c.index] = c.finish_reason;
        }
        const secs = (performance.now() - started) / 1000;
        status(`${chars.toLocaleString()} characters, ${Math.round(chars / secs).toLocaleString()} / s`);
      }
    }
    const secs = (performance.now() - started) / 1000;
    status(`done: ${chars.toLocaleString()} characters in ${secs.toFixed(1)} s (${[...new Set(finish)].join(", ") || "length"})`);
    document.body.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError") { status(`stopped after ${chars.toLocaleString()} characters`); document.body.dataset.state = "stopped"; }
    else { status(e.message, true); document.body.dataset.state = "error"; }
  } finally {
    controller = null;
    $("go").disabled = false; $("stop").disabled = true;
  }
}

$("controls").onsubmit = generate;
$("stop").onclick = () => controller?.abort();
loadSettings().then(() => showView(location.hash === "#training" ? "training" : "generate"));
