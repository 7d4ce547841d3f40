"""Mamba2 (transformers' implementation): conv + SSM state in the component's own cache."""

from __future__ import annotations

from transformers import Mamba2ForCausalLM

from mad_models.hybrid.components.base import register_family
from mad_models.hybrid.components.mamba import MambaComponent


@register_family
class Mamba2Component(MambaComponent):
    model_types = ("mamba2",)
    model_class = Mamba2ForCausalLM

    def extra_flops_per_token(self, layer: int, context: int) -> float:
        d_inner = self.config.expand * self.hidden_size
        return 9.0 * d_inner * self.config.state_size
