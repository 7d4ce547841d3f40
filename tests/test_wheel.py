"""The wheel is a library that works outside the checkout: built from the repo, installed in a fresh
virtual environment, it declares its dependencies and runs the README's MoRe example and ``mad-models --help``
from a folder that is not the checkout.

The fresh environment gets the wheel alone (``--no-deps``); its dependencies (torch, transformers, peft, ...)
are this environment's, reached through a ``.pth`` line, so the test stays offline and fast. That line adds
the folder only: the editable install of the checkout in it (a ``.pth`` of its own) is not activated, and the
test checks that ``mad_models`` and ``hub_tools`` are imported from the wheel's files.
"""

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DEPS = {"torch", "transformers", "peft", "safetensors", "huggingface-hub"}


def more_example() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- readme-example: more -->\s*```python\n(.*?)```", text, flags=re.S).group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy of what goes in the wheel: setuptools writes build/ and *.egg-info beside the source
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("mad_models", "hub_tools"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (built,) = out.glob("mad_models-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    res = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(fresh_site, "dependencies-of-the-test-env.pth").write_text("\n".join(sorted(deps)) + "\n")
    return env_dir


def run_outside(env_dir: Path, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_wheel_declares_the_runtime_dependencies_and_extras(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
    required = {
        re.split(r"[ ;<>=~!\[]", line.split(":", 1)[1].strip())[0].lower()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    assert RUNTIME_DEPS <= required, required
    extras = {ln.split(":", 1)[1].strip() for ln in metadata.splitlines() if ln.startswith("Provides-Extra:")}
    assert {"app", "quant", "bench", "dev"} <= extras
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mad_models", "hub_tools"}, tops  # not the app, the asset builder, bench or tests


def test_the_installed_wheel_runs_the_readme_more_example_outside_the_checkout(fresh_env, tmp_path):
    python = str(fresh_env / "bin" / "python")
    code = (
        "import hub_tools, mad_models\n"
        "print('FILES', mad_models.__file__, hub_tools.__file__)\n" + more_example()
    )
    res = run_outside(fresh_env, [python, "-c", code], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    files = next(line for line in res.stdout.splitlines() if line.startswith("FILES")).split()[1:]
    assert all(f.startswith(str(fresh_env)) for f in files), files  # the wheel's copy, not the checkout
    assert "trainable params" in res.stdout and (tmp_path / "more-adapter" / "adapter_config.json").is_file()


def test_the_installed_wheel_answers_mad_models_help(fresh_env, tmp_path):
    res = run_outside(fresh_env, [str(fresh_env / "bin" / "mad-models"), "--help"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("usage: mad-models")
    for command in ("mad", "hybrid", "more", "push", "pull", "space"):  # hub_tools' through its entry point
        assert command in res.stdout.split("positional arguments:")[1]
