"""Mamba (transformers' implementation): conv + SSM state in the component's own cache.

On CPU the layers use transformers' reference kernels; with `mamba-ssm` installed on GPU they use its
fused kernels, exactly as `MambaForCausalLM` does (we call the same layer modules).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, MambaForCausalLM
from transformers.masking_utils import create_recurrent_attention_mask

from mad_models.hybrid.components.base import Component, register_family


@register_family
class MambaComponent(Component):
    model_types = ("mamba",)
    model_class = MambaForCausalLM
    embed_path = "backbone.embeddings"
    layers_path = "backbone.layers"
    norm_path = "backbone.norm_f"
    has_attention = False

    def prepare(self, shape_like, attention_mask, position_ids, cache: DynamicCache | None) -> dict[str, Any]:
        # None when there is no padding or when decoding one token, as in MambaModel / Mamba2Model
        mask = create_recurrent_attention_mask(
            config=self.config, inputs_embeds=shape_like, attention_mask=attention_mask, past_key_values=cache
        )
        return {"mask": mask, "cache": cache}

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        for layer in self.layer_modules(start, end):
            x = layer(x, cache_params=ctx["cache"], attention_mask=ctx["mask"])
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x.to(self.lm_head.weight.dtype)).float()

    def extra_flops_per_token(self, layer: int, context: int) -> float:
        # selective scan: discretise A and B, update and read the (d_inner x d_state) state
        return 9.0 * self.config.intermediate_size * self.config.state_size
