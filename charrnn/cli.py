"""The ``charrnn`` command line: a thin click layer over the Python API.

Heavy modules (torch, h5py) are imported inside the commands, so ``charrnn --help`` is instant.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import click
from click.core import ParameterSource

from .errors import CharRNNError
from .eval_options import EvalOptions
from .export.options import ExportOptions
from .sampling.options import SampleOptions
from .serve.options import ServeOptions, Settings
from .training.options import GPU_HELP, LR_FIND_TRAIN_OPTIONS, LRFindOptions, TrainConfig, resolve_train_config
from .training.presets import PRESETS


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 90, 90s, 5m, 2h, 1.5h."""

    name = "duration"
    units = {"s": 1, "m": 60, "h": 3600}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        scale = self.units.get(text[-1:], None)
        try:
            seconds = float(text[:-1] if scale else text) * (scale or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration (try 30s, 5m or 2h)", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be positive", param, ctx)
        return seconds


class Ranged(click.ParamType):
    """An int or float in a :class:`~charrnn.training.options.Range`, refused in the words the API uses."""

    def __init__(self, base: type, span) -> None:
        self.base, self.span = base, span
        self.name = f"{base.__name__} range"

    def convert(self, value, param, ctx):
        try:
            number = self.base(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not {'an integer' if self.base is int else 'a number'}", param, ctx)
        if number != number or number not in self.span:  # (NaN is in no range)
            self.fail(self.span.problem(value), param, ctx)
        return number

    def get_metavar(self, param, ctx=None) -> str:
        s = self.span
        low = "" if s.low is None else f"{s.low}{'<' if s.low_open else '<='}"
        high = "" if s.high is None else f"{'<' if s.high_open else '<='}{s.high}"
        name = "INTEGER" if self.base is int else "FLOAT"
        return f"{name} {low}x{high}" if low or high else name


POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
FRACTION = click.FloatRange(min=0, max=1, max_open=True)
FLAG01 = click.IntRange(0, 1)


def options_of(config_class, names=None, **overrides):
    """Click options for the fields of a config dataclass (all, or ``names`` in that order).

    Flag, type, range, choices, default and help all come from the field (see
    :func:`charrnn.training.options.option`); ``overrides`` maps a field name to extra click keywords.
    """
    chosen = {f.name: f for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)}

    def decorate(command):
        for name in reversed(list(names or chosen)):
            command = _click_option(chosen[name], **overrides.get(name, {}))(command)
        return command
    return decorate


def _click_option(f, **extra):
    meta = f.metadata
    decls = [meta.get("flag") or "--" + f.name.replace("_", "-")] + ([meta["short"]] if meta.get("short") else [])
    if meta.get("flag"):
        decls.append(f.name)  # the Python name stays the parameter's name
    kind, span = meta.get("kind"), meta.get("range")
    if kind == "flag":
        return click.option(*decls, is_flag=True, default=f.default, help=meta["help"], **extra)
    if kind == "multiple":
        return click.option(*decls, multiple=True, type=str,
                            help=meta["help"], **extra)
    base = str(f.type).replace(" | None", "").strip()
    if kind == "01":
        kind_type, default = FLAG01, int(f.default)
    else:
        default = None if f.default == "" else f.default
        if kind == "duration":
            kind_type = Duration()
        elif kind in ("path", "dir", "file"):
            kind_type = click.Path(file_okay=kind != "dir", dir_okay=kind != "file")
        elif meta.get("choices"):
            kind_type = click.Choice(meta["choices"])
        elif span is not None:
            kind_type = Ranged(int if base == "int" else float, span)
        else:
            kind_type = {"int": int, "float": float, "str": str}[base]
    return click.option(*decls, type=kind_type, default=default, show_default=default is not None,
                        help=meta["help"], **extra)


def explicit_options(ctx: click.Context, options: dict) -> dict:
    """The options the user gave (not click's defaults)."""
    return {k: v for k, v in options.items() if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}


def torchrun_command(ctx: click.Context, nproc: int) -> list[str]:
    """This ``charrnn train`` command under torchrun with ``nproc`` processes (--nproc itself dropped)."""
    args = [ctx.info_name]
    for param in ctx.command.params:
        if param.name == "nproc" or ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
            continue
        flag, value = max(param.opts, key=len), ctx.params[param.name]
        if getattr(param, "is_flag", False):
            args += [flag] if value else []
        else:
            args += [flag, str(value)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "charrnn", *args]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="charrnn")
def cli() -> None:
    """Character-level recurrent language models: preprocess a corpus, train, sample.

    \b
    charrnn preprocess --input-txt data/speeches.txt
    charrnn train --input-h5 data/speeches.h5 --input-json data/speeches.json --gpu -1
    charrnn sample --checkpoint cv/ --temperature 0.9
    """


# -- preprocess -------------------------------------------------------------------------------
@cli.command()
@click.option("--input-txt", required=True, type=click.Path(dir_okay=True), help="The text corpus.")
@click.option("--output-h5", type=click.Path(), help="HDF5 output [default: input with .h5].")
@click.option("--output-json", type=click.Path(), help="JSON vocabulary output [default: input with .json].")
@click.option("--val-frac", type=FRACTION, default=0.1, show_default=True, help="Fraction for validation.")
@click.option("--test-frac", type=FRACTION, default=0.1, show_default=True, help="Fraction for test.")
@click.option("--encoding", default="utf-8", show_default=True, help="Any Python codec, or 'bytes' for byte tokens.")
@click.option("--lowercase", is_flag=True, help="Lowercase the text first.")
@click.option("--input-json", type=click.Path(), help="Encode with this existing vocabulary (to fine-tune on new text).")
@click.option("--unknown-char", help="Map characters outside the vocabulary to this one (else they are an error).")
@click.option("--vocab-from", type=click.Choice(["all", "train"]), default="all", show_default=True,
              help="Build the vocabulary from the whole corpus or the training split only.")
@click.option("--dtype", type=click.Choice(["auto", "uint8", "uint16", "uint32"]), default="auto", show_default=True,
              help="auto = torch-rnn's uint8 (<= 255 tokens) or uint32.")
@click.option("--compression", type=click.Choice(["gzip", "lzf"]), help="Compress the HDF5 datasets.")
@click.option("--tokens", "tokens_kind", type=click.Choice(["chars", "words"]), default="chars", show_default=True,
              help="words: the --max-vocab most frequent words (and runs of spaces or symbols) become tokens too.")
@click.option("--max-vocab", type=int, help="Word tokens on top of the characters [default: 2000].")
@click.option("--documents", type=click.Choice(["lines", "blank-lines"]),
              help="Each line (or paragraph) is a document; an end token goes between documents.")
@click.option("--quiet", is_flag=True, help="Print nothing.")
def preprocess(input_txt, output_h5, output_json, val_frac, test_frac, encoding, lowercase, input_json, unknown_char,
               vocab_from, dtype, compression, tokens_kind, max_vocab, documents, quiet) -> None:
    """Turn a text file into torch-rnn's HDF5 token file and JSON vocabulary."""
    from .preprocessing import preprocess as run

    start = time.perf_counter()
    result = run(input_txt, output_h5, output_json, val_frac, test_frac, encoding, lowercase,
                 log=None if quiet else click.echo, input_json=input_json, unknown_char=unknown_char,
                 vocab_from=vocab_from, dtype=dtype, compression=compression, tokens=tokens_kind,
                 documents=documents, max_vocab=max_vocab)
    if not quiet:
        seconds = time.perf_counter() - start
        click.echo(f"done in {seconds:.2f} s ({result.input_bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s)")


# -- train ----------------------------------------------------------------------------------------
@cli.command()
@options_of(TrainConfig)
@click.option("--nproc", type=POSITIVE_INT, help="Launch K data-parallel processes with torchrun (this machine).")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="A tuned recipe (see the README); flags you give explicitly still win.")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def train(ctx: click.Context, quiet: bool, preset: str | None, nproc: int | None, **options) -> None:
    """Train a character-level LSTM, GRU or RNN (torch-rnn's train.lua).

    For data-parallel training run it under torchrun (`torchrun --nproc-per-node K -m charrnn
    train ...`) or add --nproc K; --batch-size is then per process.
    """
    if nproc and nproc > 1:
        command = torchrun_command(ctx, nproc)
        os.execv(command[0], command)
    started = time.monotonic()  # a --time-budget counts from here (importing torch included)
    from .training.loop import Trainer

    quiet = quiet or os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 speaks

    config = resolve_train_config(explicit_options(ctx, options), preset, None if quiet else click.echo)
    result = Trainer(config, quiet=quiet, started=started).run(handle_signals=True)
    if result.interrupted_by is not None:
        click.echo(f"saved {result.checkpoint}; resume with: charrnn train --resume {result.checkpoint}", err=True)
        sys.exit(128 + result.interrupted_by)
    if not quiet and result.checkpoint:
        best = result.best_checkpoint
        click.echo(f"final checkpoint: {result.checkpoint}")
        if best != result.checkpoint:  # the run got worse after its best validation: sample the best
            click.echo(f"best checkpoint: {best} (validation loss {result.best_val_loss:.4f}; "
                       f"the final one measured {result.val_loss:.4f})")
        click.echo(f"sample it with: charrnn sample --checkpoint {best}")


# -- sample ---------------------------------------------------------------------------------------
@cli.command()
@options_of(SampleOptions, checkpoint={"required": True})
@click.pass_context
def sample(ctx, checkpoint, length, start_text, temperature, top_k, top_p, stop, seed, gpu, gpu_backend,
           num_samples, output, verbose, documents, unique, novel, input_h5, **flag) -> None:
    """Generate text from a checkpoint, streamed as it is produced."""
    from .sampling.sampler import Sampler

    start = time.perf_counter()
    if (unique or novel or input_h5) and not documents:
        raise CharRNNError("--unique, --novel and --input-h5 go with --documents N")
    sampler = Sampler.from_checkpoint(checkpoint, gpu=gpu, gpu_backend=gpu_backend)
    binary = sampler.vocab.byte_mode
    params = dict(argmax=not flag["sample"], temperature=temperature, seed=seed, top_k=top_k, top_p=top_p, stop=stop)
    if documents:
        explicit = ctx.get_parameter_source("length") is not ParameterSource.DEFAULT
        pieces = [_documents(sampler, checkpoint, documents, length if explicit else None, start_text or "", unique,
                             novel, input_h5, num_samples, params)]
        length = sum(len(p) for p in pieces)
    elif num_samples > 1:
        texts = sampler.generate_many(num_samples, length, start_text, **params)
        gap = b"\n\n" if binary else "\n\n"
        pieces = iter([gap.join(texts)])
        length *= num_samples
    else:
        pieces = sampler.generate(length, start_text, **params)
    if output:
        from .fileio import atomic_write
        with atomic_write(output, "wb" if binary else "w") as f:
            for piece in pieces:
                f.write(piece)
    else:
        stream = sys.stdout.buffer if binary else sys.stdout
        for piece in pieces:
            stream.write(piece)
            stream.flush()
        stream.write(b"\n" if binary else "\n")
        stream.flush()
    if verbose:
        seconds = time.perf_counter() - start
        click.echo(f"sampled {length} characters in {seconds:.2f} s ({length / seconds:,.0f} chars/s)", err=True)


def _documents(sampler, checkpoint, n, length, start_text, unique, novel, input_h5, num_samples, params) -> str:
    """``charrnn sample --documents N``: the list as text; what was rejected, on stderr."""
    from .sampling.documents import (DEFAULT_BATCH, DEFAULT_LENGTH, TrainingDocuments, format_documents,
                                     require_documents, sample_documents, training_file)

    require_documents(sampler.vocab)
    if params.pop("stop"):
        raise CharRNNError("--stop does not go with --documents (each document ends at the end token)")
    index = TrainingDocuments.from_file(training_file(checkpoint, input_h5), sampler.vocab) if novel else None
    batch = num_samples if num_samples > 1 else min(DEFAULT_BATCH, 2 * n + 8)
    found = sample_documents(sampler, n, start_text, length or DEFAULT_LENGTH, unique, index, batch, **params)
    click.echo(f"charrnn: {found.summary(n)}", err=True)
    return format_documents(found.documents, sampler.vocab)


# -- eval and convert -----------------------------------------------------------------------------
@cli.command("eval")
@options_of(EvalOptions, checkpoint={"required": True})
def eval_command(checkpoint, input_h5, input_json, split, batch_size, seq_length, gpu, gpu_backend) -> None:
    """Mean loss of a checkpoint over a whole split, per token and per character (nats and bits)."""
    from .evaluation import evaluate_checkpoint

    r = evaluate_checkpoint(checkpoint, input_h5, split, input_json, batch_size, seq_length, gpu, gpu_backend)
    if r.chars_per_token == 1.0:
        click.echo(f"{r.split} loss = {r.loss:.6f} nats/char, {r.bits_per_char:.4f} bits/char "
                   f"({r.batches} batches of {r.batch_size}x{r.seq_length})")
    else:  # several characters per token: per token, and per character to compare with character models
        click.echo(f"{r.split} loss = {r.loss:.6f} nats/token, {r.bits_per_token:.4f} bits/token; "
                   f"{r.loss_per_char:.6f} nats/char, {r.bits_per_char:.4f} bits/char "
                   f"({r.chars_per_token:.3f} chars/token; {r.batches} batches of {r.batch_size}x{r.seq_length})")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--output", "-o", required=True, help="Checkpoint name: writes <name>_<iteration>.pt and .json.")
@click.option("--overwrite", is_flag=True, help="Replace an existing <name>_<iteration>.pt and .json.")
def convert(checkpoint, output, overwrite) -> None:
    """Convert a torch-rnn .t7 checkpoint into a native charrnn checkpoint."""
    from .checkpoint import convert_checkpoint

    path = convert_checkpoint(checkpoint, output, overwrite=overwrite)
    click.echo(f"wrote {path} and {path.with_suffix('.json')}")


@cli.command()
@options_of(ExportOptions, checkpoint={"required": True}, output={"required": True})
def export(checkpoint, output, format, weights, overwrite) -> None:
    """Export a model as a self-contained HTML page or an ONNX step graph."""
    from .export import export as export_model

    path = export_model(checkpoint, output, format, weights, overwrite)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


# -- insight --------------------------------------------------------------------------------------
@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="PNG or SVG file.")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), help="[default: from the file name]")
@click.option("--width", type=POSITIVE_INT, default=1200, show_default=True, help="Pixels.")
@click.option("--height", type=POSITIVE_INT, default=800, show_default=True, help="Pixels.")
@click.option("--smoothing", type=POSITIVE_INT, help="Moving-average window [default: 2% of the run].")
def plot(runs, output, fmt, width, height, smoothing) -> None:
    """Compare runs: loss, learning rate, update:parameter ratios, gradient norm.

    A RUN is a checkpoint (.json or .pt) or a directory of checkpoints (its newest).
    """
    from .plot import plot_runs

    click.echo(f"wrote {plot_runs(list(runs), output, fmt, width, height, smoothing)}")


@cli.command("lr-find")
@options_of(LRFindOptions)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="lr_find.png", show_default=True,
              help="Curve as PNG (needs matplotlib) and JSON beside it.")
@options_of(TrainConfig, LR_FIND_TRAIN_OPTIONS, input_h5={"required": True}, input_json={"required": True})
def lr_find_command(start_lr, end_lr, num_iters, output, **options) -> None:
    """Learning-rate range test: raise the rate exponentially until the loss blows up."""
    from .lr_find import lr_find, save_lr_find

    result = lr_find(TrainConfig(**options), start_lr, end_lr, num_iters)
    for path in save_lr_find(result, output):
        click.echo(f"wrote {path}")
    if result.suggestion:
        click.echo(f"suggested learning rate: {result.suggestion:.3g} (steepest descent of the smoothed loss; "
                   f"tried {len(result.losses)} rates up to {result.learning_rates[-1]:.3g})")
    else:
        click.echo("no suggestion: the loss never fell (try a wider --start-lr/--end-lr range)")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path())
@click.option("--input-h5", type=click.Path(), help="[default: the checkpoint's training data]")
@click.option("--length", type=POSITIVE_INT, default=2000, show_default=True, help="Characters to sample.")
@click.option("--max-n", type=POSITIVE_INT, default=20, show_default=True, help="Longest substring length.")
@click.option("--temperature", type=POSITIVE_FLOAT, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def novelty(checkpoint, input_h5, length, max_n, temperature, seed) -> None:
    """Memorisation check: how much of a sample never occurs in the training split."""
    from .novelty import novelty_report

    fractions = novelty_report(checkpoint, input_h5, length, max_n, temperature, seed)
    click.echo("length  novel")
    for n, fraction in enumerate(fractions, 1):
        click.echo(f"{n:6d}  {100 * fraction:5.1f}%")


# -- bench ------------------------------------------------------------------------------------------
@cli.command()
@click.option("--quick", is_flag=True, help="A one-minute subset.")
@click.option("--gpu", type=int, default=-1, show_default=True, help=GPU_HELP.split(";")[0] + ".")
@click.option("--gpu-backend", type=click.Choice(["cuda", "mps"]), default="cuda", show_default=True)
@click.option("--batch-size", "batch_sizes", type=POSITIVE_INT, multiple=True, help="Repeatable [default: 50].")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="bench.json", show_default=True,
              help="Where to write the JSON results.")
def bench(quick, gpu, gpu_backend, batch_sizes, output) -> None:
    """Measure training, sampling, preprocessing and start-up speed against same-run references."""
    from .bench import run_bench

    result = run_bench(quick=quick, gpu=gpu, output=output, batch_sizes=batch_sizes or (50,),
                       log=lambda m: click.echo(m, err=True), gpu_backend=gpu_backend)
    click.echo(result["markdown"])
    click.echo(f"\nwrote {output}", err=True)


# -- demo -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--output-dir", type=click.Path(file_okay=False), default="charrnn-demo", show_default=True)
@click.option("--seconds", type=POSITIVE_FLOAT, default=60.0, show_default=True, help="Training time budget.")
@click.option("--corpus-kb", type=POSITIVE_INT, default=400, show_default=True, help="Corpus size in KB.")
@click.option("--fast", is_flag=True, help="A few-second version (for tests).")
def demo(output_dir, seconds, corpus_kb, fast) -> None:
    """The whole pipeline on a built-in corpus: Python's own standard library source."""
    from .demo import run_demo

    run_demo(output_dir, seconds=3.0 if fast else seconds, corpus_kb=40 if fast else corpus_kb, fast=fast)


# -- serve ----------------------------------------------------------------------------------------
@cli.command()
@options_of(ServeOptions, checkpoints={"required": True})
@options_of(Settings, api_key={"envvar": "CHARRNN_API_KEY"})
def serve(checkpoints, runs, host, port, **options) -> None:
    """A web page, an OpenAI-compatible streaming API and a live training dashboard (needs charrnn[serve])."""
    from .serve.runner import serve as run

    run(list(checkpoints), list(runs), host, port, **options)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors become one line on stderr and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="charrnn", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("charrnn: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        line, code = error_line(exc)
        if code == INTERNAL_ERROR and os.environ.get("CHARRNN_DEBUG"):
            raise
        click.echo(line, err=True)
        sys.exit(code)


INTERNAL_ERROR = 70


def error_line(exc: Exception) -> tuple[str, int]:
    """The one line a failed command prints, and its exit status: typed errors and click's say what is
    wrong; anything else is a bug."""
    if isinstance(exc, CharRNNError):
        return f"charrnn: error: {exc.cli_message()}", exc.exit_code
    if isinstance(exc, click.ClickException):
        hint = (f" (see 'charrnn {exc.ctx.info_name} --help')"
                if isinstance(exc, click.UsageError) and exc.ctx and exc.ctx.parent else "")
        return f"charrnn: error: {exc.format_message()}{hint}", exc.exit_code
    if isinstance(exc, MemoryError):
        return "charrnn: error: out of memory (try a smaller --batch-size, --rnn-size or corpus)", 1
    if isinstance(exc, OSError):
        return f"charrnn: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", 1
    return (f"charrnn: internal error: {type(exc).__name__}: {exc} "
            "(set CHARRNN_DEBUG=1 for the traceback and please report it)"), INTERNAL_ERROR
