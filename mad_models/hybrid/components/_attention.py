"""Shared context for attention families: one causal mask per forward, from the component's cache."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

from mad_models.hybrid.components.base import Component, _get


class AttentionComponent(Component):
    """Base for decoder-only transformers: causal mask from the component's own config and cache."""

    def prepare(
        self,
        shape_like: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor,
        cache: DynamicCache | None,
    ) -> dict[str, Any]:
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=shape_like,
            attention_mask=attention_mask,
            past_key_values=cache,
            position_ids=position_ids,
        )
        return {"mask": mask, "position_ids": position_ids, "cache": cache}

    def extra_flops_per_token(self, layer: int, context: int) -> float:
        # QK^T and AV: 2 matmuls of (context x d) per token, 2 FLOPs per multiply-add
        return 4.0 * context * self.hidden_size


class RotaryAttentionComponent(AttentionComponent):
    """Transformers with rotary positions computed once per forward by the model's `rotary_emb`."""

    rotary_path: ClassVar[str]
    cache_kwarg: ClassVar[str] = "past_key_values"  # what the layer calls its cache argument

    def prepare(self, shape_like, attention_mask, position_ids, cache) -> dict[str, Any]:
        ctx = super().prepare(shape_like, attention_mask, position_ids, cache)
        ctx["rotary"] = _get(self.model, self.rotary_path)(shape_like, position_ids=position_ids)
        return ctx

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for layer in self.layer_modules(start, end):
            x = layer(
                x,
                attention_mask=ctx["mask"],
                position_ids=ctx["position_ids"],
                use_cache=ctx["cache"] is not None,
                position_embeddings=ctx["rotary"],
                **{self.cache_kwarg: ctx["cache"]},
            )
        return x


class LearnedPositionsComponent(AttentionComponent):
    """GPT-2 style: `transformer.wpe` positions added (then dropout) before the first layer."""

    embed_path = "transformer.wte"
    layers_path = "transformer.h"
    norm_path = "transformer.ln_f"

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        t = self.model.transformer
        return t.drop(x + t.wpe(ctx["position_ids"]))
