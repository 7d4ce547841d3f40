"""Sequence classification with any causal LM of the project: a linear head on its last real position.

The features are what the LM's own head reads: the final (normed) hidden state, taken with a forward
pre-hook on the output embedding, so the same wrapper serves GPT-NeoX, Llama, Mamba and a Manticore hybrid
(whose heads read the mixed hidden state; the widest kept head reads all of it).

Padding: batches are padded on the right. A causal LM's state at position t depends on tokens <= t only,
so the last real position (``attention_mask`` or ``pad_token_id`` tells where it is) and a mean over
the real positions are exactly what the unpadded sequence gives, whatever follows; no model-specific mask
handling (Mamba has none) is needed. Left-padded batches are refused, since the pads would come first.

Example:
    >>> import torch
    >>> from mad_models.training import build_model
    >>> clf = SequenceClassifier(build_model("gpt_neox", 17, width=32, layers=1), num_classes=10)
    >>> out = clf(input_ids=torch.tensor([[3, 4, 5], [3, 4, 16]]),
    ...           attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), labels=torch.tensor([1, 2]))
    >>> out.logits.shape, out.loss.dim()
    (torch.Size([2, 10]), 0)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

POOLS = ("last", "mean")
CONFIG_NAME = "classifier.json"
HEAD_NAME = "classifier.safetensors"


def _feature_head(model: nn.Module) -> nn.Linear:
    """The LM head whose input is the model's final hidden state (the widest kept one in a hybrid)."""
    if getattr(getattr(model, "config", None), "model_type", None) == "manticore":
        heads = [model.component_wrappers[m].lm_head for m in model.config.kept()[-1]]
    else:
        heads = [model.get_output_embeddings()] if hasattr(model, "get_output_embeddings") else []
    heads = [h for h in heads if isinstance(h, nn.Linear)]
    if not heads:
        raise TypeError(
            f"{type(model).__name__} has no linear LM head (get_output_embeddings()) whose input could be "
            "classified; SequenceClassifier needs a causal LM with its head"
        )
    return max(heads, key=lambda h: h.in_features)


class SequenceClassifier(nn.Module):
    """``model`` (a causal LM) + ``nn.Linear(hidden, num_classes)`` on the last real position
    (``pool="last"``) or on the mean over real positions (``pool="mean"``).

    ``forward(input_ids, attention_mask=None, labels=None)`` returns a ``SequenceClassifierOutput`` with
    ``logits`` (B, num_classes) and, given ``labels`` (B,), the cross-entropy ``loss``, so the project's
    training loop (``mad_models.training.loop``) trains it as a classification model.
    ``pad_token_id`` finds the real positions when no ``attention_mask`` is given.
    """

    def __init__(
        self, model: nn.Module, num_classes: int, pool: str = "last", pad_token_id: int | None = None
    ):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.model, self.num_classes, self.pool, self.pad_token_id = model, num_classes, pool, pad_token_id
        head = _feature_head(model)
        w = head.weight
        self.score = nn.Linear(head.in_features, num_classes, device=w.device, dtype=w.dtype)
        self._features: torch.Tensor | None = None
        self._hook = head.register_forward_pre_hook(self._keep_features)

    @property
    def config(self):
        return self.model.config

    @property
    def has_unused_parameters(self) -> bool:
        return True  # the LM head's weights never reach the loss (DDP must be told)

    def _keep_features(self, module: nn.Module, args: tuple) -> None:
        self._features = args[0]

    def _mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            if self.pad_token_id is None:
                return torch.ones_like(input_ids, dtype=torch.bool)
            attention_mask = input_ids != self.pad_token_id
        mask = attention_mask.bool()
        if mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(input_ids.shape)}"
            )
        lengths = mask.sum(-1)
        if (lengths == 0).any():
            raise ValueError("a sequence of the batch has no real token (all padding)")
        # right padding: the real tokens are exactly the first `length` positions of each row
        if (mask != (torch.arange(mask.shape[1], device=mask.device) < lengths[:, None])).any():
            raise ValueError(
                "the batch is not right-padded (a pad before a real token); a causal LM's last position only "
                "ignores padding that comes after it: pad on the right (tokenizer.padding_side = 'right')"
            )
        return mask

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        mask = self._mask(input_ids, attention_mask)  # (B, T)
        self._features = None
        # the mask is not passed on: positions before the padding never see it (causality)
        self.model(input_ids=input_ids, use_cache=False)
        h, self._features = self._features, None  # (B, T, d)
        if h is None:
            raise RuntimeError("the LM's head did not run, so no features were captured")
        h = h.to(self.score.weight.dtype)
        if self.pool == "last":
            last = mask.sum(-1) - 1  # (B,)
            pooled = h[torch.arange(h.shape[0], device=h.device), last]  # (B, d)
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1)  # (B, d)
        logits = self.score(pooled)  # (B, num_classes)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def predict(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class ids (B,) for a batch."""
        return self(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)

    # ---- safetensors in, safetensors out ---------------------------------------------------------------
    def save_pretrained(self, out: str | os.PathLike) -> None:
        """``out/model/`` (the LM's own ``save_pretrained``), ``out/classifier.safetensors`` (the head) and
        ``out/classifier.json`` (num_classes, pool, pad_token_id)."""
        from safetensors.torch import save_file

        from mad_models.loading import save_pretrained

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.model, out / "model")
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.score.state_dict().items()}, out / HEAD_NAME
        )
        settings = {"num_classes": self.num_classes, "pool": self.pool, "pad_token_id": self.pad_token_id}
        (out / CONFIG_NAME).write_text(json.dumps(settings, indent=1))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device | None = "cpu"
    ) -> SequenceClassifier:
        """Load what :meth:`save_pretrained` wrote (safetensors only; the LM through
        ``mad_models.loading.load_causal_lm``, which checks its files first and never runs remote code).

        Example:
            >>> # clf = SequenceClassifier.from_pretrained("runs/listops/attention")
        """
        from safetensors.torch import load_file

        from mad_models.loading import load_causal_lm
        from mad_models.validation import CheckpointError, read_json_config

        path = Path(path)
        if not (path / CONFIG_NAME).is_file() or not (path / HEAD_NAME).is_file():
            raise FileNotFoundError(
                f"{path} is not a saved SequenceClassifier (needs {CONFIG_NAME} and {HEAD_NAME})"
            )
        cfg = read_json_config(path / CONFIG_NAME)
        num_classes, pool, pad = cfg.get("num_classes"), cfg.get("pool"), cfg.get("pad_token_id")
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int)):
            raise CheckpointError(f"{CONFIG_NAME}: pad_token_id must be an int or null, got {pad!r}")
        model = load_causal_lm(path / "model", device=device)
        try:
            clf = cls(model, num_classes, pool=pool, pad_token_id=pad)
        except ValueError as err:
            raise CheckpointError(f"{CONFIG_NAME}: {err}") from None
        head = load_file(path / HEAD_NAME)
        want = {k: tuple(v.shape) for k, v in clf.score.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in head.items()}
        if want != got:
            raise CheckpointError(f"{HEAD_NAME} holds {got}, the model's head needs {want}")
        clf.score.load_state_dict({k: v.to(clf.score.weight.dtype) for k, v in head.items()})
        return clf.to(model.device).eval()
