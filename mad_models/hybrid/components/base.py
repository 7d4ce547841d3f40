"""The interface every component family implements, and the registry that maps model types to families.

A component is a transformers `*ForCausalLM` model. Its `Component` knows where that model keeps its token
embedding, layer stack, final norm and LM head, and how to run layers `i..j` with the component's own
cache (KV cache for attention, conv/SSM state for Mamba). Adding a family means adding one small file
that subclasses `Component` and decorates it with `@register_family`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedConfig, PreTrainedModel

FAMILIES: dict[str, type[Component]] = {}


def register_family(cls: type[Component]) -> type[Component]:
    """Class decorator: make `cls` the `Component` class of each of its `model_types`."""
    for model_type in cls.model_types:
        FAMILIES[model_type] = cls
    return cls


def family_for(config: PreTrainedConfig) -> type[Component]:
    """The `Component` class for a component config; a clear error for unknown architectures."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unknown component architecture {model_type!r} "
            f"({type(config).__name__}); Manticore supports: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


class PrunedLayer(nn.Module):
    """Stands in for a layer that a pruned hybrid never runs (it has no parameters)."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this layer was pruned from the hybrid and must not be run")


def _get(root: nn.Module, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name)
    return root


def _set(root: nn.Module, path: str, value: Any) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(root, parent) if parent else root, name, value)


class Component:
    """One transformers causal LM seen as a hybrid component (not a module itself: the hybrid owns the model).

    Subclasses set the attribute paths and override `prepare`, `enter` and `run_layers`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    model_class: ClassVar[type[PreTrainedModel]]
    embed_path: ClassVar[str]
    layers_path: ClassVar[str]
    norm_path: ClassVar[str]
    head_path: ClassVar[str] = "lm_head"
    has_attention: ClassVar[bool] = True

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.config = model.config

    # ---- shapes ---------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(_get(self.model, self.layers_path))

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    # ---- the pieces -------------------------------------------------------------------------------
    @property
    def embedding(self) -> nn.Embedding | None:
        return _get(self.model, self.embed_path)

    @property
    def layers(self) -> nn.ModuleList:
        return _get(self.model, self.layers_path)

    @property
    def norm(self) -> nn.Module | None:
        return _get(self.model, self.norm_path)

    @property
    def lm_head(self) -> nn.Linear | None:
        return _get(self.model, self.head_path)

    def layer_modules(self, start: int, end: int) -> list[nn.Module]:
        return [self.layers[i] for i in range(start, end)]

    # ---- pruning: drop what a pruned hybrid never runs ---------------------------------------------
    def drop_layer(self, index: int) -> None:
        self.layers[index] = PrunedLayer()

    def drop_embedding(self) -> None:
        _set(self.model, self.embed_path, None)

    def drop_norm(self) -> None:
        _set(self.model, self.norm_path, None)

    def drop_head(self) -> None:
        _set(self.model, self.head_path, None)

    def set_fresh_embeddings(self, vocab_size: int) -> None:
        """Replace the token embedding and LM head with new ones of `vocab_size` rows, tied together."""
        emb = nn.Embedding(vocab_size, self.hidden_size)
        nn.init.normal_(emb.weight, std=0.02)
        head = nn.Linear(self.hidden_size, vocab_size, bias=False)
        head.weight = emb.weight
        _set(self.model, self.embed_path, emb)
        _set(self.model, self.head_path, head)
        self.config.vocab_size = vocab_size
        self.config.tie_word_embeddings = True

    # ---- running ------------------------------------------------------------------------------------
    def new_cache(self) -> DynamicCache:
        """An empty cache of the kind the component's own `generate` uses."""
        return DynamicCache(config=self.config)

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d) token embeddings (positions are added in `enter`).

        Ids past this component's vocabulary (the padding rows of a larger component sharing the tokenizer)
        embed as zeros instead of raising IndexError.
        """
        rows = self.embedding.num_embeddings
        beyond = input_ids >= rows
        if not beyond.any():
            return self.embedding(input_ids)
        return self.embedding(input_ids.clamp(max=rows - 1)).masked_fill(beyond[..., None], 0.0)

    def prepare(
        self,
        shape_like: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor,
        cache: DynamicCache | None,
    ) -> dict[str, Any]:
        """Per-forward context shared by all blocks (masks, rotary tables). Must run before any layer
        writes into `cache` in this forward. `shape_like` is (B, T, 0) with the model dtype."""
        raise NotImplementedError

    def enter(self, x: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
        """What the component does between its embedding and its first layer (positions, dropout)."""
        return x

    def run_layers(self, x: torch.Tensor, start: int, end: int, ctx: dict[str, Any]) -> torch.Tensor:
        """(B, T, d) -> (B, T, d) through layers `start..end-1`, updating the component's cache."""
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, V) logits."""
        return self.lm_head(x)

    def extra_flops_per_token(self, layer: int, context: int) -> float:
        """FLOPs per token of a layer that are not weight matmuls (attention scores, SSM scan)."""
        return 0.0
