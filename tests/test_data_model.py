"""The data loader's stream layout and the model's shapes, state and initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn import CharRNN, ModelConfig, make_batches


def test_streams_are_contiguous_across_batches():
    ids = np.arange(1, 1001)  # token ids as in the file (from 1)
    b = make_batches(ids, batch_size=4, seq_length=10)
    # torch-rnn: extra = 1000 % 40 = 0 -> 40, so 960 tokens in 4 rows of 240 = 24 batches
    assert b.inputs.shape == (24, 4, 10) and b.targets.shape == (24, 4, 10)
    assert np.array_equal(b.targets, b.inputs + 1)
    for row in range(4):
        stream = b.inputs[:, row, :].reshape(-1)
        assert np.array_equal(stream, np.arange(row * 240, (row + 1) * 240))  # 0-based, contiguous


def test_batch_size_is_reduced_for_a_short_split():
    messages = []
    b = make_batches(np.arange(1, 101), batch_size=50, seq_length=10, split="val", log=messages.append)
    assert b.batch_size == 9 and b.num_batches == 1  # floor(99 / 10)
    assert "using 9" in messages[0]


def test_too_short_split_gives_none():
    assert make_batches(np.arange(1, 10), batch_size=2, seq_length=10) is None


@pytest.mark.parametrize("model_type", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dropout,batchnorm", [(0.0, False), (0.3, False), (0.0, True), (0.2, True)])
def test_output_and_state_shapes(model_type, dropout, batchnorm):
    cfg = ModelConfig(vocab_size=11, model_type=model_type, wordvec_size=5, rnn_size=7, num_layers=3,
                      dropout=dropout, batchnorm=batchnorm)
    model = CharRNN(cfg)
    scores, state = model(torch.randint(11, (4, 6)))
    assert scores.shape == (4, 6, 11)
    assert len(state) == (2 if model_type == "lstm" else 1)
    assert all(s.shape == (3, 4, 7) for s in state)
    loss, _ = model.loss(torch.randint(11, (4, 6)), torch.randint(11, (4, 6)), state)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("batchnorm", [False, True])
def test_carried_state_equals_one_long_sequence(batchnorm):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=9, rnn_size=8, wordvec_size=4, num_layers=2, batchnorm=batchnorm)).eval()
    x = torch.randint(9, (3, 12))
    whole, _ = model(x)
    first, state = model(x[:, :5])
    second, _ = model(x[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_torch_rnn_initialisation():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, wordvec_size=64, rnn_size=128, num_layers=2))
    lstm = model.rnns[0]
    H = 128
    assert torch.all(lstm.bias_ih_l0[H:2 * H] == 1) and torch.all(lstm.bias_ih_l0[:H] == 0)
    assert torch.all(lstm.bias_hh_l1 == 0)
    assert lstm.weight_ih_l0.std().item() == pytest.approx(1 / np.sqrt(64 + 128), rel=0.05)
    assert lstm.weight_hh_l1.std().item() == pytest.approx(1 / np.sqrt(128 + 128), rel=0.05)


def test_both_batch_sources_follow_one_protocol(dataset):
    from charrnn import Vocabulary
    from charrnn.data import BatchSource, InMemoryBatches, StreamedBatches, open_batches

    h5, js = dataset
    vocab = Vocabulary.load(js)
    memory = open_batches(h5, "train", vocab, 6, 16, stream=False)
    streamed = open_batches(h5, "train", vocab, 6, 16, stream=True)
    assert isinstance(memory, InMemoryBatches) and isinstance(streamed, StreamedBatches)
    for source in (memory, streamed):
        assert isinstance(source, BatchSource)
        assert (source.num_batches, source.batch_size, source.seq_length) == (memory.num_batches, 6, 16)
        share = source.share(slice(2, 4))
        assert share is not source and source.batch_size == 6 and share.batch_size == 2  # share never mutates
        x, y = source.batch(source.num_batches - 1)
        assert x.dtype == np.int64 and x.shape == (6, 16) and x.min() >= 0  # 0-based ids
        assert np.array_equal(share.batch(1)[0], source.batch(1)[0][2:4])
        with share:
            pass
        source.close()
        source.close()  # closing twice is harmless
    assert np.array_equal(streamed.batch(3)[1], memory.batch(3)[1])  # a closed stream reopens on demand


def test_each_cell_type_has_its_module_layout_and_state():
    """The one list of cell types (config.MODEL_TYPES) is what the model, the layout and the checkpoint
    schema all serve: a new entry without a module or gate count fails here."""
    from charrnn.config import GATES, MODEL_TYPES
    from charrnn.layout import state_count, state_shapes
    from charrnn.model import CELLS

    assert tuple(CELLS) == MODEL_TYPES == tuple(GATES)
    for kind in MODEL_TYPES:
        config = ModelConfig(11, kind, 4, 6, 2)
        model = CharRNN(config)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == state_shapes(config)
        _, state = model(torch.zeros(1, 3, dtype=torch.long))
        assert len(state) == state_count(kind)
