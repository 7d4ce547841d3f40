"""The library stands alone: ``mad_models`` never imports the app, gradio or ``hub_tools``.

Data flows one way (Hub/assets -> hub_tools -> mad_models, the app on top), so the library can be
used, tested and released without the app's or the Hub tools' dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "mad_models"
FORBIDDEN = ("gradio", "gradio_client", "app", "app_backend", "hub_tools")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (  # importlib.import_module("x") / __import__("x") with a literal name
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_the_scan_sees_lazy_and_dynamic_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import importlib\n"
        "def f():\n    from hub_tools import pull\n"
        "def g():\n    return importlib.import_module('gradio.blocks'), __import__('app_backend')\n"
    )
    assert imported_modules(src) & set(FORBIDDEN) == {"hub_tools", "gradio", "app_backend"}


def test_no_library_file_imports_the_app_gradio_or_hub_tools():
    """Not even lazily, inside a function: the AST walk sees every import statement."""
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_modules(p) & set(FORBIDDEN)) for p in LIBRARY.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_library_module_loads_neither_gradio_nor_hub_tools():
    code = (
        "import pkgutil, sys, mad_models\n"
        "for m in pkgutil.walk_packages(mad_models.__path__, 'mad_models.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        __import__(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'gradio', 'gradio_client', 'app_backend', 'hub_tools'})\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_the_app_backend_is_not_inside_the_library():
    assert not (LIBRARY / "app_backend").exists()
    assert (ROOT / "app_backend" / "service.py").is_file()
