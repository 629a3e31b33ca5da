"""Integration tests against a real ``charrnn serve`` process on a free loopback port."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from .serve_helpers import LiveServer  # noqa: E402


@pytest.fixture(scope="module")
def big(dataset, tmp_path_factory):
    """An (untrained) wide LSTM: slow enough per step that streams last a while."""
    from charrnn import train
    h5, js = dataset
    name = tmp_path_factory.mktemp("big") / "checkpoint"
    return train(input_h5=str(h5), input_json=str(js), rnn_size=384, wordvec_size=16, num_layers=2, batch_size=2,
                 seq_length=8, gpu=-1, max_iters=1, print_every=0, checkpoint_every=0, checkpoint_name=str(name),
                 quiet=True).checkpoint


@pytest.fixture(scope="module")
def two_checkpoints(dataset, tmp_path_factory):
    """checkpoint_10.pt and checkpoint_20.pt of one tiny run."""
    from charrnn import train
    h5, js = dataset
    name = tmp_path_factory.mktemp("grow") / "checkpoint"
    train(input_h5=str(h5), input_json=str(js), rnn_size=16, wordvec_size=8, num_layers=1, batch_size=4,
          seq_length=16, gpu=-1, max_iters=20, print_every=0, checkpoint_every=10, checkpoint_name=str(name), quiet=True)
    return name.parent


@pytest.fixture(scope="module")
def server(big, trained):
    s = LiveServer("--checkpoint", big, "--checkpoint", trained, "--max-batch", "16")
    yield s
    s.stop()


def stream_lines(url: str, body: dict, on_chunk=None, timeout: float = 60):
    """(arrival time, parsed data) of each SSE event of a streamed completion."""
    out = []
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        out.append((time.monotonic(), "headers"))
        buffer = ""
        for piece in r.iter_text():
            buffer += piece
            while "\n\n" in buffer:
                line, buffer = buffer.split("\n\n", 1)
                data = line[len("data: "):]
                out.append((time.monotonic(), data if data == "[DONE]" else json.loads(data)))
                if on_chunk and on_chunk(out):
                    return out
    return out


def text_of(events) -> str:
    return "".join(c["text"] for _, e in events if isinstance(e, dict) and "choices" in e for c in e["choices"])


def active_rows(server) -> float:
    return server.metric("charrnn_active_rows", 'model="checkpoint_1"')


def test_a_stream_delivers_its_whole_text_in_pieces(server):
    # long enough to outlast several flush intervals even on a fast CPU (1,000 took 9 ms on a Zen 5)
    events = stream_lines(server.url, {"model": "checkpoint_1", "max_tokens": 8000, "seed": 1})
    assert events[-1][1] == "[DONE]" and len(text_of(events)) == 8000
    assert len(events) >= 5, "the text came in pieces"


def test_text_arrives_while_the_row_is_still_generating(server):
    assert server.wait_for(lambda: active_rows(server) == 0)
    seen = []

    def first_text(events):  # at the first text: is the row still generating? then hang up
        if text_of(events):
            seen.append(active_rows(server))
            return True
        return False

    events = stream_lines(server.url, {"model": "checkpoint_1", "max_tokens": 10_000}, on_chunk=first_text)
    assert seen == [1] and 0 < len(text_of(events)) < 10_000


def test_concurrent_requests_share_the_batch(server):
    multi = lambda: (server.metric("charrnn_batch_size_count")  # noqa: E731
                     - server.metric("charrnn_batch_size_bucket", 'le="1.0"'))
    assert server.wait_for(lambda: active_rows(server) == 0)
    before, all_in, results = multi(), threading.Event(), [None] * 8

    def run(k):  # long streams, read until all eight are in the batch together
        results[k] = stream_lines(server.url, {"model": "checkpoint_1", "max_tokens": 10_000, "seed": k},
                                  on_chunk=lambda events: all_in.is_set())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    together = server.wait_for(lambda: active_rows(server) == 8, timeout=60)
    all_in.set()
    for t in threads:
        t.join(120)
    assert together, "the eight requests were in the batch at once"
    assert all(r is not None and text_of(r) for r in results)
    assert multi() - before > 0, "the engine stepped more than one row at once"


def test_client_disconnect_frees_the_row(server):
    rows = lambda: server.metric("charrnn_active_rows", 'model="checkpoint_1"')  # noqa: E731
    assert server.wait_for(lambda: rows() == 0)
    events = stream_lines(server.url, {"model": "checkpoint_1", "max_tokens": 10_000}, on_chunk=lambda ev: len(ev) >= 3)
    assert len(events) >= 2 and events[-1][1] != "[DONE]"  # we hung up in the middle
    assert server.wait_for(lambda: rows() == 0, timeout=5), "the row was freed after the client went away"


def test_metrics_count_requests_and_characters(server, trained):
    label = f'model="{trained.stem}",status="200"'
    requests = server.metric("charrnn_requests_total", label)
    chars = server.metric("charrnn_characters_total", f'model="{trained.stem}"')
    for _ in range(3):
        r = httpx.post(server.url + "/v1/completions", json={"model": trained.stem, "max_tokens": 50}, timeout=30)
        assert r.status_code == 200
    httpx.post(server.url + "/v1/completions", json={"model": "nope"}, timeout=30)
    assert server.metric("charrnn_requests_total", label) == requests + 3
    assert server.metric("charrnn_characters_total", f'model="{trained.stem}"') == chars + 150
    assert server.metric("charrnn_rejects_total", 'reason="unknown_model"') >= 1


def test_openai_client_streamed_and_not(server, trained):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert trained.stem in [m.id for m in client.models.list()]
    reply = client.completions.create(model=trained.stem, prompt="The ", max_tokens=40, seed=5, temperature=0.7)
    assert reply.choices[0].finish_reason == "length" and len(reply.choices[0].text) == 40
    assert reply.usage.completion_tokens == 40
    chunks = list(client.completions.create(model=trained.stem, prompt="The ", max_tokens=40, seed=5,
                                            temperature=0.7, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=trained.stem, prompt="x", max_tokens=5, temperature=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x", max_tokens=5)


@pytest.mark.slow
def test_queue_full_and_request_timeout(big):
    # completions far too long to finish inside the timeout, however fast the machine
    long = 20_000_000
    s = LiveServer("--checkpoint", big, "--max-batch", "1", "--max-queue", "1", "--request-timeout", "3",
                   "--max-tokens", str(long))
    try:
        got = {}

        def occupy(key):  # a long stream, read until the server ends it at the timeout
            got[key] = stream_lines(s.url, {"max_tokens": long})

        first = threading.Thread(target=occupy, args=("a",))
        first.start()
        assert s.wait_for(lambda: s.metric("charrnn_active_rows", 'model="checkpoint_1"') == 1)
        second = threading.Thread(target=occupy, args=("b",))
        second.start()
        assert s.wait_for(lambda: s.metric("charrnn_queue_length", 'model="checkpoint_1"') == 1)
        r = httpx.post(s.url + "/v1/completions", json={"max_tokens": 5}, timeout=10)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full" and r.json()["error"]["type"] == "rate_limit_error"
        first.join(30)
        second.join(30)
        # both ran into --request-timeout: an error chunk, then [DONE]
        for key in ("a", "b"):
            kinds = [e for _, e in got[key]]
            assert kinds[-1] == "[DONE]" and kinds[-2]["error"]["code"] == "request_timeout", kinds[-3:]
        assert len(text_of(got["a"])) > 0
        r = httpx.post(s.url + "/v1/completions", json={"max_tokens": long}, timeout=30)
        assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
        assert s.metric("charrnn_rejects_total", 'reason="queue_full"') == 1
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_follows_a_checkpoint_directory_as_it_grows(two_checkpoints, tmp_path):
    watched = tmp_path / "cv"
    watched.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(two_checkpoints / f"checkpoint_10{suffix}", watched)
    s = LiveServer("--checkpoint", watched)
    try:
        (model,) = s.get("/v1/models")["data"]
        assert model["id"] == "cv" and model["iteration"] == 10 and model["follows"]
        for suffix in (".json", ".pt"):
            shutil.copy(two_checkpoints / f"checkpoint_20{suffix}", watched)
        assert s.wait_for(lambda: s.get("/v1/models")["data"][0]["iteration"] == 20, timeout=10)
        r = httpx.post(s.url + "/v1/completions", json={"max_tokens": 5}, timeout=30)
        assert r.status_code == 200 and r.json()["model"] == "cv"
        assert any("now serving" in line and "checkpoint_20.pt" in line for line in s.lines), s.lines
    finally:
        s.stop()


@pytest.mark.slow
def test_sigterm_closes_open_streams_and_exits_cleanly(big):
    s = LiveServer("--checkpoint", big)
    got = {}
    t = threading.Thread(target=lambda: got.update(events=stream_lines(s.url, {"max_tokens": 10_000})))
    t.start()
    assert s.wait_for(lambda: s.metric("charrnn_active_rows", 'model="checkpoint_1"') == 1)
    assert s.stop(signal.SIGTERM) == 0
    t.join(20)
    assert not t.is_alive()
    kinds = [e for _, e in got["events"]]
    assert kinds[-1] == "[DONE]" and kinds[-2]["error"]["code"] == "server_shutdown"
    assert s.lines[-1] == "charrnn serve: stopped"
    assert "Traceback" not in "\n".join(s.lines)
