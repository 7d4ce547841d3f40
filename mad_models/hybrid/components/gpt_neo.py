"""GPT-Neo: learned absolute positions (its own `wpe`); local layers keep their own sliding-window mask."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPTNeoForCausalLM

from mad_models.hybrid.components._attention import LearnedPositionsComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPTNeoComponent(LearnedPositionsComponent):
    model_types = ("gpt_neo",)
    model_class = GPTNeoForCausalLM

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for block in self.layer_modules(start, end):
            x = block(
                x, layer_past=ctx["cache"], attention_mask=ctx["mask"], use_cache=ctx["cache"] is not None
            )[0]
        return x
