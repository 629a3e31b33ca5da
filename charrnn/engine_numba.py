"""The engine's compiled backend: whole steps (all layers, head and sampling) as numba kernels.

Imported only when the ``numba`` backend is chosen (``pip install 'charrnn[fast]'``). Rows are
processed in tiles of :data:`TILE`, so each weight row is read once per tile; a row's arithmetic
is the same whatever tile or batch it runs in (its sums run in the same order), so a row's text
does not depend on the batch. ``generate`` runs many steps per call, tiles spread over threads.
``tanh`` is evaluated in float64 by a short polynomial (vectorisable, unlike libm's) and rounded
to float32; the sampling rule and random stream are those of :mod:`charrnn.engine`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

TILE = 8
PARALLEL_MIN_ROWS = 2 * TILE
FM = {"contract"}  # fused multiply-add, no reassociation: sums keep their order
F32_HALF = np.float32(0.5)
GAMMA, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
INV_FACT = tuple(1.0 / np.prod(np.arange(1, n + 1, dtype=np.float64)) for n in range(12))


@njit(cache=True, fastmath=FM, inline="always")
def _tanh(x):
    """tanh of a float32, computed in float64: exp(-2|x|) = exp(-2|x|/32)^32 by Taylor and squaring."""
    a = min(abs(np.float64(x)), 9.0)
    y = -a / 16.0
    e = INV_FACT[11]
    for n in range(10, -1, -1):
        e = e * y + INV_FACT[n]
    for _ in range(5):
        e = e * e
    t = (1.0 - e) / (1.0 + e)
    return np.float32(t if x >= 0 else -t)


@njit(cache=True, fastmath=FM, inline="always")
def _uniform(key, count):
    """Draw ``count`` of the stream ``key`` (SplitMix64, as :func:`charrnn.engine.uniforms`)."""
    x = key + (count + np.uint64(1)) * GAMMA
    x = x ^ (x >> np.uint64(30))
    x = x * MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * MIX2
    x = x ^ (x >> np.uint64(31))
    return np.float64(x >> np.uint64(11)) * (2.0 ** -53)


@njit(cache=True, fastmath=FM)
def _acc(h, rows, off, n, W, A):
    """A[r] += h[rows[r], off:off+n] @ W, summing over inputs in order."""
    J = W.shape[1]
    for i in range(n):
        w = W[i]
        for r in range(len(rows)):
            x = h[rows[r], off + i]
            a = A[r]
            for j in range(J):
                a[j] += x * w[j]


@njit(cache=True, fastmath=FM)
def _feed_tile(kind, rows, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B):
    """Advance the rows ``rows`` of the state (h, c) by one token each. kind: 0 lstm, 1 gru, 2 rnn."""
    R = len(rows)
    GH = table0.shape[1]
    for l in range(L):
        own = l * H
        for r in range(R):
            src = table0[tokens[r]] if l == 0 else (bih[l - 1] if kind == 1 else bias[l - 1])
            for j in range(GH):
                A[r, j] = src[j]
        if kind == 1:
            for r in range(R):
                for j in range(GH):
                    B[r, j] = bhh[l, j]
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


@njit(cache=True, fastmath=FM)
def _logits(rows, h, off, head_w, head_b, S):
    """S[r] = h[rows[r], off:] @ head_w + head_b for a tile."""
    V = head_w.shape[1]
    for r in range(len(rows)):
        for j in range(V):
            S[r, j] = 0.0
    _acc(h, rows, off, head_w.shape[0], head_w, S)
    for r in range(len(rows)):
        for j in range(V):
            S[r, j] += head_b[j]


@njit(cache=True, fastmath=FM)
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
        s[:] = np.sort(w)[::-1]
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


@njit(cache=True, fastmath=FM)
def _sample_tile(rows, h, off, head_w, head_b, scores, temp, top_k, top_p, key, count, S, w, s, out, col):
    """Draw the next token of each row of a tile into out[:, col]; keeps the logits in scores."""
    _logits(rows, h, off, head_w, head_b, S)
    for r in range(len(rows)):
        q = rows[r]
        scores[q] = S[r]
        u = _uniform(key[q], count[q])
        out[r, col] = _draw(S[r], temp[q], top_k[q], top_p[q], u, w, s)


def _make_kernels(parallel: bool):
    rng = prange if parallel else range

    @njit(cache=True, fastmath=FM, parallel=parallel)
    def feed(kind, slots, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh):
        n, GH = len(slots), table0.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            A = np.empty((TILE, GH), np.float32)
            B = np.empty((TILE, GH), np.float32)
            _feed_tile(kind, slots[lo:hi], tokens[lo:hi], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih,
                       bhh, A, B)

    @njit(cache=True, fastmath=FM, parallel=parallel)
    def sample(slots, h, off, head_w, head_b, scores, temp, top_k, top_p, key, count, out):
        n, V = len(slots), head_w.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            S = np.empty((TILE, V), np.float32)
            w, s = np.empty(V), np.empty(V)
            _sample_tile(slots[lo:hi], h, off, head_w, head_b, scores, temp, top_k, top_p, key, count, S, w, s,
                         out[lo:hi], 0)

    @njit(cache=True, fastmath=FM, parallel=parallel)
    def generate(kind, slots, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, head_w, head_b, scores,
                 temp, top_k, top_p, key, count, out):
        n, GH, V = len(slots), table0.shape[1], head_w.shape[1]
        steps = out.shape[1]
        for t in rng((n + TILE - 1) // TILE):
            lo, hi = t * TILE, min(n, (t + 1) * TILE)
            rows = slots[lo:hi]
            A = np.empty((TILE, GH), np.float32)
            B = np.empty((TILE, GH), np.float32)
            S = np.empty((TILE, V), np.float32)
            w, s = np.empty(V), np.empty(V)
            o = out[lo:hi]
            for step in range(steps):
                _sample_tile(rows, h, (L - 1) * H, head_w, head_b, scores, temp, top_k, top_p, key, count, S, w,
                             s, o, step)
                for q in rows:
                    count[q] += np.uint64(1)
                _feed_tile(kind, rows, o[:, step], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B)

    return feed, sample, generate


@njit(cache=True, fastmath=FM)
def _prime(kind, slot, tokens, h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh):
    A = np.empty((1, table0.shape[1]), np.float32)
    B = np.empty((1, table0.shape[1]), np.float32)
    for t in range(len(tokens)):
        _feed_tile(kind, slot, tokens[t:t + 1], h, c, H, L, table0, whh0, wcat, bias, wih, whh, bih, bhh, A, B)


_SERIAL = _make_kernels(False)
_PARALLEL = _make_kernels(True)
KIND = {"lstm": 0, "gru": 1, "rnn": 2}


def _kernels(n: int):
    return _PARALLEL if n >= PARALLEL_MIN_ROWS else _SERIAL


def _weights(m) -> tuple:
    return (m.H, m.L, m.table0, m.whh0, m.wcat, m.bias, m.wih, m.whh, m.bih, m.bhh)


def feed(engine, slots: np.ndarray, tokens: np.ndarray) -> None:
    m = engine.model
    _kernels(len(slots))[0](KIND[m.kind], slots, tokens, engine.h, engine.c, *_weights(m))


def prime(engine, slot: int, tokens: np.ndarray) -> None:
    m = engine.model
    _prime(KIND[m.kind], np.array([slot], np.int64), tokens, engine.h, engine.c, *_weights(m))


def sample(engine, slots: np.ndarray) -> np.ndarray:
    m, e = engine.model, engine
    out = np.empty((len(slots), 1), np.int64)
    _kernels(len(slots))[1](slots, e.h, (m.L - 1) * m.H, m.head_w, m.head_b, e.scores, e.temperature, e.top_k,
                            e.top_p, e.key, e.count, out)
    return out[:, 0]


def generate(engine, slots: np.ndarray, out: np.ndarray) -> None:
    m, e = engine.model, engine
    _kernels(len(slots))[2](KIND[m.kind], slots, e.h, e.c, *_weights(m), m.head_w, m.head_b, e.scores,
                            e.temperature, e.top_k, e.top_p, e.key, e.count, out)
