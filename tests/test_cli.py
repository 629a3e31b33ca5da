"""The command line as a whole: start-up, entry points, the demo."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest


def test_help_does_not_import_torch():
    code = "import sys; from charrnn.cli import cli; import charrnn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_python_dash_m_and_help_for_every_command():
    for args in ([], ["preprocess"], ["train"], ["sample"], ["demo"]):
        result = subprocess.run([sys.executable, "-m", "charrnn", *args, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_train_help_lists_every_torch_rnn_flag(cli):
    flags = ("--input-h5 --input-json --batch-size --seq-length --init-from --reset-iterations --model-type "
             "--wordvec-size --rnn-size --num-layers --dropout --batchnorm --max-epochs --learning-rate --grad-clip "
             "--lr-decay-every --lr-decay-factor --print-every --checkpoint-every --checkpoint-name "
             "--speed-benchmark --memory-benchmark --gpu --gpu-backend --seed --resume").split()
    text = cli("train", "--help").out
    assert [f for f in flags if f not in text] == []


def test_unknown_option_is_one_line(cli):
    result = cli("train", "--rnn_size", "3")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "--rnn_size" in result.err


@pytest.mark.slow
def test_demo_fast(tmp_path):
    result = subprocess.run([sys.executable, "-m", "charrnn", "demo", "--fast", "--output-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "temperature 0.5" in result.stdout and "temperature 1.0" in result.stdout
    assert (tmp_path / "d" / "stdlib.h5").exists() and list((tmp_path / "d" / "cv").glob("*.pt"))
    assert "charrnn sample --checkpoint" in result.stdout


# -- each option defined once: the CLI's defaults and choices are the API's ------------------------------
def click_params(command: str) -> dict:
    from charrnn.cli import cli
    return {p.name: p for p in cli.commands[command].params}


def as_api_value(param):
    """A click default as the API spells it (0/1 flags are booleans there; an unset path is None or "")."""
    import click
    if isinstance(param.type, click.IntRange) and (param.type.min, param.type.max) == (0, 1):
        return bool(param.default)
    unset = type(param.default).__name__ == "Sentinel"  # click >= 8.3 marks "no default" with a sentinel
    if getattr(param, "multiple", False) and (unset or param.default is None):
        return ()  # a repeatable option given no times: an empty tuple
    if unset:
        return False if getattr(param, "is_flag", False) else None
    return param.default


def signature_defaults(function) -> dict:
    import inspect
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def assert_same_defaults(command: str, api: dict, renamed: dict | None = None, skip=()) -> int:
    renamed = renamed or {}
    compared = 0
    for name, param in click_params(command).items():
        key = renamed.get(name, name)
        if key in skip or key not in api:
            continue
        cli_value, api_value = as_api_value(param), api[key]
        if api_value == "" and cli_value is None:  # a required-or-resumed path: unset on both sides
            continue
        assert cli_value == api_value and type(cli_value) is type(api_value), (command, name, cli_value, api_value)
        compared += 1
    return compared


def test_cli_defaults_are_the_api_defaults_for_every_command():
    from charrnn.evaluation import evaluate_checkpoint
    from charrnn.lr_find import lr_find
    from charrnn.novelty import novelty_report
    from charrnn.training.options import TrainConfig, defaults
    from charrnn.preprocessing import preprocess
    from charrnn.bench import run_bench
    from charrnn.checkpoint import convert_checkpoint
    from charrnn.demo import run_demo
    from charrnn.eval_options import EvalOptions
    from charrnn.plot import plot_runs
    from charrnn.sampling.options import SampleOptions
    from charrnn.sampling.sampler import Sampler, sample
    from charrnn.serve.options import ServeOptions, Settings

    train_defaults = defaults(TrainConfig)
    assert assert_same_defaults("train", train_defaults) == len(click_params("train")) - 3 - 2  # all but nproc,
    # preset, quiet (CLI-only) and input-h5/json (required unless resuming)
    assert assert_same_defaults("lr-find", {**train_defaults, **signature_defaults(lr_find)}) >= 15
    assert signature_defaults(lr_find)["start_lr"] == click_params("lr-find")["start_lr"].default == 1e-5
    assert assert_same_defaults("preprocess", signature_defaults(preprocess)) >= 9
    assert assert_same_defaults("sample", signature_defaults(sample)) >= 7
    for method in (Sampler.generate, Sampler.complete, Sampler.generate_many):
        assert assert_same_defaults("sample", signature_defaults(method)) >= 6, method
    assert assert_same_defaults("eval", signature_defaults(evaluate_checkpoint)) >= 7
    assert assert_same_defaults("novelty", signature_defaults(novelty_report)) >= 4
    assert assert_same_defaults("serve", defaults(Settings)) == 7  # create_app(**settings) takes these
    assert assert_same_defaults("plot", signature_defaults(plot_runs)) == 4
    # bench: the CLI always writes a file; no --batch-size given means the API's default
    assert assert_same_defaults("bench", signature_defaults(run_bench), skip=("output", "batch_sizes")) == 3
    assert assert_same_defaults("demo", signature_defaults(run_demo)) == 4
    assert assert_same_defaults("convert", signature_defaults(convert_checkpoint)) == 1
    from charrnn.export import export
    assert assert_same_defaults("export", signature_defaults(export)) == 3
    from charrnn.cli import cli
    assert set(cli.commands) == {"train", "lr-find", "preprocess", "sample", "eval", "novelty", "serve", "plot",
                                 "bench", "demo", "convert", "export"}, "a new command needs its line above"
    # each of sample, eval and serve defines its options once: every flag comes from a definition
    from charrnn.export.options import ExportOptions
    for command, classes in (("sample", [SampleOptions]), ("eval", [EvalOptions]), ("serve", [ServeOptions, Settings]),
                             ("export", [ExportOptions])):
        defined = {f.name: f.default for cls in classes for f in dataclasses.fields(cls)}
        assert set(click_params(command)) == set(defined), command
        required = ("checkpoint", "checkpoints")
        compared = [k for k, v in defined.items() if k not in required and v != ""]  # "" = unset on both sides
        assert assert_same_defaults(command, defined, skip=required) == len(compared), command


@pytest.mark.parametrize("field,value", [("temperature", 11), ("temperature", -1), ("seed", -1), ("seed", 2 ** 63),
                                         ("top_p", 0), ("top_k", -1), ("length", 0), ("num_samples", 0)])
def test_one_range_per_field_and_the_same_error_everywhere(cli, trained, field, value):
    """The CLI, the Python API and the server refuse a sampling value with the same words."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from charrnn.errors import InvalidInput
    from charrnn.sampling.options import SampleOptions
    from charrnn.sampling.sampler import Sampler
    from charrnn.serve import create_app

    span = {f.name: f.metadata["range"] for f in dataclasses.fields(SampleOptions)}[field]
    assert click_params("sample")[field].type.span is span
    problem = span.problem(value)
    line = cli("sample", "--checkpoint", trained, "--" + field.replace("_", "-"), str(value)).err
    assert problem in line and "--" + field.replace("_", "-") in line, line
    kwargs = {"length": 10, field: value}
    with pytest.raises(InvalidInput) as exc:
        if field == "num_samples":
            Sampler.from_checkpoint(trained).generate_many(value, 10)
        else:
            Sampler.from_checkpoint(trained).complete(**kwargs)
    assert (exc.value.field, exc.value.problem) == (field, problem)
    api_field = {"length": "max_tokens", "num_samples": "n"}.get(field, field)
    with TestClient(create_app([trained], log=lambda m: None)) as client:
        error = client.post("/v1/completions", json={api_field: value}).json()["error"]
    assert error["param"] == api_field and error["message"] == f"{api_field} {problem}", error


def test_choices_come_from_the_code_that_implements_them():
    from charrnn.config import BACKENDS, INIT_SCHEMES, PRECISIONS
    from charrnn.model import CELLS
    from charrnn.training.presets import PRESETS
    from charrnn.training.schedules import SCHEDULES

    for command in ("train", "lr-find"):
        params = click_params(command)
        assert tuple(params["model_type"].type.choices) == tuple(CELLS)
        assert tuple(params["weight_init"].type.choices) == INIT_SCHEMES
        assert tuple(params["precision"].type.choices) == PRECISIONS
        assert tuple(params["gpu_backend"].type.choices) == BACKENDS
    assert tuple(click_params("train")["lr_schedule"].type.choices) == SCHEDULES
    assert tuple(click_params("train")["preset"].type.choices) == tuple(PRESETS)


def test_nproc_relaunches_the_parsed_command_under_torchrun(cli, monkeypatch):
    import os
    launched = []
    monkeypatch.setattr(os, "execv", lambda path, args: launched.append(args) or sys.exit(0))
    result = cli("train", "--input-h5", "d.h5", "--nproc=2", "--rnn-size=16", "--time-budget", "5m", "--overwrite",
                 "--checkpoint-name", "cv/x y")
    assert result.code == 0, result
    (command,) = launched
    assert command[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    args = command[7:]
    assert args[0] == "train" and not any(a.startswith("--nproc") for a in args)
    pairs = dict(zip(args[1::2], args[2::2]))
    assert "--overwrite" in args and pairs["--rnn-size"] == "16" and pairs["--input-h5"] == "d.h5"
    assert pairs["--checkpoint-name"] == "cv/x y" and float(pairs["--time-budget"]) == 300.0
    assert "--batch-size" not in args  # defaults are left to the relaunched command


def test_api_and_cli_agree_on_presets_and_explicit_options(tmp_path):
    from charrnn.training.options import resolve_train_config
    from charrnn.training.presets import PRESETS

    config = resolve_train_config({"input_h5": "x.h5", "input_json": "x.json", "rnn_size": 8}, "cpu-small")
    assert config.rnn_size == 8 and config.lr_schedule == PRESETS["cpu-small"]["lr_schedule"]
    with pytest.raises(Exception, match="--preset must be one of"):
        resolve_train_config({}, "gpu-huge")
    with pytest.raises(TypeError, match="rnn_sise"):
        resolve_train_config({"rnn_sise": 3})
