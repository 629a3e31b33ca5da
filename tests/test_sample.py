"""Sampling: reproducibility, argmax, Unicode start text, streaming, and hostile checkpoints."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch

from charrnn import Sampler, load_checkpoint, sample

from .conftest import assert_one_line_error


def test_seeded_sampling_is_reproducible(trained):
    a = sample(trained, length=300, seed=42)
    assert a == sample(trained, length=300, seed=42)
    assert a != sample(trained, length=300, seed=43)
    assert len(a) == 300


def test_output_uses_only_the_vocabulary(trained):
    vocab = load_checkpoint(trained).vocab
    text = sample(trained, length=500, seed=1, temperature=2.0)
    assert set(text) <= set(vocab.decode(range(1, len(vocab) + 1)))


def test_argmax_is_the_low_temperature_limit(trained):
    greedy = sample(trained, length=200, start_text="The ", argmax=True)
    cold = sample(trained, length=200, start_text="The ", temperature=1e-4, seed=5)
    assert greedy == cold
    assert greedy == sample(trained, length=200, start_text="The ", argmax=True)


def test_start_text_is_included_and_counted(trained):
    text = sample(trained, length=50, start_text="The lazy dog", seed=3)
    assert text.startswith("The lazy dog") and len(text) == 50


def test_unicode_start_text(tmp_path, cli):
    corpus = tmp_path / "u.txt"
    corpus.write_text("naïve café 日本語 🙂 " * 200, encoding="utf-8")
    assert cli("preprocess", "--input-txt", corpus, "--quiet").code == 0
    assert cli("train", "--input-h5", tmp_path / "u.h5", "--input-json", tmp_path / "u.json", "--rnn-size", "8",
               "--wordvec-size", "4", "--num-layers", "1", "--batch-size", "2", "--seq-length", "8",
               "--max-iters", "3", "--gpu", "-1", "--checkpoint-name", tmp_path / "cv" / "u", "--quiet").code == 0
    result = cli("sample", "--checkpoint", tmp_path / "cv", "--start-text", "日本🙂 café", "--length", "30",
                 "--seed", "1")
    assert result.code == 0, result
    assert result.out.startswith("日本🙂 café") and len(result.out.rstrip("\n")) == 30


def test_unseen_start_character_is_named(cli, trained):
    assert_one_line_error(cli("sample", "--checkpoint", trained, "--start-text", "fox €"), "'€'")


def test_generation_streams_in_pieces(trained, monkeypatch):
    """The first piece is handed out after one chunk of steps, before the rest is computed."""
    from charrnn.sampling.engine import Engine

    steps = []
    real = Engine.generate
    monkeypatch.setattr(Engine, "generate", lambda self, slots, n: steps.append(n) or real(self, slots, n))
    sampler = Sampler.from_checkpoint(trained)
    pieces = sampler.generate(length=1000, seed=0, chunk=100)
    first = next(pieces)
    assert len(first) == 100 and sum(steps) == 99  # the first character plus 99 steps, nothing more yet
    rest = "".join(pieces)
    assert sum(steps) == 999 and first + rest == sample(trained, length=1000, seed=0)


def test_cli_sample_to_stdout_and_file(cli, trained, tmp_path):
    out = cli("sample", "--checkpoint", trained, "--length", "120", "--seed", "9")
    assert out.code == 0 and len(out.out) == 121  # plus the final newline
    target = tmp_path / "s.txt"
    assert cli("sample", "--checkpoint", trained, "--length", "120", "--seed", "9", "-o", target).code == 0
    assert target.read_text() == out.out[:-1]


def test_checkpoint_directory_means_newest(cli, trained):
    a = cli("sample", "--checkpoint", trained.parent, "--length", "40", "--seed", "1").out
    assert a == cli("sample", "--checkpoint", trained, "--length", "40", "--seed", "1").out


@pytest.mark.parametrize("flag,value", [("--temperature", "10.5"), ("--temperature", "-1"), ("--length", "0"),
                                        ("--seed", "-1"), ("--seed", str(2 ** 63)), ("--top-p", "0")])
def test_bad_sampling_values(cli, trained, flag, value):
    assert_one_line_error(cli("sample", "--checkpoint", trained, flag, value), flag)


def test_temperature_zero_is_argmax_everywhere(cli, trained):
    """One range per field: temperature 0 (argmax) is as valid on the command line as in the API and the server."""
    args = ("sample", "--checkpoint", trained, "--length", "80", "--start-text", "The ")
    assert cli(*args, "--temperature", "0").out == cli(*args, "--sample", "0").out


@pytest.mark.parametrize("kwargs,field", [
    (dict(temperature=11), "temperature"), (dict(seed=-1), "seed"), (dict(seed=2 ** 63), "seed"),
    (dict(top_k=-1), "top_k"), (dict(top_p=0), "top_p"), (dict(length=0), "length"),
    (dict(stop=["a"] * 5), "stop"), (dict(stop=["x" * 101]), "stop"), (dict(stop=["we \udc80"]), "stop"),
    (dict(start_text="we \udc80 are"), "start_text"),
])
def test_the_python_api_refuses_what_the_server_refuses(trained, kwargs, field):
    from charrnn.errors import InvalidInput
    from charrnn.sampling.sampler import Sampler

    sampler = Sampler.from_checkpoint(trained)
    with pytest.raises(InvalidInput) as exc:
        sampler.complete(**{"length": 20, **kwargs})
    assert exc.value.field == field
    with pytest.raises(InvalidInput) as exc:
        sampler.generate_many(2, **{"length": 20, **kwargs})
    assert exc.value.field == field


# -- checkpoints as untrusted input -------------------------------------------------------------
def test_truncated_empty_and_foreign_checkpoints(cli, trained, tmp_path):
    truncated = tmp_path / "t_1.pt"
    truncated.write_bytes(trained.read_bytes()[:2000])
    empty = tmp_path / "e_1.pt"
    empty.write_bytes(b"")
    foreign = tmp_path / "f_1.pt"
    foreign.write_bytes(b"this is not a checkpoint at all" * 10)
    weights_only = tmp_path / "w_1.pt"
    torch.save({"weight": torch.zeros(3)}, weights_only)
    for path, fragment in [(truncated, "truncated"), (empty, "empty"), (foreign, "not a"),
                           (weights_only, "not a charrnn checkpoint"), (tmp_path / "missing.pt", "not found")]:
        assert_one_line_error(cli("sample", "--checkpoint", path), path.name, fragment)


def test_future_format_version_is_refused(cli, trained, tmp_path):
    data = torch.load(trained, weights_only=True)
    data["version"] = 99
    future = tmp_path / "future_1.pt"
    torch.save(data, future)
    assert_one_line_error(cli("sample", "--checkpoint", future), "version 99")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_never_runs(cli, trained, dataset, tmp_path):
    marker = tmp_path / "pwned"
    data = torch.load(trained, weights_only=True)
    data["evil"] = _Payload(str(marker))
    hostile = tmp_path / "hostile_30.pt"
    torch.save(data, hostile)
    with zipfile.ZipFile(hostile) as z:  # make sure the payload really is in there
        assert any(name.endswith("data.pkl") for name in z.namelist())
    assert_one_line_error(cli("sample", "--checkpoint", hostile), "refusing")
    h5, js = dataset
    assert_one_line_error(cli("train", "--resume", hostile, "--input-h5", h5, "--input-json", js), "refusing")
    assert not marker.exists()
    raw = tmp_path / "raw_1.pt"  # a bare pickle, not a zip
    raw.write_bytes(pickle.dumps(_Payload(str(marker))))
    assert cli("sample", "--checkpoint", raw).code != 0
    assert not marker.exists()


def test_many_samples_in_one_batch(cli, trained):
    sampler = Sampler.from_checkpoint(trained)
    texts = sampler.generate_many(8, length=60, start_text="The ", seed=4)
    assert len(texts) == 8 and all(len(t) == 60 and t.startswith("The ") for t in texts)
    assert len(set(texts)) > 1  # independent streams
    assert texts == [sampler.complete(60, "The ", seed=4 + j) for j in range(8)]  # row j is seed + j
    greedy = sampler.generate_many(3, length=40, start_text="The ", argmax=True)
    assert greedy == ["".join(sampler.generate(40, start_text="The ", argmax=True))] * 3
    out = cli("sample", "--checkpoint", trained, "--num-samples", "4", "--length", "30", "--seed", "2")
    singles = [cli("sample", "--checkpoint", trained, "--length", "30", "--seed", str(2 + j)).out[:-1]
               for j in range(4)]
    assert out.code == 0 and out.out == "\n\n".join(singles) + "\n"


def test_same_seed_same_text_through_every_entry_point(cli, trained):
    """Alone, in a batch, through the CLI, with top-k and top-p: a seed means one text."""
    kw = dict(temperature=0.8, top_k=5, top_p=0.9)
    alone = sample(trained, length=300, start_text="The ", seed=77, **kw)
    batch = Sampler.from_checkpoint(trained).generate_many(16, 300, "The ", seed=70, **kw)
    assert batch[7] == alone
    for backend in ("numpy", "numba") if _has_numba() else ("numpy",):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CHARRNN_ENGINE", backend)  # forces the backend even for this small job
            out = cli("sample", "--checkpoint", trained, "--length", "300", "--start-text", "The ", "--seed", "77",
                      "--temperature", "0.8", "--top-k", "5", "--top-p", "0.9")
            assert out.code == 0 and out.out == alone + "\n", backend
    assert alone != sample(trained, length=300, start_text="The ", seed=77)  # the cuts change the text


def _has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def test_top_k_one_is_argmax(trained):
    assert sample(trained, length=200, start_text="The ", top_k=1, seed=3) == \
        sample(trained, length=200, start_text="The ", argmax=True)


def test_stop_strings_end_the_text_before_them(cli, trained):
    full = sample(trained, length=400, start_text="The ", seed=8)
    word = full[4:][full[4:].index(" ") + 1:][:3]  # three generated characters that occur in the text
    cut = 4 + full[4:].index(word)
    assert sample(trained, length=400, start_text="The ", seed=8, stop=[word]) == full[:cut]
    assert sample(trained, length=400, start_text="The ", seed=8, stop=["\u2603", word]) == full[:cut]
    out = cli("sample", "--checkpoint", trained, "--length", "400", "--start-text", "The ", "--seed", "8",
              "--stop", word, "--stop", "zzzz")
    assert out.code == 0 and out.out == full[:cut] + "\n"
    many = Sampler.from_checkpoint(trained).generate_many(2, 400, "The ", seed=8, stop=[word])
    assert many[0] == full[:cut]
    stops = [a for s in "abcde" for a in ("--stop", s)]
    assert_one_line_error(cli("sample", "--checkpoint", trained, *stops), "--stop", "at most 4")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_seed_gives_the_same_text_on_each_backend(trained, backend):
    pytest.importorskip(backend)
    from charrnn.checkpoint.io import read_pt

    payload = read_pt(trained)
    sampler = Sampler.from_weights(payload.config, payload.model_state, payload.vocab, backend=backend)
    assert sampler.complete(2000, "The ", temperature=0.9, top_p=0.95, seed=12) == \
        sample(trained, length=2000, start_text="The ", temperature=0.9, top_p=0.95, seed=12)


def test_engine_matches_the_model_and_samples_with_temperature(trained):
    """The CPU engine computes the model's scores for every cell type; temperature and cuts apply."""
    import numpy as np

    from charrnn import CharRNN, ModelConfig
    from charrnn.sampling.engine import Engine, SamplingParams

    for model_type in ("lstm", "gru", "rnn"):
        for batchnorm in (False, True):
            torch.manual_seed(0)
            model = CharRNN(ModelConfig(7, model_type, 5, 6, 3, 0.0, batchnorm)).eval()
            if batchnorm:
                for norm in model.norms:
                    norm.running_mean.uniform_(-1, 1)
                    norm.running_var.uniform_(0.5, 2)
                    norm.weight.data.uniform_(0.5, 2)
            tokens = np.array([[1, 4, 2, 6, 0, 3]] * 2)
            engine = Engine.from_model(model, capacity=2)
            slots = [engine.open(SamplingParams(0.7, top_k=3, seed=1)), engine.open(SamplingParams(0.0))]
            for t in range(tokens.shape[1]):
                engine.feed(slots, tokens[:, t])
            drawn = engine.sample(slots)
            expected = model(torch.as_tensor(tokens))[0][:, -1].detach().numpy()
            assert np.allclose(engine.scores[slots], expected, atol=1e-5), (model_type, batchnorm)
            assert drawn[0] in np.argsort(-expected[0])[:3] and drawn[1] == expected[1].argmax()


def test_cpu_sampling_of_a_pt_checkpoint_never_imports_torch(trained):
    """Start-up: the .pt is read by charrnn's own safe reader and sampled without torch."""
    import subprocess
    import sys

    code = (f"import sys; from charrnn import sample; text = sample({str(trained)!r}, length=40, seed=3); "
            "print(len(text), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["40", "False"]


def test_the_torch_decode_loop_gives_the_engines_text(trained, monkeypatch):
    """The GPU path (PyTorch computes the scores) run on the CPU: same seed, same text, same cuts."""
    from charrnn.sampling.engine import Engine

    ckpt = load_checkpoint(trained)
    via_torch = Sampler(ckpt.build_model(), ckpt.vocab, backend="torch")
    monkeypatch.setattr(Engine, "__init__", None)  # the engine must not run on this path
    kw = dict(temperature=0.9, top_k=8, top_p=0.95, seed=3)
    text = via_torch.complete(500, "The ", **kw)
    many = via_torch.generate_many(3, 300, seed=3, temperature=1.2)
    no_start = via_torch.complete(300, seed=3, temperature=1.2)
    monkeypatch.undo()
    assert text == sample(trained, length=500, start_text="The ", **kw)
    assert many == Sampler.from_checkpoint(trained).generate_many(3, 300, seed=3, temperature=1.2)
    assert no_start == many[0]


def test_torch_free_reader_matches_torch_load(trained):
    import numpy as np

    from charrnn.checkpoint.io import read_pt

    payload = read_pt(trained)
    reference = load_checkpoint(trained)
    assert payload.config == reference.model_config and payload.vocab == reference.vocab
    for key, tensor in reference.model_state.items():
        assert np.array_equal(payload.model_state[key], tensor.numpy()), key
    assert payload.train_state["learning_rate"] == reference.train_state["learning_rate"]


def test_stop_matcher_cuts_at_the_first_stop_whatever_the_pieces():
    import random

    from charrnn.sampling.sampler import StopMatcher

    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice("ab\n") for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice("ab\n") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 4))]
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
        matcher = StopMatcher(stops)
        out = "".join(matcher.push(p) for p in pieces)
        out += "" if matcher.stopped else matcher.flush()
        found = [text.find(s) for s in stops if s in text]
        assert out == (text[:min(found)] if found else text)
        assert matcher.stopped == bool(found)
    assert StopMatcher([b"\n\n"]).push(b"ab\n\ncd") == b"ab"
    with pytest.raises(Exception, match="at most 4"):
        StopMatcher(["a", "b", "c", "d", "e"])
    with pytest.raises(Exception, match="empty"):
        StopMatcher([""])
