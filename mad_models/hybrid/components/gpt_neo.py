"""GPT-Neo: learned absolute positions (its own `wpe`); local layers keep their own sliding-window mask."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPTNeoForCausalLM

from mad_models.hybrid.components._attention import AttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPTNeoComponent(AttentionComponent):
    model_types = ("gpt_neo",)
    model_class = GPTNeoForCausalLM
    embed_path = "transformer.wte"
    layers_path = "transformer.h"
    norm_path = "transformer.ln_f"

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        t = self.model.transformer
        return t.drop(x + t.wpe(ctx["position_ids"]))

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for block in self.layer_modules(start, end):
            x = block(
                x, layer_past=ctx["cache"], attention_mask=ctx["mask"], use_cache=ctx["cache"] is not None
            )[0]
        return x
