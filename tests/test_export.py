"""``charrnn export``: the one-file page in a real browser (Debian's chromium through Playwright) and the ONNX graph.

Browser tests skip when chromium or Playwright is absent; ONNX tests skip without onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from charrnn.export import load_export_model
from charrnn.sampling.engine import Engine, SamplingParams
from charrnn.sampling.sampler import Sampler

from .conftest import SHARED, assert_one_line_error

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[1] / "docs"
TEXT = ("The quick brown fox jumps over the lazy dog. Then it sleeps in the warm sun, and the dog "
        "watches it: quick, brown, lazy; a fox and a dog!\n")
# a real torch-rnn 2x128 LSTM, when the shared folder is there (CHARRNN_SHARED points elsewhere, e.g. from a worktree)
T7 = Path(os.environ.get("CHARRNN_SHARED", SHARED)) / "torch-rnn" / "checkpoint_356.t7"
CELLS = [("lstm", 2, True), ("gru", 2, False), ("rnn", 1, False)]


def make_model(directory: Path, kind: str, layers: int, batchnorm: bool, scale: float = 2.0,
               byte_mode: bool = False) -> Path:
    """A small random model, its weights scaled up so that its distributions are far from uniform."""
    import torch

    from charrnn.checkpoint import save_checkpoint
    from charrnn.config import ModelConfig
    from charrnn.model import CharRNN
    from charrnn.vocab import Vocabulary

    if byte_mode:  # bytes of UTF-8 text: a sample may cut a character, decoded with U+FFFD as the server does
        vocab = Vocabulary(tuple(sorted(set(TEXT.encode() + "é€".encode()))), byte_mode=True)
    else:
        vocab = Vocabulary(tuple(sorted(set(map(ord, TEXT)))))
    torch.manual_seed(len(kind) + layers)
    model = CharRNN(ModelConfig(len(vocab), kind, 8, 24, layers, 0.0, batchnorm))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        for name, buf in model.named_buffers():  # batch norm statistics that fold into something visible
            if name.endswith("running_mean"):
                buf.uniform_(-0.3, 0.3)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return save_checkpoint(directory / (kind + "-bytes" * byte_mode), 7, model.eval(), vocab, {"val_loss_history": [2.25]})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("export-models")
    out = {kind: make_model(d, kind, layers, bn) for kind, layers, bn in CELLS}
    return {**out, "bytes": make_model(d, "lstm", 1, False, byte_mode=True)}


@pytest.fixture(scope="module")
def pages(models, tmp_path_factory) -> dict[str, Path]:
    from charrnn.export import export

    d = tmp_path_factory.mktemp("export-pages")
    return {kind: export(path, d / f"{kind}.html") for kind, path in models.items()}


def reference(checkpoint: Path, req: dict) -> str:
    """What ``charrnn sample --seed`` continues after the prompt (the server's completion text)."""
    sampler = Sampler.from_checkpoint(checkpoint, backend="numpy")
    prompt = req.get("prompt", "")
    n = len(prompt.encode()) if sampler.vocab.byte_mode else len(prompt)
    text = sampler.complete(n + req["max_tokens"], prompt, temperature=req["temperature"], seed=req["seed"],
                            top_k=req.get("top_k", 0), top_p=req.get("top_p", 1.0), stop=req.get("stop", ()))
    return text[n:].decode("utf-8", "replace") if sampler.vocab.byte_mode else text[n:]


def engine_logprobs(checkpoint: Path, text: str, fp16: bool = False) -> np.ndarray:
    """The engine's next-token log-probabilities after each character of ``text``: (len(text), V)."""
    from charrnn.export.html import rounded

    m = load_export_model(checkpoint)
    V = m.prepared.vocab_size
    engine = Engine(m.config, rounded(m.prepared) if fp16 else m.prepared, 1, "numpy")
    slot = engine.open(SamplingParams(seed=0))
    out = np.zeros((len(text), V))
    for i, t in enumerate(m.vocab.encode(text) - 1):
        engine.feed([slot], [t])
        engine.sample([slot])  # the NumPy backend leaves this step's scores in engine.scores
        z = engine.scores[slot].astype(np.float64)
        z -= z.max()
        out[i] = z - np.log(np.exp(z).sum())
    return out


# -- the command line -------------------------------------------------------------------------------
def test_cli_writes_a_page_and_refuses_to_clobber(cli, models, tmp_path):
    out = tmp_path / "m.html"
    r = cli("export", "--checkpoint", models["lstm"], "-o", out)
    assert r.code == 0 and "wrote" in r.out
    page = out.read_text(encoding="utf-8")
    assert "window.charrnn" in page and "new Worker" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN, nothing remote
    before = out.read_bytes()
    assert_one_line_error(cli("export", "--checkpoint", models["gru"], "-o", out), "--overwrite")
    assert out.read_bytes() == before
    assert cli("export", "--checkpoint", models["gru"], "-o", out, "--overwrite").code == 0
    assert out.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["m.html"]  # no temporary left behind
    r = cli("export", "--checkpoint", models["lstm"].parent, "-o", tmp_path / "dir.html")  # a directory: its newest
    assert r.code == 0 and f'"id":"{models["lstm"].parent.name}"' in (tmp_path / "dir.html").read_text(encoding="utf-8")


def test_cli_errors_are_one_line(cli, models, tmp_path):
    assert_one_line_error(cli("export", "--checkpoint", tmp_path / "nope.pt", "-o", tmp_path / "a.html"), "not found")
    bad = tmp_path / "bad_1.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert_one_line_error(cli("export", "--checkpoint", bad, "-o", tmp_path / "a.html"))
    assert_one_line_error(cli("export", "--checkpoint", models["rnn"], "--format", "tflite", "-o", tmp_path / "a"),
                          "--format")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("export", "--checkpoint", tmp_path / "empty", "-o", tmp_path / "a.html"), "no checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_1.pt", "empty"]


class _Call:
    """Pickles as a call of ``fn(*args)``: what a hostile checkpoint would run on unpickling."""

    def __init__(self, fn, args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def test_hostile_checkpoint_runs_nothing(cli, tmp_path):
    import io
    import pickle
    import zipfile

    marker = tmp_path / "pwned"
    payload = {"format": "charrnn-checkpoint", "x": _Call(os.system, (f"touch {marker}",))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        z.writestr("archive/byteorder", "little")
    hostile = tmp_path / "evil_1.pt"
    hostile.write_bytes(buf.getvalue())
    for fmt in ("html", "onnx"):
        assert_one_line_error(cli("export", "--checkpoint", hostile, "--format", fmt, "-o", tmp_path / "out"), "evil_1.pt")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_an_interrupted_write_leaves_the_old_file(models, tmp_path, monkeypatch):
    from charrnn.export import export, html

    out = tmp_path / "m.html"
    out.write_text("old", encoding="utf-8")

    def broken(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(html, "render_page", broken)
    with pytest.raises(KeyboardInterrupt):
        export(models["lstm"], out, overwrite=True)
    assert out.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["m.html"]


def test_page_size_and_fp16_halves_the_weights(tmp_path):
    """A 2x128 LSTM page stays under 1.5 MB and ``--weights fp16`` halves its weights."""
    import torch

    from charrnn.checkpoint import save_checkpoint
    from charrnn.config import ModelConfig
    from charrnn.export import export
    from charrnn.model import CharRNN
    from charrnn.vocab import Vocabulary

    vocab = Vocabulary(tuple(range(32, 127)))
    torch.manual_seed(0)
    big = save_checkpoint(tmp_path / "big", 1, CharRNN(ModelConfig(len(vocab), "lstm", 64, 128, 2)).eval(), vocab, {})
    full, half = export(big, tmp_path / "full.html"), export(big, tmp_path / "half.html", weights="fp16")
    assert full.stat().st_size <= 1.5e6
    assert half.stat().st_size < 0.55 * full.stat().st_size


def test_fp16_weights_keep_the_validation_loss(trained, dataset):
    """The page's fp16 weights, computed in fp32, change a trained model's validation loss by under 0.5 %."""
    import h5py

    from charrnn.export.html import text_loss

    m = load_export_model(trained)
    with h5py.File(dataset[0], "r") as f:
        tokens = np.asarray(f["val"][:3000], dtype=np.int64) - 1
    fp32, fp16 = text_loss(m.prepared, tokens), text_loss(m.prepared, tokens, fp16=True)
    assert fp32 < np.log(m.prepared.vocab_size)  # it learned something
    assert fp16 != fp32 and abs(fp16 - fp32) <= 0.005 * fp32


def test_serve_offers_the_page_and_its_completions_are_the_reference(models, tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from charrnn.export import export
    from charrnn.serve import create_app

    ckpt = models["gru"]
    with TestClient(create_app([ckpt], log=lambda m: None)) as client:
        r = client.get(f"/v1/models/{ckpt.stem}/export.html")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert f'filename="{ckpt.stem}.html"' in r.headers["content-disposition"]
        assert r.content == export(ckpt, tmp_path / "page.html").read_bytes()  # the very page `charrnn export` writes
        assert client.get("/v1/models/nope/export.html").status_code == 404
        assert client.get(f"/v1/models/{ckpt.stem}").json()["id"] == ckpt.stem  # the info route still answers
        req = dict(prompt="The ", max_tokens=300, temperature=0.9, top_k=6, seed=21, stop=["e "])
        reply = client.post("/v1/completions", json={"model": ckpt.stem, **req}).json()
        assert reply["choices"][0]["text"] == reference(ckpt, req)


# -- the page in a real browser -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:
            pytest.skip(f"chromium does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


def open_page(browser, path: Path, **context):
    """The page from disk with the network off; returns (page, requests, errors)."""
    ctx = browser.new_context(offline=True, **context)
    page = ctx.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.evaluate("window.charrnn.ready")
    return page, requests, errors


def until(page, condition: str, tries: int = 1200) -> None:
    """Poll a JS condition (``wait_for_function`` would need eval, which the page's CSP forbids)."""
    for _ in range(tries):
        if page.evaluate(f"() => Boolean({condition})"):
            return
        page.wait_for_timeout(25)
    raise AssertionError(f"never true: {condition}")


def only_local(requests: list[str]) -> bool:
    """The file itself and the worker's blob: URL, nothing else."""
    return all(u.startswith(("file:", "blob:", "data:")) for u in requests)


SAME_TEXT = [dict(prompt="The ", max_tokens=2000, temperature=0.9, seed=3),
             dict(prompt="", max_tokens=2000, temperature=1.0, seed=4),
             dict(prompt="a fox", max_tokens=2000, temperature=0, seed=1),
             dict(prompt="the ", max_tokens=2000, temperature=1.1, top_k=4, seed=2**63 - 5),
             dict(prompt="dog", max_tokens=2000, temperature=1.3, top_p=0.85, seed=2**63 - 12345),
             dict(prompt="The ", max_tokens=2000, temperature=1.0, seed=8, stop=["dog", "e "])]


@pytest.mark.slow
@pytest.mark.parametrize("kind", [c[0] for c in CELLS] + ["bytes"])
def test_page_gives_the_samplers_text(browser, pages, models, kind):
    page, requests, errors = open_page(browser, pages[kind])
    info = page.evaluate("window.charrnn.info()")
    assert info["id"] == models[kind].stem and info["iteration"] == 7 and info["val_loss"] == 2.25
    assert info["architecture"]["model_type"] == kind.replace("bytes", "lstm")
    for req in SAME_TEXT:
        got = page.evaluate("r => window.charrnn.complete(r)", {**req, "seed": str(req["seed"])})
        want = reference(models[kind], req)
        assert got["text"] == want, (kind, req)
        unstopped = reference(models[kind], {**req, "stop": ()})
        assert got["finish_reason"] == ("length" if want == unstopped else "stop")
    assert not errors and only_local(requests), (errors, requests)


@pytest.mark.slow
def test_page_probabilities_match_the_engine(browser, pages, models):
    text = (TEXT * 5)[:500]
    for kind in ("lstm", "gru", "rnn"):
        page, _, _ = open_page(browser, pages[kind])
        got = np.exp(np.array(page.evaluate("t => window.charrnn.logprobs(t)", text)))
        want = np.exp(engine_logprobs(models[kind], text))
        assert got.shape == want.shape == (500, len(set(TEXT)))
        assert np.abs(got - want).max() < 1e-5, kind


@pytest.mark.slow
def test_fp16_page_computes_with_the_rounded_weights(browser, models, tmp_path):
    from charrnn.export import export

    text = (TEXT * 3)[:300]
    page, _, _ = open_page(browser, export(models["lstm"], tmp_path / "half.html", weights="fp16"))
    assert "float16 weights" in page.text_content("#about")
    got = np.exp(np.array(page.evaluate("t => window.charrnn.logprobs(t)", text)))
    assert np.abs(got - np.exp(engine_logprobs(models["lstm"], text, fp16=True))).max() < 1e-5
    assert np.abs(got - np.exp(engine_logprobs(models["lstm"], text))).max() > 1e-5  # it is not the fp32 model


@pytest.mark.slow
def test_page_rejects_bad_fields(browser, pages):
    page, _, _ = open_page(browser, pages["rnn"])
    for req, word in [({"prompt": "€"}, "prompt"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                      ({"max_tokens": 0}, "max_tokens"), ({"seed": "x"}, "seed"), ({"stop": [""]}, "stop")]:
        message = page.evaluate("r => window.charrnn.complete(r).then(() => 'ok', e => e.message)", req)
        assert word in message, (req, message)


@pytest.mark.slow
def test_worker_keeps_the_page_responsive_and_stop_stops(browser, pages):
    page, requests, errors = open_page(browser, pages["lstm"], viewport={"width": 1400, "height": 900})
    page.evaluate("""() => { window.beats = 0; window.runningBeats = 0;
        setInterval(() => { window.beats++; if (document.body.dataset.state === 'running') window.runningBeats++; }, 20); }""")
    page.fill("#length", "100000")
    page.fill("#seed", "5")
    page.click("#go")
    until(page, "document.body.dataset.state === 'running'")
    # the main thread keeps answering while the worker generates
    until(page, "window.runningBeats >= 5 && document.querySelector('.sample pre').textContent.length > 500")
    assert page.evaluate("document.body.dataset.state") == "running"
    page.click("#stop")
    until(page, "document.body.dataset.state === 'done'")
    shown = len(page.text_content(".sample pre"))
    assert 500 < shown < 100_000
    page.wait_for_timeout(200)
    assert len(page.text_content(".sample pre")) == shown  # nothing more arrives after Stop
    assert not errors and only_local(requests)


@pytest.mark.slow
def test_ui_samples_side_by_side_and_screenshots(browser, models, tmp_path):
    """Two seeded samples side by side with colours, at desktop and phone sizes (the real t7 model when present)."""
    from charrnn.export import export

    source = T7 if T7.exists() else models["lstm"]
    path = export(source, tmp_path / "page.html")
    iteration = load_export_model(source).iteration
    for name, viewport in (("export-page.png", {"width": 1600, "height": 1000}),
                           ("export-phone.png", {"width": 390, "height": 844})):
        page, requests, errors = open_page(browser, path, viewport=viewport, device_scale_factor=1)
        page.fill("#prompt", "The ")
        page.fill("#seed", "11")
        page.fill("#length", "300")
        page.fill("#samples", "2")
        page.check("#colour")
        page.click("#go")
        until(page, "document.body.dataset.state === 'done'")
        shown = page.eval_on_selector_all(".sample pre", "els => els.map(e => e.textContent)")
        req = dict(prompt="The ", max_tokens=300, temperature=0.8)
        assert shown == ["The " + reference(source, {**req, "seed": 11 + j}) for j in range(2)]
        assert page.eval_on_selector_all(".sample pre span[title]", "els => els.length") == 2 * 300
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
        assert "LSTM" in page.text_content("#about") and f"iteration {iteration}" in page.text_content("#about")
        if os.environ.get("CHARRNN_SCREENSHOTS"):
            page.screenshot(path=str(Path(os.environ["CHARRNN_SCREENSHOTS"]) / name))
        assert not errors and only_local(requests)


@pytest.mark.slow
def test_torch_rnn_t7_page_and_dark_theme(browser, tmp_path, cli):
    if not T7.exists():
        pytest.skip("no shared torch-rnn checkpoint")
    out = tmp_path / "t7.html"
    assert cli("export", "--checkpoint", T7, "-o", out).code == 0
    assert out.stat().st_size <= 1.5e6  # a 2x128 LSTM in fp32
    page, requests, errors = open_page(browser, out, color_scheme="dark")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    for req in (dict(prompt="ROMEO:", max_tokens=2000, temperature=0.7, seed=356),
                dict(prompt="", max_tokens=2000, temperature=1.0, top_k=10, top_p=0.9, seed=1)):
        assert page.evaluate("r => window.charrnn.complete(r)", req)["text"] == reference(T7, req)
    page.click("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    assert not errors and only_local(requests)


# -- ONNX ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_files(models, tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("onnx")
    from charrnn.export import export

    d = tmp_path_factory.mktemp("export-onnx")
    return {kind: export(path, d / f"{kind}.onnx", format="onnx") for kind, path in models.items()}


@pytest.mark.parametrize("kind", [c[0] for c in CELLS])
def test_onnx_logits_match_the_engine(onnx_files, models, kind):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_files[kind]))
    meta = session.get_modelmeta().custom_metadata_map
    m = load_export_model(models[kind])
    assert json.loads(meta["idx_to_token"]) == m.vocab.to_json_dict()["idx_to_token"]
    size = int(meta["state_size"])
    text = (TEXT * 2)[:200]
    state, got = np.zeros((2, size), np.float32), []
    for t in m.vocab.encode(text) - 1:  # a batch of two identical rows
        logits, state = session.run(None, {"token": np.array([t, t]), "state": state})
        assert np.array_equal(logits[0], logits[1])
        z = logits[0].astype(np.float64) - logits[0].max()
        got.append(z - np.log(np.exp(z).sum()))
    assert np.abs(np.array(got) - engine_logprobs(models[kind], text)).max() < 1e-5


@pytest.mark.parametrize("kind", [c[0] for c in CELLS])
def test_onnx_argmax_decode_is_charrnn_sample_sample_0(onnx_files, models, cli, kind):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_files[kind]))
    meta = session.get_modelmeta().custom_metadata_map
    itos, size = json.loads(meta["idx_to_token"]), int(meta["state_size"])
    token, state, out = np.array([0]), np.zeros((1, size), np.float32), [itos["1"]]  # --sample 0 starts at token 0
    for _ in range(299):
        logits, state = session.run(None, {"token": token, "state": state})
        token = logits.argmax(axis=1)
        out.append(itos[str(token[0] + 1)])
    r = cli("sample", "--checkpoint", models[kind], "--sample", "0", "--length", "300")
    assert r.code == 0 and r.out == "".join(out) + "\n"


def test_docs_onnx_loop_runs(onnx_files, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    doc = (DOCS / "export.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 12
    shutil.copy(onnx_files["lstm"], tmp_path / "speeches.onnx")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/export.md", "exec"), {})
    printed = capsys.readouterr().out
    assert len(printed) == 201 and set(printed[:-1]) <= set(TEXT)


def test_torch_rnn_t7_as_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if not T7.exists():
        pytest.skip("no shared torch-rnn checkpoint")
    from charrnn.export import export

    session = ort.InferenceSession(str(export(T7, tmp_path / "t7.onnx", format="onnx")))
    size = int(session.get_modelmeta().custom_metadata_map["state_size"])
    assert size == 2 * 2 * 128
    m = load_export_model(T7)
    text = "ROMEO:\nWhat light through yonder window breaks?\n"
    state, got = np.zeros((1, size), np.float32), []
    for t in m.vocab.encode(text) - 1:
        logits, state = session.run(None, {"token": np.array([t]), "state": state})
        z = logits[0].astype(np.float64) - logits[0].max()
        got.append(z - np.log(np.exp(z).sum()))
    assert np.abs(np.array(got) - engine_logprobs(T7, text)).max() < 1e-5
