"""Property-based tests: preprocessing round-trips any text, and any valid flags train."""

from __future__ import annotations

import json

import h5py
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from charrnn import Vocabulary, preprocess, train

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
fractions = st.tuples(st.floats(0, 0.45), st.floats(0, 0.45))


def read_back(result):
    with h5py.File(result.output_h5, "r") as f:
        splits = [f[name][()] for name in ("train", "val", "test")]
    return splits, json.loads(result.output_json.read_text())


def check_round_trip(result, original, fracs):
    splits, vocab_json = read_back(result)
    n = sum(len(s) for s in splits)
    assert [len(s) for s in splits[1:]] == [int(fracs[0] * n), int(fracs[1] * n)]  # the partition rule
    vocab = Vocabulary.from_json_dict(vocab_json)
    assert vocab == Vocabulary.from_json_dict(json.loads(json.dumps(vocab.to_json_dict())))
    decoded = vocab.decode(np.concatenate(splits))
    if isinstance(original, bytes) and isinstance(decoded, str):
        decoded = decoded.encode("ascii")  # an all-ASCII byte vocabulary reads back as text, identically
    assert decoded == original


@SETTINGS
@given(text=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=2, max_size=300),
       fracs=fractions, chunk=st.integers(1, 64))
def test_text_round_trips(tmp_path, text, fracs, chunk):
    if len(set(text)) < 2:
        text += "ab"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    check_round_trip(preprocess(path, val_frac=fracs[0], test_frac=fracs[1], chunk_bytes=chunk), text, fracs)


@SETTINGS
@given(data=st.binary(min_size=2, max_size=300), fracs=fractions)
def test_bytes_round_trip(tmp_path, data, fracs):
    if len(set(data)) < 2:
        data += b"\x00\xff"
    path = tmp_path / "b.bin"
    path.write_bytes(data)
    check_round_trip(preprocess(path, val_frac=fracs[0], test_frac=fracs[1], encoding="bytes"), data, fracs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_type=st.sampled_from(["lstm", "gru", "rnn"]), num_layers=st.integers(1, 3),
       rnn_size=st.integers(1, 12), wordvec_size=st.integers(1, 6), batch_size=st.integers(1, 6),
       seq_length=st.integers(1, 20), dropout=st.sampled_from([0.0, 0.5]), batchnorm=st.booleans(),
       grad_clip=st.sampled_from([0.0, 1.0, 5.0]), checkpoint_every=st.integers(0, 3))
def test_any_valid_flags_train(dataset, tmp_path_factory, **flags):
    assume(not flags["batchnorm"] or flags["batch_size"] * flags["seq_length"] > 1)  # a clear error, tested below
    h5, js = dataset
    out = tmp_path_factory.mktemp("prop")
    result = train(input_h5=str(h5), input_json=str(js), gpu=-1, max_iters=2, print_every=0, quiet=True,
                   checkpoint_name=str(out / "cp"), max_loss_factor=0, **flags)
    assert result.iterations == 2 and len(result.history.train_loss_history) == 2
    assert result.checkpoint.exists()


def test_batchnorm_needs_two_positions(cli, dataset, tmp_path):
    from .conftest import assert_one_line_error

    h5, js = dataset
    result = cli("train", "--input-h5", h5, "--input-json", js, "--batchnorm", "1", "--batch-size", "1",
                 "--seq-length", "1", "--gpu", "-1", "--checkpoint-name", tmp_path / "c")
    assert_one_line_error(result, "--batchnorm")
