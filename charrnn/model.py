"""The character-level language model: embedding, stacked recurrent layers, linear output.

Mirrors torch-rnn's LanguageModel: ``LookupTable(V, D)``, then per layer an LSTM/GRU/RNN of
``H`` units (PyTorch's fused kernels, cuDNN on a GPU), optional batch normalisation and
dropout, then ``Linear(H, V)`` at every timestep.

On a GPU the recurrent layers always run in fp32 (TF32 where torch allows it), also under
autocast: CUDA autocast would run cuDNN's RNN in fp16 whatever dtype was asked for. Inter-layer
dropout on a GPU runs layer by layer, outside the fused kernel (same parameters, same keys):
cuDNN re-seeds its own dropout state after a restored random state, which would break exact
resume, and MPS's fused kernel mishandles the mask.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext

import torch
from torch import nn

from .config import INIT_SCHEMES, MODEL_TYPES, ModelConfig  # noqa: F401  (re-exported: charrnn.model.ModelConfig)
from .errors import InvalidInput
from .precision import BF16LSTMLayer, bf16_lstm_active

CELLS = {kind: getattr(nn, kind.upper()) for kind in MODEL_TYPES}  # torch names its modules LSTM, GRU, RNN

State = tuple  # (h, c) for an LSTM, (h,) otherwise; each of shape (num_layers, N, H), always fp32
LAYER_FUNCTIONS = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}


class CharRNN(nn.Module):
    layerwise: bool | None = None  # run the fused stack layer by layer; None: where dropout needs it (see _layerwise)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.model_type not in CELLS:
            raise InvalidInput("model_type", f"must be one of {', '.join(MODEL_TYPES)} (got {config.model_type!r})")
        self.config = config
        V, D, H = config.vocab_size, config.wordvec_size, config.rnn_size
        cell = CELLS[config.model_type]
        self.embed = nn.Embedding(V, D)
        if config.batchnorm:  # batch norm sits between layers: one module per layer
            self.rnns = nn.ModuleList(cell(D if i == 0 else H, H, batch_first=True) for i in range(config.num_layers))
            self.norms = nn.ModuleList(nn.BatchNorm1d(H) for _ in range(config.num_layers))
        else:  # one fused multi-layer module (cuDNN runs all layers in one call)
            between = config.dropout if config.num_layers > 1 else 0.0  # torch-rnn drops out after every layer
            self.rnns = nn.ModuleList([cell(D, H, config.num_layers, batch_first=True, dropout=between)])
            self.norms = None
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.head = nn.Linear(H, V)
        self.reset_parameters()

    def reset_parameters(self, scheme: str = "torch-rnn", std: float = 0.05) -> None:
        """Initialise the weights; biases start at zero and an LSTM's forget-gate bias at 1.

        ``torch-rnn``: recurrent weights N(0, 1/sqrt(D + H)), embedding N(0, 1), output
        layer uniform(+-1/sqrt(H)), as torch-rnn did. ``xavier``: Glorot-uniform matrices.
        ``orthogonal``: orthogonal matrices (per gate block). ``normal``: every weight N(0, std).
        """
        if scheme not in INIT_SCHEMES:
            raise InvalidInput("weight_init", f"must be one of {', '.join(INIT_SCHEMES)} (got {scheme!r})")
        H = self.config.rnn_size
        if scheme == "normal":
            nn.init.normal_(self.embed.weight, 0.0, std)
            nn.init.normal_(self.head.weight, 0.0, std)
            nn.init.zeros_(self.head.bias)
        elif scheme != "torch-rnn":
            init = nn.init.xavier_uniform_ if scheme == "xavier" else nn.init.orthogonal_
            init(self.head.weight)
            nn.init.zeros_(self.head.bias)
        for rnn in self.rnns:
            for name, p in rnn.named_parameters():
                layer = int(name.rsplit("_l", 1)[1])
                input_size = rnn.input_size if layer == 0 else H
                if name.startswith("bias"):
                    nn.init.zeros_(p)
                    if isinstance(rnn, nn.LSTM) and name.startswith("bias_ih"):
                        with torch.no_grad():
                            p[H:2 * H].fill_(1.0)  # PyTorch's gate order is i, f, g, o
                elif scheme == "torch-rnn":
                    nn.init.normal_(p, 0.0, 1.0 / math.sqrt(input_size + H))
                elif scheme == "normal":
                    nn.init.normal_(p, 0.0, std)
                else:
                    init = nn.init.xavier_uniform_ if scheme == "xavier" else nn.init.orthogonal_
                    for block in p.split(H, dim=0):  # one matrix per gate
                        init(block)

    def forward(self, x: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """Scores (N, T, V) for token ids ``x`` (N, T), and the recurrent state after them.

        With ``targets``, returns the mean cross-entropy over all N*T positions instead of the
        scores (so that DistributedDataParallel, which wraps ``forward``, sees the loss).
        Under CPU bf16 autocast an LSTM takes the fused bf16 path (:meth:`_forward_bf16`).
        """
        if self.norms is None and self.config.model_type == "lstm" and bf16_lstm_active(x.device):
            return self._forward_bf16(x, state, targets)
        h = self.embed(x)
        if self.norms is None:
            h, new_state = self._recurrent(h, state)
            h = self.drop(h)
        else:
            layers = []
            for i, (rnn, norm) in enumerate(zip(self.rnns, self.norms)):
                with _fp32_recurrent(h.device):
                    h, s = rnn(h.float(), None if state is None else _unpack(tuple(t[i:i + 1].float() for t in state)))
                layers.append(_pack(s))
                n, t, H = h.shape
                h = self.drop(norm(h.reshape(n * t, H)).reshape(n, t, H))
            new_state = tuple(torch.cat(parts).float() for parts in zip(*layers))
        scores = self.head(h)
        if targets is None:
            return scores, new_state
        return nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]).float(), targets.reshape(-1)), new_state

    def _recurrent(self, h: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The fused stack's outputs and final state (fp32), in one call or layer by layer."""
        state = None if state is None else tuple(t.float() for t in state)  # an older file may hold fp16
        with _fp32_recurrent(h.device):
            if not self._layerwise(h.device):
                out, s = self.rnns[0](h.float(), _unpack(state))
                return out, tuple(t.float() for t in _pack(s))
            return self._layer_by_layer(h.float(), state)

    def _layerwise(self, device: torch.device) -> bool:
        """Layer by layer where the fused kernel's inter-layer dropout is wrong for us: CUDA while
        training (cuDNN's dropout state breaks exact resume), MPS always (mask and eval bugs)."""
        if self.layerwise is not None:
            return self.layerwise
        if self.rnns[0].dropout == 0:
            return False
        return device.type == "mps" or (device.type == "cuda" and self.training)

    def _layer_by_layer(self, h: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The fused module's computation, one layer per call, with ``F.dropout`` between layers
        (torch's own random stream, which checkpoints save and restore)."""
        rnn, L, H = self.rnns[0], self.config.num_layers, self.config.rnn_size
        lstm = self.config.model_type == "lstm"
        if state is None:
            state = tuple(h.new_zeros(L, h.shape[0], H) for _ in range(2 if lstm else 1))
        function, finals = LAYER_FUNCTIONS[self.config.model_type], []
        with warnings.catch_warnings():
            # cuDNN copies one layer's slice of the flat weight buffer per call, and says so each time
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
            for layer in range(L):
                if layer > 0:
                    h = nn.functional.dropout(h, rnn.dropout, self.training)
                weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                hx = tuple(t[layer:layer + 1] for t in state)
                out = function(h, hx if lstm else hx[0], weights, True, 1, 0.0, self.training, False, True)
                h = out[0]
                finals.append(out[1:])
        return h, tuple(torch.cat(parts) for parts in zip(*finals))

    def _forward_bf16(self, x: torch.Tensor, state: State | None, targets: torch.Tensor | None):
        """The same model, time-major, with oneDNN's bf16 LSTM layers and a bf16 output layer.

        fp32 master weights, each cast once per call; the embedding and the loss stay fp32.
        """
        rnn, L, H = self.rnns[0], self.config.num_layers, self.config.rnn_size
        with torch.autocast("cpu", enabled=False):
            h = self.embed(x.t().contiguous())  # (T, N, D)
            if state is None:
                state = (h.new_zeros(L, x.shape[0], H),) * 2
            finals = []
            for layer in range(L):
                if layer > 0:
                    h = nn.functional.dropout(h, rnn.dropout, self.training)
                weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                h, hy, cy = BF16LSTMLayer.apply(h, state[0][layer], state[1][layer], *weights, torch.is_grad_enabled())
                finals.append((hy, cy))
            h = self.drop(h)
            scores = nn.functional.linear(h, self.head.weight.to(torch.bfloat16), self.head.bias.to(torch.bfloat16))
            new_state = tuple(torch.stack(parts) for parts in zip(*finals))
            if targets is None:
                return scores.transpose(0, 1), new_state
            loss = nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]).float(), targets.t().reshape(-1))
        return loss, new_state

    def loss(self, x: torch.Tensor, y: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy over all N*T positions, and the state after the batch."""
        return self(x, state, y)


def _fp32_recurrent(device: torch.device):
    """Autocast off around the recurrent layers on a GPU (CUDA autocast would make them fp16 whatever
    was asked for) and under fp16 on a CPU (oneDNN has no fp16 LSTM); a CPU's bf16 is left alone."""
    if _recurrent_in_fp32(device):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _recurrent_in_fp32(device: torch.device) -> bool:
    if not torch.is_autocast_enabled(device.type):
        return False
    return device.type != "cpu" or torch.get_autocast_dtype("cpu") == torch.float16



def _pack(s) -> State:
    return s if isinstance(s, tuple) else (s,)


def _unpack(state: State | None):
    if state is None:
        return None
    return state if len(state) == 2 else state[0]


def detach_state(state: State | None) -> State | None:
    """Cut the graph at a minibatch boundary (truncated BPTT), keeping the values."""
    return None if state is None else tuple(t.detach() for t in state)


def parameter_groups(model: CharRNN) -> dict[str, list[nn.Parameter]]:
    """Parameters by layer, for per-layer statistics: embed, layer1..layerL, head."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name.startswith("rnns.") or name.startswith("norms."):
            parts = name.split(".")
            layer = int(parts[1]) if model.config.batchnorm or parts[0] == "norms" else int(parts[-1].rsplit("_l", 1)[1])
            key = f"layer{layer + 1}"
        else:
            key = name.split(".")[0]
        groups.setdefault(key, []).append(p)
    return groups
