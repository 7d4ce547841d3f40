"""Small models built from configs for training from scratch on MAD (nothing is downloaded)."""

from __future__ import annotations

import importlib.util

import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    PreTrainedModel,
)

ARCHS = ("gpt_neox", "mamba", "llama")


def build_model(
    arch: str,
    vocab_size: int,
    *,
    width: int = 128,
    layers: int = 2,
    heads: int = 4,
    max_len: int = 1024,
    seed: int = 0,
) -> PreTrainedModel:
    """A fresh causal LM of family ``arch`` with transformers' own initialisation.

    We never re-initialise weights afterwards: the MAD reference did, and wiped Mamba's ``dt_proj``
    bias (the inverse-softplus time-step init) in the process.

    Example:
        >>> m = build_model("mamba", vocab_size=16, width=128, layers=2)
        >>> m.config.hidden_size
        128
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    for name, v in (("vocab_size", vocab_size), ("width", width), ("layers", layers), ("heads", heads)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if arch != "mamba" and width % heads:
        raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
    torch.manual_seed(seed)
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            max_position_embeddings=max_len,
            rotary_pct=0.25,
            tie_word_embeddings=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
        return GPTNeoXForCausalLM(cfg)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=int(8 * width / 3) // 8 * 8,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_len,
        )
        return LlamaForCausalLM(cfg)
    cfg = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        state_size=16,
        expand=2,
        # Without CUDA kernels, transformers' sequential scan backpropagates through one slice per token;
        # mambapy's parallel scan (pure PyTorch, optional) is ~8x faster to train on CPU at length 128.
        use_mambapy=importlib.util.find_spec("mambapy") is not None,
    )
    return MambaForCausalLM(cfg)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters of ``model`` (tied ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
