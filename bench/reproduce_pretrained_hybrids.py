"""Pretrained hybrids on Shakespeare: two small LMs of different families pretrained here, joined, fine-tuned.

    .venv/bin/python bench/reproduce_pretrained_hybrids.py --quick --threads 2  # 158 min on our shared box
    .venv/bin/python bench/reproduce_pretrained_hybrids.py --threads 2          # full: hours (see --measure)
    .venv/bin/python bench/reproduce_pretrained_hybrids.py --measure            # s/step, plan

Data (``mad_models.training.shakespeare``): one character tokenizer trained on the train texts; pretraining on
the tragedies and histories, fine-tuning on the comedies, romances and poems (a genre shift), every choice on
a dev split carved from the fine-tuning texts, bits per character reported on the three val plays.

1. Pretraining, one run each at a fixed lr and budget (its curve on a held-out 2% of the pretraining texts
   is in the report): GPT-NeoX (rotary on every head dimension), a Mamba of about its size, and the same
   GPT widened to the hybrid's parameter count; then the hybrid's projectors (components frozen, uniform
   mixture), as Manticore does before searching.
2. Fine-tuning rows on the fine-tuning texts, each with the same steps, batch and data order per seed, its
   lr from one grid by Optuna (GridSampler, SuccessiveHalvingPruner on the dev bits/char at rungs of
   ``min_resource`` steps), >= 2 seeds (seed 0 is the surviving trial itself):
   - each pretrained component alone, and the GPT widened to the hybrid's parameter count;
   - the hybrid of both (projectors pretrained) with the uniform mixture fixed;
   - the searched hybrid: alternating DARTS on the fine-tuning texts (arch steps on the held-out ``arch``
     split), arch lr from a grid by Optuna on dev, at the uniform row's lr; then the searched mixture is
     fixed and the projector-pretrained hybrid is fine-tuned (retrain);
   - the searched mixture pruned to its argmax per block (one component per block, no projectors);
   - the same searched architecture from random weights (does pretraining matter?);
   - hand-designed hybrids of the pretrained components, one-hot and pruned (issue 25): striped both ways,
     Mamba-heavy with one attention block in the middle, attention first and Mamba first;
   - the unigram no-learning row (character frequencies of the train texts).
3. Report (``bench/results/pretrained-hybrids[-quick].{md,json,png}``): val bits/char, mean and range over
   seeds, params and FLOPs/token per row, learned mixtures, the LM-selection answer, paired bootstraps over
   val chunks for the key pairs, the pretraining curves.

Resumable: the work dir (default ``runs/pretrained-hybrids[-quick]``) holds checkpoints, an Optuna study
per tuned row and ``results.jsonl``; a re-run with other settings or data is refused. After every finished
unit the records (``settings.json``, ``results.jsonl``, the tokenizer and the pretrained weights) are copied
to ``bench/results/pretrained-hybrids[-quick]-runs/``; a fresh work dir starts from them, so a new machine
resumes after the last finished unit. ``--report-only`` rewrites the report from the records.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `bench` from the checkout

import torch  # noqa: E402

import mad_models  # noqa: E402,F401  (registers the "manticore" model type)
from bench.run_records import RunRecords  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
A, M = 0, 1  # component indices in every hybrid: attention (GPT-NeoX), Mamba

SETTINGS: dict[str, dict] = {
    "quick": {
        "context": 128,
        "batch_size": 16,
        "gpt": {"width": 64, "layers": 4, "heads": 4},
        "mamba": {"width": 64, "layers": 8, "state_size": 8},
        "n_blocks": 4,
        "pretrain": {"steps": 200, "lr": 2e-3, "warmup": 20, "eval_every": 50, "eval_blocks": 64},
        "projectors": {"steps": 40, "lr": 1e-3},
        "finetune": {"steps": 27, "lrs": [1e-3, 3e-3], "min_resource": 9, "reduction_factor": 3},
        "arch_lrs": [0.01, 0.05],
        "dev_blocks": 64,
        "seeds": [0, 1],
        "val_chars": 16_000,  # per val play (its first lines); None = all of it
        "chunk_chars": 2048,
        "weight_decay": 0.01,
        "bootstrap": 2000,
    },
    "full": {
        "context": 128,
        "batch_size": 16,
        "gpt": {"width": 128, "layers": 4, "heads": 4},
        "mamba": {"width": 128, "layers": 8, "state_size": 8},
        "n_blocks": 4,
        "pretrain": {"steps": 1000, "lr": 2e-3, "warmup": 100, "eval_every": 100, "eval_blocks": 128},
        # the joined hybrid starts far worse than either component (random projectors gated at 0.5); the
        # quick run's 40 steps took pretrain-dev from 5.64 to 4.57 bits/char, still falling
        "projectors": {"steps": 400, "lr": 2e-3},
        # rungs at 18, 54 and 162 steps
        "finetune": {"steps": 162, "lrs": [3e-4, 1e-3, 3e-3], "min_resource": 18, "reduction_factor": 3},
        "arch_lrs": [0.01, 0.05],
        "dev_blocks": 128,
        "seeds": [0, 1],
        "val_chars": None,
        "chunk_chars": 2048,
        "weight_decay": 0.01,
        "bootstrap": 2000,
    },
}


def hand_designs(n: int) -> dict[str, list[int]]:
    """Issue 25's hand-designed layouts over ``n`` blocks (A = attention, M = Mamba), one component each."""
    jamba = [M] * n
    jamba[n // 2] = A  # one attention block in the middle (Jamba: about 1 in 8; here 1 in n)
    layouts = {
        "striped": [A if i % 2 == 0 else M for i in range(n)],
        "striped-mamba-first": [M if i % 2 == 0 else A for i in range(n)],
        "mamba-heavy": jamba,
        "attention-first": [A] * (n // 2) + [M] * (n - n // 2),
        "mamba-first": [M] * (n // 2) + [A] * (n - n // 2),
    }
    return {f"hand-{k}-{''.join('AM'[c] for c in v)}": v for k, v in layouts.items()}


def row_names(s: dict) -> list[str]:
    """Every fine-tuning row, in the order they run (most informative first)."""
    return [
        "attention",
        "mamba",
        "hybrid-uniform",
        "hybrid-searched",
        "hybrid-searched-argmax",
        *hand_designs(s["n_blocks"]),
        "hybrid-random-init",
        "attention-wide",
    ]


LABELS = {
    "attention": "GPT-NeoX alone (pretrained)",
    "mamba": "Mamba alone (pretrained)",
    "attention-wide": "GPT-NeoX widened to the hybrid's params (pretrained)",
    "hybrid-uniform": "hybrid, uniform mixture fixed",
    "hybrid-searched": "hybrid, searched mixture (DARTS), fine-tuned",
    "hybrid-searched-argmax": "hybrid, searched mixture pruned to argmax",
    "hybrid-random-init": "searched hybrid from random weights",
    "unigram": "unigram (character frequencies), no learning",
}


def label(row: str) -> str:
    if row.startswith("hand-"):
        *name, layout = row[len("hand-") :].split("-")
        return f"hand-designed: {' '.join(name)} ({layout}), pruned"
    return LABELS[row]


def quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # transformers' notes on Mamba's CPU path and our own copies
    import optuna
    from transformers.utils import logging as hf_logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hf_logging.disable_progress_bar()  # "Loading weights" bars for every model read back


# ------------------------------------------------------------------------------------------------ records
class Bench:
    """One reproduction: settings guard, records, data, models and every unit of work."""

    def __init__(self, mode: str, s: dict, work: Path, records: Path, out: Path, progress: bool):
        from mad_models.training.shakespeare import data_digest

        self.mode, self.s, self.work, self.records, self.out = mode, s, work, records, out
        self.progress = progress
        self.t0 = time.perf_counter()
        now = json.loads(json.dumps({**s, "data": data_digest(), "script": "pretrained-hybrids/1"}))
        guarded = [RunRecords(where, now) for where in (records, work)]  # other settings are refused
        if not (work / "results.jsonl").exists() and (records / "results.jsonl").exists():
            for item in records.iterdir():  # a fresh work dir resumes from the records kept in the repo
                dest = work / item.name
                if item.is_dir():
                    shutil.copytree(item, dest, dirs_exist_ok=True)
                else:
                    shutil.copyfile(item, dest)
            print(f"[resume] started {work} from the records in {records}", flush=True)
        self.run_records = guarded[1]

    def results(self) -> dict[str, dict]:
        return self.run_records.all()

    def add(self, row: dict) -> None:
        self.run_records.add(row)
        self.keep_records()

    def keep_records(self) -> None:
        """Copy the records (settings, results, tokenizer, pretrained weights) next to the report."""
        if self.records.resolve() == self.work.resolve():
            return
        self.records.mkdir(parents=True, exist_ok=True)
        for name in ("settings.json", "results.jsonl", "tokenizer", "pretrained"):
            src = self.work / name
            if not src.exists():
                continue
            if src.is_dir():
                shutil.copytree(src, self.records / name, dirs_exist_ok=True)
            else:
                tmp = self.records / f".{name}.tmp"
                shutil.copyfile(src, tmp)
                tmp.replace(self.records / name)  # never a half-written record

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    # -------------------------------------------------------------------------------------------- data
    @property
    def tokenizer(self):
        if not hasattr(self, "_tok"):
            from transformers import AutoTokenizer

            from mad_models.training.char_tokenizer import train_char_tokenizer
            from mad_models.training.shakespeare import load_split

            path = self.work / "tokenizer"
            if not path.exists():  # trained on the train texts only
                tok = train_char_tokenizer(load_split("train").values(), max_length=self.s["context"])
                tok.save_pretrained(path)
            self._tok = AutoTokenizer.from_pretrained(path)
        return self._tok

    def texts(self, split: str) -> list[str]:
        from mad_models.training.shakespeare import load_split

        texts = list(load_split(split).values())
        # the first lines of each text: val_chars for val, max_chars (tests only) for the others
        cap = self.s["val_chars"] if split == "val" else self.s.get("max_chars")
        if cap:
            texts = [t[: t.find("\n", cap) + 1 or len(t)] for t in texts]
        return texts

    def blocks(self, split: str, limit: int | None = None):
        from mad_models.training.text import ListDataset, text_blocks

        if not hasattr(self, "_blocks"):
            self._blocks = {}
        if split not in self._blocks:
            self._blocks[split] = text_blocks(self.texts(split), self.tokenizer, self.s["context"])
        data = self._blocks[split]
        if limit is None or limit >= len(data):
            return data
        step = len(data) / limit  # spread over every text, not the first ones only
        return ListDataset([data[int(i * step)] for i in range(limit)])

    def dev_bits(self, model, data) -> float:
        from torch.utils.data import default_collate

        from mad_models.training.finetune import dataset_metrics

        return dataset_metrics(model, data, 32, default_collate)["loss"] / math.log(2)

    # ------------------------------------------------------------------------------------------ models
    def fresh(self, arch: str, seed: int, width: int | None = None):
        from mad_models.training import build_model

        s, V = self.s, len(self.tokenizer)
        if arch == "mamba":
            c = s["mamba"]
            model = build_model(
                "mamba", V, width=c["width"], layers=c["layers"], state_size=c["state_size"], seed=seed
            )
        else:
            c = s["gpt"]
            model = build_model(
                "gpt_neox", V, width=width or c["width"], layers=c["layers"], heads=c["heads"],
                max_len=s["context"], seed=seed,
            )  # fmt: skip
        model.config.eos_token_id = model.config.bos_token_id = self.tokenizer.eos_token_id
        model.config.pad_token_id = self.tokenizer.pad_token_id
        return model

    def wide_width(self) -> int:
        """The GPT width (a multiple of 8 * heads) whose parameter count is closest to the full hybrid's."""
        target = self.hybrid_of(self.fresh("gpt_neox", 0), self.fresh("mamba", 0)).num_parameters()
        step = math.lcm(8, self.s["gpt"]["heads"])
        widths = range(step, 8 * self.s["gpt"]["width"], step)
        return min(widths, key=lambda w: abs(self.fresh("gpt_neox", 0, width=w).num_parameters() - target))

    def hybrid_of(self, gpt, mamba):
        from mad_models.hybrid import ManticoreForCausalLM

        gpt.config._name_or_path, mamba.config._name_or_path = "gpt-neox", "mamba"
        return ManticoreForCausalLM.from_components([gpt, mamba], n_blocks=self.s["n_blocks"])

    def pretrained(self, name: str):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.work / "pretrained" / name, use_safetensors=True)

    def projector_hybrid(self):
        """The hybrid of the pretrained components with its pretrained projectors (uniform softmax "
        "mixture)."""
        from safetensors.torch import load_file

        hybrid = self.hybrid_of(self.pretrained("gpt-neox"), self.pretrained("mamba"))
        proj = load_file(str(self.work / "pretrained" / "projectors.safetensors"))
        missing, unexpected = hybrid.load_state_dict(proj, strict=False)
        if unexpected or any(k.startswith("proj_") for k in missing):
            raise RuntimeError(f"projector file does not fit the hybrid: {unexpected[:4]} {missing[:4]}")
        return hybrid

    def start_model(self, row: str, seed: int):
        """The model a fine-tuning row starts from (its mixture fixed where it has one)."""
        n = self.s["n_blocks"]
        torch.manual_seed(seed)
        if row in ("attention", "mamba", "attention-wide"):
            return self.pretrained({"attention": "gpt-neox", "attention-wide": "gpt-neox-wide"}.get(row, row))
        if row == "hybrid-uniform":
            hybrid = self.projector_hybrid()
            hybrid.set_mixture(torch.full((n, 2), 0.5), mode="fixed")
            return hybrid
        if row in ("hybrid-searched", "hybrid-random-init"):
            if row == "hybrid-searched":
                hybrid = self.projector_hybrid()
            else:
                hybrid = self.hybrid_of(self.fresh("gpt_neox", seed), self.fresh("mamba", seed))
            hybrid.set_mixture(self.searched_mixture(seed), mode="fixed")
            return hybrid
        if row == "hybrid-searched-argmax":
            hybrid = self.projector_hybrid()
            hybrid.set_mixture(self.searched_mixture(seed), mode="fixed")
            return hybrid.discretize()
        layout = hand_designs(n)[row]
        hybrid = self.hybrid_of(self.pretrained("gpt-neox"), self.pretrained("mamba"))
        hybrid.set_mixture(torch.nn.functional.one_hot(torch.tensor(layout), 2).float(), mode="fixed")
        return hybrid.discretize()

    def searched_mixture(self, seed: int) -> list[list[float]]:
        return self.results()[f"search|seed{seed}"]["mixture"]

    def cost(self, model) -> dict:
        from mad_models.hybrid import ManticoreForCausalLM
        from mad_models.hybrid.cost import standalone_cost

        ctx = self.s["context"]
        if isinstance(model, ManticoreForCausalLM):
            rep = model.cost_report(context=ctx)
            return {"params": rep["params"]["total"], "flops_per_token": rep["flops_per_token"]["total"]}
        flops = standalone_cost(model.config, ctx)["flops_per_token"]
        return {"params": model.num_parameters(), "flops_per_token": flops}

    # ---------------------------------------------------------------------------------------- training
    def args(self, out: Path, *, steps: int, lr: float, seed: int, warmup: int, every: int):
        from mad_models.training import TrainArgs

        return TrainArgs(
            str(out), max_steps=steps, batch_size=self.s["batch_size"], lr=lr, seed=seed,
            weight_decay=self.s["weight_decay"], warmup_steps=warmup, min_lr=lr / 100, log_every=every,
            eval_every=every, save_every=every, keep_checkpoints=1, progress=self.progress,
        )  # fmt: skip

    def rung_eval(self, out: Path, every: int, total: int, data, report=None, rungs: int | None = None):
        """An eval_fn giving the dev bits/char, and telling ``report(step, bits)``, every ``every`` steps
        and at the last one (with ``rungs=r``: only at successive halving's rungs ``every * r**k`` and the
        last step). The step is counted from the checkpoint a resumed run starts at."""
        from mad_models.training.checkpoint import latest_checkpoint

        ckpt = latest_checkpoint(out / "checkpoints")
        start = int(ckpt.name.split("-")[1]) if ckpt else 0
        calls = itertools.count(1)

        def eval_fn(model):
            step = min(total, (start // every + next(calls)) * every)
            if rungs and step != total and not is_rung(step // every, rungs):
                return {}
            bits = self.dev_bits(model, data)
            if report is not None:
                report(step, bits)
            return {"bits": bits}

        return eval_fn

    def fit(self, row: str, model, out: Path, lr: float, seed: int, report=None, data=None) -> dict:
        """Fine-tune ``model`` as row ``row`` does (components: every weight; hybrids: mixture fixed)."""
        from torch.utils.data import default_collate

        from mad_models.hybrid import ManticoreForCausalLM
        from mad_models.training.causal_lm import train_causal_lm
        from mad_models.training.retrain import retrain

        ft = self.s["finetune"]
        every, steps = ft["min_resource"], ft["steps"]
        args = self.args(out, steps=steps, lr=lr, seed=seed, warmup=steps // 10, every=every)
        dev = self.blocks("dev", self.s["dev_blocks"])
        eval_fn = self.rung_eval(out, every, steps, dev, report, rungs=ft["reduction_factor"])
        train = data if data is not None else self.blocks("finetune")
        key = {"row": row, "seed": seed}
        if isinstance(model, ManticoreForCausalLM):
            res = retrain(model, train, args, eval_fn=eval_fn, collate_fn=default_collate, run_key=key)
        else:
            res = train_causal_lm(model, train, args, eval_fn=eval_fn, run_key=key)
        if "eval_bits" not in res:  # resumed at its last step: nothing ran, the model holds the final weights
            res["eval_bits"] = self.dev_bits(model, self.blocks("dev", self.s["dev_blocks"]))
        return res

    def tune(self, study_name: str, grid: list[float], train_one) -> tuple[float, dict]:
        """Optuna over ``grid`` (GridSampler, successive halving on the dev bits/char at the rungs).

        ``train_one(value, out, report) -> final dev bits``. Returns (best value, per-value info)."""
        import optuna

        ft = self.s["finetune"]
        study = optuna.create_study(
            study_name=study_name,
            storage=f"sqlite:///{self.work / 'studies.db'}",
            load_if_exists=True,
            direction="minimize",
            sampler=optuna.samplers.GridSampler({"value": grid}, seed=0),
            pruner=optuna.pruners.SuccessiveHalvingPruner(
                min_resource=ft["min_resource"], reduction_factor=ft["reduction_factor"]
            ),
        )
        # trials cut short by an interruption: failed; their value queued again (its checkpoints resume it)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial({"value": t.params["value"]})

        def objective(trial: optuna.Trial) -> float:
            value = trial.suggest_categorical("value", grid)
            out = self.work / "hpo" / study_name / f"{value:g}"

            def report(step: int, bits: float) -> None:
                if step < ft["steps"]:
                    trial.report(bits, step)
                    if trial.should_prune():
                        print(f"  {study_name} {value:g}: pruned at step {step} (dev {bits:.4f})", flush=True)
                        raise optuna.TrialPruned()

            t0 = time.perf_counter()
            bits = train_one(value, out, report)
            trial.set_user_attr("seconds", time.perf_counter() - t0)
            print(f"  {study_name} {value:g}: dev {bits:.4f} bits/char ({time.perf_counter() - t0:.0f} s)")
            return bits

        while True:
            done = {
                t.params.get("value")
                for t in study.trials
                if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL
            }
            if all(v in done for v in grid):
                break
            study.optimize(objective, n_trials=1, catch=())
        info = {}
        for t in study.trials:
            if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL:
                steps = max(t.intermediate_values, default=0)
                value = t.value if t.value is not None else t.intermediate_values.get(steps)
                if t.state == optuna.trial.TrialState.COMPLETE:
                    steps = ft["steps"]
                info[f"{t.params['value']:g}"] = {"state": t.state.name, "steps": steps, "dev_bits": value}
        best = min(
            (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value
        )
        return float(best.params["value"]), info

    # -------------------------------------------------------------------------------------------- units
    def unit_unigram(self) -> None:
        from mad_models.training.bits_per_char import unigram_bits_per_char

        if "unigram" in self.results():
            return
        res = unigram_bits_per_char(self.texts("train"), self.texts("val"), self.tokenizer)
        dev = unigram_bits_per_char(self.texts("train"), self.texts("dev"), self.tokenizer)
        self.add({"key": "unigram", "row": "unigram", **res, "dev_bits": dev["bits_per_char"], "params": 0,
                  "flops_per_token": 0})  # fmt: skip
        print(f"[unigram] val {res['bits_per_char']:.4f} bits/char", flush=True)

    def unit_pretrain(self, name: str) -> None:
        from mad_models.training import read_log
        from mad_models.training.causal_lm import train_causal_lm

        key = f"pretrain|{name}"
        if key in self.results():
            return
        p = self.s["pretrain"]
        if name == "gpt-neox-wide":
            width = self.wide_width()
            model = self.fresh("gpt_neox", 0, width=width)
        else:
            model = self.fresh("gpt_neox" if name == "gpt-neox" else "mamba", 0)
        out = self.work / "pretraining" / name
        args = self.args(out, steps=p["steps"], lr=p["lr"], seed=0, warmup=p["warmup"], every=p["eval_every"])
        dev = self.blocks("pretrain_dev", p["eval_blocks"])
        print(f"[pretrain] {name}: {model.num_parameters():,} params, {p['steps']} steps", flush=True)
        t0 = time.perf_counter()
        train_causal_lm(
            model, self.blocks("pretrain"), args,
            eval_fn=self.rung_eval(out, p["eval_every"], p["steps"], dev),
            run_key={"pretrain": name},
        )  # fmt: skip
        final = self.work / "pretrained" / name
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(out / "final", final)
        log = read_log(out)
        curve = [[r["step"], round(r["loss"] / math.log(2), 4), round(r.get("eval_bits", float("nan")), 4)]
                 for r in log]  # fmt: skip
        self.add({
            "key": key, "name": name, "curve": curve, "dev_bits": log[-1]["eval_bits"],
            "seconds": round(time.perf_counter() - t0, 1), "train_time": round(log[-1]["train_time"], 1),
            "sha256": file_sha(final / "model.safetensors"), **self.cost(model),
            "config": model.config.to_diff_dict(),
        })  # fmt: skip
        print(f"[pretrain] {name}: pretrain-dev {log[-1]['eval_bits']:.4f} bits/char", flush=True)

    def unit_projectors(self) -> None:
        from safetensors.torch import save_file
        from torch.utils.data import default_collate

        from mad_models.training import read_log
        from mad_models.training.projectors import pretrain_projectors

        if "projectors" in self.results():
            return
        p, pp = self.s["projectors"], self.s["pretrain"]
        torch.manual_seed(0)  # the projectors' initialisation
        hybrid = self.hybrid_of(self.pretrained("gpt-neox"), self.pretrained("mamba"))
        out = self.work / "pretraining" / "projectors"
        every = max(1, p["steps"] // 6)
        args = self.args(out, steps=p["steps"], lr=p["lr"], seed=0, warmup=p["steps"] // 10, every=every)
        args.eval_every = None  # pretrain_projectors evaluates eval_data at the end
        dev = self.blocks("pretrain_dev", pp["eval_blocks"])
        before = self.dev_bits(hybrid, dev)  # the random projectors, gated at the uniform mixture
        print(f"[projectors] {len(hybrid.projector_parameters())} tensors, {p['steps']} steps", flush=True)
        t0 = time.perf_counter()
        pretrain_projectors(
            hybrid, self.blocks("pretrain"), args, train_mixture=False,
            eval_data=dev, collate_fn=default_collate,
        )  # fmt: skip
        proj = {
            k: v.contiguous()
            for k, v in hybrid.state_dict().items()
            if k.startswith(("proj_in.", "proj_out."))
        }
        path = self.work / "pretrained" / "projectors.safetensors"
        save_file(proj, str(path))
        log = read_log(out)
        self.add({
            "key": "projectors", "curve": [[r["step"], round(r["loss"] / math.log(2), 4)] for r in log],
            "dev_bits": log[-1]["eval_loss"] / math.log(2), "dev_bits_before": before,
            "params": sum(v.numel() for v in proj.values()),
            "seconds": round(time.perf_counter() - t0, 1), "sha256": file_sha(path),
        })  # fmt: skip
        print(f"[projectors] pretrain-dev {log[-1]['eval_loss'] / math.log(2):.4f} bits/char", flush=True)

    def unit_search(self, seed: int) -> None:
        """Alternating DARTS from the projector-pretrained hybrid: arch lr tuned on dev (seed 0)."""
        from torch.utils.data import default_collate

        from mad_models.training.mixture_search import search_mixtures

        key = f"search|seed{seed}"
        if key in self.results():
            return
        ft = self.s["finetune"]
        lr = self.results()["hybrid-uniform|lr"]["lr"]  # the weights' lr: the same hybrid's, uniform
        arch = self.blocks("arch")

        def run(arch_lr: float, out: Path, report, run_seed: int) -> dict:
            hybrid = self.projector_hybrid()
            args = self.args(out, steps=ft["steps"], lr=lr, seed=run_seed, warmup=ft["steps"] // 10,
                             every=ft["min_resource"])  # fmt: skip
            dev = self.blocks("dev", self.s["dev_blocks"])
            res = search_mixtures(
                hybrid, self.blocks("finetune"), args, arch_data=arch, arch_lr=arch_lr, mode="alternating",
                method="darts", eval_fn=self.rung_eval(out, ft["min_resource"], ft["steps"], dev, report,
                                                      rungs=ft["reduction_factor"]),
                collate_fn=default_collate, run_key={"row": "search", "seed": run_seed},
            )  # fmt: skip
            if "eval_bits" not in res:  # resumed at its last step (seed 0 reuses its finished trial)
                res["eval_bits"] = self.dev_bits(hybrid, dev)
            return {"mixture": res["mixture"], "dev_bits": res["eval_bits"]}

        t0 = time.perf_counter()
        if seed == self.s["seeds"][0]:
            if "search|lr" not in self.results():
                print(f"[search] arch lr over {self.s['arch_lrs']} (weights at the uniform row's lr {lr:g})")
                found: dict = {}

                def one(arch_lr, out, report):
                    found[arch_lr] = run(arch_lr, out, report, seed)
                    return found[arch_lr]["dev_bits"]

                arch_lr, info = self.tune("search", self.s["arch_lrs"], one)
                self.add({"key": "search|lr", "arch_lr": arch_lr, "lr": lr, "trials": info})
            arch_lr = self.results()["search|lr"]["arch_lr"]
            out = self.work / "hpo" / "search" / f"{arch_lr:g}"
        else:
            arch_lr = self.results()["search|lr"]["arch_lr"]
            out = self.work / "seeds" / "search" / f"seed{seed}"
        res = run(arch_lr, out, None, seed)  # seed 0: resumes the finished trial (its final checkpoint)
        self.add({"key": key, "seed": seed, "arch_lr": arch_lr, "lr": lr, **res,
                  "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(f"[search] seed {seed}: mixture {res['mixture']}", flush=True)

    def unit_row(self, row: str, seed: int) -> None:
        """One fine-tuning row and seed: its lr search first (seed 0), then train (or reuse) and score."""
        from transformers import AutoModelForCausalLM

        from mad_models.training.bits_per_char import bits_per_char

        key = f"{row}|seed{seed}"
        if key in self.results():
            return
        t0 = time.perf_counter()
        first = self.s["seeds"][0]
        if f"{row}|lr" not in self.results():
            print(f"[{row}] lr over {self.s['finetune']['lrs']}", flush=True)

            def one(lr, out, report):
                return self.fit(row, self.start_model(row, first), out, lr, first, report)["eval_bits"]

            lr, info = self.tune(row, self.s["finetune"]["lrs"], one)
            self.add({"key": f"{row}|lr", "lr": lr, "trials": info})
        lr = self.results()[f"{row}|lr"]["lr"]
        if seed == first:
            out = self.work / "hpo" / row / f"{lr:g}"
        else:
            out = self.work / "seeds" / row / f"seed{seed}"
            self.fit(row, self.start_model(row, seed), out, lr, seed)
        model = AutoModelForCausalLM.from_pretrained(out / "final", use_safetensors=True)
        if seed == first:  # kept for the bundled assets
            keep = self.work / "models" / row
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(out / "final", keep)
            self.tokenizer.save_pretrained(keep)
        res = bits_per_char(model, self.tokenizer, self.texts("val"), context=self.s["context"],
                            batch_size=32, chunk_chars=self.s["chunk_chars"])  # fmt: skip
        dev = self.dev_bits(model, self.blocks("dev", self.s["dev_blocks"]))
        mixture = None
        if hasattr(model, "mixture_weights"):
            mixture = [[round(float(x), 4) for x in r] for r in model.mixture_weights().tolist()]
            kept = model.config.kept()
            names = model.config.component_names
            blocks = ["+".join({"gpt-neox": "A", "mamba": "M"}[names[m]] for m in b) for b in kept]
            layout = ("" if all(len(b) == 1 for b in kept) else "/").join(blocks)
        else:
            layout = None
        chunks = [[round(b, 3), c] for b, c in res.pop("chunks")]
        self.add({
            "key": key, "row": row, "seed": seed, "lr": lr, "val_bits": res["bits_per_char"], **res,
            "dev_bits": dev, "mixture": mixture, "layout": layout, **self.cost(model), "chunks": chunks,
            "seconds": round(time.perf_counter() - t0, 1),
        })  # fmt: skip
        print(f"[{row}] seed {seed}: val {res['bits_per_char']:.4f} bits/char, lr {lr:g} "
              f"({time.perf_counter() - t0:.0f} s, {self.elapsed() / 60:.0f} min so far)",
              flush=True)  # fmt: skip

    def best_hybrid(self) -> str:
        """The hybrid row (searched, uniform, argmax, hand-designed) with the lowest mean dev bits/char:
        chosen on dev, so its val figure stays an honest estimate."""
        results, seeds = self.results(), self.s["seeds"]
        dev = {}
        for row in row_names(self.s):
            runs = [results[k] for sd in seeds if (k := f"{row}|seed{sd}") in results]
            if (row.startswith(("hybrid-", "hand-")) and row != "hybrid-random-init") and len(runs) == len(
                seeds
            ):
                dev[row] = sum(r["dev_bits"] for r in runs) / len(runs)
        if not dev:
            raise ValueError(f"no hybrid row has all its seeds in {self.work}: run the benchmark first")
        return min(dev, key=dev.get)

    def export(self, row: str, dest: Path) -> dict:
        """Copy the row's seed-0 fine-tuned model and the tokenizer to ``dest``; returns its record.

        A work dir started from the records (a new machine) no longer holds the model: it is fine-tuned
        again from the recorded pretrained weights, lr and mixture, as the benchmark did."""
        first = self.s["seeds"][0]
        record = self.results().get(f"{row}|seed{first}")
        if record is None:
            raise ValueError(f"{row} seed {first} has not finished in {self.work}: run the benchmark first")
        kept = self.work / "models" / row
        if not (kept / "model.safetensors").is_file():
            out = self.work / "export" / row
            self.fit(row, self.start_model(row, first), out, record["lr"], first)
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(out / "final", kept)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(kept, dest)
        self.tokenizer.save_pretrained(dest)
        return record

    def run(self) -> None:
        """Every unit not recorded yet; the table (without the plot) is rewritten after each one."""
        self.unit_unigram()
        self.unit_pretrain("gpt-neox")
        self.unit_pretrain("mamba")
        self.unit_projectors()
        self.write_report(plot=False)
        rows = row_names(self.s)
        for seed in self.s["seeds"]:  # breadth first: every row's first seed before any second seed
            for row in rows:
                if row == "hybrid-searched":
                    self.unit_search(seed)
                if row == "attention-wide":
                    self.unit_pretrain("gpt-neox-wide")
                if f"{row}|seed{seed}" not in self.results():
                    self.unit_row(row, seed)
                    self.write_report(plot=False)

    def write_report(self, plot: bool = True) -> dict:
        from bench.pretrained_hybrids_report import write_report

        return write_report(self, plot=plot)


def is_rung(k: int, factor: int) -> bool:
    """Is ``k`` a power of ``factor`` (1, factor, factor**2, ...)?"""
    while k > 1 and k % factor == 0:
        k //= factor
    return k == 1


def measure(bench: Bench, steps: int = 3) -> int:
    """Seconds per training step of every kind of run (round-robin, fresh weights), and the plan they give."""
    from torch.utils.data import default_collate

    from mad_models.training.bits_per_char import bits_per_char
    from mad_models.training.loop import loss_and_counts

    s, ctx = bench.s, bench.s["context"]
    gpt, mamba = (lambda: bench.fresh("gpt_neox", 0)), (lambda: bench.fresh("mamba", 0))
    width = bench.wide_width()

    def pruned(layout):
        hybrid = bench.hybrid_of(gpt(), mamba())
        hybrid.set_mixture(torch.nn.functional.one_hot(torch.tensor(layout), 2).float(), mode="fixed")
        return hybrid.discretize()

    def frozen():
        hybrid = bench.hybrid_of(gpt(), mamba())
        hybrid.freeze_components()
        return hybrid

    kinds = {
        "attention": gpt(),
        "mamba": mamba(),
        "attention-wide": bench.fresh("gpt_neox", 0, width=width),
        "hybrid": bench.hybrid_of(gpt(), mamba()),
        "projectors": frozen(),
        **{row: pruned(layout) for row, layout in hand_designs(s["n_blocks"]).items()},
    }
    data = bench.blocks("finetune", s["batch_size"])
    batch = default_collate([data[i] for i in range(len(data))])
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(steps + 1):  # the first round warms up
        for name, model in kinds.items():
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
            t0 = time.perf_counter()
            loss, _, _ = loss_and_counts(model, batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            times[name].append(time.perf_counter() - t0)
    sps = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}
    val = bench.texts("val")
    n_val = sum(len(t) for t in val)
    evals = {}
    for name in ("attention", "mamba", "hybrid"):
        piece = [val[0][: 32 * ctx]]
        t0 = time.perf_counter()
        bits_per_char(kinds[name], bench.tokenizer, piece, context=ctx, batch_size=32)
        evals[name] = (time.perf_counter() - t0) * n_val / len(piece[0])
    print(f"seconds per step (batch {s['batch_size']} x {ctx}, median of {steps}, torch threads "
          f"{torch.get_num_threads()}; wide GPT width {width}):")  # fmt: skip
    for k, v in sps.items():
        print(f"  {k:40s} {v:7.3f}  ({v / sps['attention']:.1f}x attention)")
    print("one val evaluation (s): " + ", ".join(f"{k} {v:.0f}" for k, v in evals.items()))
    p, ft = s["pretrain"], s["finetune"]
    pre = p["steps"] * (sps["attention"] + sps["mamba"] + sps["attention-wide"])
    pre += s["projectors"]["steps"] * sps["projectors"]
    hand = [sps[r] for r in hand_designs(s["n_blocks"])]
    row_cost = {
        "attention": sps["attention"], "mamba": sps["mamba"], "attention-wide": sps["attention-wide"],
        "hybrid-uniform": sps["hybrid"], "hybrid-searched": sps["hybrid"],
        "hybrid-random-init": sps["hybrid"],
        "hybrid-searched-argmax": sum(hand) / len(hand), **{r: sps[r] for r in hand_designs(s["n_blocks"])},
    }  # fmt: skip
    n, extra = len(ft["lrs"]), len(s["seeds"]) - 1
    low_runs = 1 + (n - 1) * ft["min_resource"] / ft["steps"] + extra
    per_step = sum(row_cost.values())
    search = 2 * sps["hybrid"] * ft["steps"]
    arch_n = len(s["arch_lrs"])
    low = per_step * ft["steps"] * low_runs + search * (
        1 + (arch_n - 1) * ft["min_resource"] / ft["steps"] + extra
    )
    high = per_step * ft["steps"] * (n + extra) + search * (arch_n + extra)
    val_evals = len(s["seeds"]) * (evals["attention"] * 2 + evals["mamba"] + evals["hybrid"] * 9)
    print(f"plan ({bench.mode}): pretraining {pre / 60:.0f} min; fine-tuning rows and search "
          f"{low / 60:.0f}-{high / 60:.0f} min (all lr trials pruned at the first rung .. none pruned); "
          f"val evaluations ~{val_evals / 60:.0f} min; total {(pre + low + val_evals) / 3600:.1f}-"
          f"{(pre + high + val_evals) / 3600:.1f} h at these step times")  # fmt: skip
    return 0


def file_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short setting (<= 30 min on 2 quiet cores)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine)")
    ap.add_argument("--work", help="work dir (resumable; default runs/pretrained-hybrids[-quick])")
    ap.add_argument(
        "--records", help="records kept in the repo (default bench/results/pretrained-hybrids[-quick]-runs)"
    )
    ap.add_argument("--out", help="results dir (default bench/results)")
    ap.add_argument(
        "--report-only", action="store_true", help="write the report from the records, train nothing"
    )
    ap.add_argument(
        "--measure", action="store_true", help="time a few steps of every kind of run and estimate"
    )
    ap.add_argument("--progress", action="store_true", help="tqdm bars for every run")
    a = ap.parse_args(argv)
    if a.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(a.threads)
    quiet()
    mode = "quick" if a.quick else "full"
    s = SETTINGS[mode]
    stem = "pretrained-hybrids" + ("-quick" if a.quick else "")
    out = Path(a.out) if a.out else ROOT / "bench" / "results"
    records = Path(a.records) if a.records else out / f"{stem}-runs"
    work = Path(a.work) if a.work else ROOT / "runs" / stem
    if a.report_only:
        work = records
    bench = Bench(mode, s, work, records, out, a.progress)
    bench.threads = a.threads
    if a.measure:
        return measure(bench)
    if not a.report_only:
        bench.run()
    bench.write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
