"""Shared context for attention families: one causal mask per forward, from the component's cache."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

from mad_models.hybrid.components.base import Component


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
