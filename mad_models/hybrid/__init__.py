"""Manticore pretrained hybrids: K pretrained causal LMs (transformers, Mamba) run block by block with
gated projectors and learned mixture weights. Importing registers the "manticore" model type with
`AutoConfig` and `AutoModelForCausalLM`."""

from transformers import AutoConfig, AutoModelForCausalLM

from mad_models.hybrid.configuration import ManticoreConfig
from mad_models.hybrid.mixture import BlockMixture, ExponentiatedGradient
from mad_models.hybrid.modeling import ManticoreCache, ManticoreForCausalLM, tokenizer_fingerprint

AutoConfig.register("manticore", ManticoreConfig, exist_ok=True)
AutoModelForCausalLM.register(ManticoreConfig, ManticoreForCausalLM, exist_ok=True)

__all__ = [
    "BlockMixture",
    "ExponentiatedGradient",
    "ManticoreCache",
    "ManticoreConfig",
    "ManticoreForCausalLM",
    "tokenizer_fingerprint",
]
