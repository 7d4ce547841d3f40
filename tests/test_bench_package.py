"""bench/ is a package: tests import its scripts as ``bench.<name>``, and the scripts still run as files
(``python bench/x.py``, from any folder) and as modules (``python -m bench.x``)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")
SIBLINGS = {p.stem for p in SCRIPTS}


def _imported(path: Path) -> set[str]:
    """Top-level names of the modules a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("how", ["file", "module"])
def test_a_bench_script_that_imports_a_sibling_runs_both_ways(how, tmp_path):
    # fresh_math imports bench.paired_tests and nothing heavy, so --help answers at once
    argv = [str(ROOT / "bench" / "fresh_math.py")] if how == "file" else ["-m", "bench.fresh_math"]
    proc = _run([*argv, "--help"], cwd=tmp_path if how == "file" else ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_no_bench_script_imports_a_sibling_by_its_bare_name():
    # `import reproduce_mad` works only as a file (bench/ is then sys.path[0]); `python -m bench.x` fails
    offenders = {p.name: sorted(_imported(p) & SIBLINGS) for p in SCRIPTS if _imported(p) & SIBLINGS}
    assert not offenders, f"import siblings as `from bench import x`: {offenders}"


# Runs each script as `python bench/x.py --help` would (its folder first on sys.path, run as __main__), all in
# one process so that torch is imported once; bench's modules are forgotten between scripts.
AS_FILES = """
import runpy, sys
rest = sys.path[1:]
for script in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        del sys.modules[name]
    sys.path[:] = [script.rsplit("/", 1)[0], *rest]
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), (script, e.code)
    else:
        raise AssertionError(f"{script} --help did not exit")
    print("ok", script, flush=True)
"""


def test_every_bench_script_that_imports_bench_runs_as_a_file(tmp_path):
    scripts = [str(p) for p in SCRIPTS if "bench" in _imported(p)]
    assert len(scripts) >= 4  # fresh_math, mad_calibrate, reproduce, reproduce_listops
    proc = _run(["-c", AS_FILES, *scripts], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert ran == scripts, proc.stdout[-3000:]


def test_tests_import_bench_without_path_hacks():
    offenders = [
        p.name
        for p in sorted((ROOT / "tests").glob("*.py"))
        if p.name != Path(__file__).name
        and any(s in p.read_text() for s in ("sys.path.insert", "spec_from_file_location"))
    ]
    assert not offenders, f"import bench scripts as `from bench import x` instead: {offenders}"
