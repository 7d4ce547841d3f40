"""Job: search a hybrid's mixture weights (DARTS alternating / simultaneous; DASH and GAEA options).

Two optimisers: AdamW over all other trainable weights at the task lr (``args.lr``), and one over the
mixture parameters at the arch lr:
- ``method="darts"``: softmax over learnable logits, Adam at ``arch_lr`` (0.01 to 0.05);
- ``method="dash"``: Gumbel-softmax (soft, ``tau``) during search, Adam at ``arch_lr``;
- ``method="gaea"``: weights kept on the simplex, exponentiated-gradient steps at ``arch_lr`` (0.1).

``mode="alternating"`` (single-level DARTS, best in the reference runs): on each batch, one step of
the arch optimiser, then a fresh forward/backward and one step of the weight optimiser.
``mode="simultaneous"``: one forward/backward, both optimisers step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from mad_models.training._hybrid import check_hybrid, expected_mixture, mixture_ids, mixture_log
from mad_models.training.loop import TrainArgs, Trainer, cosine_scheduler, loss_and_counts

METHODS = {"darts": "softmax", "dash": "gumbel", "gaea": "simplex"}
MODES = ("alternating", "simultaneous")


def _start_weights(hybrid) -> torch.Tensor:
    """Uniform over the components each block still has (the reference starts from zero logits)."""
    alive = (expected_mixture(hybrid) > 0).float()
    return alive / alive.sum(-1, keepdim=True)


def search_mixtures(
    hybrid: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    arch_lr: float = 0.01,
    mode: str = "alternating",
    method: str = "darts",
    tau: float | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable | None = None,
) -> dict:
    """Search the mixture weights of ``hybrid`` on ``train_data``; returns metrics and ``mixture``.

    Data items are MAD items (``{"input_ids", "targets"}``) or causal-LM items (``{"input_ids",
    "labels"}``). The searched weights stay in the hybrid (read them with ``mixture_weights()``).

    Example:
        >>> from mad_models.mad import MADDataset
        >>> res = search_mixtures(hybrid, MADDataset("in_context_recall"), TrainArgs("runs/search"),
        ...                       arch_lr=0.01, mode="alternating")  # doctest: +SKIP
        >>> res["mixture"]  # doctest: +SKIP
    """
    check_hybrid(hybrid)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if arch_lr <= 0:
        raise ValueError(f"arch_lr must be > 0, got {arch_lr}")
    hybrid.set_mixture(_start_weights(hybrid), mode=METHODS[method])
    if tau is not None:
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        for m in hybrid.modules():
            if hasattr(m, "tau"):
                m.tau = tau
    mix = mixture_ids(hybrid)
    arch_params = [p for p in hybrid.mixture_parameters() if p.requires_grad]
    weight_params = [p for p in hybrid.parameters() if p.requires_grad and id(p) not in mix]
    if not arch_params:
        raise ValueError("the hybrid has no learnable mixture parameters")
    if not weight_params:
        raise ValueError("the hybrid has no trainable weights besides the mixture (all frozen?)")
    if method == "gaea":
        from mad_models.hybrid.mixture import ExponentiatedGradient

        arch_opt = ExponentiatedGradient(arch_params, lr=arch_lr)
    else:
        arch_opt = torch.optim.Adam(arch_params, lr=arch_lr, betas=(0.5, 0.999))
    weight_opt = torch.optim.AdamW(weight_params, lr=args.lr, weight_decay=args.weight_decay)

    def step(trainer: Trainer, batch: dict) -> dict[str, torch.Tensor]:
        w_opt, a_opt = trainer.optimizers["weights"], trainer.optimizers["arch"]
        if mode == "alternating":
            a_opt.zero_grad(set_to_none=True)
            w_opt.zero_grad(set_to_none=True)
            loss, _, _ = loss_and_counts(trainer.model, batch)
            trainer.backward(loss)
            a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        loss, correct, total = loss_and_counts(trainer.model, batch)
        trainer.backward(loss)
        trainer.clip(weight_params)
        w_opt.step()
        if mode == "simultaneous":
            a_opt.step()
        trainer.schedulers["weights"].step()
        return {"loss": loss, "correct": correct, "total": total}

    trainer = Trainer(
        hybrid,
        train_data,
        args,
        optimizers={"weights": weight_opt, "arch": arch_opt},
        make_schedulers=lambda opts, total: {"weights": cosine_scheduler(opts["weights"], args, total)},
        step_fn=step,
        eval_fn=eval_fn,
        collate_fn=collate_fn,
        job="search",
        config={"arch_lr": arch_lr, "mode": mode, "method": method},
        log_extra=mixture_log,
    )
    res = trainer.train()
    return {**res, **mixture_log(trainer.unwrapped)}
