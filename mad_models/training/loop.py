"""One training loop for every job, on Accelerate.

The same code runs in one process here and under ``accelerate launch`` on many GPUs: accelerate
places the model, wraps it for DDP and shards the batches; nothing here is hand-made distributed
code. The loop gives every job a tqdm bar, a JSONL log (``log.jsonl``), checkpoints every
``save_every`` steps (see ``checkpoint.py``), and exact resumption: data order is a function of
(seed, epoch), the RNG states are restored, so stop-and-resume equals an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from mad_models.loading import save_pretrained
from mad_models.mad.tasks import IGNORE
from mad_models.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainArgs:
    """Settings shared by every job.

    ``max_steps`` wins over ``epochs`` when both are given. ``stop_after`` stops the run after that
    many steps with a checkpoint, as an interruption would (used to test resumption).
    """

    output_dir: str
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    min_lr: float = 1e-6
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    eval_every: int | None = None
    keep_checkpoints: int = 2
    stop_after: int | None = None
    resume: bool = True
    progress: bool = True
    save_final: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("batch_size", "log_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class CosineSchedule:
    """lr factor: linear warmup, then cosine from 1 to ``min_ratio`` (a picklable, JSON-able callable)."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_scheduler(opt: torch.optim.Optimizer, args: TrainArgs, total_steps: int, lr: float | None = None):
    """Cosine decay to ``args.min_lr`` (AdamW + cosine to 1e-6 is the MAD protocol)."""
    base = lr if lr is not None else args.lr
    sched = CosineSchedule(total_steps, args.warmup_steps, min(1.0, args.min_lr / base))
    return torch.optim.lr_scheduler.LambdaLR(opt, sched)


def adamw(params: Iterable, lr: float, weight_decay: float) -> torch.optim.AdamW:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters to optimise (is everything frozen?)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def loss_and_counts(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss and (correct, scored) counts for the three data kinds the jobs use.

    - MAD batches ``{"input_ids", "targets"}``: targets already shifted, cross-entropy on the logits;
    - causal-LM batches with ``labels`` (unshifted, as transformers expects): the model's own loss,
      token accuracy on the shifted labels;
    - classification batches with ``labels`` (B,): the model's loss, accuracy of the argmax class;
    - a model that scores only some positions (``top_layers.TopLayers``) returns their logits (N, V) and
      target ``labels`` (N,) itself.
    """
    if "targets" in batch:
        logits = model(input_ids=batch["input_ids"]).logits  # (B, T, V)
        targets = batch["targets"]
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE
        )
    else:
        out = model(**batch)
        loss, logits, targets = out.loss, out.logits, getattr(out, "labels", None)
        if targets is None:
            targets = batch["labels"]
            if logits.dim() == 3:  # causal LM: position t predicts label t + 1
                logits, targets = logits[:, :-1], targets[:, 1:]
    with torch.no_grad():
        mask = targets != IGNORE
        correct = ((logits.argmax(-1) == targets) & mask).sum()
    return loss, correct, mask.sum()


StepFn = Callable[["Trainer", dict], dict[str, torch.Tensor]]


class Trainer:
    """Runs ``step_fn`` over the data with logging, checkpoints and resumption.

    ``optimizers`` / ``schedulers`` are dicts by name (search jobs have two). ``step_fn(trainer,
    batch)`` does the forward/backward/optimiser steps of one step and returns ``{"loss", "correct",
    "total"}`` tensors; ``default_step`` does that for one optimiser.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        args: TrainArgs,
        *,
        optimizers: dict[str, torch.optim.Optimizer],
        make_schedulers: Callable[[dict, int], dict] | None = None,
        step_fn: StepFn | None = None,
        eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        collate_fn: Callable | None = None,
        job: str = "train",
        config: dict | None = None,
        log_extra: Callable[[torch.nn.Module], dict] | None = None,
    ):
        if len(train_data) == 0:
            raise ValueError("the training data is empty")
        if not optimizers:
            raise ValueError("give at least one optimiser")
        self.args, self.job, self.config = args, job, config or {}
        # DDP must be told when some parameters never reach the loss (the LM head under MAD's compression
        # auto-encoder): a model says so with ``has_unused_parameters``
        ddp = DistributedDataParallelKwargs(
            find_unused_parameters=getattr(model, "has_unused_parameters", False)
        )
        self.accelerator = Accelerator(kwargs_handlers=[ddp])
        set_seed(args.seed)
        loader = DataLoader(
            train_data,
            batch_size=args.batch_size,
            sampler=EpochSampler(len(train_data), args.seed),
            collate_fn=collate_fn,
            drop_last=len(train_data) >= args.batch_size,
            generator=torch.Generator().manual_seed(args.seed),  # keeps DataLoader off the global RNG
        )
        names = list(optimizers)
        prepared = self.accelerator.prepare(model, loader, *optimizers.values())
        self.model, self.loader = prepared[0], prepared[1]
        self.optimizers = dict(zip(names, prepared[2:], strict=True))
        self.batches_per_epoch = len(self.loader)
        if args.max_steps is not None:
            self.total_steps = args.max_steps
        else:
            self.total_steps = max(1, math.ceil(args.epochs * self.batches_per_epoch))
        # Schedulers step once per optimiser step, by us (accelerate's wrapper would step them once per
        # process, changing the schedule with the number of GPUs).
        self.schedulers = make_schedulers(self.optimizers, self.total_steps) if make_schedulers else {}
        self.step_fn = step_fn or default_step
        self.log_extra = log_extra
        self.eval_fn = eval_fn
        self.out = Path(args.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.log_path = self.out / "log.jsonl"
        self.step = 0
        self.train_time = 0.0

    # helpers for step functions
    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip(self, params: Iterable[torch.nn.Parameter]) -> None:
        if self.args.max_grad_norm is not None:
            self.accelerator.clip_grad_norm_(list(params), self.args.max_grad_norm)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # logging and checkpoints
    def _log(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
        if not self.accelerator.is_main_process or not self.log_path.exists():
            return
        keep = [ln for ln in self.log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        self.log_path.write_text("".join(ln + "\n" for ln in keep))

    def _check_finite(self, window: torch.Tensor, weights: bool = False) -> None:
        """Stop a diverged run before it logs or saves: the loss summed since the last log line, and (before
        saving) the weights, which the last step may have made non-finite while its loss was still finite."""
        loss = self.accelerator.reduce(window.clone(), reduction="sum")[0]
        params = self.unwrapped.named_parameters() if weights else ()
        bad = [n for n, p in params if not torch.isfinite(p.detach()).all()]
        if not torch.isfinite(loss) or bad:
            what = (
                f"the training loss ({loss.item()})" if not torch.isfinite(loss) else f"the weights {bad[:3]}"
            )
            raise FloatingPointError(
                f"{self.job}: {what} became not finite by step {self.step}; stopped without saving. Lower "
                "the learning rate (--lr) or check the data; earlier checkpoints are kept."
            )

    def _save(self, window: torch.Tensor) -> None:
        self._check_finite(window, weights=True)
        acc = self.accelerator
        save_checkpoint(
            self.ckpt_root / f"step-{self.step:08d}",
            model=self.unwrapped,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            state={
                "step": self.step,
                "train_time": self.train_time,
                "window": window.tolist(),  # metrics since the last log line, so logs resume exactly
                "job": self.job,
                "config": self.config,
                "run": self._run_settings(),
            },
            is_main=acc.is_main_process,
            rank=acc.process_index,
            wait=acc.wait_for_everyone,
        )
        if acc.is_main_process:
            done = sorted(self.ckpt_root.glob("step-*[0-9]"))
            for old in done[: -self.args.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    def _run_settings(self) -> dict:
        """What must not change between a run and its resumption (else the result would silently differ)."""
        a = self.args
        return {
            "total_steps": self.total_steps,
            "batch_size": a.batch_size,
            "lr": a.lr,
            "weight_decay": a.weight_decay,
            "min_lr": a.min_lr,
            "warmup_steps": a.warmup_steps,
            "seed": a.seed,
            "num_processes": self.accelerator.num_processes,
        }

    def _check_resumable(self, ckpt: Path, state: dict) -> None:
        if state.get("job", self.job) != self.job:
            raise ValueError(f"{ckpt} is a checkpoint of job {state['job']!r}, not {self.job!r}")
        saved = json.loads(json.dumps({**state.get("run", {}), "config": state.get("config", {})}))
        now = json.loads(json.dumps({**self._run_settings(), "config": self.config}))
        changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ValueError(
                f"cannot resume from {ckpt}: the run's settings changed ({diffs}); use a new output "
                "directory, or resume=False (--no-resume) to start over"
            )

    def _resume(self, window: torch.Tensor) -> None:
        ckpt = latest_checkpoint(self.ckpt_root) if self.args.resume else None
        if ckpt is None:
            if self.accelerator.is_main_process:
                if not self.args.resume:
                    shutil.rmtree(self.ckpt_root, ignore_errors=True)
                self.log_path.unlink(missing_ok=True)
            return
        self._check_resumable(ckpt, json.loads((ckpt / "state.json").read_text()))
        state = load_checkpoint(
            ckpt,
            model=self.unwrapped,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            rank=self.accelerator.process_index,
        )
        self.step, self.train_time = state["step"], state.get("train_time", 0.0)
        window.copy_(torch.tensor(state["window"]))
        self._truncate_log(self.step)

    def _evaluate(self) -> dict[str, float]:
        if self.eval_fn is None:
            return {}
        return {f"eval_{k}": v for k, v in self.eval_fn(self.unwrapped).items()}

    def _batches(self):
        """Yield batches from the current step on, epoch by epoch, skipping those already done."""
        while True:
            epoch, skip = divmod(self.step, self.batches_per_epoch)
            self.loader.set_epoch(epoch)
            loader = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
            yield from loader

    def train(self) -> dict:
        """Run (or resume) the job; returns the last logged metrics plus ``train_time`` and ``step``."""
        args, acc = self.args, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_args.json").write_text(json.dumps(asdict(args), indent=1, default=str))
        acc.wait_for_everyone()
        window = torch.zeros(4, device=acc.device)  # loss sum, correct, total, steps since last log
        self._resume(window)
        self.model.train()
        stop_at = self.total_steps if args.stop_after is None else min(self.total_steps, args.stop_after)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.job,
            disable=not (args.progress and acc.is_local_main_process),
            dynamic_ncols=True,
        )
        last: dict = {}
        batches = self._batches()
        while self.step < stop_at:
            t0 = time.perf_counter()
            out = self.step_fn(self, next(batches))
            self.step += 1
            window += torch.stack(
                [out["loss"].detach().float(), out["correct"].float(), out["total"].float(), torch.ones(())]
            ).to(window.device)
            self.train_time += time.perf_counter() - t0
            bar.update(1)
            if self.step % args.log_every == 0 or self.step == self.total_steps:
                self._check_finite(window)
                w = acc.reduce(window.clone(), reduction="sum")
                last = {
                    "step": self.step,
                    "epoch": round(self.step / self.batches_per_epoch, 4),
                    "loss": w[0].item() / w[3].item(),
                    "accuracy": w[1].item() / max(1.0, w[2].item()),
                    "lr": {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()},
                    "train_time": round(self.train_time, 3),
                }
                window.zero_()
                if self.log_extra is not None:
                    last.update(self.log_extra(self.unwrapped))
                if args.eval_every and self.step % args.eval_every == 0 and self.step != self.total_steps:
                    last.update(self._evaluate())
                    self.model.train()
                if self.step == self.total_steps:
                    last.update(self._evaluate())
                self._log(last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}")
            if self.step % args.save_every == 0 or self.step == stop_at:
                self._save(window)
        bar.close()
        if self.step == self.total_steps and args.save_final and acc.is_main_process:
            model = self.unwrapped
            if hasattr(model, "save_pretrained"):
                save_pretrained(model, self.out / "final")
        acc.wait_for_everyone()
        return {**last, "step": self.step, "total_steps": self.total_steps, "train_time": self.train_time}


def default_step(trainer: Trainer, batch: dict) -> dict[str, torch.Tensor]:
    """One optimiser step on the loss of ``loss_and_counts`` (the single-optimiser jobs)."""
    (name,) = trainer.optimizers
    opt = trainer.optimizers[name]
    opt.zero_grad(set_to_none=True)
    loss, correct, total = loss_and_counts(trainer.model, batch)
    trainer.backward(loss)
    trainer.clip(p for g in opt.param_groups for p in g["params"])
    opt.step()
    if name in trainer.schedulers:
        trainer.schedulers[name].step()
    return {"loss": loss, "correct": correct, "total": total}


def train_with(
    model: torch.nn.Module,
    train_data: Dataset,
    args: TrainArgs,
    opt: torch.optim.Optimizer,
    *,
    job: str,
    name: str = "model",
    **trainer_kwargs,
) -> dict:
    """Run a single-optimiser job: ``opt`` with the cosine schedule, ``default_step``."""
    trainer = Trainer(
        model,
        train_data,
        args,
        optimizers={name: opt},
        make_schedulers=lambda opts, total: {name: cosine_scheduler(opts[name], args, total)},
        job=job,
        **trainer_kwargs,
    )
    return trainer.train()


def read_log(output_dir: str | Path) -> list[dict]:
    """The JSONL log of a job as a list of dicts."""
    path = Path(output_dir) / "log.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln]
