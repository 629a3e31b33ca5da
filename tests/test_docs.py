"""The docs stay true: the flags reference matches the command line, the README stays short, links resolve."""

import importlib
import importlib.util
import shlex
import re
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    targets = (m.group(1) for m in LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


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


def test_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file():
    broken = []
    for page in [ROOT / "README.md", *DOCS]:
        for target in relative_links(page):
            file = target.split("#", 1)[0]
            if not (page.parent / file).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_link_check_sees_links_and_skips_urls_and_anchors(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[a](docs/x.md) ![b](img.png) [c](https://e.org/y) [d](#top)\n```\n[e](z.md)\n```\n")
    assert relative_links(page) == ["docs/x.md", "img.png"]


PENDING: set[str] = set()  # commands and paths documented ahead of the code that adds them (none now)
NOT_OURS = {"scripts/preprocess.py"}  # torch-rnn's script, named where its flags are mapped
PAGES = [ROOT / "README.md", *DOCS]


def shell_commands(page: Path) -> list[list[str]]:
    """The ``charrnn ...`` command lines of a page's bash blocks, as argument lists after ``charrnn``."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            words = words[:-1] if words and words[-1] == "&" else words
            at = words.index("charrnn") if "charrnn" in words else -1  # charrnn, -m charrnn, docker run ... charrnn
            if at >= 0 and (at == 0 or words[at - 1] == "-m" or words[:2] == ["docker", "run"]):
                found.append(words[at + 1:])
    return found


def test_every_charrnn_command_line_in_the_docs_parses():
    group = gen_docs().cli_group()
    lines = [(page, words) for page in PAGES for words in shell_commands(page)]
    assert len(lines) > 20
    for page, words in lines:
        command = group.get_command(click.Context(group), words[0])
        if command is None and words[0] in PENDING:
            continue
        assert command is not None, f"{page.name}: charrnn {words[0]} is no command"
        command.make_context(f"charrnn {words[0]}", words[1:])  # raises on an unknown flag or a bad value


def test_every_python_name_and_repository_path_in_the_docs_exists():
    text = "\n".join(page.read_text() for page in PAGES)
    for dotted in set(re.findall(r"\bcharrnn((?:\.[A-Za-z_]\w*)+)", text)):
        parts, obj = dotted.strip(".").split("."), importlib.import_module("charrnn")
        for i, part in enumerate(parts):
            if not hasattr(obj, part):
                obj = importlib.import_module("charrnn." + ".".join(parts[:i + 1]))
            obj = getattr(obj, part) if hasattr(obj, part) else obj
    paths = set(re.findall(r"`((?:charrnn|tests|benchmarks|scripts|docs)/[\w./-]*\w)`", text))
    missing = sorted(p for p in paths - PENDING - NOT_OURS if not (ROOT / p).exists())
    assert not missing, missing
