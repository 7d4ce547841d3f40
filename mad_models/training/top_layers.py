"""Adapters on the top layers only, trained from the frozen lower layers' outputs computed once.

When only the top ``n_top`` decoder layers carry an adapter, everything below them is a fixed function of
the input: :func:`cache_lower_outputs` runs it once per example and keeps the hidden states entering layer
``N - n_top``; :class:`TopLayers` then runs just the top layers, the final norm and the LM head from those
states. Two exact savings per training step:

- the ``N - n_top`` frozen layers are never run again (forward or backward);
- the last layer's queries, MLP, the final norm and the LM head (for SmolLM2, 576 x 49152: eight decoder
  layers' worth of work per token) run only at the positions that are scored (the answer and its EOS), not
  at every prompt token: nothing reads the other positions after the last layer's keys and values.

The loss and logits equal the full model's at the scored positions (``tests/test_top_layers.py`` checks
this within fp32 tolerance, with an adapter in the top layers). Decoders of the Llama family (Llama,
Mistral, Qwen2, SmolLM2: ``model.model.layers``, ``.norm``, ``.rotary_emb``) are supported.

:func:`answer_exact_match` scores greedy exact match from the same cache: a greedy reply equals the answer
exactly when, fed the answer so far, the model's argmax is the next answer token at every answer position
and EOS after it. That is one forward pass of the top layers instead of ``generate`` through all of them.

Example:
    >>> import peft
    >>> cfg = peft.LoraConfig(r=4, target_modules=["q_proj"], layers_to_transform=top_layer_indices(base, 2))
    >>> model = peft.get_peft_model(base, cfg)  # doctest: +SKIP
    >>> cached = cache_lower_outputs(model, train_examples, n_top=2)  # doctest: +SKIP
    >>> top = TopLayers(model, n_top=2)  # doctest: +SKIP
    >>> top(**top_collate()([cached[0], cached[1]])).loss  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers.modeling_outputs import ModelOutput

from mad_models.mad.tasks import IGNORE
from mad_models.training.text import ListDataset


def _decoder(model: nn.Module) -> nn.Module:
    """The causal LM under ``model`` (a PeftModel's base model, or ``model`` itself), checked."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    if not all(hasattr(inner, a) for a in ("layers", "norm", "rotary_emb")):
        raise TypeError(
            f"{type(base).__name__} is not a Llama-family decoder (model.model.layers / .norm / "
            ".rotary_emb); top-layer training needs one"
        )
    return base


def top_layer_indices(model: nn.Module, n_top: int) -> list[int]:
    """Indices of the top ``n_top`` decoder layers (for an adapter config's ``layers_to_transform``)."""
    n = len(_decoder(model).model.layers)
    if not 1 <= n_top <= n:
        raise ValueError(f"n_top must be in 1..{n} (the model's decoder layers), got {n_top}")
    return list(range(n - n_top, n))


class _Stop(Exception):
    """Raised by the hook once the lower layers' output is captured: the top layers need not run."""


@torch.no_grad()
def cache_lower_outputs(
    model: nn.Module, data: Dataset, n_top: int, *, batch_size: int = 32, progress: bool = False
) -> ListDataset:
    """``{"hidden": (T, d), "labels": (T,)}`` per item of ``data`` (items with ``input_ids``, ``labels``):
    the hidden states entering layer ``N - n_top``, computed once in eval mode with no adapter below it."""
    base = _decoder(model)
    layers = base.model.layers
    first_top = top_layer_indices(model, n_top)[0]
    below = [n for n, p in layers[:first_top].named_parameters() if p.requires_grad]
    if below:
        raise ValueError(f"layers below the top {n_top} have trainable parameters ({below[:2]}): not frozen")
    captured: list[torch.Tensor] = []

    def grab(_module, args, kwargs):
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    was_training = base.training
    base.eval()
    device = next(base.parameters()).device
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
    out: list[dict | None] = [None] * len(data)
    handle = layers[first_top].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="cache lower layers", disable=not progress):
            idx = order[start : start + batch_size]
            lengths = [len(data[i]["input_ids"]) for i in idx]
            ids = torch.zeros(len(idx), max(lengths), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
                ids[row, :n] = data[i]["input_ids"]
                mask[row, :n] = 1
            captured.clear()
            try:
                base.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except _Stop:
                pass
            hidden = captured[0].float().cpu()  # (B, T, d)
            for row, (i, n) in enumerate(zip(idx, lengths, strict=True)):
                out[i] = {"hidden": hidden[row, :n].clone(), "labels": data[i]["labels"].clone()}
    finally:
        handle.remove()
        base.train(was_training)
    return ListDataset(out)


def top_collate():
    """Right-pad cached items: hidden states with zeros, labels with -100, plus the attention mask."""

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(it["labels"]) for it in items])
        return {
            "hidden": nn.utils.rnn.pad_sequence([it["hidden"] for it in items], batch_first=True),
            "labels": nn.utils.rnn.pad_sequence(
                [it["labels"] for it in items], batch_first=True, padding_value=IGNORE
            ),
            "attention_mask": (torch.arange(int(lengths.max())) < lengths[:, None]).long(),
        }

    return collate


@dataclass
class TopLayersOutput(ModelOutput):
    """``loss`` over the scored positions, their ``logits`` (N, V) and their target ``labels`` (N,)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None


class TopLayers(nn.Module):
    """The top ``n_top`` decoder layers of ``model`` (shared, not copied: adapters in them train), its final
    norm and LM head, run from the hidden states :func:`cache_lower_outputs` kept.

    The last layer runs its queries, MLP, norm and head only at the scored positions (its keys and values
    at every position): nothing after it reads the other positions, so the result is the same.
    """

    def __init__(self, model: nn.Module, n_top: int):
        super().__init__()
        base = _decoder(model)
        first = top_layer_indices(model, n_top)[0]
        self.config = base.config
        self.layers = nn.ModuleList(base.model.layers[first:])
        self.norm = base.model.norm
        self.rotary_emb = base.model.rotary_emb
        self.head = base.get_output_embeddings()

    def forward(
        self, hidden: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> TopLayersOutput:
        """Cross-entropy at the scored positions only: position t predicts ``labels[:, t + 1]``."""
        from transformers.masking_utils import create_causal_mask

        b, t, _ = hidden.shape  # (B, T, d) cached states entering the first top layer
        if attention_mask is None:
            attention_mask = torch.ones(b, t, dtype=torch.long, device=hidden.device)
        rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)  # (N,) each: the scored positions
        pos = torch.arange(t, device=hidden.device).unsqueeze(0)  # (1, T)
        rope = self.rotary_emb(hidden, position_ids=pos)  # (cos, sin), each (1, T, head_dim)
        if len(self.layers) > 1:
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=attention_mask,
                past_key_values=None,
                position_ids=pos,
            )
            for layer in self.layers[:-1]:
                hidden = layer(hidden, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        h = self._last_layer_at(hidden, attention_mask, rope, rows, cols)  # (N, d)
        logits = self.head(self.norm(h))  # (N, V)
        scored = labels[:, 1:][rows, cols]  # (N,)
        return TopLayersOutput(loss=F.cross_entropy(logits.float(), scored), logits=logits, labels=scored)

    def _last_layer_at(self, hidden, attention_mask, rope, rows, cols) -> torch.Tensor:
        """The last decoder layer's output (N, d) at positions ``(rows, cols)``, as the layer computes it."""
        layer = self.layers[-1]
        attn = layer.self_attn
        b, t, _ = hidden.shape
        hd, groups = attn.head_dim, attn.num_key_value_groups
        cos, sin = rope  # (1, T, hd)
        x = layer.input_layernorm(hidden)  # (B, T, d)
        k = attn.k_proj(x).view(b, t, -1, hd)  # (B, T, Hkv, hd)
        v = attn.v_proj(x).view(b, t, -1, hd)
        k = k * cos[:, :, None] + _rotate_half(k) * sin[:, :, None]
        q = attn.q_proj(x[rows, cols]).view(len(rows), -1, hd)  # (N, H, hd)
        q = q * cos[0, cols, None] + _rotate_half(q) * sin[0, cols, None]
        k = k[rows].repeat_interleave(groups, dim=2)  # (N, T, H, hd): query head i reads kv head i // groups
        v = v[rows].repeat_interleave(groups, dim=2)
        scores = torch.einsum("nhd,nthd->nht", q, k) * attn.scaling  # (N, H, T)
        seen = (torch.arange(t, device=hidden.device) <= cols[:, None]) & attention_mask[
            rows
        ].bool()  # (N, T)
        scores = scores.masked_fill(~seen[:, None, :], float("-inf"))
        w = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        w = F.dropout(w, p=attn.attention_dropout if self.training else 0.0)
        o = attn.o_proj(torch.einsum("nht,nthd->nhd", w, v).reshape(len(rows), -1))  # (N, d)
        h = hidden[rows, cols] + o
        return h + layer.mlp(layer.post_attention_layernorm(h))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def answer_exact_match(
    top: TopLayers, data: Dataset, *, batch_size: int = 64
) -> tuple[list[bool], list[list[int]]]:
    """Per item of the cached ``data``: whether greedy decoding reproduces its scored tokens (answer + EOS)
    exactly, and the argmax token at each scored position (the reply as far as it agrees, then its first
    differing token)."""
    was_training = top.training
    top.eval()
    collate = top_collate()
    hits: list[bool] = []
    preds: list[list[int]] = []
    try:
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(len(data), start + batch_size))])
            out = top(**batch)
            rows = (batch["labels"][:, 1:] != IGNORE).nonzero()[:, 0]  # (N,) example of each position
            pred = out.logits.argmax(-1)
            for b in range(batch["labels"].shape[0]):
                at = rows == b
                if not at.any():
                    raise ValueError(f"item {start + b} has no scored position (no answer token)")
                hits.append(bool((pred[at] == out.labels[at]).all()))
                preds.append(pred[at].tolist())
    finally:
        top.train(was_training)
    return hits, preds
