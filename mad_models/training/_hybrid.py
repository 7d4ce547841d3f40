"""Checks shared by the hybrid jobs: the model must be a Manticore hybrid."""

from __future__ import annotations

import torch

_NEEDED = (
    "mixture_parameters",
    "projector_parameters",
    "freeze_components",
    "set_mixture",
    "mixture_weights",
)


def check_hybrid(model: torch.nn.Module) -> None:
    missing = [m for m in _NEEDED if not hasattr(model, m)]
    if missing:
        raise TypeError(
            f"this job needs a Manticore hybrid (mad_models.hybrid.ManticoreForCausalLM); "
            f"{type(model).__name__} has no {', '.join(missing)}"
        )


def mixture_ids(model: torch.nn.Module) -> set[int]:
    return {id(p) for p in model.mixture_parameters()}


def expected_mixture(model: torch.nn.Module) -> torch.Tensor:
    """Mixture weights without Gumbel noise (DASH samples in ``mixture_weights()`` while training)."""
    mixture = getattr(model, "mixture", None)
    with torch.no_grad():
        if mixture is not None and hasattr(mixture, "expected_weights"):
            return mixture.expected_weights().detach().cpu()
        return model.mixture_weights().detach().cpu()


def mixture_log(model: torch.nn.Module) -> dict:
    """The current mixture weights (n_blocks x K) for the JSONL log."""
    return {"mixture": [[round(float(x), 5) for x in row] for row in expected_mixture(model)]}


def refuse_simplex_with_adamw(model: torch.nn.Module, job: str) -> None:
    """A trainable simplex-mode (GAEA) mixture must only move by exponentiated-gradient steps.

    AdamW would push its rows off the simplex (row sums of 1.27 / 0.96 were seen), so jobs that train
    every parameter with AdamW refuse it with a way out.
    """
    mixture = getattr(model, "mixture", None)
    if mixture is None or getattr(mixture, "mode", None) != "simplex":
        return
    if any(p.requires_grad for p in model.mixture_parameters()):
        raise ValueError(
            f"{job}: the hybrid's mixture is in 'simplex' mode (GAEA), which only exponentiated-gradient "
            "steps keep on the simplex; this job's AdamW would not. Fix the weights first "
            "(hybrid.set_mixture(mode='fixed')), switch to mode='softmax', or search with method='gaea'"
        )


def model_fingerprint(model: torch.nn.Module, values: bool = True) -> str:
    """sha256 of a model's config and weights (names, shapes, dtypes, and values unless ``values=False``):
    a run key part, so a re-run from another starting model is refused instead of resumed."""
    import hashlib
    import json

    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        d = {k: v for k, v in cfg.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if values:
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def data_digest(data) -> str:
    """sha256 over every tensor of every item of a dataset (MAD datasets: their two tensors)."""
    import hashlib

    h = hashlib.sha256()
    if hasattr(data, "inputs") and hasattr(data, "targets"):
        tensors = [data.inputs, data.targets]
    else:
        tensors = [v for i in range(len(data)) for v in data[i].values() if isinstance(v, torch.Tensor)]
    for t in tensors:
        t = torch.as_tensor(t)
        h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
