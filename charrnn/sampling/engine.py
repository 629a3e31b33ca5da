"""The CPU sampling engine: up to ``capacity`` independent rows (slots) of one model, stepped together.

One engine serves the CLI (``sample``, ``--num-samples``), samples during training and the
server's continuous batching. Each slot carries its own :class:`SamplingParams` and its own
random stream, so a row's text depends only on its prompt, its parameters and its seed, never on
what else runs in the batch.

The network's arithmetic is prepared once (:class:`PreparedModel`): the embedding is folded
into the first layer's input weights (a table lookup per token), each deeper layer multiplies
one contiguous ``[h_below; h_own]`` vector, batch normalisation (eval mode) is folded into the
weights that read it, and the LSTM's sigmoids become ``0.5 tanh(x/2) + 0.5`` with the halving
folded into the weights too. Two backends run it: ``numba`` (one compiled kernel per step or
per run of steps, see :mod:`charrnn.sampling.engine_numba`) and ``numpy`` (the exact fallback).

Sampling, identical in both backends: scores are divided by the temperature, exponentiated in
float64, cut by top-k and then top-p (ties at a cut are kept), and one uniform number ``u``
picks a token by inverse CDF in token order. ``u`` comes from a counter-based generator
(SplitMix64 of the row's seed and its draw count), so a row's draws never depend on other rows,
and a tiny float difference between backends changes a token only when ``u`` falls within that
difference of a boundary of the cumulative distribution (measured by ``benchmarks/sampling.py``).
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..config import ModelConfig
from ..errors import CharRNNError, InvalidInput
from ..layout import GATES, MODEL_TYPES, RNN_PARTS, norm_key, rnn_key
from .runtime import PARALLEL_MIN_ROWS, say_once  # noqa: F401 (PARALLEL_MIN_ROWS: used by warm)
from .options import LOGPROBS, SEED, TEMPERATURE, TOP_K, TOP_P, SampleOptions, check_range

if TYPE_CHECKING:
    from ..model import CharRNN

BACKENDS = ("auto", "numba", "numpy")
BACKEND_ENV = "CHARRNN_ENGINE"  # forces a backend: "numba" or "numpy"

MASK64 = (1 << 64) - 1
GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX1, MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass
class SamplingParams:
    """How one row draws its tokens."""

    temperature: float = SampleOptions.temperature  # 0 = argmax
    top_k: int = SampleOptions.top_k                # 0 = off
    top_p: float = SampleOptions.top_p              # 1 = off
    seed: int | None = None                         # None = fresh entropy
    logprobs: int = 0          # > 0: also return the top-N (token, logprob) of each step's distribution

    def check(self) -> "SamplingParams":
        """Raise :class:`InvalidInput` for a value of the wrong type or out of range; returns self."""
        check_range("temperature", self.temperature, TEMPERATURE)
        check_range("top_k", self.top_k, TOP_K, integer=True)
        check_range("top_p", self.top_p, TOP_P)
        if self.seed is not None:
            check_range("seed", self.seed, SEED, integer=True)
        check_range("logprobs", self.logprobs, LOGPROBS, integer=True)
        return self


class StepLogprobs(NamedTuple):
    """The model's own distribution at one step (temperature 1, no cuts), as natural logs."""

    logprob: float                 # of the token that was drawn
    top: list[tuple[int, float]]   # the N most likely tokens, most likely first


# -- the random stream ---------------------------------------------------------------------------
def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * MIX2
    return x ^ (x >> np.uint64(31))


def seed_key(seed: int) -> np.uint64:
    """The stream key of a seed (any Python int)."""
    return _mix(np.array([int(seed) & MASK64], dtype=np.uint64))[0]


def uniforms(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Draw number ``count`` of each stream: a float64 in [0, 1) with 53 random bits."""
    x = _mix(keys + (counts + np.uint64(1)) * GAMMA)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# -- the prepared network ------------------------------------------------------------------------
def numpy_weights(model: "CharRNN") -> dict[str, np.ndarray]:
    """A model's floating-point state as NumPy arrays (a copy, from any device)."""
    return {k: v.detach().float().cpu().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}


def _layer_weights(config: ModelConfig, sd: dict) -> list[list[np.ndarray]]:
    """[W_ih, W_hh, b_ih, b_hh] per layer, whatever the module layout."""
    try:
        return [[sd[rnn_key(config, l, part)] for part in RNN_PARTS] for l in range(config.num_layers)]
    except KeyError as exc:
        raise CharRNNError(f"the weights lack {exc.args[0]!r} for a {config.model_type} model") from None


def _batchnorm_affine(sd: dict, layer: int, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Scale and shift of a batch-norm layer in eval mode: BN(h) = h * s + t."""
    w, b, mean, var = (sd[norm_key(layer, part)] for part in ("weight", "bias", "running_mean", "running_var"))
    s = w / np.sqrt(var + eps)
    return s, b - mean * s


class PreparedModel:
    """A model's weights rearranged for stepping; every array float32 and contiguous.

    Layer 0 reads ``table0[token]`` (embedding, input weights and biases in one row). For LSTM
    and RNN a deeper layer ``l`` computes ``bias[l-1] + [h_{l-1}; h_l] @ wcat[l-1]`` and layer 0
    adds ``h_0 @ whh0``; LSTM gates are ordered i, f, o, g with the sigmoid inputs halved. For GRU
    ``gx = bih[l-1] + h_{l-1} @ wih[l-1]`` (or the table row) and ``gh = bhh[l] + h_l @ whh[l]``.
    The head is ``h_last @ head_w + head_b``.
    """

    def __init__(self, config: ModelConfig, weights: dict) -> None:
        sd = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items() if not k.endswith("num_batches_tracked")}
        self.kind, self.H, self.L = config.model_type, config.rnn_size, config.num_layers
        if self.kind not in GATES:
            raise InvalidInput("model_type", f"must be one of {', '.join(MODEL_TYPES)} (got {self.kind!r})")
        H, L, G = self.H, self.L, GATES[self.kind]
        self.G = G
        layers = _layer_weights(config, sd)
        embed, head_w, head_b = sd["embed.weight"], sd["head.weight"], sd["head.bias"]
        if config.batchnorm:  # fold BN(h) = h*s + t into whatever reads h next
            for l in range(L):
                s, t = _batchnorm_affine(sd, l)
                if l + 1 < L:
                    w_ih, w_hh, b_ih, b_hh = layers[l + 1]
                    layers[l + 1] = [w_ih * s, w_hh, b_ih + w_ih @ t, b_hh]
                else:
                    head_b = head_b + head_w @ t
                    head_w = head_w * s
        if self.kind == "lstm":  # PyTorch's i, f, g, o -> i, f, o, g, and sigmoid(x) = 0.5 tanh(x/2) + 0.5
            order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
            scale = np.r_[np.full(3 * H, 0.5), np.ones(H)].astype(np.float32)
            layers = [[w_ih[order] * scale[:, None], w_hh[order] * scale[:, None],
                       (b_ih[order] + b_hh[order]) * scale, None] for w_ih, w_hh, b_ih, b_hh in layers]
        elif self.kind == "rnn":
            layers = [[w_ih, w_hh, b_ih + b_hh, None] for w_ih, w_hh, b_ih, b_hh in layers]
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        e2, e3 = np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32)
        self.table0 = f32(embed @ layers[0][0].T + layers[0][2])  # (V, G*H)
        self.head_w, self.head_b = f32(head_w.T), f32(head_b)
        self.vocab_size = self.head_w.shape[1]
        if self.kind == "gru":
            self.whh = f32(np.stack([l[1].T for l in layers]))
            self.bhh = f32(np.stack([l[3] for l in layers]))
            self.wih = f32(np.stack([l[0].T for l in layers[1:]])) if L > 1 else e3
            self.bih = f32(np.stack([l[2] for l in layers[1:]])) if L > 1 else e2
            self.whh0, self.wcat, self.bias = e2, e3, e2
        else:
            self.whh0 = f32(layers[0][1].T)
            self.wcat = (f32(np.stack([np.concatenate([l[0], l[1]], axis=1).T for l in layers[1:]]))
                         if L > 1 else np.zeros((0, 2 * H, G * H), np.float32))
            self.bias = f32(np.stack([l[2] for l in layers[1:]])) if L > 1 else np.zeros((0, G * H), np.float32)
            self.whh, self.bhh, self.wih, self.bih = e3, e2, e3, e2


# -- the engine ----------------------------------------------------------------------------------
def numba_cache_dir() -> str:
    """Where numba caches compiled kernels: ``$NUMBA_CACHE_DIR``, else the user's cache directory.

    Not beside the package: site-packages may be read-only (a system install, a container).
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "charrnn", "numba")


def _import_numba() -> None:
    if "numba" not in sys.modules:  # numba reads its cache directory when it is first imported
        os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()
    import numba  # noqa: F401

    from . import engine_numba  # noqa: F401


def choose_backend(backend: str = "auto") -> str:
    """``numba`` when requested or it loads (unless ``CHARRNN_ENGINE`` says otherwise), else ``numpy``."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if backend == "auto" and forced:
        backend = forced
    if backend not in BACKENDS:
        raise InvalidInput("backend", f"must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "numpy":
        return "numpy"
    try:
        _import_numba()
    except ImportError as exc:
        if backend == "numba":
            raise CharRNNError("the numba backend needs numba: pip install numba (or 'charrnn[fast]')") from None
        say_once(f"sampling on NumPy (slower, same text): numba cannot be imported ({exc})")
        return "numpy"
    except Exception as exc:  # e.g. numba finds no writable cache directory
        if backend == "numba":
            raise CharRNNError(f"the numba backend cannot start: {exc}") from None
        say_once(f"sampling on NumPy (slower, same text): the numba backend cannot start ({exc})")
        return "numpy"
    return "numba"


class Slots:
    """What every scorer shares: up to ``capacity`` rows (slots), each with its own params and random stream.

    A scorer (the CPU :class:`Engine`, or :class:`charrnn.sampling.torch_scorer.TorchScorer` on a
    GPU) adds the arithmetic: ``feed(slots, tokens)`` advances rows by one token, ``prime(slot,
    tokens)`` by many, and ``sample(slots)`` draws each row's next token from its scores by
    :func:`sample_rows`, the one sampling rule. ``first(slots)`` draws a first token without a
    prompt; ``generate(slots, steps)`` alternates sample and feed (a fast path in the engine).
    """

    capacity: int
    vocab_size: int

    def _init_slots(self, capacity: int, vocab_size: int) -> None:
        if capacity < 1:
            raise InvalidInput("capacity", f"must be positive (got {capacity})")
        self.capacity, self.vocab_size = capacity, vocab_size
        self.scores = np.zeros((capacity, vocab_size), np.float32)
        self.temperature = np.ones(capacity)
        self.top_k = np.zeros(capacity, np.int64)
        self.top_p = np.ones(capacity)
        self.key = np.zeros(capacity, np.uint64)
        self.count = np.zeros(capacity, np.uint64)
        self.logprobs = np.zeros(capacity, np.int64)
        self.in_use = np.zeros(capacity, bool)

    @property
    def free(self) -> int:
        return int(self.capacity - self.in_use.sum())

    def open(self, params: SamplingParams | None = None) -> int:
        """A free slot with a zero state and its own random stream."""
        params = (params or SamplingParams()).check()
        free = np.flatnonzero(~self.in_use)
        if not len(free):
            raise CharRNNError(f"all {self.capacity} slots of the engine are in use")
        slot = int(free[0])
        self.in_use[slot] = True
        self._zero_state(slot)
        self.temperature[slot] = params.temperature
        self.top_k[slot] = params.top_k
        self.top_p[slot] = params.top_p
        seed = int(params.seed) if params.seed is not None else secrets.randbits(64)
        self.key[slot] = seed_key(seed)
        self.count[slot] = 0
        self.logprobs[slot] = params.logprobs
        return slot

    def close(self, slot: int) -> None:
        self.in_use[slot] = False

    def _zero_state(self, slot: int) -> None:
        raise NotImplementedError

    def copy_state(self, src: int, dst: int) -> None:
        """Give ``dst`` the recurrent state (and scores) of ``src`` (prime once, copy for ``n > 1``)."""
        self.scores[dst] = self.scores[src]

    def _slots(self, slots) -> np.ndarray:
        if not (isinstance(slots, np.ndarray) and slots.dtype == np.int64 and slots.ndim == 1):
            slots = np.atleast_1d(np.asarray(slots, dtype=np.int64))
        n = len(slots)
        if n and not (0 <= slots.min() and slots.max() < self.capacity and self.in_use[slots].all()):
            raise CharRNNError(f"slots {slots.tolist()} are not all open")
        if n > 1 and len(np.unique(slots)) < n:
            raise CharRNNError(f"slots {slots.tolist()} repeat a slot")
        return slots

    def _tokens(self, tokens, n: int) -> np.ndarray:
        if not (isinstance(tokens, np.ndarray) and tokens.dtype == np.int64 and tokens.shape == (n,)):
            tokens = np.ascontiguousarray(np.broadcast_to(np.asarray(tokens, dtype=np.int64), (n,)))
        if n and not (0 <= tokens.min() and tokens.max() < self.vocab_size):
            raise InvalidInput("tokens", f"must lie in [0, {self.vocab_size})")
        return np.ascontiguousarray(tokens)

    def first(self, slots) -> np.ndarray:
        """A first token without a prompt, as torch-rnn: uniform (argmax rows: token 0). One draw."""
        slots = self._slots(slots)
        u = uniforms(self.key[slots], self.count[slots])
        self.count[slots] += np.uint64(1)
        tokens = np.minimum((u * self.vocab_size).astype(np.int64), self.vocab_size - 1)
        tokens[self.temperature[slots] == 0] = 0
        return tokens

    def _draw(self, slots: np.ndarray) -> np.ndarray:
        """Tokens for ``slots`` from ``self.scores`` by the sampling rule (the caller counts the draw)."""
        u = uniforms(self.key[slots], self.count[slots])
        return sample_rows(self.scores[slots], self.temperature[slots], self.top_k[slots], self.top_p[slots], u)

    def _with_logprobs(self, slots: np.ndarray, tokens: np.ndarray):
        self.count[slots] += np.uint64(1)
        if not self.logprobs[slots].any():
            return tokens
        return tokens, [self._logprobs(s, t) for s, t in zip(slots, tokens)]

    def _logprobs(self, slot: int, token: int) -> StepLogprobs | None:
        n = int(self.logprobs[slot])
        if not n:
            return None
        z = self.scores[slot].astype(np.float64)
        z -= z.max()
        logp = z - np.log(np.exp(z).sum())
        top = np.argsort(-logp, kind="stable")[:n]
        return StepLogprobs(float(logp[token]), [(int(i), float(logp[i])) for i in top])

    def sample(self, slots) -> np.ndarray | tuple[np.ndarray, list]:
        """The next token of each slot from its current scores, with its own params and random stream.

        With ``logprobs`` set on any of the slots, returns ``(tokens, [StepLogprobs | None per slot])``.
        """
        slots = self._slots(slots)
        return self._with_logprobs(slots, self._draw(slots))

    def generate(self, slots, steps: int) -> np.ndarray:
        """``steps`` times: sample each slot's next token, then feed it. Returns (len(slots), steps) tokens."""
        slots = self._slots(slots)
        out = np.empty((len(slots), steps), np.int64)
        for t in range(steps):
            out[:, t] = self._draw(slots)
            self.count[slots] += np.uint64(1)
            self.feed(slots, out[:, t])
        return out


class Engine(Slots):
    """Steps up to ``capacity`` independent rows (slots) of one model on the CPU.

    ``open(params)`` returns a slot with a zero state; ``feed(slots, tokens)`` advances slots by
    one input token each (0-based ids); ``sample(slots)`` draws each slot's next token from its
    current state; ``first(slots)`` draws a first token without a prompt. ``generate`` and
    ``prime`` run many steps in one call (fast paths for whole samples and prompts).
    """

    def __init__(self, config: ModelConfig, weights: "dict | PreparedModel", capacity: int = 1,
                 backend: str = "auto") -> None:
        if capacity < 1:
            raise InvalidInput("capacity", f"must be positive (got {capacity})")
        self.model = weights if isinstance(weights, PreparedModel) else PreparedModel(config, weights)
        self.backend = choose_backend(backend)
        m = self.model
        self._init_slots(capacity, m.vocab_size)
        self.h = np.zeros((capacity, m.L * m.H), np.float32)
        self.c = np.zeros((capacity, m.L * m.H), np.float32)
        if self.backend == "numba":
            from . import engine_numba
            self._kernels = engine_numba

    @classmethod
    def from_model(cls, model: "CharRNN", capacity: int = 1, backend: str = "auto") -> "Engine":
        """An engine with the current weights of a PyTorch model (any device, any mode)."""
        return cls(model.config, numpy_weights(model), capacity, backend)

    def _zero_state(self, slot: int) -> None:
        self.h[slot] = 0
        self.c[slot] = 0

    def copy_state(self, src: int, dst: int) -> None:
        """Give ``dst`` the recurrent state of ``src`` (prime once, copy for ``n > 1``)."""
        self.h[dst] = self.h[src]
        self.c[dst] = self.c[src]

    # -- stepping ----------------------------------------------------------------------------------
    def feed(self, slots, tokens) -> None:
        """Advance each slot by one input token (0-based ids)."""
        slots = self._slots(slots)
        tokens = self._tokens(tokens, len(slots))
        if self.backend == "numba":
            self._kernels.feed(self, slots, tokens)
        else:
            _feed_numpy(self, _rows(slots), tokens)

    def prime(self, slot: int, tokens) -> None:
        """Feed a whole sequence of tokens to one slot."""
        slots = self._slots([slot])
        tokens = np.asarray(tokens, dtype=np.int64).ravel()
        tokens = self._tokens(tokens, len(tokens))
        if self.backend == "numba":
            self._kernels.prime(self, slots[0], tokens)
        else:
            for t in tokens:
                _feed_numpy(self, slice(slot, slot + 1), t[None])

    def sample(self, slots) -> np.ndarray | tuple[np.ndarray, list]:
        """The next token of each slot from its current state, with its own params and random stream.

        With ``logprobs`` set on any of the slots, returns ``(tokens, [StepLogprobs | None per slot])``.
        """
        slots = self._slots(slots)
        if self.backend == "numba":
            tokens = self._kernels.sample(self, slots)
        else:
            self.scores[slots] = _head_numpy(self, slots)
            tokens = self._draw(slots)
        return self._with_logprobs(slots, tokens)

    def generate(self, slots, steps: int) -> np.ndarray:
        """``steps`` times: sample each slot's next token, then feed it. Returns (len(slots), steps) tokens.

        Gives exactly what alternating :meth:`sample` and :meth:`feed` gives (no logprobs).
        """
        slots = self._slots(slots)
        out = np.empty((len(slots), steps), np.int64)
        if self.backend == "numba":
            self._kernels.generate(self, slots, out)
            return out
        rows = _rows(slots)
        for t in range(steps):
            self.scores[rows] = _head_numpy(self, rows)
            out[:, t] = sample_rows(self.scores[rows], self.temperature[rows], self.top_k[rows], self.top_p[rows],
                                    uniforms(self.key[rows], self.count[rows]))
            self.count[rows] += np.uint64(1)
            _feed_numpy(self, rows, out[:, t])
        return out


# -- the NumPy backend ---------------------------------------------------------------------------
def _rows(slots: np.ndarray) -> np.ndarray | slice:
    """A slice when the slots are consecutive (views instead of copies), else the slots."""
    if len(slots) and slots[-1] - slots[0] == len(slots) - 1 and (np.diff(slots) == 1).all():
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return slots


def _feed_numpy(engine: Engine, slots: np.ndarray | slice, tokens: np.ndarray) -> None:
    m = engine.model
    H = m.H
    h, c = engine.h[slots], engine.c[slots]  # views for a slice
    for l in range(m.L):
        own = h[:, l * H:(l + 1) * H]
        if m.kind == "gru":
            gx = m.table0[tokens] if l == 0 else h[:, (l - 1) * H:l * H] @ m.wih[l - 1] + m.bih[l - 1]
            gh = own @ m.whh[l] + m.bhh[l]
            rz = 0.5 * np.tanh(0.5 * (gx[:, :2 * H] + gh[:, :2 * H])) + 0.5
            n = np.tanh(gx[:, 2 * H:] + rz[:, :H] * gh[:, 2 * H:])
            own[:] = n + rz[:, H:] * (own - n)
            continue
        if l == 0:
            a = own @ m.whh0 + m.table0[tokens]
        else:
            a = h[:, (l - 1) * H:(l + 1) * H] @ m.wcat[l - 1] + m.bias[l - 1]
        if m.kind == "rnn":
            own[:] = np.tanh(a)
            continue
        a = np.tanh(a)
        sig = a[:, :3 * H] * 0.5 + 0.5
        cl = c[:, l * H:(l + 1) * H]
        cl *= sig[:, H:2 * H]
        cl += sig[:, :H] * a[:, 3 * H:]
        own[:] = sig[:, 2 * H:3 * H] * np.tanh(cl)
    if not isinstance(slots, slice):
        engine.h[slots], engine.c[slots] = h, c


def _head_numpy(engine: Engine, slots: np.ndarray | slice) -> np.ndarray:
    m = engine.model
    return engine.h[slots, (m.L - 1) * m.H:] @ m.head_w + m.head_b


def sample_rows(scores: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                u: np.ndarray) -> np.ndarray:
    """One token per row of ``scores`` (float32 logits) by the engine's sampling rule (see the module)."""
    n, V = scores.shape
    tokens = scores.argmax(axis=1)
    rows = np.flatnonzero(temperature > 0)
    if not len(rows):
        return tokens
    z = scores[rows].astype(np.float64)
    w = np.exp((z - z.max(axis=1, keepdims=True)) / temperature[rows, None])
    k, p = top_k[rows], top_p[rows]
    cut = ((k > 0) & (k < V)) | (p < 1)
    if cut.any():
        w[cut] = _cut(w[cut], k[cut], p[cut])
    cum = np.cumsum(w, axis=1)
    target = u[rows] * cum[:, -1]
    pick = (cum <= target[:, None]).sum(axis=1)
    over = pick >= V  # u * total rounded up to total: the last token with weight
    if over.any():
        pick[over] = V - 1 - np.argmax(w[over, ::-1] > 0, axis=1)
    tokens[rows] = pick
    return tokens


def _cut(w: np.ndarray, k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Zero the weights outside top-k, then outside top-p (ties at a cut are kept)."""
    V = w.shape[1]
    s = -np.sort(-w, axis=1)
    kk = np.where((k > 0) & (k < V), k, V)
    kth = s[np.arange(len(s)), kk - 1]
    s = np.where(s >= kth[:, None], s, 0.0)
    cum = np.cumsum(s, axis=1)
    at = np.minimum((cum < (p * cum[:, -1])[:, None]).sum(axis=1), V - 1)
    thr = np.where(p < 1, np.maximum(s[np.arange(len(s)), at], kth), kth)
    return np.where(w >= thr[:, None], w, 0.0)
