"""Manticore pretrained hybrids as a transformers causal LM.

Stable names other code (training, hub tools, app) codes against:

- ``ManticoreForCausalLM.from_components(sources, n_blocks=1, layer_map=None, fresh_embeddings=False,
  mixture="softmax", tokenizers=None, revisions=None)``: build a hybrid from hub ids, local dirs or models.
- ``hybrid.mixture_weights() -> Tensor (n_blocks, K)``: the current weights (rows sum to one).
- ``hybrid.mixture_parameters() -> list[Parameter]``: the architecture parameters (for the arch optimiser).
- ``hybrid.projector_parameters() -> list[Parameter]``: input/output projectors of every block.
- ``hybrid.freeze_components(True / False)``: (un)freeze the pretrained components (not fresh embeddings).
- ``hybrid.set_mixture(weights, mode="fixed")``: set weights, or switch mode ("softmax", "gumbel", "simplex").
- ``hybrid.cost_report(context=1024) -> dict``: parameters and FLOPs/token, total / per component / per block.
- ``hybrid.prune(threshold) -> ManticoreForCausalLM`` and ``hybrid.discretize()``: a hybrid that runs only the
  kept blocks (recorded in ``config.block_components`` and ``config.pruning``).
- ``hybrid.config.component_names``, ``hybrid.config.component_revisions``, ``hybrid.config.mixture_mode``.

The forward pass follows the Manticore spec: block i of every component runs on the shared hidden state h
(B x T x D, D = the widest component); component m in block i with weight a = alpha[i][m] gets
``x = (1 - a) * P_in(h) + a * h[..., :d_m]`` and contributes ``a * ((1 - a) * P_out(z) + a * pad(z))``.
Embeddings are mixed with block 0's weights and logits with the last block's weights, so a one-hot
mixture is exactly the chosen component.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Cache,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from mad_models.hybrid.components import Component, family_for
from mad_models.hybrid.configuration import ManticoreConfig
from mad_models.hybrid.layer_map import resolve_layer_map
from mad_models.hybrid.mixture import BlockMixture
from mad_models.loading import checked_checkpoint

logger = logging.getLogger(__name__)

# config keys that describe where a config came from rather than the architecture
_HUB_KWARGS = ("cache_dir", "local_files_only", "token", "force_download", "proxies", "subfolder")
_PROVENANCE_KEYS = ("_name_or_path", "_commit_hash", "transformers_version", "_attn_implementation_autoset")


class ManticoreCache(Cache):
    """One cache per component (KV cache for attention, conv/SSM state for Mamba), plus the token count.

    Each component keeps the exact cache type its own `generate` would use, indexed by its own layer numbers.
    """

    def __init__(self, caches: list[Cache]):
        super().__init__(layers=[])
        self.caches = caches
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return all(c.is_croppable for c in self.caches)

    @property
    def batch_size(self) -> int:
        sizes = [c.batch_size for c in self.caches if c.batch_size >= 0]
        return sizes[0] if sizes else -1

    def reset(self) -> None:
        for c in self.caches:
            c.reset()
        self.seen_tokens = 0

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens from every component's cache (transformers passes a
        count <= 0). A Mamba state that does not record its past cannot be rolled back: that is refused."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes minus the number of tokens to remove, got {tokens_to_remove}")
        if not all(getattr(layer, "record_past", True) for c in self.caches for layer in c.layers):
            raise ValueError(
                "a Manticore hybrid with a Mamba component cannot roll its cache back (Mamba's state is "
                "recurrent): assisted decoding is not supported with it, as with Mamba itself"
            )
        for c in self.caches:
            c.crop(tokens_to_remove)
        self.seen_tokens = max(0, self.seen_tokens + tokens_to_remove)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for c in self.caches:
            c.reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for c in self.caches:
            c.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for c in self.caches:
            c.batch_select_indices(indices)

    def activate_past_recording(self) -> None:
        for c in self.caches:
            c.activate_past_recording()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's vocabulary (token -> id, added tokens included) and BPE merges.

    Two tokenizers with the same fingerprint map text to the same ids, whatever their names.
    """
    payload: dict[str, Any] = {"vocab": sorted(tokenizer.get_vocab().items())}
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        spec = json.loads(backend.to_str())
        model = spec.get("model", {})
        payload["type"] = model.get("type")
        payload["merges"] = model.get("merges")
        # the same vocabulary behind another normalizer (lowercasing, NFKC), pre-tokenizer (byte-level or
        # not) or post-processor (BOS added or not) gives other ids for the same text
        for stage in ("normalizer", "pre_tokenizer", "post_processor"):
            payload[stage] = spec.get(stage)
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _checkpoint_folder(name_or_path: Any, kwargs: dict) -> Path | None:
    """The local folder holding config.json and the weights of `name_or_path` (a dir or a hub id, fetched
    with the caller's hub arguments), or None when it cannot be resolved (from_pretrained then reports it)."""
    sub = kwargs.get("subfolder") or ""
    if Path(name_or_path).is_dir():
        return Path(name_or_path) / sub
    from transformers.utils import cached_file

    hub = {
        k: kwargs[k]
        for k in ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")
        if k in kwargs
    }
    hub["subfolder"] = sub
    try:
        config = cached_file(str(name_or_path), "config.json", **hub)
        folder = Path(config).parent
        if cached_file(
            str(name_or_path), "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub
        ):
            return folder
        index = cached_file(
            str(name_or_path),
            "model.safetensors.index.json",
            _raise_exceptions_for_missing_entries=False,
            **hub,
        )
        if index:
            weight_map = json.loads(Path(index).read_text()).get("weight_map", {})
            for shard in sorted(set(weight_map.values())):
                if not Path(shard).is_absolute() and ".." not in Path(shard).parts:  # the check refuses those
                    cached_file(str(name_or_path), shard, **hub)
        return folder
    except (OSError, ValueError, AttributeError, RecursionError):
        return None


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


class ManticorePreTrainedModel(PreTrainedModel):
    config: ManticoreConfig
    config_class = ManticoreConfig
    base_model_prefix = "manticore"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Components initialise themselves (transformers dispatches to their own `_init_weights`);
        # projectors keep PyTorch's default Linear init (as the reference code) and mixture logits start at 0.
        return


class ManticoreForCausalLM(ManticorePreTrainedModel, GenerationMixin):
    """A Manticore hybrid of K pretrained causal LMs, run block by block with gated projectors.

    Example:
    ```python
    >>> import mad_models
    >>> from mad_models.hybrid import ManticoreForCausalLM
    >>> hybrid = ManticoreForCausalLM.from_components(
    ...     ["EleutherAI/pythia-70m", "state-spaces/mamba-130m-hf"], n_blocks=2
    ... )  # doctest: +SKIP
    >>> hybrid.set_mixture([[0.7, 0.3], [0.2, 0.8]])  # doctest: +SKIP
    >>> small = hybrid.prune(threshold=0.25)  # doctest: +SKIP
    ```
    """

    def __init__(self, config: ManticoreConfig, components: list[PreTrainedModel] | None = None):
        super().__init__(config)
        if not config.components:
            raise ValueError("ManticoreConfig.components is empty: build hybrids with from_components(...)")
        if components is None:
            components = [
                family_for(cfg).model_class(cfg)
                for cfg in map(config.component_config, range(config.num_components))
            ]
        if len(components) != config.num_components:
            raise ValueError(f"expected {config.num_components} components, got {len(components)}")
        self.components = nn.ModuleList(components)
        self._component_wrappers: list[Component] = [family_for(c.config)(c) for c in components]

        names = config.component_names or [f"component{m}" for m in range(len(components))]
        depths = [a.num_layers for a in self._component_wrappers]
        config.layer_map = resolve_layer_map(depths, config.n_blocks, config.layer_map, names)
        self._bounds = [config.blocks_of(m) for m in range(len(components))]
        self._kept = config.kept()
        if len(self._kept) != config.n_blocks or any(
            not b or any(m not in range(len(components)) for m in b) for b in self._kept
        ):
            raise ValueError(f"block_components must list >= 1 valid component per block, got {self._kept}")

        # Drop everything a pruned hybrid never runs, so it costs nothing.
        last = config.n_blocks - 1
        for m, component in enumerate(self._component_wrappers):
            for i, (start, end) in enumerate(self._bounds[m]):
                if m not in self._kept[i]:
                    for layer in range(start, end):
                        component.drop_layer(layer)
            if m not in self._kept[0]:
                component.drop_embedding()
            if m not in self._kept[last]:
                component.drop_head()
                component.drop_norm()

        # Projectors exist where a block mixes several components (with one, a = 1 and they drop out).
        D = config.hidden_size
        self.proj_in = nn.ModuleDict()
        self.proj_out = nn.ModuleDict()
        for i, kept in enumerate(self._kept):
            if len(kept) < 2:
                continue
            for m in kept:
                d = self._component_wrappers[m].hidden_size
                self.proj_in[self._key(m, i)] = nn.Linear(D, d)
                self.proj_out[self._key(m, i)] = nn.Linear(d, D)

        mask = torch.zeros(config.n_blocks, len(components), dtype=torch.bool, device="cpu")
        for i, kept in enumerate(self._kept):
            mask[i, kept] = True
        self.mixture = BlockMixture(
            config.n_blocks, len(components), config.mixture_mode, mask, config.gumbel_tau
        )
        self.post_init()

    @staticmethod
    def _key(m: int, i: int) -> str:
        return f"c{m}_b{i}"

    # ---- tied weights: each component's own ties, minus the pieces pruning removed ----------------
    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        if "components" not in self._modules:
            return {}
        names = {n for n, _ in self.named_parameters(remove_duplicate=False)}
        tied = {}
        for idx, comp in enumerate(self.components):
            for target, source in comp.get_expanded_tied_weights_keys(all_submodels=False).items():
                target, source = f"components.{idx}.{target}", f"components.{idx}.{source}"
                if target in names and source in names:
                    tied[target] = source
        return tied

    def get_input_embeddings(self) -> nn.Module | None:
        return self._component_wrappers[self._kept[0][0]].embedding

    def get_output_embeddings(self) -> nn.Module | None:
        return self._component_wrappers[self._kept[-1][0]].lm_head

    @property
    def _is_stateful(self) -> bool:
        """True when a component that runs keeps a recurrent state (Mamba): it cannot be rolled back to an
        earlier token, so `generate` refuses assisted decoding, exactly as it does for Mamba."""
        return any(
            not wrapper.has_attention and any(m in kept for kept in self._kept)
            for m, wrapper in enumerate(self._component_wrappers)
        )

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Module:
        """Resize every component's token embedding and LM head to the new vocabulary (tied heads stay tied);
        the hybrid's `config.vocab_size` and the components' inline configs follow, so the result saves and
        loads. Returns the input embedding of the first component (`get_input_embeddings()`).

        Example:
        ```python
        >>> tokenizer.add_special_tokens({"pad_token": "<pad>"})  # doctest: +SKIP
        >>> hybrid.resize_token_embeddings(len(tokenizer))  # doctest: +SKIP
        ```
        """
        if new_num_tokens is None and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        n = int(new_num_tokens if new_num_tokens is not None else self.config.vocab_size)
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        if n < 1:
            raise ValueError(f"new_num_tokens must be at least 1, got {new_num_tokens}")
        for m, (comp, wrapper) in enumerate(zip(self.components, self._component_wrappers, strict=True)):
            emb, head = wrapper.embedding, wrapper.lm_head
            if emb is not None and head is not None:
                comp.resize_token_embeddings(n, mean_resizing=mean_resizing)  # re-ties a tied head itself
            else:  # a pruned hybrid dropped the embedding or the head this component never runs
                if emb is not None:
                    comp.set_input_embeddings(
                        comp._get_resized_embeddings(emb, n, mean_resizing=mean_resizing)
                    )
                if head is not None:
                    comp.set_output_embeddings(
                        comp._get_resized_lm_head(head, n, mean_resizing=mean_resizing)
                    )
                comp.config.get_text_config().vocab_size = n
            self.config.components[m]["vocab_size"] = n
        self.config.vocab_size = n
        return self.get_input_embeddings()

    # ---- public API -----------------------------------------------------------------------------
    @property
    def component_wrappers(self) -> list[Component]:
        """One `Component` per entry of ``self.components``: where its embedding, layers and head are."""
        return list(self._component_wrappers)

    def mixture_weights(self) -> torch.Tensor:
        """(n_blocks, K) mixture weights; rows sum to one, pruned entries are 0."""
        return self.mixture.weights()

    def mixture_parameters(self) -> list[nn.Parameter]:
        """Architecture parameters (the mixture), for the architecture optimiser."""
        return [self.mixture.alphas]

    def projector_parameters(self) -> list[nn.Parameter]:
        """Input and output projectors of every block (the weights projector pretraining trains)."""
        return list(self.proj_in.parameters()) + list(self.proj_out.parameters())

    def freeze_components(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the pretrained components. Fresh embeddings/heads stay trainable."""
        for m, comp in enumerate(self.components):
            fresh = bool((self.config.fresh_embeddings or [False] * len(self.components))[m])
            keep_trainable = set()
            if fresh:
                for piece in (self._component_wrappers[m].embedding, self._component_wrappers[m].lm_head):
                    if piece is not None:
                        keep_trainable.update(id(p) for p in piece.parameters())
            for p in comp.parameters():
                p.requires_grad_(not frozen or id(p) in keep_trainable)

    def set_mixture(self, weights: torch.Tensor | Sequence | None = None, mode: str = "fixed") -> None:
        """Set the mixture weights (rows summing to one) and mode; `weights=None` keeps the weights and
        only switches mode. Example: ``hybrid.set_mixture([[0.7, 0.3], [0.2, 0.8]])``."""
        if weights is None:
            self.mixture.set_mode(mode)
        else:
            self.mixture.set_weights(weights, mode)
        self.config.mixture_mode = mode

    def cost_report(self, context: int = 1024) -> dict:
        """Parameters and FLOPs/token: total, per component, per block, projectors. See `cost.py`."""
        from mad_models.hybrid.cost import cost_report

        return cost_report(self, context=context)

    def prune(self, threshold: float) -> ManticoreForCausalLM:
        """A new hybrid keeping, in each block, the components with weight >= threshold (argmax if none)."""
        from mad_models.hybrid.prune import prune_hybrid

        return prune_hybrid(self, threshold=threshold)

    def discretize(self) -> ManticoreForCausalLM:
        """A new hybrid keeping only the argmax component of each block."""
        from mad_models.hybrid.prune import prune_hybrid

        return prune_hybrid(self, threshold=None)

    def new_cache(self) -> ManticoreCache:
        """An empty cache for `forward(..., past_key_values=...)`: one per component, of its own kind."""
        return ManticoreCache([a.new_cache() for a in self._component_wrappers])

    # ---- construction from pretrained components -------------------------------------------------
    @classmethod
    def from_components(
        cls,
        sources: Sequence[str | PreTrainedModel],
        n_blocks: int = 1,
        layer_map: Sequence[Sequence[int]] | None = None,
        fresh_embeddings: bool = False,
        mixture: str | Sequence | torch.Tensor = "softmax",
        tokenizers: Sequence[Any] | None = None,
        revisions: Sequence[str | None] | None = None,
        gumbel_tau: float = 1.0,
        **load_kwargs: Any,
    ) -> ManticoreForCausalLM:
        """Build a hybrid from hub ids, local directories or model objects (transformers causal LMs).

        Tokenizer sharing is decided from tokenizer contents (`tokenizer_fingerprint`: vocabulary and
        merges), never from names. Ids and directories bring their tokenizer; for model objects pass
        `tokenizers=[...]` (tokenizer objects or paths, aligned with `sources`). When some component has
        no tokenizer, the only check possible is that vocabulary sizes and embedding shapes agree: that is
        what happens then (with a warning), and it cannot tell two different same-size vocabularies apart.
        If the tokenizers differ, a ValueError is raised unless `fresh_embeddings=True`: then components whose
        tokenizer differs from the first component's get new (tied) embeddings sized to the first one's vocab.

        Model objects are used as they are (not copied), except when they get fresh embeddings. Ids and
        directories load from safetensors only and never run code from the repo; `load_kwargs` (e.g.
        `local_files_only`, `cache_dir`, `token`, `dtype`) go to `from_pretrained`.

        Example:
        ```python
        >>> hybrid = ManticoreForCausalLM.from_components([neox, mamba], n_blocks=2)  # doctest: +SKIP
        ```
        """
        if isinstance(sources, (str, PreTrainedModel)) or len(sources) < 1:
            raise ValueError("sources must be a list of one or more hub ids, local dirs or model objects")
        k = len(sources)
        revisions = list(revisions) if revisions is not None else [None] * k
        tokenizers = list(tokenizers) if tokenizers is not None else [None] * k
        if len(revisions) != k or len(tokenizers) != k:
            raise ValueError(f"revisions and tokenizers must have one entry per component ({k})")
        objects = [i for i, src in enumerate(sources) if isinstance(src, PreTrainedModel)]
        for i in objects:
            for j in objects:
                if j > i and sources[i] is sources[j]:
                    raise ValueError(
                        f"components {i} and {j} are the same model object; a hybrid needs separate modules "
                        "per component: pass copy.deepcopy(model) for the second one"
                    )
        if objects:
            logger.warning(
                "from_components uses the model objects you passed (components %s) as they are, not copies: "
                "training the hybrid, or calling .to()/.train()/.eval() on it, changes them too. Pass "
                "copy.deepcopy(model) to keep yours apart.",
                objects,
            )

        # where and how to fetch: the tokenizers come from the same place as the models
        hub_kwargs = {k: v for k, v in load_kwargs.items() if k in _HUB_KWARGS}
        models, names, revs, toks = [], [], [], []
        for src, rev, tok in zip(sources, revisions, tokenizers, strict=True):
            if isinstance(src, str):
                # a Hub id: only configs, safetensors and tokenizer files are fetched; a dir or a snapshot is
                # checked as hub_tools.pull checks it (config against the weight headers) before building
                folder, commit = checked_checkpoint(src, revision=rev, **hub_kwargs)
                load = {k: v for k, v in load_kwargs.items() if k not in _HUB_KWARGS}
                # safetensors only (a pickle runs code from the file), and never code from the repo
                kwargs = {**load, "use_safetensors": True, "trust_remote_code": False}
                model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
                model.config._name_or_path = model.name_or_path = src  # never a cache path in cards
                rev = rev or commit
                if tok is None:
                    try:
                        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
                    except (OSError, ValueError) as err:
                        logger.warning("no tokenizer found for %s (%s)", src, err)
                name = src
            elif isinstance(src, PreTrainedModel):
                model = src
                name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            else:
                raise TypeError(
                    f"a component must be a hub id, a local dir or a PreTrainedModel, got {type(src)}"
                )
            family = family_for(model.config)
            if not isinstance(model, family.model_class):
                raise ValueError(
                    f"component {name!r} is a {type(model).__name__}; Manticore needs the causal LM "
                    f"with its head "
                    f"({family.model_class.__name__})"
                )
            if isinstance(tok, str):
                tok = AutoTokenizer.from_pretrained(tok, trust_remote_code=False)
            models.append(model)
            names.append(name)
            revs.append(rev or getattr(model.config, "_commit_hash", None))
            toks.append(tok)

        fresh = cls._decide_embeddings(models, names, toks, fresh_embeddings)
        vocab0 = models[0].config.vocab_size
        for m, is_fresh in enumerate(fresh):
            if is_fresh:
                models[m] = copy.deepcopy(models[m])
                family_for(models[m].config)(models[m]).set_fresh_embeddings(vocab0)

        wrappers = [family_for(mod.config)(mod) for mod in models]
        lmap = resolve_layer_map([a.num_layers for a in wrappers], n_blocks, layer_map, names)
        fp = tokenizer_fingerprint(toks[0]) if toks[0] is not None else None
        special = models[0].config
        config = ManticoreConfig(
            components=[cls._config_dict(mod.config) for mod in models],
            component_names=names,
            component_revisions=revs,
            n_blocks=n_blocks,
            layer_map=lmap,
            mixture_mode=mixture if isinstance(mixture, str) else "fixed",
            gumbel_tau=gumbel_tau,
            hidden_size=max(a.hidden_size for a in wrappers),
            vocab_size=max(a.vocab_size for a in wrappers),
            fresh_embeddings=fresh,
            tokenizer_fingerprint=fp,
            bos_token_id=getattr(special, "bos_token_id", None),
            eos_token_id=getattr(special, "eos_token_id", None),
            pad_token_id=getattr(special, "pad_token_id", None),
        )
        dtypes = {mod.dtype for mod in models}
        if len(dtypes) > 1:  # converting would change the caller's model objects
            raise ValueError(
                f"components have different dtypes ({[str(m.dtype) for m in models]} for {names}); convert "
                "them to one dtype first, e.g. model.to(torch.float32)"
            )
        hybrid = cls(config, components=models)
        if not isinstance(mixture, str):
            hybrid.set_mixture(mixture, mode="fixed")
        # only the hybrid's own parts follow the first component's dtype and mode; components stay as given
        hybrid.training = models[0].training
        for part in (hybrid.proj_in, hybrid.proj_out, hybrid.mixture):
            part.to(models[0].dtype).train(models[0].training)
        return hybrid

    @staticmethod
    def _config_dict(config: Any) -> dict:
        d = config.to_dict()
        for key in _PROVENANCE_KEYS:
            d.pop(key, None)
        return d

    @staticmethod
    def _decide_embeddings(models: list, names: list, toks: list, fresh_embeddings: bool) -> list[bool]:
        """Per component: does it need fresh embeddings (its tokenizer differs from the first one's)?"""
        if all(t is not None for t in toks):
            fps = [tokenizer_fingerprint(t) for t in toks]
            same = [fp == fps[0] for fp in fps]
            how = "their tokenizer files (vocabulary and merges) differ"
        else:
            # No tokenizer for some component: all we can compare is vocab size and embedding shape.
            missing = [n for n, t in zip(names, toks, strict=True) if t is None]
            logger.warning(
                "no tokenizer for %s: treating components as sharing a tokenizer only if vocab sizes and "
                "embedding shapes agree (pass tokenizers=[...] to check the vocabularies themselves)",
                missing,
            )
            shapes = [
                (mod.config.vocab_size, tuple(mod.get_input_embeddings().weight.shape[:1])) for mod in models
            ]
            same = [s == shapes[0] for s in shapes]
            how = f"their vocab sizes / embedding rows differ ({[s[0] for s in shapes]})"
        if all(same):
            return [False] * len(models)
        if not fresh_embeddings:
            odd = [n for n, s in zip(names, same, strict=True) if not s]
            raise ValueError(
                f"components {odd} do not share a tokenizer with {names[0]!r}: {how}. Their pretrained "
                "embeddings cannot be mixed; pass fresh_embeddings=True to train new embeddings for them"
            )
        return [not s for s in same]

    # ---- loading: safetensors only; a checkpoint with missing tensors is an error, not a random init ---
    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> ManticoreForCausalLM:
        want_info = kwargs.pop("output_loading_info", False)
        kwargs["use_safetensors"] = True  # never unpickle a pytorch_model.bin: that can run code
        kwargs["trust_remote_code"] = False
        if args:  # config and weight headers first: a config must not allocate what the file cannot fill
            if kwargs.get("revision") is not None:  # huggingface_hub writes refs/<revision> into its cache
                from mad_models.validation import check_revision

                check_revision(kwargs["revision"])
            folder = _checkpoint_folder(args[0], kwargs)
            if folder is not None:
                from mad_models.validation import CheckpointError, check_pretrained_folder

                given = kwargs.get("config")
                try:
                    check_pretrained_folder(
                        cls, folder, config=given if isinstance(given, PreTrainedConfig) else None
                    )
                except CheckpointError as err:
                    raise CheckpointError(f"{args[0]}: {err}") from None
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys", []))
        mismatched = info.get("mismatched_keys", [])
        if missing or mismatched:
            raise ValueError(
                f"checkpoint does not match its Manticore config: {len(missing)} missing tensors "
                f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, {len(mismatched)} with wrong shapes "
                f"{list(mismatched)[:4]}"
            )
        model._check_loaded_mixture()
        # the loader makes every float tensor trainable; fixed mixture weights are not
        model.mixture.alphas.requires_grad_(model.config.mixture_mode != "fixed")
        return (model, info) if want_info else model

    def _check_loaded_mixture(self) -> None:
        """Loaded mixture values must be what `set_mixture` accepts: finite logits in "softmax"/"gumbel"
        mode, weights on the simplex (zero where pruned) in "fixed"/"simplex" mode."""
        alphas = self.mixture.alphas.detach().float().cpu()
        mode, mask = self.config.mixture_mode, self.mixture._mask_cpu
        # a bf16/fp16 checkpoint rounds each weight: allow its rounding in the row sums
        tol = max(1e-4, alphas.shape[-1] * torch.finfo(self.mixture.alphas.dtype).eps)
        problem = None
        if mode in ("softmax", "gumbel"):
            if not torch.isfinite(alphas).all():
                problem = "mixture logits must be finite"
        elif not torch.isfinite(alphas).all() or (alphas < 0).any():
            problem = "mixture weights must be finite and non-negative"
        elif (alphas[~mask] != 0).any():
            problem = "components pruned from a block must have weight 0 in that block"
        elif not torch.allclose(alphas.sum(-1), torch.ones(alphas.shape[0]), atol=tol):
            problem = f"mixture weights of each block must sum to one, got row sums {alphas.sum(-1).tolist()}"
        if problem:
            raise ValueError(f"model.safetensors holds invalid mixture weights (mixture.alphas): {problem}")

    # ---- generation ---------------------------------------------------------------------------------
    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs) -> None:
        cache = model_kwargs.get("past_key_values")
        if cache is not None:
            if not isinstance(cache, ManticoreCache):
                raise ValueError(
                    f"a Manticore hybrid needs a ManticoreCache (hybrid.new_cache()), got {type(cache)}"
                )
            cache._is_user_defined = True
            return
        if generation_config.use_cache is False:
            return
        model_kwargs["past_key_values"] = self.new_cache()

    # ---- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: ManticoreCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (B, T', V) for `input_ids` (B, T).

        `output_hidden_states=True` adds `hidden_states`: the mixed embeddings (B, T, D), then the mixed state
        after each block; n_blocks + 1 tensors, the last one (after the components' final norms) what the
        heads read. `return_dict=False` returns the tuple (loss, logits, past_key_values, hidden_states)
        without the entries that are None, as transformers models do.
        """
        if output_attentions:
            raise ValueError(
                "ManticoreForCausalLM does not return attention weights (a Mamba component has none, and the "
                "mixed blocks have no single attention map); use output_hidden_states=True"
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        if inputs_embeds is not None or input_ids is None:
            raise ValueError("ManticoreForCausalLM takes input_ids (its components embed tokens themselves)")
        if past_key_values is not None and not isinstance(past_key_values, ManticoreCache):
            raise ValueError(
                f"past_key_values must be a ManticoreCache (hybrid.new_cache()), got {type(past_key_values)}"
            )
        B, T = input_ids.shape
        if (
            input_ids.numel()
            and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < self.config.vocab_size
        ):
            raise ValueError(
                f"input_ids must lie in [0, {self.config.vocab_size}) (the hybrid's vocabulary), got "
                f"ids from {int(input_ids.min())} to {int(input_ids.max())}"
            )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        cache = past_key_values if past_key_values is not None else (self.new_cache() if use_cache else None)
        if position_ids is None:
            past = cache.seen_tokens if cache is not None else 0
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)

        w = self.mixture.weights()  # (n_blocks, K), sampled once per forward in Gumbel mode
        D = self.config.hidden_size
        shape_like = torch.empty((B, T, 0), dtype=self.dtype, device=input_ids.device)
        # masks and rotary tables read each component's cache length: build them before any layer runs
        ctx = [
            a.prepare(
                shape_like, attention_mask, position_ids, cache.caches[m] if cache is not None else None
            )
            for m, a in enumerate(self._component_wrappers)
        ]

        # A component whose weight in a block is exactly 0 does not run there: the result is exact
        # (it would add 0 * y), the cost is saved, and a NaN inside it cannot reach the output.
        live = (w != 0).tolist()  # one host sync per forward
        kept_live = [[m for m in kept if live[i][m]] for i, kept in enumerate(self._kept)]
        h = sum(
            w[0, m] * _pad(self._component_wrappers[m].embed(input_ids), D) for m in kept_live[0]
        )  # (B, T, D)
        hidden_states = [h] if output_hidden_states else None
        for i, kept in enumerate(kept_live):
            out = 0
            for m in kept:
                a, component, key = w[i, m], self._component_wrappers[m], self._key(m, i)
                start, end = self._bounds[m][i]
                x = h[..., : component.hidden_size]  # (B, T, d_m)
                if key in self.proj_in:
                    x = (1 - a) * self.proj_in[key](h) + a * x
                if start == 0:
                    x = component.enter(x, ctx[m])
                z = component.run_layers(x, start, end, ctx[m])
                if end == component.num_layers:
                    z = component.final_norm(z)
                # Mamba keeps an fp32 residual inside its layers; blocks meet in the model dtype
                z = z.to(h.dtype)
                y = _pad(z, D)  # (B, T, D)
                if key in self.proj_out:
                    y = (1 - a) * self.proj_out[key](z) + a * y
                out = out + a * y
            h = out
            if hidden_states is not None:
                hidden_states.append(h)

        if isinstance(logits_to_keep, int):
            h = h[:, -logits_to_keep:] if logits_to_keep > 0 else h
        else:
            h = h[:, logits_to_keep]
        V = self.config.vocab_size
        logits = 0
        for m in kept_live[-1]:
            component = self._component_wrappers[m]
            lm = component.head(h[..., : component.hidden_size])  # (B, T', V_m)
            if lm.shape[-1] < V:  # ids the smaller vocabulary does not have are never predicted
                lm = F.pad(lm, (0, V - lm.shape[-1]), value=torch.finfo(lm.dtype).min)
            logits = logits + w[-1, m] * lm

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=V, **kwargs)
        if cache is not None:
            cache.seen_tokens += T
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )
        return output if return_dict else output.to_tuple()
