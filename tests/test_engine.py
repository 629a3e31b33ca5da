"""The sampling engine: exact arithmetic, per-row parameters, reproducible rows, identical backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn import CharRNN, ModelConfig
from charrnn.sampling.engine import Engine, SamplingParams, numpy_weights, sample_rows, seed_key, uniforms
from charrnn.errors import CharRNNError, InvalidInput

try:
    import numba as _numba  # noqa: F401
    BACKENDS = ["numpy", "numba"]
except ImportError:  # the NumPy fallback alone
    BACKENDS = ["numpy"]
needs_numba = pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")

# every row a different rule: plain, cold, hot with top-k, top-p, both, argmax
MIXED = [SamplingParams(1.0), SamplingParams(0.5), SamplingParams(1.5, top_k=5), SamplingParams(1.0, top_p=0.8),
         SamplingParams(0.8, top_k=10, top_p=0.9), SamplingParams(0.0)]


def make_model(kind: str = "lstm", batchnorm: bool = False, vocab: int = 11, layers: int = 2,
               size: int = 24, gain: float = 2.0) -> CharRNN:
    """A random model whose distributions are peaked like a trained one's (weights scaled by ``gain``)."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab, kind, 6, size, layers, 0.0, batchnorm)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(gain)
    if batchnorm:
        for norm in model.norms:
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.data.uniform_(0.5, 2)
    return model


def opened(engine: Engine, params: list[SamplingParams], seed: int = 0) -> np.ndarray:
    return np.array([engine.open(SamplingParams(p.temperature, p.top_k, p.top_p, seed + j, p.logprobs))
                     for j, p in enumerate(params)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,batchnorm", [(k, b) for k in ("lstm", "gru", "rnn") for b in (False, True)])
def test_engine_computes_what_the_model_computes(kind, batchnorm, backend):
    model = make_model(kind, batchnorm, gain=1.0)
    tokens = np.array([[1, 4, 2, 6, 0, 3, 9], [5, 5, 1, 0, 10, 2, 7]])
    engine = Engine.from_model(model, capacity=3, backend=backend)
    assert engine.backend == backend
    slots = opened(engine, [SamplingParams(0.0)] * 2)
    for t in range(tokens.shape[1]):
        engine.feed(slots, tokens[:, t])
    greedy = engine.sample(slots)
    expected = model(torch.as_tensor(tokens))[0][:, -1].detach().numpy()
    assert np.allclose(engine.scores[slots], expected, atol=1e-5)
    assert (greedy == expected.argmax(axis=1)).all()


@needs_numba
@pytest.mark.parametrize("kind,batchnorm", [("lstm", False), ("lstm", True), ("gru", False), ("rnn", False)])
def test_backends_give_identical_text(kind, batchnorm):
    """Temperature, top-k, top-p and argmax rows, for thousands of characters: the same tokens."""
    model = make_model(kind, batchnorm)
    steps = 3000 if kind == "lstm" else 800
    texts = []
    for backend in ("numpy", "numba"):
        engine = Engine.from_model(model, capacity=len(MIXED), backend=backend)
        slots = opened(engine, MIXED, seed=11)
        engine.feed(slots, engine.first(slots))
        texts.append(engine.generate(slots, steps))
    assert np.array_equal(texts[0], texts[1])
    assert len(np.unique(texts[0][0])) > 3  # really sampled, not stuck on one token


@needs_numba
def test_backends_agree_on_a_trained_checkpoint(trained):
    from charrnn.checkpoint.io import read_pt

    payload = read_pt(trained)
    texts = []
    for backend in ("numpy", "numba"):
        engine = Engine(payload.config, payload.model_state, capacity=len(MIXED), backend=backend)
        slots = opened(engine, MIXED, seed=5)
        engine.feed(slots, engine.first(slots))
        texts.append(engine.generate(slots, 3000))
    assert np.array_equal(texts[0], texts[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_is_the_same_alone_and_in_a_batch_of_64(backend):
    model = make_model()
    alone = Engine.from_model(model, capacity=1, backend=backend)
    slot = alone.open(SamplingParams(0.9, top_k=6, top_p=0.95, seed=1234))
    alone.prime(slot, [1, 2, 3])
    expected = alone.generate([slot], 400)[0]

    crowd = Engine.from_model(model, capacity=64, backend=backend)
    others = [SamplingParams(0.5 + j / 40, top_k=j % 7, seed=j) for j in range(63)]
    for p in others[:20]:  # a busy engine: slots opened and closed before ours
        crowd.open(p)
    for s in range(0, 20, 3):
        crowd.close(s)
    ours = crowd.open(SamplingParams(0.9, top_k=6, top_p=0.95, seed=1234))
    rest = [crowd.open(others[20 + j % 43]) for j in range(crowd.free)]
    slots = np.array([s for s in range(64) if crowd.in_use[s]])
    for s in slots:
        if s != ours:
            crowd.prime(s, [4, 4])
    crowd.prime(ours, [1, 2, 3])
    got = crowd.generate(slots, 400)
    assert np.array_equal(got[list(slots).index(ours)], expected)
    assert len(rest) > 0 and len(slots) == 64


@pytest.mark.parametrize("backend", BACKENDS)
def test_generate_is_sample_then_feed(backend):
    model = make_model("gru")
    a = Engine.from_model(model, capacity=3, backend=backend)
    b = Engine.from_model(model, capacity=3, backend=backend)
    sa, sb = opened(a, MIXED[:3], seed=3), opened(b, MIXED[:3], seed=3)
    fast = a.generate(sa, 50)
    slow = []
    for _ in range(50):
        tokens = b.sample(sb)
        slow.append(tokens)
        b.feed(sb, tokens)
    assert np.array_equal(fast, np.stack(slow, axis=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_state_and_reopened_slots_start_fresh(backend):
    model = make_model()
    engine = Engine.from_model(model, capacity=2, backend=backend)
    a, b = opened(engine, [SamplingParams(0.0)] * 2)
    engine.prime(a, [3, 1, 4, 1, 5])
    engine.copy_state(a, b)
    pair = engine.generate([a, b], 30)
    assert np.array_equal(pair[0], pair[1])
    engine.close(b)
    again = engine.open(SamplingParams(0.0))
    assert again == b and not engine.h[b].any()
    with pytest.raises(CharRNNError, match="in use"):
        engine.open(SamplingParams())


def test_top_k_and_top_p_restrict_the_draws():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2000, 12)).astype(np.float32) * 2
    n = len(scores)
    u = uniforms(np.full(n, seed_key(7), np.uint64), np.arange(n, dtype=np.uint64))
    picks = sample_rows(scores, np.ones(n), np.full(n, 3), np.ones(n), u)
    top3 = np.argsort(-scores, axis=1)[:, :3]
    assert all(p in t for p, t in zip(picks, top3))
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    picks = sample_rows(scores, np.ones(n), np.zeros(n, np.int64), np.full(n, 0.5), u)
    for row, p in zip(probs, picks):  # the pick lies inside the smallest set holding half the mass
        order = np.argsort(-row)
        inside = order[:np.searchsorted(np.cumsum(row[order]), 0.5) + 1]
        assert p in inside
    assert (sample_rows(scores, np.ones(n), np.ones(n, np.int64), np.ones(n), u) == scores.argmax(1)).all()
    assert (sample_rows(scores, np.zeros(n), np.zeros(n, np.int64), np.ones(n), u) == scores.argmax(1)).all()


def test_draws_follow_the_tempered_distribution():
    scores = np.tile(np.array([[2.0, 1.0, 0.0, -1.0]], np.float32), (40_000, 1))
    n = len(scores)
    u = uniforms(np.full(n, seed_key(1), np.uint64), np.arange(n, dtype=np.uint64))
    for t in (0.5, 1.0, 2.0):
        picks = sample_rows(scores, np.full(n, t), np.zeros(n, np.int64), np.ones(n), u)
        expected = np.exp(scores[0] / t) / np.exp(scores[0] / t).sum()
        assert np.allclose(np.bincount(picks, minlength=4) / n, expected, atol=0.01), t


@needs_numba
def test_the_compiled_random_stream_is_the_numpy_one():
    from charrnn.sampling.engine_numba import _uniform

    keys = np.array([seed_key(s) for s in (0, 1, -1, 2 ** 70, 123456789)], np.uint64)
    for count in (0, 1, 2, 1000, 2 ** 40):
        expected = uniforms(keys, np.full(len(keys), count, np.uint64))
        got = np.array([_uniform(k, np.uint64(count)) for k in keys])
        assert np.array_equal(expected, got)
    assert 0 <= expected.min() and expected.max() < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprobs_are_the_models_distribution(backend):
    model = make_model(vocab=9)
    engine = Engine.from_model(model, capacity=2, backend=backend)
    slots = opened(engine, [SamplingParams(0.7, logprobs=3), SamplingParams(1.0)])
    engine.feed(slots, [1, 2])
    tokens, logprobs = engine.sample(slots)
    assert logprobs[1] is None
    expected = torch.log_softmax(model(torch.tensor([[1], [2]]))[0][0, -1], -1).detach().numpy()
    chosen, top = logprobs[0]
    assert chosen == pytest.approx(expected[tokens[0]], abs=1e-5)
    assert [t for t, _ in top] == list(np.argsort(-expected)[:3])
    assert [v for _, v in top] == pytest.approx(np.sort(expected)[::-1][:3], abs=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_token_is_uniform_and_argmax_takes_token_0(backend):
    engine = Engine.from_model(make_model(vocab=5), capacity=64, backend=backend)
    slots = opened(engine, [SamplingParams(1.0)] * 63 + [SamplingParams(0.0)])
    firsts = np.concatenate([engine.first(slots)[:63] for _ in range(40)])
    assert np.allclose(np.bincount(firsts, minlength=5) / len(firsts), 0.2, atol=0.03)
    assert engine.first(slots)[63] == 0


@pytest.mark.parametrize("field,params", [
    ("temperature", SamplingParams(temperature=-1)), ("temperature", SamplingParams(temperature=float("nan"))),
    ("top_k", SamplingParams(top_k=-1)), ("top_p", SamplingParams(top_p=0)), ("top_p", SamplingParams(top_p=1.5)),
    ("seed", SamplingParams(seed="1")), ("logprobs", SamplingParams(logprobs=-2)),
])
def test_bad_params_name_their_field(field, params):
    engine = Engine.from_model(make_model(), capacity=1, backend="numpy")
    with pytest.raises(InvalidInput) as exc:
        engine.open(params)
    assert exc.value.param == field and not engine.in_use.any()


def test_backend_choice_can_be_forced(monkeypatch):
    model = make_model()
    monkeypatch.setenv("CHARRNN_ENGINE", "numpy")
    assert Engine.from_model(model).backend == "numpy"
    monkeypatch.delenv("CHARRNN_ENGINE")
    with pytest.raises(InvalidInput, match="backend"):
        Engine.from_model(model, backend="fortran")
    monkeypatch.setitem(__import__("sys").modules, "numba", None)  # as if numba were not installed
    assert Engine.from_model(model).backend == "numpy"
    with pytest.raises(CharRNNError, match="charrnn\\[fast\\]"):
        Engine.from_model(model, backend="numba")


def test_weights_of_a_model_on_any_device_are_a_copy():
    model = make_model()
    weights = numpy_weights(model)
    weights["head.bias"][:] = 99
    assert not (model.head.bias.detach().numpy() == 99).any()


def test_the_generated_panel_kernels_are_up_to_date():
    """charrnn/sampling/panels.py is what scripts/gen_panels.py writes, and PANEL agrees with the engine's."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_panels.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert "PANEL = 64 " in script.read_text() and "\nPANEL = 64 " in (script.parents[1] / "charrnn" / "sampling"
                                                                       / "engine_numba.py").read_text()


@needs_numba
def test_the_compiled_tanh_is_correctly_rounded_float32():
    from numba import njit

    from charrnn.sampling.engine_numba import _tanh

    @njit
    def tanh_all(x, y):
        for i in range(len(x)):
            y[i] = _tanh(x[i])

    x = np.concatenate([np.linspace(-12, 12, 200_001), np.logspace(-30, 1, 2000), -np.logspace(-30, 1, 2000),
                        [0.0, 2.0 ** -10, -(2.0 ** -10)]]).astype(np.float32)
    y = np.empty_like(x)
    tanh_all(x, y)
    exact = np.tanh(x.astype(np.float64))
    ulps = np.abs(y - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert ulps[exact != 0].max() <= 0.51 and (y[x == 0] == 0).all()
