"""Llama (SmolLM2 is one): rotary positions inside attention, RMSNorm."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaForCausalLM

from mad_models.hybrid.components._attention import AttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class LlamaComponent(AttentionComponent):
    model_types = ("llama",)
    model_class = LlamaForCausalLM
    embed_path = "model.embed_tokens"
    layers_path = "model.layers"
    norm_path = "model.norm"

    def prepare(self, shape_like, attention_mask, position_ids, cache) -> dict[str, Any]:
        ctx = super().prepare(shape_like, attention_mask, position_ids, cache)
        ctx["rotary"] = self.model.model.rotary_emb(shape_like, position_ids=position_ids)
        return ctx

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for layer in self.layer_modules(start, end):
            x = layer(
                x,
                attention_mask=ctx["mask"],
                position_ids=ctx["position_ids"],
                past_key_values=ctx["cache"],
                use_cache=ctx["cache"] is not None,
                position_embeddings=ctx["rotary"],
            )
        return x
