"""The one decode loop: end-of-row at a token id, tokens of several characters, every scorer alike."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoint import load_checkpoint, read_payload
from charrnn.sampling import Sampler
from charrnn.sampling.decode import Decoder, RowState
from charrnn.sampling.engine import Engine, PreparedModel, SamplingParams

T7 = Path(__file__).resolve().parents[2] / "shared" / "torch-rnn" / "checkpoint_356.t7"


def _engine(trained, capacity=4):
    p = read_payload(trained)
    return Engine(p.config, PreparedModel(p.config, p.model_state), capacity, "numpy"), p.vocab


def _run(decoder, rows, steps=64):
    decoder.prime()
    while decoder.running():
        decoder.step(steps)
    return [decoder.take(r) for r in rows]


def test_a_row_ends_at_its_stop_token(trained):
    engine, vocab = _engine(trained)
    prompt = vocab.encode("The ") - 1
    full, = _run(d := Decoder(engine, vocab), d.add(prompt, [SamplingParams(seed=5)], 300))
    text = full[0]
    token = int(vocab.encode(text[40])[0] - 1)  # a character the text holds: its first occurrence ends the row
    decoder = Decoder(engine, vocab)
    rows = decoder.add(prompt, [SamplingParams(seed=5), SamplingParams(seed=6)], 300, stop_token=token)
    (cut, _), (other, _) = _run(decoder, rows, steps=7)
    assert cut == text[:text.index(text[40])] and rows[0].finish_reason == "stop"
    assert rows[0].state is RowState.DONE and engine.free == engine.capacity  # every slot closed again
    assert text[40] not in other or rows[1].finish_reason == "stop"


class DoubledVocab:
    """A vocabulary whose every token stands for two characters (as word tokens would be longer)."""

    byte_mode = False

    def __init__(self, vocab):
        self.inner, self.tokens = vocab, vocab.tokens

    def __len__(self):
        return len(self.inner)

    def decode(self, ids):
        return "".join(ch * 2 for ch in self.inner.decode(ids))


def test_the_limit_counts_characters_of_multi_character_tokens(trained):
    engine, vocab = _engine(trained)
    plain = _run(d := Decoder(engine, vocab), d.add(np.zeros(0, np.int64), [SamplingParams(seed=2)], 6))[0][0]
    doubled = DoubledVocab(vocab)
    decoder = Decoder(engine, doubled, token_chars=np.full(len(vocab), 2))
    rows = decoder.add(np.zeros(0, np.int64), [SamplingParams(seed=2)], 11)
    (text, _), = _run(decoder, rows, steps=3)
    assert text == "".join(ch * 2 for ch in plain)[:11] and rows[0].finish_reason == "length"


def test_the_torch_scorer_gives_the_engines_text_in_a_batch_with_a_prompt(trained):
    ckpt = load_checkpoint(trained)
    via_torch = Sampler(ckpt.build_model(), ckpt.vocab, backend="torch")
    kw = dict(temperature=0.9, top_k=8, seed=11, stop=["zq"])
    assert via_torch.generate_many(3, 200, "The ", **kw) == Sampler.from_checkpoint(trained).generate_many(
        3, 200, "The ", **kw)


def test_logprobs_and_plain_rows_share_a_step(trained):
    engine, vocab = _engine(trained)
    prompt = vocab.encode("The ") - 1
    alone = _run(d := Decoder(engine, vocab), d.add(prompt, [SamplingParams(seed=9)], 50))[0][0]
    decoder = Decoder(engine, vocab)
    rows = decoder.add(prompt, [SamplingParams(seed=9, logprobs=2)], 50) + decoder.add(prompt, [SamplingParams(seed=9)], 50)
    (with_lp, lps), (plain, _) = _run(decoder, rows)
    assert with_lp == plain == alone and len(lps) == 50 and all(len(step.top) == 2 for _, step in lps)


@pytest.mark.skipif(not T7.exists(), reason="the shared torch-rnn checkpoint is absent")
def test_a_t7_checkpoint_samples_and_serves_on_the_cpu_without_torch():
    code = (f"import sys; from pathlib import Path; from charrnn import sample; text = sample({str(T7)!r}, length=60, "
            f"seed=4, start_text='The '); print(repr(text)); from charrnn.serve.models import load_model; "
            f"load_model(Path({str(T7)!r})); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "False"
    ckpt = load_checkpoint(T7)
    via_torch = Sampler(ckpt.build_model(), ckpt.vocab, backend="torch").complete(60, "The ", seed=4)
    assert out[0] == repr(via_torch)
