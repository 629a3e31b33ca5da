"""Generate docs/flags.md from the click command tree, so the flags reference cannot drift.

    python scripts/gen_docs.py           # rewrite docs/flags.md
    python scripts/gen_docs.py --check   # exit 1 if docs/flags.md is stale (tests/test_docs.py does this)

Every command and every parameter comes from ``charrnn.cli`` itself (flag, type or choices, default,
help), whichever way the command defines its options, so a new command or flag shows up here by
running the script. The torch-rnn column is the one fixed fact added by hand: torch-rnn is finished,
its flag names will not change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
FLAGS_MD = ROOT / "docs" / "flags.md"
REGENERATE = "python scripts/gen_docs.py"

# torch-rnn's flags (shared/REFERENCE.md): preprocess.py spells them --snake_case, the Lua scripts -snake_case.
TORCH_RNN = {
    "preprocess": ("--", "input_txt output_h5 output_json val_frac test_frac quiet encoding"),
    "train": ("-", "input_h5 input_json batch_size seq_length init_from reset_iterations model_type wordvec_size "
                   "rnn_size num_layers dropout batchnorm max_epochs learning_rate grad_clip lr_decay_every "
                   "lr_decay_factor print_every checkpoint_every checkpoint_name speed_benchmark memory_benchmark "
                   "gpu gpu_backend"),
    "sample": ("-", "checkpoint length start_text sample temperature gpu gpu_backend verbose"),
}
TORCH_RNN_SCRIPT = {"preprocess": "scripts/preprocess.py", "train": "train.lua", "sample": "sample.lua"}


def cli_group() -> click.Group:
    """The root click group of ``charrnn`` (found by type, whatever its variable is called)."""
    from charrnn import cli

    groups = [v for v in vars(cli).values() if isinstance(v, click.Group)]
    if len(groups) != 1:
        raise SystemExit(f"expected one click group in charrnn.cli, found {len(groups)}")
    return groups[0]


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command under ``group`` (subgroups included), in the order ``--help`` lists them."""
    ctx = click.Context(group, info_name="charrnn")
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += commands(command, prefix + name + " ")
    return found


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def type_name(param: click.Parameter) -> str:
    """The value a parameter takes, in words."""
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        return "flag"
    kind = param.type
    if isinstance(kind, click.Choice):
        text = " \\| ".join(f"`{c}`" for c in kind.choices)
    elif isinstance(kind, (click.IntRange, click.FloatRange)):
        base = "integer" if isinstance(kind, click.IntRange) else "number"
        low = f"{'>' if kind.min_open else '>='} {kind.min:g}" if kind.min is not None else ""
        high = f"{'<' if kind.max_open else '<='} {kind.max:g}" if kind.max is not None else ""
        text = f"{base} {', '.join(p for p in (low, high) if p)}"
    else:
        text = {"integer": "integer", "float": "number", "text": "text", "path": "path", "directory": "path",
                "file": "path"}.get(kind.name, kind.name)
    return text + (" (repeatable)" if getattr(param, "multiple", False) else "")


def default_text(param: click.Parameter) -> str:
    """The default as the command line sees it."""
    if param.required:
        return "required"
    default = param.default
    unset = default is None or type(default).__name__ == "Sentinel"  # click >= 8.2: a sentinel, not None
    if getattr(param, "is_flag", False) and (unset or not default):
        return "off"
    if unset or default == () or default == "":
        text = "–"
    elif isinstance(default, float):
        text = f"`{default:g}`"
    else:
        text = f"`{default}`"
    envvar = getattr(param, "envvar", None)
    return text + (f" (env `{envvar}`)" if envvar else "")


def flag_text(param: click.Parameter) -> str:
    """How a parameter is spelled: its flags, or an argument's name."""
    if isinstance(param, click.Argument):
        return f"`{param.human_readable_name}`" + (" ..." if param.nargs == -1 else "")
    return ", ".join(f"`{o}`" for o in sorted(param.opts + param.secondary_opts, key=len))


def command_section(name: str, command: click.Command) -> list[str]:
    """One command's heading, summary and table of parameters."""
    torch_rnn = TORCH_RNN.get(name)
    lines = [f"## `charrnn {name}`", "", _cell((command.help or "").split("\n\n")[0]), ""]
    if torch_rnn:
        lines[-1:] = ["", f"torch-rnn's `{TORCH_RNN_SCRIPT[name]}`; its flags are in the torch-rnn column.", ""]
    header = ["flag", "takes", "default", "meaning"] + (["torch-rnn"] if torch_rnn else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for param in command.params:
        if getattr(param, "hidden", False) or param.name == "help":
            continue
        row = [flag_text(param), type_name(param), default_text(param), _cell(getattr(param, "help", None) or "")]
        if torch_rnn:
            dash, known = torch_rnn
            option = max(getattr(param, "opts", [""]), key=len).lstrip("-").replace("-", "_")
            row.append(f"`{dash}{option}`" if option in known.split() else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def render() -> str:
    """docs/flags.md, as the current command line defines it."""
    group = cli_group()
    found = commands(group)
    lines = ["<!-- Generated by scripts/gen_docs.py from the click command tree: do not edit by hand. -->",
             f"<!-- Regenerate with: {REGENERATE} -->", "", "# Flags reference", "",
             "Every command of `charrnn` and every flag, as `charrnn COMMAND --help` prints them. "
             "Each torch-rnn flag works kebab-cased (`-rnn_size 256` becomes `--rnn-size 256`) with torch-rnn's "
             "default.", "",
             "Commands: " + ", ".join(f"[`{n}`](#charrnn-{n.replace(' ', '-')})" for n, _ in found) + ".", ""]
    for name, command in found:
        lines += command_section(name, command)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/flags.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not FLAGS_MD.exists() or FLAGS_MD.read_text() != text:
            print(f"{FLAGS_MD.relative_to(ROOT)} is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    from charrnn.fileio import atomic_write

    with atomic_write(FLAGS_MD, "w") as f:
        f.write(text)
    print(f"wrote {FLAGS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
