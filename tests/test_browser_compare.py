"""Compare and Load in a real browser (Playwright + Debian chromium): errors stay where they happen,
columns follow the pick, loaded models belong to the browser session (Stop: test_browser_results.py)."""

from __future__ import annotations

import pytest
from app_fixture import ARTIFACTS, TINY_PRESETS, set_models

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
# fixtures (conftest.py): `assets` (tiny models with presets), `app_url` (the app on them), `browser`


def open_app(browser, app_url):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    page.get_by_text("Device:").wait_for(timeout=120_000)
    page.locator("#models input[type=checkbox]").first.wait_for(timeout=60_000)
    return page


def no_error_pills(page) -> None:
    assert page.get_by_test_id("toast-body").count() == 0
    assert "Traceback" not in page.content()


def assert_cards_under_columns(page, names: list[str]) -> None:
    """Column i holds model i's card in its "about this model" fold, below its output box and within the
    column's width."""
    for i, name in enumerate(names):
        column, out = page.locator(f"#col-{i}"), page.locator(f"#col-{i} #out-{i}")
        card = column.locator(f"#card-{i}")
        if not card.is_visible():
            column.locator(f"#about-{i}").get_by_text("about this model").click()
        card.get_by_text(name).first.wait_for(timeout=30_000)
        assert card.inner_text().startswith(name)
        c, o, k = column.bounding_box(), out.bounding_box(), card.bounding_box()
        assert (
            k["y"] >= o["y"] + o["height"] - 1
            and c["x"] - 1 <= k["x"]
            and k["x"] + k["width"] <= c["x"] + c["width"] + 1
        )


@pytest.mark.slow
def test_a_preset_fills_the_prompt_and_marks_the_answer(browser, app_url):
    page = open_app(browser, app_url)
    presets = list({p["prompt"]: p for ps in TINY_PRESETS.values() for p in ps}.values())
    pick = presets[1]  # Solve 2*x = 6 for x. (the LoRA adapter's task)
    page.locator("#compare-preset input").click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=30_000)
    labels = options.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")
    assert labels == [f"[{p['module']}] {p['prompt']}" for p in presets]  # each prompt once
    page.get_by_role("option", name=f"[{pick['module']}] {pick['prompt']}", exact=True).click()
    page.wait_for_function(
        "p => document.querySelector('#prompt textarea').value === p", arg=pick["prompt"], timeout=30_000
    )
    answer = page.locator("#compare-preset-answer")
    answer.get_by_text("expected answer").wait_for(timeout=30_000)
    assert pick["module"] in answer.inner_text() and pick["answer"] in answer.inner_text()
    no_error_pills(page)
    page.screenshot(path=str(ARTIFACTS / "compare-preset.png"), full_page=True)
    # the preset runs; the agreement view marks each column against its answer
    set_models(page, ["tiny-base", "tiny-base + LoRA"])
    page.locator("#run-compare").click()
    page.locator("#agreement").get_by_text(f"reference answer {pick['answer']}").wait_for(timeout=120_000)
    assert (
        page.locator("#agreement").inner_text().count("✓")
        + page.locator("#agreement").inner_text().count("✗")
        == 2
    )
    # a prompt of one's own: the preset and its answer line no longer apply
    page.locator("#prompt textarea").fill("Hello there")
    page.locator("#compare-preset-answer").get_by_text("expected answer").wait_for(
        state="hidden", timeout=30_000
    )
    assert page.locator("#compare-preset input").input_value() == ""
    assert page.locator("#prompt textarea").input_value() == "Hello there"
    no_error_pills(page)


@pytest.mark.slow
def test_compare_errors_stay_in_their_column_and_columns_follow_the_pick(browser, app_url):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_app(browser, app_url)
    set_models(page, ["tiny-base", "tiny-base + MoRe", "mad/attention"])
    page.wait_for_timeout(500)
    # only the picked columns are shown, and they share the full width
    assert [page.locator(f"#col-{i}").is_visible() for i in range(5)] == [True, True, True, False, False]
    widths = [page.locator(f"#col-{i}").bounding_box()["width"] for i in range(3)]
    assert min(widths) > 1500 / 3 * 0.7
    # a card under each column says what the model is: inside the column's box, below its output
    assert_cards_under_columns(page, ["tiny-base", "tiny-base + MoRe", "mad/attention"])
    card = page.locator("#col-1 #card-1").inner_text()
    assert "MoRe nblocks k=2, block_rank r=1: rank up to k²r = 4" in card and "LoRA r = k·r = 2" in card
    assert "base: tiny-base" in card and "language/more/README.md" in card  # its model card, no abs path
    assert "architecture: gpt_neox" in page.locator("#col-2 #card-2").inner_text()

    page.locator("#prompt textarea").fill("Hello there")
    page.locator("#run-compare").click()
    # the token-id model cannot take text: its own column says so; the others run to the end
    page.locator("#stats-0").get_by_text("done ·").wait_for(timeout=120_000)
    page.locator("#stats-1").get_by_text("done ·").wait_for(timeout=120_000)
    assert "batched ×2" in page.locator("#stats-1").inner_text()  # base and adapter: one batched pass
    assert "token ids" in page.locator("#out-2 textarea").input_value()
    # the run's per-column updates leave each card in its column
    assert_cards_under_columns(page, ["tiny-base", "tiny-base + MoRe", "mad/attention"])
    page.locator("#agreement").get_by_text("Agreement").wait_for(timeout=30_000)
    no_error_pills(page)
    page.screenshot(path=str(ARTIFACTS / "compare-column-error.png"), full_page=True)

    # a bad request: one status line, stale outputs cleared, no pill anywhere
    page.locator("#prompt textarea").fill("")
    page.locator("#run-compare").click()
    page.locator("#compare-status").get_by_text("The prompt is empty").wait_for(timeout=60_000)
    assert page.locator("#out-0 textarea").input_value() == ""
    no_error_pills(page)
    page.screenshot(path=str(ARTIFACTS / "compare-bad-request.png"), full_page=True)

    # a new success clears the old error
    page.locator("#prompt textarea").fill("Hi")
    page.locator("#run-compare").click()
    page.locator("#stats-0").get_by_text("done ·").wait_for(timeout=120_000)
    assert "prompt is empty" not in page.locator("#compare-status").inner_text()


@pytest.mark.slow
def test_load_errors_keep_the_pickers_and_loads_belong_to_the_session(browser, app_url, assets):
    page = open_app(browser, app_url)
    n_models = page.locator("#models input[type=checkbox]").count()
    page.get_by_role("tab", name="Load").click()
    page.locator("#load-source textarea").fill("nobody-here/no-such-repo")
    page.locator("#run-load").click()
    page.locator("#load-status").get_by_text("nobody-here/no-such-repo").wait_for(timeout=120_000)
    assert page.locator("#load-status .tab-error").count() == 1
    no_error_pills(page)
    page.screenshot(path=str(ARTIFACTS / "load-error.png"), full_page=True)
    # a revision for a local dir is refused, in the status line
    page.locator("#load-source textarea").fill(str(assets / "mad/hybrid"))
    page.locator("#load-revision textarea").fill("main")
    page.locator("#run-load").click()
    page.locator("#load-status").get_by_text("only applies to Hub repos").wait_for(timeout=60_000)
    # a good load replaces the error and reaches the Compare picker of this page only
    page.locator("#load-revision textarea").fill("")
    page.locator("#run-load").click()
    page.locator("#load-status").get_by_text("Loaded").wait_for(timeout=120_000)
    assert page.locator("#load-status .tab-error").count() == 0
    assert str(assets) not in page.locator("#load-status").inner_text()
    page.get_by_role("tab", name="Compare outputs").click()
    page.locator("#models").get_by_text("loaded: hybrid").wait_for(timeout=30_000)
    assert page.locator("#models input[type=checkbox]").count() == n_models + 1
    page.screenshot(path=str(ARTIFACTS / "load-ok.png"), full_page=True)

    other = open_app(browser, app_url)  # another visitor does not see it
    assert other.locator("#models input[type=checkbox]").count() == n_models
    page.reload()  # a reload is a new session: the list and the server agree again
    page.get_by_text("Device:").wait_for(timeout=120_000)
    page.locator("#models input[type=checkbox]").first.wait_for(timeout=60_000)
    assert page.locator("#models input[type=checkbox]").count() == n_models
    set_models(other, ["mad/attention"])
    other.locator("#prompt textarea").fill("1 2")
    other.locator("#run-compare").click()
    other.locator("#cache-status").get_by_text("Model cache").wait_for(timeout=120_000)
    line = other.locator("#cache-status").inner_text()
    assert "loaded: hybrid" not in line and str(assets) not in line
    assert "other sessions" not in line  # the reloaded page's old session let go of its model
