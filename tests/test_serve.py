"""The server's HTTP API in-process: validation and error shapes, replies, streams, stops, n, logprobs, echo,
seeded determinism alone and in a batch, models/health/metrics, the dashboard's stats reader, start-up errors."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from charrnn.serve import create_app  # noqa: E402
from charrnn.serve.runs import SUFFIX  # noqa: E402

from .conftest import assert_one_line_error  # noqa: E402

LIMITS = dict(max_tokens=1000, max_prompt=200, max_batch=8, max_queue=16)


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(create_app([trained], log=lambda m: None, **LIMITS)) as c:
        yield c


def complete(client, **body):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def events(client, **body) -> list:
    """The parsed data lines of a streamed completion ('[DONE]' kept as a string)."""
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    lines = [block for block in text.split("\n\n") if block]
    assert all(line.startswith("data: ") for line in lines), text[:200]
    return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]) for line in lines]


def streamed_texts(chunks: list, n: int = 1) -> tuple[list[str], list]:
    texts, finish = [""] * n, [None] * n
    for chunk in chunks[:-1]:
        indices = [c["index"] for c in chunk["choices"]]
        assert len(indices) == len(set(indices)), "a chunk names each choice once"
        for c in chunk["choices"]:
            assert finish[c["index"]] is None, "finish_reason comes only on a choice's last chunk"
            texts[c["index"]] += c["text"]
            finish[c["index"]] = c["finish_reason"]
    return texts, finish


# -- validation: every bad field is a 400 naming it ------------------------------------------------------
BAD = [
    ({"temperature": "hot"}, "temperature"), ({"temperature": -0.5}, "temperature"), ({"temperature": 11}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": True}, "top_p"),
    ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"n": 0}, "n"), ({"n": 9}, "n"), ({"n": "2"}, "n"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 1001}, "max_tokens"), ({"max_tokens": "5"}, "max_tokens"),
    ({"length": 0}, "length"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": 5}, "stop"), ({"stop": [""]}, "stop"), ({"stop": [1]}, "stop"),
    ({"seed": -1}, "seed"), ({"seed": "x"}, "seed"), ({"seed": 2 ** 64}, "seed"),
    ({"logprobs": 21}, "logprobs"), ({"logprobs": -1}, "logprobs"),
    ({"echo": "yes"}, "echo"), ({"stream": 1}, "stream"),
    ({"prompt": 5}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"), ({"prompt": "a" * 201}, "prompt"),
    ({"start_text": "a", "prompt": "b"}, "start_text"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options"),
    ({"bogus": 1}, "bogus"), ({"presence_penalty": 0.5}, "presence_penalty"), ({"best_of": 3}, "best_of"),
    ({"model": 7}, "model"),
    ({"prompt": "the é"}, "prompt"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[json.dumps(b)[:40] for b, _ in BAD])
def test_invalid_fields_are_400_naming_the_field(client, body, param):
    r = client.post("/v1/completions", json={**({} if "length" in body else {"max_tokens": 5}), **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_unknown_prompt_characters_are_named(client):
    error = client.post("/v1/completions", json={"prompt": "the é and ß"}).json()["error"]
    assert "'é'" in error["message"] and "'ß'" in error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_bodies_are_400(client, raw):
    r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client):
    r = client.post("/v1/completions", json={"model": "nope", "max_tokens": 3})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found" and r.json()["error"]["param"] == "model"
    assert client.get("/v1/models/nope").status_code == 404


def test_oversized_body_is_413(client):
    r = client.post("/v1/completions", content=b'{"prompt": "' + b"a" * 200_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_api_key(trained):
    with TestClient(create_app([trained], api_key="s3cret", log=lambda m: None)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.post("/v1/completions", json={"max_tokens": 3}, headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert c.get("/v1/models", headers=headers).status_code == 401
        r = c.post("/v1/completions", json={"max_tokens": 3}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 3


def test_cors_origin(trained):
    with TestClient(create_app([trained], cors_origins=["https://talk.example"], log=lambda m: None)) as c:
        r = c.options("/v1/completions", headers={"Origin": "https://talk.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "https://talk.example"
        r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# -- replies ------------------------------------------------------------------------------------------
def test_non_streamed_reply(client):
    body = complete(client, prompt="The ", max_tokens=40, seed=3, temperature=0.9)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length" and choice["logprobs"] is None
    assert len(choice["text"]) == 40
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 40, "total_tokens": 44}


def test_aliases_start_text_and_length(client):
    a = complete(client, prompt="The ", max_tokens=30, seed=5)["choices"][0]["text"]
    b = complete(client, start_text="The ", length=30, seed=5)["choices"][0]["text"]
    assert a == b


def test_streamed_matches_non_streamed_and_ends_with_done(client):
    whole = complete(client, prompt="A ", max_tokens=300, seed=11)["choices"][0]["text"]
    chunks = events(client, prompt="A ", max_tokens=300, seed=11, stream_options={"include_usage": True})
    assert chunks[-1] == "[DONE]"
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 300
    texts, finish = streamed_texts(chunks[:-1])
    assert texts == [whole] and finish == ["length"]
    assert all(c["object"] == "text_completion" and c["usage"] is None for c in chunks[:-2])


def test_argmax_is_deterministic_without_seed(client):
    a = complete(client, prompt="The ", max_tokens=50, temperature=0)["choices"][0]["text"]
    b = complete(client, prompt="The ", max_tokens=50, temperature=0)["choices"][0]["text"]
    assert a == b


def test_no_prompt(client):
    text = complete(client, max_tokens=25, seed=1)["choices"][0]["text"]
    assert len(text) == 25


# -- stop strings ---------------------------------------------------------------------------------------
def test_stop_strings_end_the_text_before_them(client):
    full = complete(client, prompt="The ", max_tokens=400, seed=7)["choices"][0]["text"]
    stop = full[150:153]  # a string that occurs, maybe earlier than here
    cut = full.index(stop)
    body = complete(client, prompt="The ", max_tokens=400, seed=7, stop=["\u2603never", stop])
    (choice,) = body["choices"]
    assert choice["text"] == full[:cut] and choice["finish_reason"] == "stop"
    chunks = events(client, prompt="The ", max_tokens=400, seed=7, stop=stop)
    assert streamed_texts(chunks) == ([full[:cut]], ["stop"])


def test_stop_string_that_never_occurs(client):
    full = complete(client, prompt="The ", max_tokens=100, seed=8)["choices"][0]["text"]
    body = complete(client, prompt="The ", max_tokens=100, seed=8, stop="\u2603")
    assert body["choices"][0]["text"] == full and body["choices"][0]["finish_reason"] == "length"


# -- n, logprobs, echo ------------------------------------------------------------------------------
def test_n_choices_prime_once_and_match_single_requests_with_seed_plus_j(client):
    body = complete(client, prompt="The dog ", max_tokens=60, n=3, seed=40)
    texts = [c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]
    assert len(set(texts)) == 3
    for j, text in enumerate(texts):
        assert complete(client, prompt="The dog ", max_tokens=60, seed=40 + j)["choices"][0]["text"] == text
    assert body["usage"]["completion_tokens"] == 180
    chunks = events(client, prompt="The dog ", max_tokens=60, n=3, seed=40)
    assert streamed_texts(chunks, 3) == (texts, ["length"] * 3)


def test_logprobs(client):
    body = complete(client, prompt="The ", max_tokens=30, seed=2, logprobs=3)
    (choice,) = body["choices"]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == list(range(30))
    assert all(v <= 0 for v in lp["token_logprobs"])
    assert all(len(top) == 3 and max(top.values()) <= 0 for top in lp["top_logprobs"])
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert value <= max(top.values()) + 1e-9
        if token in top:
            assert abs(top[token] - value) < 1e-6
    same = complete(client, prompt="The ", max_tokens=30, seed=2)["choices"][0]["text"]
    assert same == choice["text"]  # asking for logprobs does not change the text
    chunks = events(client, prompt="The ", max_tokens=30, seed=2, logprobs=3)
    streamed = [t for chunk in chunks[:-1] for c in chunk["choices"] for t in c["logprobs"]["tokens"]]
    assert "".join(streamed) == choice["text"]


def test_echo(client):
    plain = complete(client, prompt="The sun ", max_tokens=20, seed=9)["choices"][0]["text"]
    body = complete(client, prompt="The sun ", max_tokens=20, seed=9, echo=True)
    assert body["choices"][0]["text"] == "The sun " + plain
    chunks = events(client, prompt="The sun ", max_tokens=20, seed=9, echo=True)
    assert streamed_texts(chunks)[0] == ["The sun " + plain]
    lp = complete(client, prompt="The sun ", max_tokens=5, seed=9, echo=True, logprobs=1)["choices"][0]["logprobs"]
    assert lp["tokens"][:8] == list("The sun ") and lp["token_logprobs"][:8] == [None] * 8


# -- reproducibility: the same seeded request alone and inside a busy batch --------------------------------
def test_seeded_text_is_the_same_alone_and_in_a_batch(trained):
    import httpx

    app = create_app([trained], log=lambda m: None, max_batch=64)
    request = {"prompt": "The lazy ", "max_tokens": 400, "seed": 1234, "temperature": 0.8, "top_k": 10, "top_p": 0.95}

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            alone = (await c.post("/v1/completions", json=request)).json()["choices"][0]["text"]
            others = [{"prompt": "A" if k % 2 else "", "max_tokens": 400, "seed": k, "temperature": 1.0 + k / 100}
                      for k in range(63)]
            replies = await asyncio.gather(*[c.post("/v1/completions", json=b) for b in others[:31]],
                                           c.post("/v1/completions", json=request),
                                           *[c.post("/v1/completions", json=b) for b in others[31:]])
            return alone, replies[31].json()["choices"][0]["text"]

    alone, batched = asyncio.run(run())
    assert alone == batched
    batcher = app.state.server.batchers[next(iter(app.state.server.batchers))][-1]
    assert batcher.max_batch_seen > 1
    app.state.server.close()


# -- models, health, metrics --------------------------------------------------------------------------
def test_models_health_metrics(client, trained):
    (model,) = client.get("/v1/models").json()["data"]
    assert model["id"] == trained.stem and model["object"] == "model"
    assert model["iteration"] == 30 and model["vocab_size"] > 10
    assert model["architecture"]["model_type"] == "lstm" and model["architecture"]["rnn_size"] == 16
    assert client.get(f"/v1/models/{model['id']}").json()["id"] == model["id"]
    assert client.get("/health").json()["status"] == "ok"
    complete(client, max_tokens=7)
    client.post("/v1/completions", json={"n": 0})
    text = client.get("/metrics").text
    assert f'charrnn_requests_total{{model="{model["id"]}",status="200"}}' in text
    assert 'charrnn_rejects_total{reason="invalid"}' in text
    assert "charrnn_characters_total" in text and "charrnn_batch_size_bucket" in text
    assert "charrnn_step_seconds_bucket" in text and "charrnn_active_rows" in text and "charrnn_queue_length" in text


def test_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>charrnn</title>" in page.text
    for name in ("style.css", "charts.js", "generate.js", "training.js", "dom.js"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.text) > 500
        if name.endswith(".js"):  # ES modules: a JavaScript MIME type, no shared globals
            assert "javascript" in r.headers["content-type"] and ("export" in r.text or "import" in r.text), name
    assert '<script type="module" src="/static/generate.js">' in page.text
    assert "http" not in page.text.replace("http://www.w3.org", "")  # nothing from a CDN


# -- the dashboard's stats reader -----------------------------------------------------------------------
def _write(path, records, torn: str = ""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def test_runs_are_read_incrementally_ignoring_a_torn_line_and_replaced_points(trained, tmp_path):
    run = tmp_path / "cv" / "lr"
    run.parent.mkdir()
    stats = run.with_name(run.name + SUFFIX)
    first = [{"type": "start", "time": 0, "iteration": 0, "config": {}, "model": {}, "parameters": 1, "device": "cpu",
              "precision": "fp32"}]
    first += [{"type": "train", "i": i, "time": i, "losses": [4.0 - i / 100], "lr": 0.01, "chars_per_s": 1e4,
               "grad_norm": 1.0, "update_ratio": {"layer1": -3.0}} for i in range(1, 21)]
    _write(stats, first, torn='{"type": "train", "i": 21, "los')
    with TestClient(create_app([trained], [tmp_path / "cv"], log=lambda m: None)) as c:
        names = [r["name"] for r in c.get("/api/runs").json()["runs"]]
        assert "cv/lr" in names
        snap = c.get("/api/run", params={"name": "cv/lr", "offset": 0}).json()
        assert [r["i"] for r in snap["records"] if r["type"] == "train"] == list(range(1, 21))
        # a resume from iteration 10 replaces 11..20; the torn line is completed by then
        more = [{"type": "train", "i": 21, "time": 21, "losses": [9.0], "lr": 0.01}, {**first[0], "iteration": 10}]
        more += [{"type": "train", "i": i, "time": i, "losses": [1.0], "lr": 0.005} for i in range(11, 16)]
        _write(stats, first + more)
        again = c.get("/api/run", params={"name": "cv/lr", "offset": snap["offset"]}).json()
        assert [r["type"] for r in again["records"]] == ["train", "start"] + ["train"] * 5
        fresh = c.get("/api/run", params={"name": "cv/lr", "offset": 0}).json()
        assert [r["i"] for r in fresh["records"] if r["type"] == "train"] == list(range(1, 16))
        assert c.get("/api/run", params={"name": "nope"}).status_code == 404
        assert c.get("/api/run", params={"name": "cv/lr", "offset": "x"}).status_code == 400


def test_long_runs_are_downsampled(trained, tmp_path):
    stats = tmp_path / ("long" + SUFFIX)
    records = [{"type": "train", "i": i * 10, "time": i, "losses": [5.0] * 10, "lr": 0.1, "chars_per_s": 1.0,
                "grad_norm": 2.0, "update_ratio": {"head": -3.1}} for i in range(1, 20_001)]
    records += [{"type": "sample", "i": i, "time": i, "temperature": 1.0, "text": "x"} for i in range(50)]
    _write(stats, records)
    with TestClient(create_app([trained], [tmp_path / "long"], log=lambda m: None)) as c:
        snap = c.get("/api/run", params={"name": f"{tmp_path.name}/long", "offset": 0}).json()
    train = [r for r in snap["records"] if r["type"] == "train"]
    assert 1000 <= len(train) <= 2000 and train[-1]["i"] == 200_000
    assert all(r["losses"] == [pytest.approx(5.0)] and r["update_ratio"] == {"head": pytest.approx(-3.1)} for r in train)
    assert len([r for r in snap["records"] if r["type"] == "sample"]) == 20


# -- start-up: errors are one line, torch stays out ---------------------------------------------------
def test_bad_checkpoint_is_one_clear_line(cli, tmp_path):
    bad = tmp_path / "bad_1.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli("serve", "--checkpoint", bad, "--port", "0"), "bad_1.pt")
    assert_one_line_error(cli("serve", "--checkpoint", tmp_path / "missing", "--port", "0"), "missing")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("serve", "--checkpoint", tmp_path / "empty", "--port", "0"), "no checkpoint")


def test_port_in_use_is_one_clear_line(cli, trained):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert_one_line_error(cli("serve", "--checkpoint", trained, "--port", port), "already in use", str(port))


def test_serving_a_pt_does_not_import_torch(trained):
    code = ("import sys; from charrnn.serve import create_app; app = create_app([sys.argv[1]], log=lambda m: None); "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(trained)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_real_training_run_is_on_the_dashboard(client, trained):
    """The served checkpoint's directory is a run: its stats file, written by training, reaches the page."""
    run = f"{trained.parent.name}/{trained.stem.rsplit('_', 1)[0]}"
    assert run in [r["name"] for r in client.get("/api/runs").json()["runs"]]
    snap = client.get("/api/run", params={"name": run, "offset": 0}).json()
    kinds = [r["type"] for r in snap["records"]]
    assert kinds[0] == "start" and kinds[-1] == "end" and "train" in kinds
    train = [r for r in snap["records"] if r["type"] == "train"]
    assert train[-1]["i"] == 30 and all(r["losses"] and r["lr"] > 0 for r in train)
    assert client.get("/api/run", params={"name": run, "offset": snap["offset"]}).json()["records"] == []
