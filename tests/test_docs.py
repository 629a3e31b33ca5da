"""The docs stay true: the flags reference matches the command line."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_reference_is_generated_from_the_current_command_line():
    module = gen_docs()
    assert module.FLAGS_MD.read_text() == module.render(), (
        f"docs/flags.md is stale: regenerate it with `{module.REGENERATE}`")


def test_flags_reference_covers_every_command_and_flag():
    module = gen_docs()
    text = module.FLAGS_MD.read_text()
    for name, command in module.commands(module.cli_group()):
        assert f"## `charrnn {name}`" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}`" in text, f"{name} {opt}"
