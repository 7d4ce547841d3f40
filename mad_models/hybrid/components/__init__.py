"""Component families: one file each, all behind `Component` (embed, run layers i..j with the
component's own cache, final norm, LM head)."""

from mad_models.hybrid.components import gpt2, gpt_neo, gpt_neox, llama, mamba, mamba2  # noqa: F401 (register)
from mad_models.hybrid.components.base import FAMILIES, Component, PrunedLayer, family_for, register_family

__all__ = ["FAMILIES", "Component", "PrunedLayer", "family_for", "register_family"]
