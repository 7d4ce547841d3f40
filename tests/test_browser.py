"""The real app in a real browser (Playwright + Debian chromium): every tab, errors only where they belong.

One app (tiny models from app_fixture) and one page for the module; the tests run in file order and
each opens its own tab first. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import pytest
from app_fixture import ARTIFACTS, HYBRID_MIXTURE

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")

pytestmark = pytest.mark.slow

WAIT = 60_000  # ms: the first use of a model loads it
ADAPTERS = ["tiny-base + LoRA (zero)", "tiny-base + LoRA", "tiny-base + MoRe"]


@pytest.fixture(scope="module")
def page(browser, app_url):
    """One page for the module (fixtures `browser` and `app_url`: conftest.py)."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    page.get_by_text("Device:").wait_for(timeout=WAIT)
    yield page
    page.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def shot(page, name: str) -> None:
    path = ARTIFACTS / f"app-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def assert_no_error_anywhere_else(page, allowed: str | None = None) -> None:
    """No toast and no red "Error" pill anywhere in the DOM (hidden tabs included); ``allowed``: the one
    element id whose in-place message may say Error."""
    assert page.get_by_test_id("toast-body").count() == 0, page.get_by_test_id("toast-body").all_inner_texts()
    assert page.locator("span.error").count() == 0  # Gradio's status-tracker pill
    errors = page.locator(".tab-error")
    ids = [errors.nth(i).evaluate("e => e.closest('[id]').id") for i in range(errors.count())]
    assert ids == ([allowed] if allowed else []), ids
    assert "Traceback" not in page.content()


def test_compare_basic_run(page):
    open_tab(page, "Compare outputs")
    assert "cpu" in page.locator("#runtime").inner_text()
    page.locator("#prompt textarea").fill("Hello there")
    page.locator("#run-compare").click()
    for i in range(4):
        page.locator(f"#stats-{i}").get_by_text("done").wait_for(timeout=WAIT)
    assert page.locator("#out-0 textarea").input_value()
    assert_no_error_anywhere_else(page)
    shot(page, "compare")


def test_adapter_sizes_grouped_bars_legend_and_tables(page):
    open_tab(page, "Adapter sizes")
    page.locator("#run-sizes").click()
    chart = page.locator("#sizes-chart")
    chart.locator("rect.bar").first.wait_for(timeout=WAIT)
    # grouped bars: x = module type, one bar per adapter in each group
    assert chart.locator("text.x-tick").all_text_contents() == ["q_proj", "v_proj"]
    assert chart.locator("rect.bar").count() == 2 * len(ADAPTERS)
    assert chart.locator("text.x-title").text_content() == "module type"
    assert chart.locator("text.y-title").text_content() == "trainable parameters"
    # the legend names every adapter in full, and each entry is inside the chart's box (not clipped)
    legend = chart.locator(".legend-item")
    assert legend.all_inner_texts() == ADAPTERS
    box = chart.bounding_box()
    for i in range(legend.count()):
        b = legend.nth(i).bounding_box()
        assert b["width"] > 0 and b["x"] + b["width"] <= box["x"] + box["width"] + 1
        assert b["y"] + b["height"] <= box["y"] + box["height"] + 1
    totals = page.locator("#sizes-totals").inner_text()
    assert "4.50 KiB" in totals and "4,608" in totals and "90,432" in totals  # separators, KiB
    page.get_by_text("Per-layer breakdown").click()
    per_layer = page.locator("#sizes-per-layer").inner_text()
    assert "q_proj, v_proj" in per_layer
    cards = page.locator("#sizes-cards").inner_text()
    assert "MoRe nblocks k=2, block_rank r=1: rank up to k²r = 4" in cards and "LoRA r=2" in cards
    assert page.locator("#sizes-status").inner_text().startswith("3 adapters")
    assert_no_error_anywhere_else(page)
    shot(page, "sizes")


def test_hybrid_tab_updates_live_with_the_slider(page):
    open_tab(page, "Hybrid mixtures")
    page.locator("#run-mixture").click()
    cells = page.locator("#heatmap td.mix-cell")
    cells.first.wait_for(timeout=WAIT)
    assert cells.all_inner_texts() == [f"{w:.3f}" for row in HYBRID_MIXTURE for w in row]
    page.locator("#prune-summary").get_by_text("Pruning at 0.25 keeps 3 of 4").wait_for(timeout=WAIT)
    # move the slider: the tab redraws without pressing Show
    page.locator("#prune-threshold input[type=range]").fill("0.5")
    page.locator("#prune-summary").get_by_text("Pruning at 0.50 keeps 2 of 4").wait_for(timeout=WAIT)
    assert page.locator("#heatmap td.mix-cell[style*='line-through']").count() == 2
    # the cost leads with a short summary; the full report is in a fold
    summary = page.locator("#cost-summary table tr")
    assert summary.count() == 6 and "parameters" in summary.nth(1).inner_text()
    assert "(block, component) pairs run" in summary.nth(5).inner_text()
    page.get_by_text("Full cost report").click()
    cost = page.locator("#cost-diff").inner_text()
    assert "before" in cost and "after" in cost and "Δ" in cost and "params / total" in cost
    # weights to 3 digits
    assert "0.700" in page.locator("#mixture-weights").inner_text()
    # accuracy against the threshold, the slider's row marked
    page.locator("#run-curve").click()
    page.locator("#hybrid-status").get_by_text("pruned at each threshold").wait_for(timeout=WAIT)
    curve = page.locator("#prune-curve").inner_text()
    assert "◀ slider" in curve and "in_context_recall" in curve and "0.90" in curve
    # the slider moves off the grid: its own row joins the scored table, live
    page.locator("#prune-threshold input[type=range]").fill("0.25")
    page.locator("#prune-summary").get_by_text("Pruning at 0.25 keeps 3 of 4").wait_for(timeout=WAIT)
    page.locator("#prune-curve").get_by_text("0.25", exact=True).first.wait_for(state="attached")
    # pruned vs full on the preset token-id prompt
    assert page.locator("#pvf-prompt textarea").input_value().split()[0].isdigit()
    page.locator("#run-pvf").click()
    page.locator("#pvf-status").get_by_text("agrees with the full hybrid").wait_for(timeout=WAIT)
    assert page.locator("#pvf-table tr.pvf-same, #pvf-table tr.pvf-diff").count() == 12
    page.get_by_text("What this hybrid is").click()
    assert "Manticore hybrid of 2 components" in page.locator("#hybrid-card").inner_text()
    assert_no_error_anywhere_else(page)
    shot(page, "hybrid")


def test_mad_skills_baselines_and_side_by_side(page):
    open_tab(page, "MAD skills")
    assert "when a key comes back" in page.locator("#mad-task-about").inner_text()
    assert page.locator("#mad-preset textarea").input_value().split()[0].isdigit()
    page.locator("#run-mad").click()
    page.locator("#mad-example").get_by_text("scored positions right").wait_for(timeout=WAIT)
    table = page.locator("#mad-acc").inner_text()
    for row in (
        "mad/attention",
        "mad/mamba",
        "no-learning heuristic",
        "chance (1 / possible targets)",
        "0.125",
    ):
        assert row in table
    side = page.locator("#mad-side-by-side table.mad-side-by-side")
    header = side.locator("tr").first.inner_text()
    assert all(n in header for n in ["mad/attention", "mad/mamba", "mad/hybrid", "mad/hybrid-pruned"])
    # the marked example follows the model picked for it
    assert "mad/attention" in page.locator("#mad-example").inner_text()
    page.locator("#mad-example-model input").click()
    page.get_by_role("option", name="mad/mamba", exact=True).click()
    page.locator("#mad-example").get_by_text("mad/mamba on sequence 0").wait_for(timeout=WAIT)
    page.get_by_text("What each model is").click()
    assert "architecture: gpt_neox" in page.locator("#mad-cards").inner_text()
    assert_no_error_anywhere_else(page)
    shot(page, "mad")


def test_errors_show_only_in_the_tab_that_failed_and_a_success_clears_them(page):
    open_tab(page, "MAD skills")
    seqs = page.get_by_label("Sequences in the fresh test batch")
    seqs.fill("10000")
    page.locator("#run-mad").click()
    status = page.locator("#mad-status .tab-error")
    status.wait_for(timeout=WAIT)
    assert "number of sequences must be in 1..512" in status.inner_text()
    assert page.locator("#mad-side-by-side table").count() == 0  # no stale result under the error
    assert_no_error_anywhere_else(page, allowed="mad-status")
    shot(page, "mad-error")
    # other tabs are untouched: their controls and results are there, with no error over them
    open_tab(page, "Compare outputs")
    assert page.locator("#models").is_visible()
    open_tab(page, "Hybrid mixtures")
    page.locator("#heatmap td.mix-cell").first.wait_for(timeout=WAIT)  # the tab redraws when opened
    assert page.locator("#hybrid-pick").is_visible() and page.locator("#heatmap td.mix-cell").count() == 4
    # a failure in one part of the hybrid tab stays in that part
    page.locator("#pvf-prompt textarea").fill("not token ids")
    page.locator("#run-pvf").click()
    page.locator("#pvf-status .tab-error").get_by_text("token ids").wait_for(timeout=WAIT)
    assert page.locator("#hybrid-status .tab-error").count() == 0
    page.locator("#pvf-prompt textarea").fill("1 2 3")
    page.locator("#run-pvf").click()
    page.locator("#pvf-status").get_by_text("agrees with the full hybrid").wait_for(timeout=WAIT)
    # a new success clears the old error
    open_tab(page, "MAD skills")
    page.get_by_label("Sequences in the fresh test batch").fill("16")
    page.locator("#run-mad").click()
    page.locator("#mad-status .tab-ok").wait_for(timeout=WAIT)
    assert_no_error_anywhere_else(page)


def test_load_error_stays_in_the_load_tab(page):
    open_tab(page, "Load")
    page.locator("#load-source textarea").fill("nobody-here/no-such-repo")
    page.locator("#run-load").click()
    panel = page.get_by_role("tabpanel").filter(has=page.locator("#load-source"))
    in_tab = panel.get_by_text("nobody-here/no-such-repo").last
    in_tab.or_(page.get_by_test_id("toast-body")).first.wait_for(timeout=WAIT)  # whichever comes first
    shot(page, "load-error")
    assert in_tab.is_visible()
    # the message is in the Load tab; no toast, no pills over Compare's picker or the hybrid dropdown
    assert page.get_by_test_id("toast-body").count() == 0
    assert page.locator("span.error").count() == 0
    assert "Traceback" not in page.content()
    open_tab(page, "Compare outputs")
    assert page.locator("#models").is_visible()
