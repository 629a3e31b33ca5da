"""Scaling out: streamed training data, vocabulary reuse, uint16/compression, data-parallel training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from charrnn import Vocabulary, load_splits, make_batches, preprocess, train
from charrnn.data import StreamedBatches

from .conftest import assert_one_line_error

TINY = dict(rnn_size=16, wordvec_size=8, num_layers=2, seq_length=16, gpu=-1, print_every=0, quiet=True)


def test_lazy_streams_match_the_in_memory_layout(dataset):
    h5, js = dataset
    vocab = Vocabulary.load(js)
    for split in ("train", "val"):
        whole = make_batches(load_splits(h5, vocab, (split,))[split], 6, 16)
        lazy = StreamedBatches(h5, split, len(vocab), 6, 16, window=3)
        assert lazy.num_batches == whole.num_batches and lazy.batch_size == whole.batch_size
        for k in [0, 1, 2, 3, whole.num_batches - 1, 5, 0]:
            x, y = lazy.batch(k)
            assert np.array_equal(x, whole.inputs[k]) and np.array_equal(y, whole.targets[k])
        share = StreamedBatches(h5, split, len(vocab), 6, 16, window=4).share(slice(2, 4))
        assert np.array_equal(share.batch(2)[0], whole.inputs[2][2:4])


def test_streamed_training_equals_in_memory_training(dataset, tmp_path):
    h5, js = dataset
    common = dict(input_h5=str(h5), input_json=str(js), batch_size=4, max_iters=30, checkpoint_every=15, **TINY)
    memory = train(**common, stream_data=False, checkpoint_name=str(tmp_path / "m"))
    streamed = train(**common, stream_data=True, checkpoint_name=str(tmp_path / "s"))
    assert streamed.history.train_loss_history == memory.history.train_loss_history
    assert streamed.history.val_loss_history == memory.history.val_loss_history


def test_existing_vocabulary_and_unknown_characters(cli, dataset, tmp_path):
    _, js = dataset
    new = tmp_path / "new.txt"
    new.write_text("the lazy dog sleeps. the fox jumps!\n" * 40)
    assert_one_line_error(cli("preprocess", "--input-txt", new, "--input-json", js), "'!'",
                          "--unknown-char")
    result = cli("preprocess", "--input-txt", new, "--input-json", js, "--unknown-char", ".")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "new.json").read_text()) == json.loads(js.read_text())
    vocab = Vocabulary.load(js)
    with h5py.File(tmp_path / "new.h5") as f:
        text = vocab.decode(np.concatenate([f["train"][()], f["val"][()], f["test"][()]]))
    assert text == new.read_text().replace("!", ".")


def test_fine_tune_on_new_text_with_the_same_vocabulary(cli, dataset, trained, tmp_path):
    _, js = dataset
    new = tmp_path / "new.txt"
    new.write_text("a warm dog sleeps in the sun. " * 200)
    assert cli("preprocess", "--input-txt", new, "--input-json", js, "--quiet").code == 0
    result = cli("train", "--input-h5", tmp_path / "new.h5", "--input-json", tmp_path / "new.json",
                 "--init-from", trained, "--max-iters", "3", "--gpu", "-1", "--checkpoint-name", tmp_path / "ft",
                 "--quiet")
    assert result.code == 0, result.err


def test_vocabulary_from_the_training_split_only(cli, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc " * 300 + "xyz")  # x, y, z only in the last 10%
    assert_one_line_error(cli("preprocess", "--input-txt", corpus, "--vocab-from", "train"), "'x'")
    assert cli("preprocess", "--input-txt", corpus, "--vocab-from", "train", "--unknown-char", " ", "--quiet").code == 0
    assert Vocabulary.load(tmp_path / "c.json").decode(range(1, 5)) == "abc "


def test_uint16_and_compression(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(1000)) * 5
    path = tmp_path / "cjk.txt"
    path.write_text(text, encoding="utf-8")
    plain = preprocess(path, tmp_path / "a.h5", tmp_path / "a.json")
    small = preprocess(path, tmp_path / "b.h5", tmp_path / "b.json", dtype="uint16", compression="gzip")
    with h5py.File(plain.output_h5) as a, h5py.File(small.output_h5) as b:
        assert a["train"].dtype == np.uint32 and b["train"].dtype == np.uint16
        assert b["train"].compression == "gzip"
        for split in ("train", "val", "test"):
            assert np.array_equal(a[split][()], b[split][()])
    with pytest.raises(Exception, match="at most 255"):
        preprocess(path, tmp_path / "c.h5", tmp_path / "c.json", dtype="uint8")


def test_thousands_of_characters_train_and_sample(tmp_path):
    rng = np.random.default_rng(0)
    chars = [chr(0x4E00 + i) for i in range(2000)]
    path = tmp_path / "zh.txt"
    path.write_text("".join(rng.choice(chars, 20000)), encoding="utf-8")
    pre = preprocess(path, dtype="uint16")
    result = train(input_h5=str(pre.output_h5), input_json=str(pre.output_json), batch_size=4, max_iters=3,
                   checkpoint_name=str(tmp_path / "zh"), **TINY)
    from charrnn import sample
    text = sample(result.checkpoint, length=50, seed=0)
    assert len(text) == 50 and set(text) <= set(chars)


def _torchrun(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "charrnn", "train", *[str(a) for a in args]]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_twice_the_batch_and_resume(dataset, tmp_path):
    """2 ranks x batch 8 compute the same averaged gradient as 1 process x batch 16."""
    h5, js = dataset
    single = train(input_h5=str(h5), input_json=str(js), batch_size=16, max_iters=16, checkpoint_every=8,
                   checkpoint_name=str(tmp_path / "single"), **TINY)
    args = ["--input-h5", h5, "--input-json", js, "--batch-size", "8", "--seq-length", "16", "--rnn-size", "16",
            "--wordvec-size", "8", "--num-layers", "2",
            "--gpu", "-1", "--print-every", "0", "--checkpoint-every", "8", "--checkpoint-name", tmp_path / "ddp"]
    first = _torchrun(*args, "--max-iters", "8")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun("--resume", tmp_path / "ddp_8.pt", "--max-iters", "16")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = json.loads((tmp_path / "ddp_16.json").read_text())
    assert np.allclose(info["train_loss_history"], single.history.train_loss_history, rtol=1e-4, atol=1e-5)
    assert np.allclose(info["val_loss_history"], single.history.val_loss_history, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("ddp_*")) == ["ddp_16.json", "ddp_16.pt", "ddp_8.json", "ddp_8.pt"]
