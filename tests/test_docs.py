"""The docs stay true: the flags reference matches the command line, the README stays short, links resolve."""

import importlib.util
import re
from pathlib import Path

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
