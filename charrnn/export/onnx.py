"""One recurrent step as an ONNX graph, built with ``onnx``'s helper API from the prepared NumPy weights.

Inputs ``token`` (int64 [batch], 0-based ids) and ``state`` (float32 [batch, state_size], zeros to
start); outputs ``logits`` (float32 [batch, vocab]) and ``next_state``. For an LSTM the state is
``[h_0 .. h_{L-1}, c_0 .. c_{L-1}]``, else ``[h_0 .. h_{L-1}]``. The arithmetic is the engine's
(:class:`charrnn.sampling.engine.PreparedModel`), so the logits match it to float32 rounding.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import Unsupported, opt
from .model import ExportModel

OPSET = 17


class _Graph:
    """A tiny builder: each method adds a node and returns its output's name."""

    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self.n += 1
        name = name or f"c{self.n}"
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        self.n += 1
        out = f"{kind.lower()}{self.n}"
        self.nodes.append(self.helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def cols(self, x: str, start: int, stop: int) -> str:
        """x[:, start:stop]"""
        return self.op("Slice", x, self.const(np.array([start], np.int64)), self.const(np.array([stop], np.int64)),
                       self.const(np.array([1], np.int64)))

    def sigmoid_half(self, x: str) -> str:
        """0.5 tanh(x) + 0.5: the LSTM/GRU sigmoid of an input already halved."""
        half = self.const(np.array(0.5, np.float32))
        return self.op("Add", self.op("Mul", self.op("Tanh", x), half), half)


def _lstm_layer(g: _Graph, a: str, c: str, H: int) -> tuple[str, str]:
    a = g.op("Tanh", a)
    half = g.const(np.array(0.5, np.float32))
    sig = g.op("Add", g.op("Mul", g.cols(a, 0, 3 * H), half), half)
    i, f, o, gg = g.cols(sig, 0, H), g.cols(sig, H, 2 * H), g.cols(sig, 2 * H, 3 * H), g.cols(a, 3 * H, 4 * H)
    c_new = g.op("Add", g.op("Mul", c, f), g.op("Mul", i, gg))
    return g.op("Mul", o, g.op("Tanh", c_new)), c_new


def _gru_layer(g: _Graph, gx: str, gh: str, h: str, H: int) -> str:
    half = g.const(np.array(0.5, np.float32))
    rz = g.sigmoid_half(g.op("Mul", g.op("Add", g.cols(gx, 0, 2 * H), g.cols(gh, 0, 2 * H)), half))
    n = g.op("Tanh", g.op("Add", g.cols(gx, 2 * H, 3 * H), g.op("Mul", g.cols(rz, 0, H), g.cols(gh, 2 * H, 3 * H))))
    return g.op("Add", n, g.op("Mul", g.cols(rz, H, 2 * H), g.op("Sub", h, n)))


def _step(g: _Graph, model: ExportModel) -> tuple[str, str]:
    m = model.prepared
    H, L = m.H, m.L
    x0 = g.op("Gather", g.const(m.table0, "table0"), "token", axis=0)
    hs = [g.cols("state", l * H, (l + 1) * H) for l in range(L)]
    cs = [g.cols("state", (L + l) * H, (L + l + 1) * H) for l in range(L)] if m.kind == "lstm" else []
    new_h, new_c = [], []
    for l in range(L):
        if m.kind == "gru":
            gx = x0 if l == 0 else g.op("Add", g.op("MatMul", new_h[-1], g.const(m.wih[l - 1])), g.const(m.bih[l - 1]))
            gh = g.op("Add", g.op("MatMul", hs[l], g.const(m.whh[l])), g.const(m.bhh[l]))
            new_h.append(_gru_layer(g, gx, gh, hs[l], H))
            continue
        if l == 0:
            a = g.op("Add", g.op("MatMul", hs[0], g.const(m.whh0, "whh0")), x0)
        else:
            a = g.op("Add", g.op("MatMul", g.op("Concat", new_h[-1], hs[l], axis=1), g.const(m.wcat[l - 1])),
                     g.const(m.bias[l - 1]))
        if m.kind == "rnn":
            new_h.append(g.op("Tanh", a))
        else:
            h, c = _lstm_layer(g, a, cs[l], H)
            new_h.append(h)
            new_c.append(c)
    logits = g.op("Add", g.op("MatMul", new_h[-1], g.const(m.head_w, "head_w")), g.const(m.head_b, "head_b"))
    parts = new_h + new_c
    state = g.op("Concat", *parts, axis=1) if len(parts) > 1 else g.op("Identity", parts[0])
    return logits, state


def build_onnx(model: ExportModel) -> bytes:
    """The serialized ONNX model of one step, with ``idx_to_token`` and ``state_size`` in its metadata."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise Unsupported(f"{opt('format')} onnx needs the onnx package: pip install 'charrnn[export]'") from None
    g = _Graph(helper, numpy_helper)
    logits, state = _step(g, model)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    g.nodes.append(helper.make_node("Identity", [state], ["next_state"]))
    size, V = model.state_size(), model.prepared.vocab_size
    graph = helper.make_graph(
        g.nodes, f"charrnn_{model.config.model_type}_step",
        [helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", V]),
         helper.make_tensor_value_info("next_state", TensorProto.FLOAT, ["batch", size])],
        initializer=g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="charrnn")
    proto.ir_version = 8  # read by every onnxruntime since 1.10
    meta = {"idx_to_token": json.dumps(model.vocab.to_json_dict()["idx_to_token"], ensure_ascii=False),
            "state_size": str(size), "model_type": model.config.model_type, "num_layers": str(model.config.num_layers),
            "rnn_size": str(model.config.rnn_size), "iteration": str(model.iteration),
            "byte_mode": json.dumps(model.vocab.byte_mode), "name": model.name}
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
