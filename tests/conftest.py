"""Shared fixtures: a small corpus, its preprocessed files, a trained tiny checkpoint, a CLI runner."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from charrnn.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared"
SPEECHES = SHARED / "data" / "speeches.txt"
SHAKESPEARE = SHARED / "data" / "tiny-shakespeare.txt"
# The tiny training configuration every training test uses, for the Python API and as CLI flags.
TINY = dict(rnn_size=16, wordvec_size=8, num_layers=1, batch_size=4, seq_length=16, gpu=-1, print_every=0)
TINY_MODEL = [arg for name, value in TINY.items() for arg in ("--" + name.replace("_", "-"), str(value))]


def make_corpus(n_chars: int = 20_000, seed: int = 0) -> str:
    """Deterministic English-like text with a learnable structure."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog and then sleeps in warm sun".split()
    out, size = [], 0
    while size < n_chars:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9))).capitalize() + ".\n"
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:n_chars]


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``charrnn ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def dataset(corpus) -> tuple[Path, Path]:
    from charrnn import preprocess
    result = preprocess(corpus)
    return result.output_h5, result.output_json


def train_tiny(dataset, directory: Path, name: str = "checkpoint", **options):
    """Train the tiny model on the test corpus through the API; ``options`` override :data:`TINY`."""
    from charrnn import train
    h5, js = dataset
    return train(**{**TINY, "input_h5": str(h5), "input_json": str(js), "checkpoint_name": str(directory / name),
                    "quiet": True, **options})


def train_two_layers(dataset, directory: Path, name: str = "cp", **options):
    """The shared tiny model with two layers (per-layer statistics need more than one)."""
    return train_tiny(dataset, directory, name, **{"num_layers": 2, **options})


@pytest.fixture
def tiny_train(dataset, tmp_path):
    """``tiny_train(name="checkpoint", **options)``: train the tiny model into this test's directory."""
    return lambda name="checkpoint", **options: train_tiny(dataset, tmp_path, name, **options)


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory) -> Path:
    """A checkpoint of a tiny LSTM trained for 30 iterations."""
    return train_tiny(dataset, tmp_path_factory.mktemp("cv"), max_iters=30, checkpoint_every=0).checkpoint


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A clean failure: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("charrnn: error:"), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
