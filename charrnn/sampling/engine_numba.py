"""The engine's compiled backend: whole steps (all layers, head and sampling) as numba kernels.

Imported only when the ``numba`` backend is chosen (``pip install 'charrnn[fast]'``). The matrix
products run in register blocks of :data:`PANEL` output columns (:mod:`charrnn.sampling.panels`,
weights rearranged once into panels), one or two rows at a time; every sum runs over the inputs in
order, so a row's arithmetic, and so its text, does not depend on the batch it runs in. Rows go in
tiles of :data:`TILE`; ``generate`` runs many steps per call with the tiles spread over threads.
``tanh`` is evaluated in float64 by a short polynomial (vectorisable, unlike libm's) and rounded
to float32. The sampling rule and random stream are those of :mod:`charrnn.sampling.engine`.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from . import panels
from .engine import PARALLEL_MIN_ROWS

TILE = 8
PANEL = 64  # output columns per register block
FM = {"contract"}  # fused multiply-add, no reassociation: sums keep their order
JIT = dict(cache=True, fastmath=FM, error_model="numpy")
F32_HALF = np.float32(0.5)
GAMMA, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
KIND = {"lstm": 0, "gru": 1, "rnn": 2}


def _tune() -> bool:
    """True on AVX-512 hosts; there, unless the user configured numba's CPU features, let LLVM use
    512-bit vectors (its default tuning prefers 256). Only speed depends on this, never results."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    wide = bool(features.get("avx512f"))
    if wide and not numba.config.CPU_FEATURES and not numba.config.CPU_NAME:
        numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    return wide


WIDE = _tune()


@njit(inline="always", **JIT)
def _tanh(x):
    """tanh of a float32, in float64: exp(-2|x|) = exp(-|x|/16)^32 (Taylor of degree 11, then squaring)."""
    a = min(abs(np.float64(x)), 9.0)
    y = -a * 0.0625
    e = 1.0 + y * (1.0 + y * (1 / 2 + y * (1 / 6 + y * (1 / 24 + y * (1 / 120 + y * (1 / 720 + y * (
        1 / 5040 + y * (1 / 40320 + y * (1 / 362880 + y * (1 / 3628800 + y / 39916800))))))))))
    e *= e
    e *= e
    e *= e
    e *= e
    e *= e
    t = (1.0 - e) / (1.0 + e)
    if a < 2.0 ** -10:  # 1 - e cancels: the series is exact to float32 here
        t = a * (1.0 - a * a * (1 / 3))
    return np.float32(t if x >= 0 else -t)


@njit(inline="always", **JIT)
def _uniform(key, count):
    """Draw ``count`` of the stream ``key`` (SplitMix64, as :func:`charrnn.sampling.engine.uniforms`)."""
    x = key + (count + np.uint64(1)) * GAMMA
    x = x ^ (x >> np.uint64(30))
    x = x * MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * MIX2
    x = x ^ (x >> np.uint64(31))
    return np.float64(x >> np.uint64(11)) * (2.0 ** -53)


@njit(**JIT)
def _acc(h, rows, off, n, wp, A):
    """A[r] += h[rows[r], off:off+n] @ W (W as panels), four (with AVX-512's 32 registers) or two rows at a time."""
    r = 0
    while WIDE and r + 3 < len(rows):
        x = h[rows[r:r + 4], off:off + n]
        panels.panel4(x[0], x[1], x[2], x[3], wp, A[r], A[r + 1], A[r + 2], A[r + 3])
        r += 4
    while r + 1 < len(rows):
        panels.panel2(h[rows[r], off:off + n], h[rows[r + 1], off:off + n], wp, A[r], A[r + 1])
        r += 2
    if r < len(rows):
        panels.panel1(h[rows[r], off:off + n], wp, A[r])


@njit(**JIT)
def _feed_tile(kind, rows, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B):
    """Advance the rows ``rows`` of the state (h, c) by one token each. kind: 0 lstm, 1 gru, 2 rnn."""
    R = len(rows)
    for l in range(L):
        own = l * H
        for r in range(R):
            A[r] = table0[tokens[r]] if l == 0 else (bih[l - 1] if kind == 1 else bias[l - 1])
        if kind == 1:
            for r in range(R):
                B[r] = bhh[l]
            if l > 0:
                _acc(h, rows, (l - 1) * H, H, wih[l - 1], A)
            _acc(h, rows, own, H, whh[l], B)
            for r in range(R):
                hr = h[rows[r]]
                for j in range(H):
                    rg = F32_HALF * _tanh(F32_HALF * (A[r, j] + B[r, j])) + F32_HALF
                    zg = F32_HALF * _tanh(F32_HALF * (A[r, H + j] + B[r, H + j])) + F32_HALF
                    n = _tanh(A[r, 2 * H + j] + rg * B[r, 2 * H + j])
                    hr[own + j] = n + zg * (hr[own + j] - n)
            continue
        if l == 0:
            _acc(h, rows, 0, H, whh0, A)
        else:
            _acc(h, rows, (l - 1) * H, 2 * H, wcat[l - 1], A)
        for r in range(R):
            hr, cr = h[rows[r]], c[rows[r]]
            if kind == 2:
                for j in range(H):
                    hr[own + j] = _tanh(A[r, j])
                continue
            for j in range(H):
                i_g = F32_HALF * _tanh(A[r, j]) + F32_HALF
                f_g = F32_HALF * _tanh(A[r, H + j]) + F32_HALF
                o_g = F32_HALF * _tanh(A[r, 2 * H + j]) + F32_HALF
                g = _tanh(A[r, 3 * H + j])
                cv = cr[own + j] * f_g
                cv += i_g * g
                cr[own + j] = cv
                hr[own + j] = o_g * _tanh(cv)


@njit(**JIT)
def _draw(z, T, k, p, u, w, s):
    """One token from float32 scores ``z`` by the engine's rule; w, s: float64 scratch of len(z)."""
    V = len(z)
    best = 0
    for j in range(1, V):
        if z[j] > z[best]:
            best = j
    if T == 0:
        return best
    m = np.float64(z[best])
    for j in range(V):
        w[j] = np.exp((np.float64(z[j]) - m) / T)
    if (0 < k < V) or p < 1:
        s[:] = w
        s.sort()
        s[:] = s[::-1].copy()
        kth = s[k - 1] if 0 < k < V else s[V - 1]
        total = 0.0
        for j in range(V):
            if s[j] < kth:
                s[j] = 0.0
            total += s[j]
        thr = kth
        if p < 1:
            bound, cum, at = p * total, 0.0, V - 1
            for j in range(V):
                cum += s[j]
                if not cum < bound:
                    at = j
                    break
            thr = max(s[at], kth)
        for j in range(V):
            if w[j] < thr:
                w[j] = 0.0
    total = 0.0
    for j in range(V):
        total += w[j]
    target, cum, last = u * total, 0.0, 0
    for j in range(V):
        cum += w[j]
        if w[j] > 0:
            last = j
        if cum > target:
            return j
    return last


@njit(**JIT)
def _sample_tile(rows, h, off, H, head, head_b, scores, temp, top_k, top_p, key, count, S, w, s, out, col):
    """Draw the next token of each row of a tile into out[:, col]; keeps the scores."""
    V = scores.shape[1]
    for r in range(len(rows)):
        S[r] = head_b
    _acc(h, rows, off, H, head, S)
    for r in range(len(rows)):
        q = rows[r]
        scores[q] = S[r, :V]
        out[r, col] = _draw(S[r, :V], temp[q], top_k[q], top_p[q], _uniform(key[q], count[q]), w, s)


def _make_kernels(parallel: bool):
    rng = prange if parallel else range

    @njit(parallel=parallel, **JIT)
    def feed(kind, slots, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh):
        n, GH = len(slots), table0.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            A = np.empty((TILE, GH), np.float32)
            B = np.empty((TILE, GH), np.float32)
            _feed_tile(kind, slots[lo:hi], tokens[lo:hi], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih,
                       bhh, A, B)

    @njit(parallel=parallel, **JIT)
    def sample(slots, h, off, H, head, head_b, scores, temp, top_k, top_p, key, count, out):
        n, V = len(slots), scores.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            S = np.empty((TILE, head_b.shape[0]), np.float32)
            w, s = np.empty(V), np.empty(V)
            _sample_tile(slots[lo:hi], h, off, H, head, head_b, scores, temp, top_k, top_p, key, count, S, w, s,
                         out[lo:hi], 0)

    @njit(parallel=parallel, **JIT)
    def generate(kind, slots, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, head, head_b, scores,
                 temp, top_k, top_p, key, count, out):
        n, GH, V = len(slots), table0.shape[1], scores.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            rows = slots[lo:hi]
            A = np.empty((TILE, GH), np.float32)
            B = np.empty((TILE, GH), np.float32)
            S = np.empty((TILE, head_b.shape[0]), np.float32)
            w, s = np.empty(V), np.empty(V)
            o = out[lo:hi]
            for step in range(out.shape[1]):
                _sample_tile(rows, h, (L - 1) * H, H, head, head_b, scores, temp, top_k, top_p, key, count, S, w,
                             s, o, step)
                for q in rows:
                    count[q] += np.uint64(1)
                _feed_tile(kind, rows, o[:, step], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B)

    return feed, sample, generate


@njit(**JIT)
def _prime(kind, slot, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh):
    A = np.empty((1, table0.shape[1]), np.float32)
    B = np.empty((1, table0.shape[1]), np.float32)
    for t in range(len(tokens)):
        _feed_tile(kind, slot, tokens[t:t + 1], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B)


_SERIAL = _make_kernels(False)
_PARALLEL = _make_kernels(True)
_COMPILED: set = set()
_PARALLEL_LOCK = threading.Lock()  # numba's workqueue threading layer must not be entered from two threads


def _call(kernel, *args):
    """Call a kernel; its first call compiles with LLVM's SLP vectoriser on (numba's default is off)."""
    if kernel in _PARALLEL:
        with _PARALLEL_LOCK:
            return _compiled_call(kernel, *args)
    return _compiled_call(kernel, *args)


def _compiled_call(kernel, *args):
    if kernel in _COMPILED:
        return kernel(*args)
    before = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        return kernel(*args)
    finally:
        numba.config.SLP_VECTORIZE = before
        _COMPILED.add(kernel)


# -- weights as panels ---------------------------------------------------------------------------
def _pad(a: np.ndarray) -> np.ndarray:
    """Zero columns up to a multiple of PANEL on the last axis."""
    extra = -a.shape[-1] % PANEL
    return np.ascontiguousarray(np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)]), dtype=np.float32)


def _panels(w: np.ndarray) -> np.ndarray:
    """(..., n, J) -> (..., J/PANEL, n, PANEL): each block of PANEL columns contiguous."""
    w = _pad(w)
    *lead, n, J = w.shape
    return np.ascontiguousarray(np.moveaxis(w.reshape(*lead, n, J // PANEL, PANEL), -2, -3))


class Weights:
    """A :class:`charrnn.sampling.engine.PreparedModel` in the kernels' layout (matrices as panels, rows padded)."""

    def __init__(self, m) -> None:
        self.kind, self.H, self.L = KIND[m.kind], m.H, m.L
        self.layers = (m.H, m.L, _pad(m.table0), _panels(m.whh0), _panels(m.wcat), _pad(m.bias), _panels(m.wih),
                       _panels(m.whh), _pad(m.bih), _pad(m.bhh))
        self.head, self.head_b = _panels(m.head_w), _pad(m.head_b)


def _weights(engine) -> Weights:
    m = engine.model
    if getattr(m, "numba_weights", None) is None:
        m.numba_weights = Weights(m)
    return m.numba_weights


def _kernels(n: int):
    return _PARALLEL if n >= PARALLEL_MIN_ROWS else _SERIAL


def feed(engine, slots: np.ndarray, tokens: np.ndarray) -> None:
    w = _weights(engine)
    _call(_kernels(len(slots))[0], w.kind, slots, tokens, engine.h, engine.c, *w.layers)


def prime(engine, slot: int, tokens: np.ndarray) -> None:
    w = _weights(engine)
    _call(_prime, w.kind, np.array([slot], np.int64), tokens, engine.h, engine.c, *w.layers)


def sample(engine, slots: np.ndarray) -> np.ndarray:
    w, e = _weights(engine), engine
    out = np.empty((len(slots), 1), np.int64)
    _call(_kernels(len(slots))[1], slots, e.h, (w.L - 1) * w.H, w.H, w.head, w.head_b, e.scores, e.temperature,
          e.top_k, e.top_p, e.key, e.count, out)
    return out[:, 0]


def generate(engine, slots: np.ndarray, out: np.ndarray) -> None:
    w, e = _weights(engine), engine
    _call(_kernels(len(slots))[2], w.kind, slots, e.h, e.c, *w.layers, w.head, w.head_b, e.scores, e.temperature,
          e.top_k, e.top_p, e.key, e.count, out)


# -- the register-blocked products (generated into charrnn/sampling/panels.py) --------------------
def panel_source(width: int = PANEL, row_counts: tuple = (1, 2, 4)) -> str:
    """Source of ``panel1``, ``panel2``, ...: ``y_r += x_r @ W`` for 1, 2, ... rows, W in panels of ``width`` columns.

    Each panel's ``rows x width`` sums live in scalar variables (registers, packed into SIMD by
    LLVM's SLP vectoriser) across the whole input loop; every sum runs over the inputs in order, so
    a row's result does not depend on how many rows share the call.
    """
    out = ['"""Generated by ``charrnn.sampling.engine_numba.panel_source``; do not edit (a test checks it)."""', "",
           "from numba import njit", ""]
    for rows in row_counts:
        rs, qs = range(rows), range(width)
        xs, ys = ", ".join(f"x{r}" for r in rs), ", ".join(f"y{r}" for r in rs)
        out += ["", '@njit(cache=True, fastmath={"contract"}, error_model="numpy")',
                f"def panel{rows}({xs}, wp, {ys}):",
                f'    """y_r[:] += x_r @ W for {rows} row(s); wp: (n_panels, n_inputs, {width})."""',
                "    for p in range(wp.shape[0]):"]
        out += [f"        v{r} = y{r}[p * {width}:(p + 1) * {width}]" for r in rs]
        out += [f"        a{r}_{q} = v{r}[{q}]" for r in rs for q in qs]
        out += ["        for i in range(wp.shape[1]):", "            w = wp[p, i]"]
        out += [f"            s{r} = x{r}[i]" for r in rs]
        for q in qs:
            out.append(f"            w{q} = w[{q}]")
            out += [f"            a{r}_{q} += s{r} * w{q}" for r in rs]
        out += [f"        v{r}[{q}] = a{r}_{q}" for r in rs for q in qs]
    return "\n".join(out) + "\n"
