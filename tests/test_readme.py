"""The README's top commands and its Python examples are the ones that work."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> dict[str, str]:
    """Python blocks placed right after a ``<!-- readme-example: NAME -->`` marker."""
    text = README.read_text()
    found = re.findall(r"<!-- readme-example: ([\w-]+) -->\s*```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_readme_opens_with_the_app_and_test_commands():
    text = README.read_text()
    block = r"<!-- (app|test)-command -->\s*```bash\n(.*?)\n```\s*<!-- /\1-command -->"
    commands = re.findall(block, text, re.S)
    assert [name for name, _ in commands] == ["app", "test"]
    app_cmd, test_cmd = (cmd.strip() for _, cmd in commands)
    assert "\n" not in app_cmd and "\n" not in test_cmd
    assert "requirements.txt" in app_cmd and app_cmd.endswith("python app.py")
    assert "requirements-dev.txt" in test_cmd and test_cmd.endswith("python -m pytest")
    # both commands come before any other code block
    first_block = text.index("```")
    assert first_block == text.index("```bash\n" + app_cmd)


def test_readme_has_the_examples_it_promises():
    assert {"more", "hybrid", "mad"} <= set(_examples())


@pytest.mark.parametrize("name", sorted(_examples()))
def test_readme_example_runs(name, tmp_path):
    code = _examples()[name]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(README.parent)},
    )
    assert proc.returncode == 0, f"README example {name!r} failed:\n{proc.stderr[-3000:]}"
