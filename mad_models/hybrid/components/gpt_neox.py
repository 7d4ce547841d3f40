"""GPT-NeoX / Pythia: rotary positions inside attention, embedding dropout before layer 0."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPTNeoXForCausalLM

from mad_models.hybrid.components._attention import AttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPTNeoXComponent(AttentionComponent):
    model_types = ("gpt_neox",)
    model_class = GPTNeoXForCausalLM
    embed_path = "gpt_neox.embed_in"
    layers_path = "gpt_neox.layers"
    norm_path = "gpt_neox.final_layer_norm"

    def prepare(self, shape_like, attention_mask, position_ids, cache) -> dict[str, Any]:
        ctx = super().prepare(shape_like, attention_mask, position_ids, cache)
        ctx["rotary"] = self.model.gpt_neox.rotary_emb(shape_like, position_ids=position_ids)
        return ctx

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        return self.model.gpt_neox.emb_dropout(x)

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for layer in self.layer_modules(start, end):
            x = layer(
                x,
                attention_mask=ctx["mask"],
                position_ids=ctx["position_ids"],
                layer_past=ctx["cache"],
                use_cache=ctx["cache"] is not None,
                position_embeddings=ctx["rotary"],
            )
        return x
