"""Small models built from configs for training from scratch on MAD (nothing is downloaded).

The attention shapes follow MAD-lab's (the MAD paper's code): heads of 8 dims with rotary positions on
every head dim (``rotary_pct`` 1.0; no absolute positions), and for Llama its SwiGLU MLP. A GPT-NeoX
with ``rotary_pct`` 0.25 on 16-dim heads rotates 4 dims at frequencies 1 and 0.01, too few to tell
nearby offsets apart: in-context recall then stays at the no-learning heuristic for thousands of steps
(bench/results/mad-calibration.md). Mamba's state stays transformers' 16 by default (the ListOps bench
and the bundled MAD assets were made with it); MAD-lab's ``d_state`` is 4, which
``bench/reproduce_mad.py`` passes.
"""

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
HEAD_DIM = 8  # MAD-lab's multi-head attention: 16 heads at width 128
MAMBA_STATE = 16  # transformers' default; MAD-lab's mamba.yml uses 4 (bench/reproduce_mad.py passes it)


def build_model(
    arch: str,
    vocab_size: int,
    *,
    width: int = 128,
    layers: int = 2,
    heads: int | None = None,
    max_len: int = 1024,
    state_size: int = MAMBA_STATE,
    seed: int = 0,
) -> PreTrainedModel:
    """A fresh causal LM of family ``arch`` with transformers' own initialisation.

    ``heads``: attention heads (default ``width // 8``: heads of 8 dims, rotary on all of them).
    ``state_size``: Mamba's SSM state per channel. We never re-initialise weights afterwards: the MAD
    reference did, and wiped Mamba's ``dt_proj`` bias (the inverse-softplus time-step init) in the process.

    Example:
        >>> m = build_model("llama", vocab_size=16, width=64, layers=2)
        >>> m.config.num_attention_heads, m.config.head_dim
        (8, 8)
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if heads is None and arch != "mamba":
        if width % HEAD_DIM:
            raise ValueError(f"width ({width}) must be a multiple of {HEAD_DIM} (heads of {HEAD_DIM} dims)")
        heads = width // HEAD_DIM
    named = (("vocab_size", vocab_size), ("width", width), ("layers", layers), ("state_size", state_size))
    for name, v in named + ((("heads", heads),) if arch != "mamba" else ()):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
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
            rotary_pct=1.0,  # every head dim rotates (0.25 on small heads starves attention of positions)
            tie_word_embeddings=False,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
        return GPTNeoXForCausalLM(cfg)
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=int(8 * width / 3) // 8 * 8,  # SwiGLU at ~the parameters of a 4x GELU MLP
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=width // heads,
            max_position_embeddings=max_len,
        )
        return LlamaForCausalLM(cfg)
    cfg = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        state_size=state_size,
        expand=2,
        # Without CUDA kernels, transformers' sequential scan backpropagates through one slice per token;
        # mambapy's parallel scan (pure PyTorch, optional) is ~8x faster to train on CPU at length 128.
        use_mambapy=importlib.util.find_spec("mambapy") is not None,
    )
    return MambaForCausalLM(cfg)


def rotary_dims(model: PreTrainedModel) -> tuple[int, int]:
    """(dims that rotate, dims per head) of an attention model's rotary embedding.

    Example:
        >>> rotary_dims(build_model("gpt_neox", vocab_size=16, width=64))
        (8, 8)
    """
    cfg = model.config
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    inv_freq = next(b for n, b in model.named_buffers() if n.endswith("rotary_emb.inv_freq"))
    return 2 * inv_freq.numel(), head


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters of ``model`` (tied ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
