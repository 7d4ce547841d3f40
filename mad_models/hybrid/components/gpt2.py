"""GPT-2: learned absolute positions (its own `wpe`) added before its first layer."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2LMHeadModel

from mad_models.hybrid.components._attention import AttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPT2Component(AttentionComponent):
    model_types = ("gpt2",)
    model_class = GPT2LMHeadModel
    embed_path = "transformer.wte"
    layers_path = "transformer.h"
    norm_path = "transformer.ln_f"

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        t = self.model.transformer
        return t.drop(x + t.wpe(ctx["position_ids"]))

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
