"""A CPU sampling engine in NumPy: the trained network's exact arithmetic, one step per character.

PyTorch's per-call overhead (several microseconds per operator) dominates when a step is a
few small matrix-vector products, so on the CPU sampling runs on NumPy with everything
prepared once: the embedding is folded into the first layer's input weights (a table
lookup), each deeper layer multiplies one contiguous ``[h_below; h_own]`` slice, batch
normalisation (eval mode) is folded into the next weights, the temperature into the output
layer, and sampling is the Gumbel-max trick with noise drawn in blocks. All buffers are
allocated once; a step allocates nothing of size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .config import ModelConfig

if TYPE_CHECKING:
    from .model import CharRNN

NOISE_BLOCK = 1024


def numpy_weights(model: "CharRNN") -> dict[str, np.ndarray]:
    """A model's floating-point state as NumPy arrays (a copy, from any device)."""
    return {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items() if v.is_floating_point()}


def _layer_weights(config: ModelConfig, sd: dict) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(W_ih, W_hh, b_ih, b_hh) per layer, whatever the module layout."""
    if config.batchnorm:
        key = lambda l, name: f"rnns.{l}.{name}_l0"  # noqa: E731
    else:
        key = lambda l, name: f"rnns.0.{name}_l{l}"  # noqa: E731
    return [tuple(sd[key(l, n)] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for l in range(config.num_layers)]


def _batchnorm_affine(sd: dict, layer: int, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Scale and shift of a batch-norm layer in eval mode: BN(h) = h * s + t."""
    p = f"norms.{layer}."
    s = sd[p + "weight"] / np.sqrt(sd[p + "running_var"] + eps)
    return s, sd[p + "bias"] - sd[p + "running_mean"] * s


class NumpyEngine:
    """Steps ``K`` independent streams of a CharRNN; ``step(tokens)`` returns the next tokens."""

    def __init__(self, config: ModelConfig, weights: dict, streams: int = 1, temperature: float = 1.0,
                 argmax: bool = False, seed: int | None = None) -> None:
        cfg = config
        sd = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items() if not k.endswith("num_batches_tracked")}
        self.kind, self.K, self.H, self.L = cfg.model_type, streams, cfg.rnn_size, cfg.num_layers
        self.argmax = argmax
        H, L, K = self.H, self.L, streams
        layers = _layer_weights(cfg, sd)
        embed, head_w, head_b = sd["embed.weight"], sd["head.weight"], sd["head.bias"]
        if cfg.batchnorm:  # fold BN(h) = h*s + t into whatever reads h next
            for l in range(L):
                s, t = _batchnorm_affine(sd, l)
                if l + 1 < L:
                    w_ih, w_hh, b_ih, b_hh = layers[l + 1]
                    layers[l + 1] = (w_ih * s, w_hh, b_ih + w_ih @ t, b_hh)
                else:
                    head_b = head_b + head_w @ t
                    head_w = head_w * s
        if self.kind == "lstm":  # PyTorch's i, f, g, o -> i, f, o, g, and sigmoid(x) = 0.5 tanh(x/2) + 0.5
            order = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
            scale = np.r_[np.full(3 * H, 0.5), np.ones(H)].astype(np.float32)
            layers = [(w_ih[order] * scale[:, None], w_hh[order] * scale[:, None],
                       (b_ih[order] + b_hh[order]) * scale, None) for w_ih, w_hh, b_ih, b_hh in layers]
        elif self.kind == "rnn":
            layers = [(w_ih, w_hh, b_ih + b_hh, None) for w_ih, w_hh, b_ih, b_hh in layers]
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        w_ih0, w_hh0, b0, b_hh0 = layers[0]
        self.table0 = f32(embed @ w_ih0.T + b0)  # (V, G*H): layer 0's input projection per token
        self.whh0_t = f32(w_hh0.T)
        if self.kind == "gru":
            self.bhh = [f32(l[3]) for l in layers]
            self.wih_t = [None] + [f32(l[0].T) for l in layers[1:]]
            self.bih = [None] + [f32(l[2]) for l in layers[1:]]
            self.whh_t = [f32(l[1].T) for l in layers]
        else:  # one multiply per deeper layer over the contiguous [h_{l-1}; h_l] slice
            self.wcat_t = [None] + [f32(np.concatenate([w_ih, w_hh], axis=1).T) for w_ih, w_hh, _, _ in layers[1:]]
            self.bias = [None] + [f32(b) for _, _, b, _ in layers[1:]]
        inv_t = 1.0 / temperature if not argmax else 1.0
        self.head_w_t = f32(head_w.T * inv_t)
        self.head_b = f32(head_b * inv_t)
        G = {"lstm": 4, "gru": 3, "rnn": 1}[self.kind]
        self.h = np.zeros((K, L * H), np.float32)
        self.c = np.zeros((K, L * H), np.float32)
        self.gates = [np.zeros((K, G * H), np.float32) for _ in range(L)]
        self.gates_h = [np.zeros((K, G * H), np.float32) for _ in range(L)]
        self.tmp = np.zeros((K, H), np.float32)
        self.scores = np.zeros((K, head_w.shape[0]), np.float32)
        self.rng = np.random.default_rng(seed)
        self.block = max(1, min(NOISE_BLOCK, (1 << 20) // (streams * self.scores.shape[1])))
        self.noise, self.noise_at = None, self.block
        # views prepared once, so a step creates none
        self.h_own = [self.h[:, l * H:(l + 1) * H] for l in range(L)]
        self.h_pair = [None] + [self.h[:, (l - 1) * H:(l + 1) * H] for l in range(1, L)]
        self.c_own = [self.c[:, l * H:(l + 1) * H] for l in range(L)]

    @classmethod
    def from_model(cls, model: "CharRNN", streams: int = 1, temperature: float = 1.0, argmax: bool = False,
                   seed: int | None = None) -> "NumpyEngine":
        """An engine with the current weights of a PyTorch model (any device, any mode)."""
        return cls(model.config, numpy_weights(model), streams, temperature, argmax, seed)

    def reset(self) -> None:
        self.h[:] = 0
        self.c[:] = 0

    # -- cells -------------------------------------------------------------------------------------
    def _lstm(self, l: int, a: np.ndarray) -> None:
        H = self.H
        np.tanh(a, out=a)
        sig = a[:, :3 * H]
        sig *= 0.5
        sig += 0.5
        c, tmp = self.c_own[l], self.tmp
        c *= a[:, H:2 * H]
        np.multiply(a[:, :H], a[:, 3 * H:], out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(a[:, 2 * H:3 * H], tmp, out=self.h_own[l])

    def _gru(self, l: int, gx: np.ndarray) -> None:
        H, h = self.H, self.h_own[l]
        gh = self.gates_h[l]
        np.matmul(h, self.whh_t[l], out=gh)
        gh += self.bhh[l]
        rz = gx[:, :2 * H]
        rz += gh[:, :2 * H]
        np.tanh(np.multiply(rz, 0.5, out=rz), out=rz)
        rz *= 0.5
        rz += 0.5
        n = gx[:, 2 * H:]
        np.multiply(rz[:, :H], gh[:, 2 * H:], out=self.tmp)
        n += self.tmp
        np.tanh(n, out=n)
        np.subtract(h, n, out=self.tmp)  # h' = n + z * (h - n)
        self.tmp *= rz[:, H:]
        np.add(n, self.tmp, out=h)

    def feed(self, tokens: np.ndarray) -> None:
        """Advance every stream by one input token (0-based ids, shape (K,))."""
        for l in range(self.L):
            a = self.gates[l]
            if l == 0:
                if self.kind == "gru":
                    a[:] = self.table0[tokens]
                    self._gru(0, a)
                    continue
                np.matmul(self.h_own[0], self.whh0_t, out=a)
                a += self.table0[tokens]
            elif self.kind == "gru":
                np.matmul(self.h_own[l - 1], self.wih_t[l], out=a)
                a += self.bih[l]
                self._gru(l, a)
                continue
            else:
                np.matmul(self.h_pair[l], self.wcat_t[l], out=a)
                a += self.bias[l]
            if self.kind == "lstm":
                self._lstm(l, a)
            else:
                np.tanh(a, out=self.h_own[l])

    def choose(self) -> np.ndarray:
        """The next token of every stream (0-based), from the current state."""
        z = self.scores
        np.matmul(self.h_own[-1], self.head_w_t, out=z)
        z += self.head_b
        if not self.argmax:
            z += self._next_noise()
        return z.argmax(axis=1)

    def _next_noise(self) -> np.ndarray:
        if self.noise_at >= self.block:
            # Gumbel noise -log(-log(u)) in float32
            u = self.rng.random((self.block, self.K, self.scores.shape[1]), dtype=np.float32)
            np.clip(u, np.finfo(np.float32).tiny, np.float32(1 - 2 ** -24), out=u)  # keep both logs finite
            np.log(u, out=u)
            np.negative(u, out=u)
            np.log(u, out=u)
            np.negative(u, out=u)
            self.noise = u
            self.noise_at = 0
        self.noise_at += 1
        return self.noise[self.noise_at - 1]

    def first(self) -> np.ndarray:
        """The first token without start text: uniform (argmax: the first token), as torch-rnn."""
        if self.argmax:
            return np.zeros(self.K, dtype=np.int64)
        return self.rng.integers(0, self.scores.shape[1], size=self.K)
