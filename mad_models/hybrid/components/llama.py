"""Llama (SmolLM2 is one): rotary positions inside attention, RMSNorm."""

from __future__ import annotations

from transformers import LlamaForCausalLM

from mad_models.hybrid.components._attention import RotaryAttentionComponent
from mad_models.hybrid.components.base import register_family


@register_family
class LlamaComponent(RotaryAttentionComponent):
    model_types = ("llama",)
    model_class = LlamaForCausalLM
    embed_path = "model.embed_tokens"
    layers_path = "model.layers"
    norm_path = "model.norm"
    rotary_path = "model.rotary_emb"
