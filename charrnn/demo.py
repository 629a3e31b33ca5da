"""``charrnn demo``: the whole pipeline on a corpus every Python installation carries."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import click

from .errors import CharRNNError
from .fileio import atomic_write


def build_stdlib_corpus(path: Path, size_kb: int) -> Path:
    """Concatenate Python standard-library modules (sorted, so it is reproducible)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(stdlib.glob("*.py"))
    if not sources:
        raise CharRNNError(f"no Python sources found in {stdlib} to build the demo corpus from")
    budget, parts = size_kb * 1024, []
    for src in sources:
        try:
            text = src.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.isascii():
            continue
        parts.append(text)
        budget -= len(text)
        if budget <= 0:
            break
    corpus = "".join(parts)[: size_kb * 1024]
    with atomic_write(path) as f:
        f.write(corpus)
    return path


def run_demo(output_dir: str | Path = "charrnn-demo", seconds: float = 60.0, corpus_kb: int = 400,
             fast: bool = False) -> Path:
    """Build a corpus, preprocess it, train an LSTM for ``seconds``, print two samples."""
    from .preprocessing import preprocess
    from .sampling.sampler import Sampler
    from .training import Trainer, TrainConfig

    out = Path(output_dir)
    say = click.echo
    say(click.style("1/4 corpus", bold=True))
    corpus = build_stdlib_corpus(out / "stdlib.txt", corpus_kb)
    say(f"wrote {corpus} ({corpus.stat().st_size:,} bytes of Python's standard library)")

    say(click.style("\n2/4 preprocess", bold=True))
    pre = preprocess(corpus, log=say)

    say(click.style(f"\n3/4 train for {seconds:g} s", bold=True))
    config = TrainConfig(
        input_h5=str(pre.output_h5), input_json=str(pre.output_json), gpu=-1,
        rnn_size=32 if fast else 128, num_layers=1 if fast else 2, wordvec_size=16 if fast else 64,
        batch_size=16 if fast else 50, seq_length=32 if fast else 50,
        time_budget=seconds, max_iters=20 if fast else None, max_epochs=1000,
        checkpoint_every=0, print_every=10 if fast else 50, checkpoint_name=str(out / "cv" / "checkpoint"),
        overwrite=True)
    result = Trainer(config).run(handle_signals=True)

    say(click.style("\n4/4 sample", bold=True))
    sampler = Sampler.from_checkpoint(result.checkpoint, gpu=-1)
    for temperature in (0.5, 1.0):
        text = sampler.complete(120 if fast else 600, start_text="def ", temperature=temperature, seed=1)
        say(click.style(f"--- temperature {temperature} ---", fg="cyan"))
        say(text)
    say(click.style("\nnext steps", bold=True))
    say(f"  charrnn sample --checkpoint {result.checkpoint} --temperature 0.8 --length 1000")
    say(f"  charrnn train --resume {result.checkpoint} --max-epochs 1000 --time-budget 600")
    say(f"  charrnn train --input-h5 {pre.output_h5} --input-json {pre.output_json} "
        f"--init-from {result.checkpoint} --checkpoint-name {out / 'cv' / 'longer'}")
    return result.checkpoint
