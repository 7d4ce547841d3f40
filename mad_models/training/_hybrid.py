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
