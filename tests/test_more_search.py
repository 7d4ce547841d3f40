"""`more search` cannot go stale or run a trial twice: weights in the fingerprint, dev vs test, workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import torch
from tiny import tiny_llama

import mad_models  # noqa: F401  (registers MoRe with peft)
from mad_models.more_search import open_storage, search_more, weights_digest
from mad_models.training.text import token_blocks

ROOT = Path(__file__).resolve().parents[1]
S = optuna.trial.TrialState


def _data(offset=0, n_tokens=480):
    return token_blocks((torch.arange(n_tokens) + offset) % 11 + 3, 24)  # a periodic stream: learnable


KW = dict(
    budget=1.0,
    lora_rank=2,
    nblocks=(2,),
    block_ranks=(1,),
    target_sets=[("q_proj", "v_proj")],
    steps=3,
    lrs=[1e-3, 3e-2],
    reduction_factor=2,
    seeds=2,
    batch_size=8,
    progress=False,
)


def test_other_base_weights_search_afresh_and_never_return_the_old_table(tmp_path):
    first, second = tiny_llama(seed=0), tiny_llama(seed=1)  # same class and size, other weights
    assert weights_digest(first) != weights_digest(second) and weights_digest(first) == weights_digest(
        tiny_llama(seed=0)
    )
    a = search_more(first, _data(), _data(5), output_dir=tmp_path, **KW)
    b = search_more(second, _data(), _data(5), output_dir=tmp_path, **KW)  # the same --out
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'search.db'}")
    grids = [s for s in studies if not s.study_name.endswith("-seeds")]
    assert len(grids) == 2 and all(s.n_trials == 4 for s in grids)  # the second searched: 2 x 2 trials
    assert [r["mean"] for r in a.rows] != [r["mean"] for r in b.rows]
    again = search_more(first, _data(), _data(5), output_dir=tmp_path, **KW)  # the first model again
    assert (
        again.rows == a.rows
        and len(optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'search.db'}")) == 4
    )


def test_chosen_on_dev_reported_on_test_with_a_third_as_first_rung(tmp_path):
    calls = []

    def metric(pm, split):  # higher is better: minus the loss, and it records what was scored when
        from mad_models.training.finetune import dataset_metrics

        calls.append(split)
        return -dataset_metrics(pm, _data(5) if split == "dev" else _data(7), 8)["loss"]

    table = search_more(
        tiny_llama(), _data(), _data(5), test=_data(7), output_dir=tmp_path, metric_fn=metric,
        metric_name="neg_loss", **{**KW, "steps": 6},
    )  # fmt: skip
    assert table.higher_is_better and table.has_test
    means = [r["mean"] for r in table.rows if not r["pruned_at"]]
    assert means == sorted(means, reverse=True)  # ranked on dev, higher first
    assert all(r["test"] is not None for r in table.rows if not r["pruned_at"])
    assert all(r["lr_edge"] in ("lowest", "highest") for r in table.rows if not r["pruned_at"])  # 2-lr grid
    md = table.to_markdown()
    assert "| test |" in md and "reported on the test data, which chose nothing" in md
    assert "lr at the grid's" in md and "first rung at step 2 of 6" in md
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    (grid,) = [n for n in studies if not n.endswith("-seeds")]
    trials = optuna.load_study(study_name=grid, storage=storage).trials
    seeds = optuna.load_study(study_name=grid + "-seeds", storage=storage).trials
    assert all(min(t.intermediate_values, default=2) == 2 for t in trials)  # first rung: ceil(6 / 3)
    # test is scored once at the end of every finished run, never at a rung, and never for a choice
    assert all(("test" in t.user_attrs) == (t.state == S.COMPLETE) for t in trials + seeds)
    assert calls.count("test") == sum(t.state == S.COMPLETE for t in trials + seeds) > 0


WORKER = """
import json, sys, time, torch
from pathlib import Path
from tests.tiny import tiny_llama  # the checkout is on PYTHONPATH
import mad_models
from mad_models.more_search import search_more
from mad_models.training.text import token_blocks

data = token_blocks(torch.arange(480) % 11 + 3, 24)
out, storage, me, other = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
me.touch()
while not other.exists():  # start together, so that both have work
    time.sleep(0.05)
table = search_more(tiny_llama(), data, data, budget=1.0, lora_rank=2, nblocks=(2,), block_ranks=(1, 2),
                    target_sets=[("q_proj", "v_proj")], max_candidates=None, steps=2, lrs=[1e-3, 1e-2, 3e-2],
                    seeds=2, batch_size=8, progress=False, output_dir=out, storage=storage, poll=0.5)
print(json.dumps(table.rows))
"""


def test_two_workers_on_one_journal_file_finish_one_study_and_run_no_trial_twice(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    journal = tmp_path / "search.journal"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(tmp_path / f"out{i}"),
                str(journal),
                str(tmp_path / f"ready{i}"),
                str(tmp_path / f"ready{1 - i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    tables = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert tables[0] == tables[1]  # both workers report the one study
    storage = open_storage(str(journal), tmp_path)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 2 and names[1] == names[0] + "-seeds"
    grid = optuna.load_study(study_name=names[0], storage=storage).trials
    seeds = optuna.load_study(study_name=names[1], storage=storage).trials
    # every (candidate, lr) trained exactly once: LoRA r=2 and MoRe k=2 r=1 (k=2 r=2 is over the budget)
    # (points both workers queued stay queued once done: they never ran)
    trained = [t for t in grid if t.state.is_finished() and not t.user_attrs.get("duplicate")]
    points = [(t.params["candidate"], t.params["lr"]) for t in trained]
    assert len(points) == len(set(points)) == len({r["key"] for r in tables[0]}) * 3
    assert all(t.state in (S.COMPLETE, S.PRUNED) for t in trained)
    seed_points = [
        (t.params["candidate"], t.params["seed"])
        for t in seeds
        if t.state.is_finished() and not t.user_attrs.get("duplicate")
    ]
    assert len(seed_points) == len(set(seed_points)) == sum(1 for r in tables[0] if not r["pruned_at"])
    # both workers trained (the work was shared), and every run's folder was written by one worker only
    workers = {t.user_attrs["worker"] for t in trained}
    assert len(workers) == 2, workers
    runs = [p.name for i in range(2) for p in (tmp_path / f"out{i}").glob("*/*") if p.is_dir()]
    stems = [r.split("@")[0] for r in runs]  # minus the worker's host:pid
    assert len(stems) == len(set(stems)) == len(points) + len(seed_points)
