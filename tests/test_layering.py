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


# ----------------------------------------------------------------------------- public seams, no cycles

PACKAGES = ("mad_models", "hub_tools", "app_backend", "build_assets", "bench")


def module_name(path: Path) -> str:
    """``mad_models/more/config.py`` -> ``mad_models.more.config``; an ``__init__`` is its package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files() -> list[Path]:
    """Every Python file of the products: the packages above and the app's entry point."""
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [*files, ROOT / "app.py"]


def imports_of(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` for each import in ``path``, anywhere in the file (lazy ones included), except
    under ``if TYPE_CHECKING:`` (annotations only, never run).

    ``import a.b`` gives ``("a.b", None)``; ``from a.b import c`` gives ``("a.b", "c")``; a relative import
    is resolved against the file's own package.
    """
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [(module, a.name) for a in node.names]
    return found


def test_the_import_scan_resolves_relative_imports(tmp_path, monkeypatch):
    pkg = ROOT / "mad_models" / "more" / "config.py"
    assert ("mad_models.more._peft_type", "ensure_peft_type") in imports_of(pkg)


def test_no_module_imports_a_private_name_from_another_package():
    """Packages meet through public names: ``from mad_models.cli import _print`` in hub_tools is refused
    (a leading underscore in the imported name or in any part of the module path)."""
    offenders = []
    for path in product_files():
        mine = module_name(path).split(".")[0]
        for module, name in imports_of(path):
            top = module.split(".")[0]
            if top not in PACKAGES or top == mine:
                continue
            private = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
            if name is not None and name.startswith("_") and not name.startswith("__"):
                private.append(name)
            if private:
                offenders.append(f"{path.relative_to(ROOT)}: from {module} import {name} ({private})")
    assert offenders == []


def test_no_module_imports_a_private_name_of_peft_or_transformers():
    """Their private helpers change without notice (PEFT's ``_get_in_out_features`` was one we used):
    the products use their public API only."""
    offenders = []
    for path in product_files():
        for module, name in imports_of(path):
            if module.split(".")[0] not in ("peft", "transformers"):
                continue
            parts = [*module.split("."), *([name] if name else [])]
            private = [p for p in parts if p.startswith("_") and not p.startswith("__")]
            if private:
                offenders.append(f"{path.relative_to(ROOT)}: from {module} import {name} ({private})")
    assert offenders == []


def library_import_graph() -> dict[str, set[str]]:
    """mad_models module -> the mad_models modules it imports (at module level or lazily).

    ``from mad_models.more import config`` names the module ``mad_models.more.config``; importing a name
    from a package counts as importing that package's ``__init__`` only.
    """
    files = {module_name(p): p for p in (ROOT / "mad_models").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for me, path in files.items():
        edges = set()
        for module, name in imports_of(path):
            if module.split(".")[0] != "mad_models":
                continue
            if name is not None and f"{module}.{name}" in files:
                edges.add(f"{module}.{name}")
            elif module in files:
                edges.add(module)
        edges.discard(me)
        graph[me] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_the_library():
    """Not even through imports inside functions: a package's modules form a DAG (a package ``__init__``
    may import its own modules, which is not a cycle unless one of them imports the ``__init__`` back)."""
    assert cycles(library_import_graph()) == []
