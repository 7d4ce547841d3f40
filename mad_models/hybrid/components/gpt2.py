"""GPT-2: learned absolute positions (its own `wpe`) added before its first layer."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2LMHeadModel

from mad_models.hybrid.components._attention import LearnedPositionsComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPT2Component(LearnedPositionsComponent):
    model_types = ("gpt2",)
    model_class = GPT2LMHeadModel

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for block in self.layer_modules(start, end):
            x = block(
                x,
                ctx["cache"],
                ctx["mask"],
                None,
                use_cache=ctx["cache"] is not None,
                position_ids=ctx["position_ids"],
            )
        return x
