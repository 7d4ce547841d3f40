"""Test-wide settings (no network to the Hub, small thread count, deterministic seeds) and the fixtures
tests share: the real SmolLM2 loaded once per session, one tiny asset dir per session, the real app
(python app.py) and Chromium per module."""

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def _smollm2_once():
    from mad_models.loading import load_smollm2

    return load_smollm2(device="cpu")


@pytest.fixture
def smollm2(_smollm2_once):
    """``(model, tokenizer)`` of the real SmolLM2-135M-Instruct, offline. Loaded once per session (the GGUF
    dequantizes in 15-60 s); each test gets its own copy, so adapters it injects or weights it trains never
    reach the next test."""
    return copy.deepcopy(_smollm2_once)


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Tiny models and their registry.json (with the language adapters' presets); read-only for tests."""
    from app_fixture import TINY_PRESETS, build_tiny_assets

    root = tmp_path_factory.mktemp("assets")
    build_tiny_assets(root, presets=TINY_PRESETS)
    return root


@pytest.fixture(scope="module")
def app_url(assets, tmp_path_factory):
    """The real app on ``assets``, one process per test module (sessions and caches never leak across)."""
    from app_fixture import launch_app, stop

    url, proc, _ = launch_app(assets, tmp_path_factory.mktemp("log") / "app.log", timeout=240)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium through Playwright."""
    from app_fixture import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    playwright_sync = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in requirements-dev.txt"
    )
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
