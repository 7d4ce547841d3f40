"""Model cards live in the library (``mad_models.cards``); ``hub_tools`` re-exports them."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

import hub_tools
import mad_models  # noqa: F401  (registers "manticore")
from mad_models import cards
from mad_models.hybrid.cost import flatten_report

ROOT = Path(__file__).resolve().parents[1]


def test_hub_tools_reexports_the_library_cards():
    assert hub_tools.adapter_card is cards.adapter_card
    assert hub_tools.hybrid_card is cards.hybrid_card
    assert hub_tools.usage_snippet is cards.usage_snippet


@pytest.mark.parametrize("name", ["hybrid", "hybrid-pruned"])
def test_committed_asset_cards_cost_section_regenerates_byte_identically(name):
    """The assets build passes a report flattened by flatten_report; the card's fallback table must print it
    exactly as the committed README does (one flattener serves the app, the assets and the cards)."""
    folder = ROOT / "assets" / "mad" / name
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
    table = cards.cost_tables(flatten_report(model.cost_report()))
    assert table.startswith("| quantity | value |\n|---|---|\n| context | 1,024 |")
    assert f"## Cost report\n\n{table}\n\n## " in (folder / "README.md").read_text()


def test_nested_report_of_another_layout_flattens_like_the_app():
    table = cards.cost_tables({"params": {"total": 5, "blocks": [{"a": 1}, {"a": 2}]}, "note": "x|y"})
    assert table.splitlines()[2:] == [
        "| params / total | 5 |",
        "| params / blocks / 0 / a | 1 |",
        "| params / blocks / 1 / a | 2 |",
        "| note | x\\|y |",
    ]
