"""The real app in a real browser (Playwright + Debian chromium): compare, read the DOM, switch tabs."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_fixture import ROOT, build_tiny_assets, launch_app, stop
from gradio_client import Client

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    build_tiny_assets(assets)
    url, proc, _ = launch_app(assets, tmp_path_factory.mktemp("log") / "app.log")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        yield page
        browser.close()


@pytest.mark.slow
def test_compare_in_the_browser(app_url, page):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(app_url)
    page.get_by_text("Device:").wait_for(timeout=60_000)
    assert "cpu" in page.locator("#runtime").inner_text()
    prompt = page.locator("#prompt textarea")
    prompt.fill("Hello there")
    page.locator("#run-compare").click()
    # all four default columns finish: each shows "done" and its tokens/s line
    for i in range(4):
        page.locator(f"#stats-{i}").get_by_text("done ·").wait_for(timeout=60_000)
        assert "tok/s" in page.locator(f"#stats-{i}").inner_text()
    texts = [page.locator(f"#out-{i} textarea").input_value() for i in range(4)]
    labels = [page.locator(f"#out-{i}").get_by_test_id("block-info").inner_text() for i in range(4)]
    assert labels == ["tiny-base", "tiny-base + LoRA (zero)", "tiny-base + LoRA", "tiny-base + MoRe"]
    # the DOM shows what the API gives for the same greedy request
    out = Client(app_url, verbose=False).predict(
        "Hello there", labels, 32, "greedy", 0, 0.8, 50, True, api_name="/compare"
    )
    assert texts == [c["text"] for c in out[16]]
    assert texts[0] == texts[1] and texts[0]  # base == zero-initialised adapter
    page.screenshot(path=str(ARTIFACTS / "app-compare.png"), full_page=True)

    # switch tabs: MAD skills, evaluate, read the accuracy table from the DOM
    page.get_by_role("tab", name="MAD skills").click()
    page.locator("#run-mad").click()
    page.locator("#mad-example").get_by_text("scored positions right").wait_for(timeout=60_000)
    table = page.locator("#mad-acc").inner_text()
    assert "mad/attention" in table and "mad/mamba" in table
    page.screenshot(path=str(ARTIFACTS / "app-mad.png"), full_page=True)

    # Hybrid mixtures: the heatmap cells in the DOM are the tiny hybrid's fixed mixture
    page.get_by_role("tab", name="Hybrid mixtures").click()
    page.locator("#run-mixture").click()
    page.locator("#heatmap td.mix-cell").first.wait_for(timeout=60_000)
    assert page.locator("#heatmap td.mix-cell").all_inner_texts() == ["0.700", "0.300", "0.200", "0.800"]
    page.screenshot(path=str(ARTIFACTS / "app-hybrid.png"), full_page=True)

    page.get_by_role("tab", name="Load").click()
    page.locator("#load-source textarea").fill("nobody-here/no-such-repo")
    page.locator("#run-load").click()
    toast = page.get_by_test_id("toast-body").filter(has_text="nobody-here/no-such-repo")
    toast.first.wait_for(timeout=60_000)  # an error toast names the repo; no stack trace on the page
    assert "Traceback" not in page.content()
    page.screenshot(path=str(ARTIFACTS / "app-load-error.png"), full_page=True)
    assert (ARTIFACTS / "app-compare.png").stat().st_size > 10_000
