"""`ManticoreConfig`: everything needed to rebuild a Manticore hybrid without fetching anything.

The component configs are stored inline (as the dicts their own `config.json` would hold), so
`AutoModelForCausalLM.from_pretrained(<saved hybrid>)` never looks up the component checkpoints.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

MIXTURE_MODES = ("softmax", "gumbel", "simplex", "fixed")


class ManticoreConfig(PreTrainedConfig):
    r"""
    Configuration of a [`ManticoreForCausalLM`] hybrid. Its attributes are also its keyword arguments.

    Attributes:
        components (`list[dict]`):
            One config dict per component model (with its `model_type`), stored inline.
        component_names (`list[str]`):
            Where each component came from (hub id, local dir or class name), for model cards.
        component_revisions (`list[str | None]`):
            The revision (commit) of each component when it is known.
        n_blocks (`int`):
            Number of blocks; block `i` of every component runs on the same shared hidden state.
        layer_map (`list[list[int]]`):
            Per component, the number of its layers in each block (sums to the component's depth).
        block_components (`list[list[int]]`, *optional*):
            Per block, the indices of the components that run in it. `None` means all of them. Set by `prune`.
        mixture_mode (`str`):
            One of "softmax" (learnable logits), "gumbel" (DASH, Gumbel-softmax while training),
            "simplex" (GAEA, weights kept on the simplex) or "fixed".
        gumbel_tau (`float`):
            Gumbel-softmax temperature for the "gumbel" mode.
        hidden_size (`int`):
            Width D of the shared hidden state: the largest component width.
        vocab_size (`int`):
            Width of the mixed logits: the largest component vocabulary.
        fresh_embeddings (`list[bool]`):
            Per component, whether its embeddings and (tied) LM head were created fresh for this hybrid.
        tokenizer_fingerprint (`str`, *optional*):
            Hash of the shared tokenizer's vocabulary and merges, when it was checked.
        pruning (`dict`, *optional*):
            Record of the `prune`/`discretize` call that made this model (threshold, the original components
            and their mixture weights).

    Example:
    ```python
    >>> from mad_models.hybrid import ManticoreConfig
    >>> config = ManticoreConfig.from_pretrained("my-hybrid")  # doctest: +SKIP
    >>> config.component_names, config.mixture_mode  # doctest: +SKIP
    ```
    """

    model_type = "manticore"

    components: list | None = None
    component_names: list | None = None
    component_revisions: list | None = None
    n_blocks: int = 1
    layer_map: list | None = None
    block_components: list | None = None
    mixture_mode: str = "softmax"
    gumbel_tau: float = 1.0
    hidden_size: int = 0
    vocab_size: int = 0
    fresh_embeddings: list | None = None
    tokenizer_fingerprint: str | None = None
    pruning: dict | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.mixture_mode not in MIXTURE_MODES:
            raise ValueError(f"mixture_mode must be one of {MIXTURE_MODES}, got {self.mixture_mode!r}")
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {self.n_blocks}")

    @property
    def num_components(self) -> int:
        return len(self.components or [])

    def component_config(self, index: int) -> PreTrainedConfig:
        """The `index`-th component's transformers config, rebuilt from the inline dict."""
        from transformers import AutoConfig

        spec = dict(self.components[index])
        model_type = spec.pop("model_type")
        return AutoConfig.for_model(model_type, **spec)

    def blocks_of(self, index: int) -> list[tuple[int, int]]:
        """The `[start, end)` layer range of component `index` in every block."""
        bounds, start = [], 0
        for size in self.layer_map[index]:
            bounds.append((start, start + size))
            start += size
        return bounds

    def kept(self) -> list[list[int]]:
        """Per block, the components that run in it."""
        if self.block_components is None:
            return [list(range(self.num_components)) for _ in range(self.n_blocks)]
        return [list(b) for b in self.block_components]
