"""Job: search a hybrid's mixture weights (DARTS alternating / simultaneous; DASH and GAEA options).

Two optimisers: AdamW over all other trainable weights at the task lr (``args.lr``), and one over the
mixture parameters at the arch lr:
- ``method="darts"``: softmax over learnable logits, Adam at ``arch_lr`` (0.01 to 0.05);
- ``method="dash"``: Gumbel-softmax (soft, ``tau``, saved in the config) during search, Adam at ``arch_lr``;
- ``method="gaea"``: weights kept on the simplex, exponentiated-gradient steps at ``arch_lr`` (0.1),
  with the reference's clipped exponent and 1e-5 floor.

``mode="alternating"`` (the reference's ``main_nas.py``): weight steps and architecture steps
alternate over successive batches; a weight step is one forward/backward on a training batch and a
step of the weight optimiser, an architecture step is one forward/backward on a batch of the
held-out ``arch_data`` and a step of the arch optimiser. One job step does one of each.
``mode="simultaneous"``: one forward/backward on the training batch, both optimisers step.
``arch_warmup_steps``: the first steps train the weights only (no architecture step), so the mixture
is not chosen by components that have not started to learn yet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset, default_collate

from mad_models.training._hybrid import (
    check_hybrid,
    data_digest,
    expected_mixture,
    mixture_ids,
    mixture_log,
    model_fingerprint,
)
from mad_models.training.loop import TrainArgs, Trainer, cosine_scheduler, loss_and_counts

METHODS = {"darts": "softmax", "dash": "gumbel", "gaea": "simplex"}
MODES = ("alternating", "simultaneous")


def _start_weights(hybrid) -> torch.Tensor:
    """Uniform over the components each block still has (the reference starts from zero logits)."""
    alive = (expected_mixture(hybrid) > 0).float()
    return alive / alive.sum(-1, keepdim=True)


class ArchBatches:
    """Batches of the held-out architecture data, a pure function of (seed, step, rank): exact resume."""

    def __init__(self, data: Dataset, batch_size: int, seed: int, rank: int, collate_fn: Callable | None):
        if len(data) == 0:
            raise ValueError("arch_data is empty")
        self.data, self.batch_size, self.seed, self.rank = data, batch_size, seed, rank
        self.collate = collate_fn or default_collate

    def __call__(self, step: int, device) -> dict:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 101 + self.rank)
        idx = torch.randint(len(self.data), (min(self.batch_size, len(self.data)),), generator=g)
        batch = self.collate([self.data[int(i)] for i in idx])
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def search_mixtures(
    hybrid: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    *,
    arch_data: Dataset | None = None,
    arch_lr: float = 0.01,
    arch_warmup_steps: int = 0,
    mode: str = "alternating",
    method: str = "darts",
    tau: float | None = None,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    collate_fn: Callable | None = None,
    run_key: dict | None = None,
) -> dict:
    """Search the mixture weights of ``hybrid`` on ``train_data``; returns metrics and ``mixture``.

    ``arch_data``: held-out data for the architecture steps (required in alternating mode; the MAD
    tasks have a "valid" split for it). Data items are MAD items (``{"input_ids", "targets"}``) or
    causal-LM items (``{"input_ids", "labels"}``). ``run_key``: extra settings a resumed run must
    share (task, source model, ...); the data, the starting model's fingerprint, ``tau`` and every
    search setting are part of it already. The searched weights stay in the hybrid.

    Example:
        >>> from mad_models.mad import MADDataset
        >>> res = search_mixtures(hybrid, MADDataset("in_context_recall"), TrainArgs("runs/search"),
        ...                       arch_data=MADDataset("in_context_recall", split="valid"),
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
    if isinstance(arch_warmup_steps, bool) or not isinstance(arch_warmup_steps, int) or arch_warmup_steps < 0:
        raise ValueError(f"arch_warmup_steps must be an int >= 0, got {arch_warmup_steps!r}")
    if tau is not None and method != "dash":
        raise ValueError(
            f"tau is the Gumbel-softmax temperature of method 'dash'; method {method!r} has none"
        )
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if mode == "alternating" and arch_data is None:
        raise ValueError(
            "alternating DARTS takes its architecture steps on held-out data: pass arch_data "
            "(for a MAD task, MADDataset(task, split='valid'))"
        )
    start_fingerprint = model_fingerprint(hybrid)
    hybrid.set_mixture(_start_weights(hybrid), mode=METHODS[method])
    if method == "dash":
        tau = float(tau if tau is not None else hybrid.config.gumbel_tau)
        hybrid.mixture.tau = tau
        hybrid.config.gumbel_tau = tau  # saved with the model
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
    arch_batches = None

    def step(trainer: Trainer, batch: dict) -> dict[str, torch.Tensor]:
        w_opt, a_opt = trainer.optimizers["weights"], trainer.optimizers["arch"]
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        loss, correct, total = loss_and_counts(trainer.model, batch)
        trainer.backward(loss)
        trainer.clip(weight_params)
        w_opt.step()
        if trainer.step < arch_warmup_steps:  # weight-only warm-up: the mixture stays where it is
            pass
        elif mode == "simultaneous":
            a_opt.step()
        else:  # the architecture step: its own forward/backward on a held-out batch
            w_opt.zero_grad(set_to_none=True)
            a_opt.zero_grad(set_to_none=True)
            arch_loss, _, _ = loss_and_counts(
                trainer.model, arch_batches(trainer.step, trainer.accelerator.device)
            )
            trainer.backward(arch_loss)
            a_opt.step()
        trainer.schedulers["weights"].step()
        return {"loss": loss, "correct": correct, "total": total}

    config = {
        "arch_lr": arch_lr,
        "arch_warmup_steps": arch_warmup_steps,
        "mode": mode,
        "method": method,
        "tau": tau,
        "model": start_fingerprint,
        "data": data_digest(train_data),
        "arch_data": data_digest(arch_data) if arch_data is not None else None,
        **(run_key or {}),
    }
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
        config=config,
        log_extra=mixture_log,
    )
    if arch_data is not None:
        acc = trainer.accelerator
        arch_batches = ArchBatches(arch_data, args.batch_size, args.seed, acc.process_index, collate_fn)
    res = trainer.train()
    return {
        **res,
        **mixture_log(trainer.unwrapped),
        "total_steps": trainer.total_steps,
        "finished": trainer.step == trainer.total_steps,
    }
