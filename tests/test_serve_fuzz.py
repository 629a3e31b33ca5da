"""The server's request parsing under hostile bodies, in-process: lone surrogates are a 400 naming the field, and
a property-based fuzz over JSON bodies finds no answer but a 2xx or an OpenAI-shaped 4xx, the server serving on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from charrnn.serve import create_app  # noqa: E402

LIMITS = dict(max_tokens=50, max_prompt=64, max_batch=4, max_queue=8)


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(create_app([trained], log=lambda m: None, **LIMITS)) as c:
        yield c


def post(client, raw: bytes):
    return client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})


def assert_openai_error(r, status: int | None = None) -> dict:
    assert 400 <= r.status_code < 500 if status is None else r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("body,param", [
    ('{"prompt": "we \\udc80 are", "max_tokens": 5}', "prompt"),
    ('{"prompt": ["\\ud800"], "max_tokens": 5}', "prompt"),
    ('{"start_text": "x\\udfff", "max_tokens": 5}', "start_text"),
    ('{"prompt": "The ", "stop": "we \\udc80", "max_tokens": 5}', "stop"),
    ('{"prompt": "The ", "stop": ["e", "\\udc80"], "max_tokens": 5}', "stop"),
    ('{"model": "\\udc80", "max_tokens": 5}', "model"),
])
def test_a_lone_surrogate_is_a_400_naming_its_field(client, body, param):
    error = assert_openai_error(post(client, body.encode()), 400)
    assert error["param"] == param and "surrogate" in error["message"], error


def test_an_unknown_field_spelled_with_a_surrogate_is_named_printably(client):
    error = assert_openai_error(post(client, b'{"\\udc80x": 1}'), 400)
    assert error["param"] == "\\udc80x" and "not a known field" in error["message"]


# -- the fuzz ---------------------------------------------------------------------------------------
FIELDS = ["model", "prompt", "start_text", "max_tokens", "length", "temperature", "top_p", "top_k", "n", "stop",
          "seed", "logprobs", "echo", "stream", "stream_options", "presence_penalty", "best_of", "user", "suffix"]

edge_text = st.text(alphabet=st.one_of(
    st.sampled_from(list("The ae\n\x00\t\"\\") + ["\udc80", "\ud800", "\udfff", "\ufffe", "\U0001f600", "é"]),
    st.characters()), max_size=80)
numbers = st.one_of(
    st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.sampled_from([0, 1, -1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 30]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 10.0, 10.000001, 1e-300, -0.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, edge_text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                       st.dictionaries(edge_text, inner, max_size=4)), max_leaves=12)
plausible = {  # values near what each field takes, so the fuzz reaches past the first check
    "prompt": st.one_of(edge_text, st.lists(edge_text, max_size=2)), "start_text": edge_text,
    "max_tokens": st.integers(-3, 60), "length": st.integers(-3, 60), "n": st.integers(-1, 6),
    "temperature": numbers, "top_p": numbers, "top_k": st.integers(-2, 100), "seed": numbers,
    "logprobs": st.integers(-1, 25), "stop": st.one_of(edge_text, st.lists(edge_text, max_size=6)),
    "stream": st.booleans(), "echo": st.booleans(), "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
}
field_values = st.one_of(*(st.tuples(st.just(k), v) for k, v in plausible.items()),
                         st.tuples(st.sampled_from(FIELDS), values), st.tuples(edge_text, values))
bodies = st.one_of(st.lists(field_values, max_size=8).map(dict), values)


def encode(body) -> bytes:
    """JSON text as a client may send it: NaN and Infinity included, lone surrogates as \\u escapes."""
    return json.dumps(body, allow_nan=True).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(body=bodies, stream=st.booleans())
def test_fuzzed_bodies_get_a_2xx_or_an_openai_4xx(client, body, stream):
    if stream and isinstance(body, dict) and body.get("stream") is True:
        with client.stream("POST", "/v1/completions", content=encode(body),
                           headers={"content-type": "application/json"}) as r:
            text = "".join(r.iter_text())
        if r.status_code == 200:
            assert text.endswith("data: [DONE]\n\n") and '"server_error"' not in text, text[-300:]
            return
        assert 400 <= r.status_code < 500, (r.status_code, text[:300])
        return
    r = post(client, encode(body))
    if 200 <= r.status_code < 300:
        assert r.headers["content-type"].startswith(("application/json", "text/event-stream"))
        return
    assert_openai_error(r)


def test_huge_nested_and_odd_bodies(client):
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"prompt": "a", "prompt": 5}', b"null", b"1e999", b"NaN",
                b'"\\udc80"', json.dumps({"max_tokens": 10 ** 4000}).encode(), b'{"n": 1' + b" " * 70_000 + b"}",
                json.dumps({"stop": ["x"] * 10_000}).encode(), b'{"prompt": "\x00\x00"}'):
        assert_openai_error(post(client, raw))


def test_the_server_keeps_serving_after_the_fuzz(client):
    for raw in (b'{"prompt": "we \\udc80 are"}', b'{"temperature": NaN}', b'{"seed": Infinity}', b"[]"):
        assert_openai_error(post(client, raw), 400)
    r = client.post("/v1/completions", json={"prompt": "The ", "max_tokens": 20, "seed": 1})
    assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 20
