"""Typed errors: library code names options by field, never by CLI flag; each front end spells them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

import charrnn
from charrnn import errors
from charrnn.cli import cli as command_line
from charrnn.errors import CharRNNError, Conflict, InvalidInput, opt

from .conftest import TINY, assert_one_line_error

PACKAGE = Path(charrnn.__file__).parent
# The CLI spells flags by design; the server's raise sites belong to the serve split.
EXEMPT = ("cli.py", "serve/")
ERROR_NAMES = {name for name, value in vars(errors).items() if isinstance(value, type)
               and issubclass(value, Exception)} | {"ValueError", "TypeError"}


def cli_flags(command: click.Command = command_line) -> set[str]:
    """Every long flag of every charrnn command."""
    found = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    for sub in getattr(command, "commands", {}).values():
        found |= cli_flags(sub)
    return found


def _error_texts(tree: ast.AST):
    """(line, text) of each string literal inside a raise or an error constructor call, in order."""
    seen = {}
    for node in ast.walk(tree):
        called = isinstance(node, ast.Call) and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
        if isinstance(node, ast.Raise) or called in ERROR_NAMES:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    seen[sub.lineno, sub.col_offset] = sub.value
    return [(line, text) for (line, _), text in sorted(seen.items())]


def flag_spellings(source: str, flags: set[str]) -> list[tuple[int, str]]:
    words = re.compile(r"--[a-z][a-z0-9-]*")
    return [(line, word) for line, text in _error_texts(ast.parse(source)) for word in words.findall(text)
            if word in flags]


def test_the_scan_sees_a_flag_in_an_error_message():
    flags = {"--seq-length", "--gpu"}
    source = ('def f(n):\n    if n:\n        raise InvalidInput("batch_size", f"x --seq-length = {n}")\n'
              '    return CharRNNError("use --gpu -1")\n')
    assert flag_spellings(source, flags) == [(3, "--seq-length"), (4, "--gpu")]
    assert flag_spellings('raise InvalidInput("gpu", f"use {opt(\'gpu\')} -1")', flags) == []


def test_no_library_error_spells_a_cli_flag():
    flags = cli_flags()
    assert {"--seq-length", "--encoding", "--gpu"} <= flags  # the scan knows the real flags
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith(EXEMPT):
            found += [f"{relative}:{line}: {word}" for line, word in flag_spellings(path.read_text(), flags)]
    assert not found, "library errors name fields (errors.opt), not flags:\n" + "\n".join(found)


def test_each_front_end_spells_the_fields():
    exc = InvalidInput("resume", f"holds no training state; use {opt('init_from')} instead")
    assert (exc.field, exc.fields, exc.mentions) == ("resume", ("resume",), ("resume", "init_from"))
    assert exc.cli_message() == "--resume holds no training state; use --init-from instead"
    assert exc.api_message() == "resume holds no training state; use init_from instead"
    assert exc.problem == "holds no training state; use init_from instead"


def test_a_conflict_names_both_fields():
    exc = Conflict(("val_frac", "test_frac"), "must sum to below 1")
    assert isinstance(exc, InvalidInput) and exc.field == "val_frac" and exc.fields == ("val_frac", "test_frac")
    assert str(exc) == "--val-frac and --test-frac must sum to below 1"
    assert exc.api_message() == "val_frac and test_frac must sum to below 1"


@pytest.mark.parametrize("options,fields", [
    (dict(val_frac=1.5), ("val_frac",)), (dict(test_frac=-0.1), ("test_frac",)),
    (dict(val_frac=0.5, test_frac=0.5), ("val_frac", "test_frac")),
    (dict(encoding="no-such-codec"), ("encoding",)), (dict(dtype="int7"), ("dtype",)),
    (dict(compression="zip"), ("compression",)), (dict(vocab_from="test"), ("vocab_from",)),
])
def test_preprocess_errors_carry_their_fields(corpus, tmp_path, options, fields):
    with pytest.raises(InvalidInput) as exc:
        charrnn.preprocess(corpus, tmp_path / "o.h5", tmp_path / "o.json", **options)
    assert exc.value.fields == fields
    assert not (tmp_path / "o.h5").exists()


def test_a_byte_vocabulary_needs_the_bytes_encoding(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("héllo wörld, grüße " * 200, encoding="utf-8")  # bytes above 127: a byte vocabulary
    charrnn.preprocess(corpus, tmp_path / "b.h5", tmp_path / "b.json", encoding="bytes")
    with pytest.raises(InvalidInput) as exc:
        charrnn.preprocess(corpus, tmp_path / "o.h5", tmp_path / "o.json", input_json=tmp_path / "b.json")
    assert exc.value.field == "encoding" and "byte vocabulary" in exc.value.problem


def test_a_missing_gpu_names_the_gpu_field():
    with pytest.raises(InvalidInput) as exc:
        charrnn.select_device(1 << 20)
    assert exc.value.field == "gpu" and exc.value.mentions == ("gpu",)
    with pytest.raises(InvalidInput) as exc:
        charrnn.select_device(0, "opencl")
    assert exc.value.field == "gpu_backend"


def test_model_options_name_their_fields():
    with pytest.raises(InvalidInput) as exc:
        charrnn.CharRNN(charrnn.ModelConfig(10, "transformer"))
    assert exc.value.field == "model_type"
    with pytest.raises(InvalidInput) as exc:
        charrnn.CharRNN(charrnn.ModelConfig(10)).reset_parameters("zeros")
    assert exc.value.field == "weight_init"


def test_training_errors_carry_their_fields(dataset, tmp_path):
    h5, js = map(str, dataset)
    with pytest.raises(InvalidInput) as exc:
        charrnn.train(input_h5=h5, input_json=js, **{**TINY, "batch_size": 1, "seq_length": 1}, batchnorm=True)
    assert exc.value.field == "batchnorm" and exc.value.mentions == ("batchnorm", "batch_size", "seq_length")
    first = charrnn.train(input_h5=h5, input_json=js, max_iters=2, checkpoint_name=str(tmp_path / "a"), **TINY)
    with pytest.raises(InvalidInput) as exc:
        charrnn.train(input_h5=h5, input_json=js, max_iters=2, checkpoint_name=str(tmp_path / "a"), **TINY)
    assert exc.value.field == "checkpoint_name" and {"resume", "overwrite"} <= set(exc.value.mentions)
    with pytest.raises(InvalidInput) as exc:
        charrnn.train(resume=str(first.checkpoint), max_iters=2, checkpoint_name=str(tmp_path / "b"), gpu=-1,
                      print_every=0)
    assert exc.value.field == "max_iters" and "nothing to do" in exc.value.problem


def test_the_cli_renders_a_conflict_as_flags(cli, corpus, tmp_path):
    result = cli("preprocess", "--input-txt", corpus, "--output-h5", tmp_path / "o.h5", "--output-json",
                 tmp_path / "o.json", "--val-frac", "0.6", "--test-frac", "0.5")
    assert_one_line_error(result, "--val-frac and --test-frac must sum to below 1")

