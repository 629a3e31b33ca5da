"""Lua torch-rnn checkpoints (.t7): a strict reader, an exact model mapping, and the real file."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
import torch

from charrnn import evaluate, load_checkpoint, load_splits, make_batches, preprocess, sample
from charrnn.formats.t7 import read_t7

from .conftest import SHAKESPEARE, SHARED, assert_one_line_error

T7 = SHARED / "torch-rnn" / "checkpoint_356.t7"
needs_t7 = pytest.mark.skipif(not (T7.exists() and SHAKESPEARE.exists()), reason="shared torch-rnn files absent")


# -- a minimal Torch7 writer, to build test files -------------------------------------------------
class Module:
    def __init__(self, typename, **fields):
        self.typename, self.fields = typename, fields


class T7Writer:
    def __init__(self):
        self.out, self.next_index = io.BytesIO(), 1

    def _int(self, v):
        self.out.write(struct.pack("<i", v))

    def _long(self, v):
        self.out.write(struct.pack("<q", v))

    def _str(self, s):
        raw = s.encode("utf-8")
        self._int(len(raw))
        self.out.write(raw)

    def _index(self):
        self._int(self.next_index)
        self.next_index += 1

    def write(self, obj):
        if obj is None:
            self._int(0)
        elif isinstance(obj, bool):
            self._int(5), self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(1)
            self.out.write(struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            self._int(2), self._str(obj)
        elif isinstance(obj, (dict, list)):
            items = obj.items() if isinstance(obj, dict) else enumerate(obj, 1)
            items = list(items)
            self._int(3), self._index(), self._int(len(items))
            for k, v in items:
                self.write(k), self.write(v)
        elif isinstance(obj, np.ndarray):
            arr = np.ascontiguousarray(obj, dtype=np.float32)
            self._int(4), self._index(), self._str("V 1"), self._str("torch.FloatTensor")
            self._int(arr.ndim)
            for n in arr.shape:
                self._long(n)
            for s in arr.strides:
                self._long(s // 4)
            self._long(1)
            self._int(4), self._index(), self._str("V 1"), self._str("torch.FloatStorage")
            self._long(arr.size)
            self.out.write(arr.tobytes())
        elif isinstance(obj, Module):
            self._int(4), self._index(), self._str("V 1"), self._str(obj.typename)
            self.write(obj.fields)
        else:
            raise TypeError(obj)
        return self

    def bytes(self):
        return self.out.getvalue()


def torch_rnn_lstm_forward(x_ids, lookup, lstm_layers, linear_w, linear_b):
    """torch-rnn's LSTM equations in NumPy: gates ordered i, f, o, g in a (D+H) x 4H weight."""
    h_in = lookup[x_ids - 1]  # ids from 1
    for weight, bias in lstm_layers:
        H = weight.shape[1] // 4
        h, c, outs = np.zeros(H), np.zeros(H), []
        for x in h_in:
            a = np.concatenate([x, h]) @ weight + bias
            i, f, o = (1 / (1 + np.exp(-a[k * H:(k + 1) * H])) for k in range(3))
            g = np.tanh(a[3 * H:])
            c = f * c + i * g
            h = o * np.tanh(c)
            outs.append(h)
        h_in = np.array(outs)
    return h_in @ linear_w.T + linear_b


def make_t7_language_model(rng, V=5, D=3, H=4, layers=2, extra_module=None):
    tokens = ["a", "b", "c", " ", "\n"][:V]
    lookup = rng.normal(size=(V, D))
    lstms = [(rng.normal(size=((D if k == 0 else H) + H, 4 * H)) * 0.5, rng.normal(size=4 * H) * 0.5)
             for k in range(layers)]
    lin_w, lin_b = rng.normal(size=(V, H)), rng.normal(size=V)
    modules = [Module("nn.LookupTable", weight=lookup)]
    modules += [Module("nn.LSTM", weight=w, bias=b, hidden_dim=H) for w, b in lstms]
    modules += [Module("nn.View", size=[-1, H]), Module("nn.Linear", weight=lin_w, bias=lin_b)]
    if extra_module:
        modules.append(Module(extra_module))
    model = Module("nn.LanguageModel", idx_to_token=tokens, token_to_idx={t: i for i, t in enumerate(tokens, 1)},
                   vocab_size=V, model_type="lstm", wordvec_dim=D, rnn_size=H, num_layers=layers, dropout=0,
                   batchnorm=0, net=Module("nn.Sequential", modules=modules))
    top = {"model": model, "i": 7, "opt": {"batch_size": 2, "seq_length": 3}, "train_loss_history": [2.0, 1.5],
           "val_loss_history": [1.4], "val_loss_history_it": [7], "forward_backward_times": [],
           "memory_usage": []}
    return T7Writer().write(top).bytes(), (lookup, lstms, lin_w, lin_b)


def test_lstm_mapping_is_exact(tmp_path):
    data, (lookup, lstms, lin_w, lin_b) = make_t7_language_model(np.random.default_rng(0))
    path = tmp_path / "m_7.t7"
    path.write_bytes(data)
    ckpt = load_checkpoint(path)
    assert ckpt.iteration == 7 and ckpt.vocab.decode([1, 2, 4]) == "ab "
    ids = np.array([1, 3, 2, 5, 4, 1, 1])
    expected = torch_rnn_lstm_forward(ids, lookup, lstms, lin_w, lin_b)
    scores, _ = ckpt.build_model().eval()(torch.as_tensor(ids - 1).view(1, -1))
    assert np.allclose(scores[0].detach().numpy(), expected, atol=1e-4)


def test_reader_builds_only_plain_data(tmp_path):
    data = T7Writer().write({"x": [1, 2.5, "s", True], "arr": np.arange(6.0).reshape(2, 3)}).bytes()
    path = tmp_path / "plain.t7"
    path.write_bytes(data)
    out = read_t7(path)
    assert out["x"] == {1: 1, 2: 2.5, 3: "s", 4: True} and np.array_equal(out["arr"], np.arange(6.0).reshape(2, 3))


def test_bad_t7_files(cli, tmp_path):
    data, _ = make_t7_language_model(np.random.default_rng(1))
    truncated = tmp_path / "trunc_1.t7"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage_1.t7"
    garbage.write_bytes(b"\x07\x00\x00\x00" + b"\xff" * 40)
    unknown = tmp_path / "unknown_1.t7"
    unknown.write_bytes(make_t7_language_model(np.random.default_rng(1), extra_module="nn.Frobnicate")[0])
    not_lm = tmp_path / "notlm_1.t7"
    not_lm.write_bytes(T7Writer().write({"model": Module("nn.Sequential", modules=[])}).bytes())
    for path, fragment in [(truncated, "truncated"), (garbage, "not a readable torch7"),
                           (unknown, "unknown module type nn.Frobnicate"), (not_lm, "nn.LanguageModel")]:
        assert_one_line_error(cli("sample", "--checkpoint", path), fragment)


def test_tensor_outside_storage_is_refused(tmp_path):
    w = T7Writer()
    w._int(4), w._index(), w._str("V 1"), w._str("torch.FloatTensor")
    w._int(1), w._long(1000), w._long(1), w._long(1)  # 1000 elements...
    w._int(4), w._index(), w._str("V 1"), w._str("torch.FloatStorage"), w._long(2)  # ...in a storage of 2
    w.out.write(np.zeros(2, np.float32).tobytes())
    path = tmp_path / "oob.t7"
    path.write_bytes(w.bytes())
    with pytest.raises(Exception, match="outside its storage"):
        read_t7(path)


# -- the real torch-rnn checkpoint -----------------------------------------------------------------
@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts")
    return preprocess(SHAKESPEARE, out / "ts.h5", out / "ts.json")


@needs_t7
def test_real_checkpoint_matches_torch_rnns_validation_loss(shakespeare, cli):
    recorded = json.loads(T7.with_suffix(".json").read_text())["val_loss_history"][-1]
    ckpt = load_checkpoint(T7)
    assert ckpt.vocab == shakespeare.vocab  # charrnn's preprocess gives torch-rnn's vocabulary
    val = make_batches(load_splits(shakespeare.output_h5, ckpt.vocab, ("val",))["val"], 50, 50)
    loss = evaluate(ckpt.build_model(), val, torch.device("cpu"))
    assert abs(loss - recorded) < 1e-3 and abs(recorded - 1.9983) < 1e-4
    result = cli("eval", "--checkpoint", T7, "--input-h5", shakespeare.output_h5)
    assert result.code == 0 and "val loss = 1.998" in result.out


@needs_t7
def test_real_checkpoint_sampling_and_convert(tmp_path, cli):
    a = sample(T7, length=400, seed=11, temperature=0.8)
    assert a == sample(T7, length=400, seed=11, temperature=0.8)
    vocab = load_checkpoint(T7).vocab
    assert set(a) <= set(vocab.decode(range(1, len(vocab) + 1)))
    result = cli("convert", T7, "-o", tmp_path / "imported")
    assert result.code == 0
    native = tmp_path / "imported_356.pt"
    assert sample(native, length=400, seed=11, temperature=0.8) == a
    info = json.loads((tmp_path / "imported_356.json").read_text())
    assert info["i"] == 356 and info["val_loss_history"] == pytest.approx([1.9983142533], abs=1e-9)


@needs_t7
def test_real_checkpoint_continues_training(shakespeare, tmp_path):
    from charrnn import train
    result = train(input_h5=str(shakespeare.output_h5), input_json=str(shakespeare.output_json), init_from=str(T7),
                   max_iters=3, gpu=-1, checkpoint_every=0, print_every=0, quiet=True,
                   checkpoint_name=str(tmp_path / "ft"))
    first = result.history.train_loss_history[0]
    assert first < 2.3 < math.log(65)  # picks up near torch-rnn's 1.9-2.0, not from scratch (4.17)
