"""GPT-NeoX / Pythia: rotary positions inside attention, embedding dropout before layer 0."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPTNeoXForCausalLM

from mad_models.hybrid.components._attention import RotaryAttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class GPTNeoXComponent(RotaryAttentionComponent):
    model_types = ("gpt_neox",)
    model_class = GPTNeoXForCausalLM
    embed_path = "gpt_neox.embed_in"
    layers_path = "gpt_neox.layers"
    norm_path = "gpt_neox.final_layer_norm"
    rotary_path = "gpt_neox.rotary_emb"
    cache_kwarg = "layer_past"

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        return self.model.gpt_neox.emb_dropout(x)
