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
    meta, flag = f.metadata, "--" + f.name.replace("_", "-")
    if meta.get("kind") == "flag":
        return click.option(flag, is_flag=True, default=f.default, help=meta["help"], **extra)
    base, kind, span = str(f.type).replace(" | None", "").strip(), meta.get("kind"), meta.get("range")
    if kind == "01":
        kind_type, default = FLAG01, int(f.default)
    else:
        default = None if f.default == "" else f.default
        if kind == "duration":
            kind_type = Duration()
        elif kind in ("path", "dir"):
            kind_type = click.Path(file_okay=kind == "path")
        elif meta.get("choices"):
            kind_type = click.Choice(meta["choices"])
        elif span is not None:
            kind_type = (click.IntRange if base == "int" else click.FloatRange)(
                min=span.low, max=span.high, min_open=span.low_open, max_open=span.high_open)
        else:
            kind_type = {"int": int, "float": float, "str": str}[base]
    return click.option(flag, type=kind_type, default=default, show_default=default is not None,
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
@click.option("--quiet", is_flag=True, help="Print nothing.")
def preprocess(input_txt, output_h5, output_json, val_frac, test_frac, encoding, lowercase, input_json, unknown_char,
               vocab_from, dtype, compression, quiet) -> None:
    """Turn a text file into torch-rnn's HDF5 token file and JSON vocabulary."""
    from .preprocessing import preprocess as run

    start = time.perf_counter()
    result = run(input_txt, output_h5, output_json, val_frac, test_frac, encoding, lowercase,
                 log=None if quiet else click.echo, input_json=input_json, unknown_char=unknown_char,
                 vocab_from=vocab_from, dtype=dtype, compression=compression)
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
        click.echo(f"final checkpoint: {result.checkpoint}\n"
                   f"sample it with: charrnn sample --checkpoint {result.checkpoint}")


# -- sample ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file, or a directory (its newest).")
@click.option("--length", type=POSITIVE_INT, default=2000, show_default=True, help="Characters, start text included.")
@click.option("--start-text", default="", help="Text the model reads first; the output begins with it.")
@click.option("--sample", "sample_flag", type=FLAG01, default=1, show_default=True, help="0 = argmax at every step.")
@click.option("--temperature", type=POSITIVE_FLOAT, default=1.0, show_default=True,
              help="Divides the scores before the softmax: lower is safer, higher is wilder.")
@click.option("--top-k", type=NON_NEGATIVE_INT, default=0, show_default=True,
              help="Draw only among the k most likely characters; 0 = all.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Draw only among the most likely characters that together hold this probability.")
@click.option("--stop", multiple=True, help="End the text just before this string (repeatable, up to 4).")
@click.option("--seed", type=int, default=None,
              help="Make the sample reproducible (sample j of --num-samples uses seed + j).")
@click.option("--gpu", type=int, default=-1, show_default=True, help=GPU_HELP.split(";")[0] + ".")
@click.option("--gpu-backend", type=click.Choice(["cuda", "mps"]), default="cuda", show_default=True)
@click.option("--num-samples", type=POSITIVE_INT, default=1, show_default=True,
              help="Independent samples, generated together in one batch (separated by a blank line).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--verbose", type=FLAG01, default=0, show_default=True, help="1 = report speed on stderr.")
def sample(checkpoint, length, start_text, sample_flag, temperature, top_k, top_p, stop, seed, gpu, gpu_backend,
           num_samples, output, verbose) -> None:
    """Generate text from a checkpoint, streamed as it is produced."""
    from .sampling.sampler import Sampler

    start = time.perf_counter()
    sampler = Sampler.from_checkpoint(checkpoint, gpu=gpu, gpu_backend=gpu_backend)
    binary = sampler.vocab.byte_mode
    params = dict(argmax=not sample_flag, temperature=temperature, seed=seed, top_k=top_k, top_p=top_p, stop=stop)
    if num_samples > 1:
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


# -- eval and convert -----------------------------------------------------------------------------
@cli.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(), help="A charrnn (.pt) or torch-rnn (.t7) checkpoint.")
@click.option("--input-h5", type=click.Path(), help="HDF5 file [default: the one the checkpoint was trained on].")
@click.option("--input-json", type=click.Path(), help="Optional: check that this vocabulary matches the checkpoint.")
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val", show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, help="[default: the checkpoint's]")
@click.option("--seq-length", type=POSITIVE_INT, help="[default: the checkpoint's]")
@click.option("--gpu", type=int, default=-1, show_default=True, help=GPU_HELP.split(";")[0] + ".")
@click.option("--gpu-backend", type=click.Choice(["cuda", "mps"]), default="cuda", show_default=True)
def eval_command(checkpoint, input_h5, input_json, split, batch_size, seq_length, gpu, gpu_backend) -> None:
    """Mean loss of a checkpoint over a whole split, in nats and bits per character."""
    from .evaluation import evaluate_checkpoint

    r = evaluate_checkpoint(checkpoint, input_h5, split, input_json, batch_size, seq_length, gpu, gpu_backend)
    click.echo(f"{r.split} loss = {r.loss:.6f} nats/char, {r.bits_per_char:.4f} bits/char "
               f"({r.batches} batches of {r.batch_size}x{r.seq_length})")


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--output", "-o", required=True, help="Checkpoint name: writes <name>_<iteration>.pt and .json.")
@click.option("--overwrite", is_flag=True, help="Replace an existing <name>_<iteration>.pt and .json.")
def convert(checkpoint, output, overwrite) -> None:
    """Convert a torch-rnn .t7 checkpoint into a native charrnn checkpoint."""
    from .checkpoint import convert_checkpoint

    path = convert_checkpoint(checkpoint, output, overwrite=overwrite)
    click.echo(f"wrote {path} and {path.with_suffix('.json')}")


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
@click.option("--checkpoint", "checkpoints", required=True, multiple=True, type=click.Path(),
              help="A checkpoint (.pt or .t7), or a directory: its newest, followed as training writes more. Repeatable.")
@click.option("--runs", multiple=True, type=click.Path(),
              help="Training runs for the dashboard: checkpoint directories or prefixes (cv/checkpoint). Repeatable.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 = any free port.")
@click.option("--api-key", envvar="CHARRNN_API_KEY", help="Require 'Authorization: Bearer KEY' on the API [env: CHARRNN_API_KEY].")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin. Repeatable.")
@click.option("--max-batch", type=POSITIVE_INT, default=64, show_default=True, help="Rows generated together.")
@click.option("--max-queue", type=NON_NEGATIVE_INT, default=256, show_default=True,
              help="Requests waiting for a row; beyond it: 429.")
@click.option("--max-tokens", type=POSITIVE_INT, default=10000, show_default=True, help="Longest completion.")
@click.option("--max-prompt", type=POSITIVE_INT, default=10000, show_default=True, help="Longest prompt (characters).")
@click.option("--request-timeout", type=POSITIVE_FLOAT, default=120.0, show_default=True, help="Seconds per request.")
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
