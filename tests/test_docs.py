"""The documentation site: it builds with warnings as errors, covers every public module, and what it
shows (Python examples, command lines) runs."""

from __future__ import annotations

import argparse
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hub_tools
import mad_models
from mad_models.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# modules that are not API: the command line (docs/cli.md covers it) and `python -m mad_models`
NOT_API = {"mad_models.cli", "mad_models.__main__", "hub_tools.cli"}


def test_docs_build_strict_without_warnings(tmp_path):
    """`mkdocs build --strict` (griffe's docstring checks and broken links are warnings, hence errors)."""
    site = tmp_path / "site"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(f"mkdocs build: {time.perf_counter() - start:.1f} s")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    # the API pages hold the rendered docstrings, not just their titles
    more = (site / "api/more/index.html").read_text()
    assert 'id="mad_models.more.MoReConfig"' in more and "block_rank" in more
    hybrid = (site / "api/hybrid/index.html").read_text()
    assert 'id="mad_models.hybrid.ManticoreForCausalLM"' in hybrid
    # "Example:" sections render as Python code (docs/griffe_examples.py), not as Markdown quotes
    monarch = (site / "api/monarch/index.html").read_text()
    assert "monarch_multiply" in monarch and "<blockquote>" not in monarch


def _public_modules(package) -> set[str]:
    return {
        f"{package.__name__}.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_") and f"{package.__name__}.{m.name}" not in NOT_API
    }


def test_every_public_module_has_an_api_page():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.M))
    covered = lambda mod: any(d == mod or d.startswith(mod + ".") for d in documented)  # noqa: E731
    missing = sorted(m for m in _public_modules(mad_models) | _public_modules(hub_tools) if not covered(m))
    assert not missing, f"add these modules to a page under docs/api/ (and to nav in mkdocs.yml): {missing}"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"api/{p.name}" in nav for p in (DOCS / "api").glob("*.md"))


def _python_examples(path: Path, marker: str) -> dict[str, str]:
    """Python blocks right after a ``<!-- MARKER: NAME -->`` comment."""
    pattern = rf"<!-- {marker}: ([\w-]+) -->\s*```python\n(.*?)```"
    return dict(re.findall(pattern, path.read_text(), flags=re.S))


def test_docs_examples_run(tmp_path):
    """The quick starts of docs/index.md run. Those identical to a README example are run by
    tests/test_readme.py already; the others run here, each in a fresh namespace, in one interpreter."""
    examples = _python_examples(DOCS / "index.md", "docs-example")
    assert {"more", "hybrid", "mad"} <= set(examples)
    in_readme = set(_python_examples(ROOT / "README.md", "readme-example").values())
    todo = {name: code for name, code in examples.items() if code not in in_readme}
    runner = "for name, code in EXAMPLES.items():\n    print('example:', name, flush=True)\n"
    runner += "    exec(compile(code, f'docs/index.md:{name}', 'exec'), {'__name__': '__main__'})\n"
    proc = subprocess.run(
        [sys.executable, "-c", f"EXAMPLES = {todo!r}\n{runner}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ran = re.findall(r"^example: (\S+)", proc.stdout, re.M)
    assert proc.returncode == 0, f"docs example {ran[-1:]} failed:\n{proc.stderr[-3000:]}"
    assert ran == list(todo)


def _commands(parser: argparse.ArgumentParser, prefix=()) -> set[tuple[str, ...]]:
    """Every leaf command of the parser, as ("more", "eval"), ("push",), ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix}
    return {c for name, p in subs[0].choices.items() for c in _commands(p, (*prefix, name))}


def test_cli_page_lists_every_command_and_its_command_lines_parse():
    text = (DOCS / "cli.md").read_text()
    parser = build_parser()
    listed = {tuple(cmd.split()) for cmd in re.findall(r"^\| `mad-models ([a-z -]+)` \|", text, re.M)}
    assert listed == _commands(parser)
    bash = "".join(re.findall(r"```bash\n(.*?)```", text, re.S)).replace("\\\n", " ")
    lines = re.findall(r"^(mad-models .+)$", bash, re.M)
    assert lines
    for line in lines:
        try:
            parser.parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit as err:
            pytest.fail(f"docs/cli.md: {line!r} does not parse (exit {err.code})")
