"""Adapter fine-tuning job (MoRe / LoRA, causal LM / classification) and the MoRe search."""

import peft
import pytest
import torch
from tiny import tiny_bert_classifier, tiny_llama

import mad_models  # noqa: F401  (registers MoRe with peft)
from mad_models.more import MoReConfig
from mad_models.more_search import default_target_sets, enumerate_candidates, resolve_budget, search_more
from mad_models.training import TrainArgs, read_log
from mad_models.training.finetune import dataset_metrics, finetune_adapter
from mad_models.training.text import ListDataset, pad_collate, prompt_answer_examples, token_blocks


def _lm_data(n_tokens=1200, block=24):
    return token_blocks(torch.arange(n_tokens) % 11 + 3, block)  # a periodic stream: learnable


def _cls_data(n=48):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        ids = torch.randint(5, 100, (10,), generator=g)
        ids[0] = 1 + i % 3  # the first token gives the class away
        items.append({"input_ids": ids, "labels": torch.tensor(i % 3)})
    return ListDataset(items)


def _args(out, **kw):
    return TrainArgs(str(out), **{**dict(batch_size=8, log_every=5, save_every=5, progress=False), **kw})


def test_lora_causal_lm_loss_falls(tmp_path):
    pm = peft.get_peft_model(
        tiny_llama(), peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    data = _lm_data()
    before = dataset_metrics(pm, data)["loss"]
    res = finetune_adapter(pm, data, _args(tmp_path, max_steps=30, lr=2e-2), eval_data=data)
    assert res["eval_loss"] < before - 0.5
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()


def test_more_classification_learns(tmp_path):
    cfg = MoReConfig(
        nblocks=2,
        block_rank=1,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
        task_type="SEQ_CLS",
    )
    pm = peft.get_peft_model(tiny_bert_classifier(), cfg)
    res = finetune_adapter(pm, _cls_data(), _args(tmp_path, max_steps=30, lr=1e-2), eval_data=_cls_data())
    assert res["eval_accuracy"] > 0.9


def test_finetune_stop_and_resume_is_exact(tmp_path):
    def run(out, **kw):
        torch.manual_seed(0)
        cfg = MoReConfig(nblocks=2, block_rank=1, target_modules=["q_proj", "v_proj"], dropout=0.2)
        pm = peft.get_peft_model(tiny_llama(), cfg)
        finetune_adapter(pm, _lm_data(), _args(out, max_steps=12, lr=1e-2, **kw))
        return {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}

    full = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=7)
    resumed = run(tmp_path / "b")
    assert full.keys() == resumed.keys() and len(full) > 0
    assert all(torch.equal(full[n], resumed[n]) for n in full)
    strip = lambda log: [{k: v for k, v in r.items() if k != "train_time"} for r in log]  # noqa: E731
    assert strip(read_log(tmp_path / "a")) == strip(read_log(tmp_path / "b"))


def test_prompt_answer_examples_mask_the_prompt_and_pad():
    class Tok:
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) % 50 + 1 for c in text]}

    ds = prompt_answer_examples(["ab", "abcd"], ["x", "yz"], Tok())
    assert ds[0]["labels"].tolist() == [-100, -100, ord("x") % 50 + 1, 0]
    batch = pad_collate(pad_id=0)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 7) and batch["labels"][0, 4:].eq(-100).all()
    assert batch["attention_mask"].sum(1).tolist() == [4, 7]
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        prompt_answer_examples(["a", "b"], ["c"], Tok())


def test_enumerate_candidates_share_one_budget_and_keep_every_target_set():
    base = tiny_llama()
    sets = default_target_sets(base)
    assert sets[0] == ("q_proj", "v_proj") and "down_proj" in sets[-1]
    # q_proj is 64 -> 64 and v_proj 64 -> 32 (2 kv heads of 16), 2 layers: LoRA r=8 on q, v = 8*224*2
    budget = resolve_budget(base, 1.0, lora_rank=8, lora_targets=["q_proj", "v_proj"])
    assert budget.params == 3584 and "1 x LoRA r=8 on q_proj, v_proj (3,584)" in budget.description
    two_sets = [("q_proj", "v_proj"), ("q_proj", "v_proj", "o_proj")]
    cands = enumerate_candidates(base, budget, target_sets=two_sets)
    # one limit for every target set (it used to be a share of LoRA on each candidate's own targets)
    assert cands and all(c.params <= 3584 for c in cands)
    assert any(len(c.target_modules) == 3 for c in cands)
    assert all(c.nblocks * c.block_rank <= -(-32 // c.nblocks) for c in cands)
    assert [c.params for c in cands] == sorted((c.params for c in cands), reverse=True)
    capped = enumerate_candidates(base, budget, target_sets=two_sets, max_per_target_set=1)
    assert {c.target_modules for c in capped} == set(two_sets)  # the cap never drops a whole set
    widest = max(c.nblocks for c in cands if c.target_modules == two_sets[0])
    assert [c.nblocks for c in capped if c.target_modules == two_sets[0]] == [widest]  # nor the widest k
    # q_proj 64 -> 64, v_proj 64 -> 32: k=8 would give 4 outputs per block, under k*r, so k <= 4 fits
    three = enumerate_candidates(
        base, budget, nblocks=(1, 2, 4, 8), target_sets=two_sets[:1], max_per_target_set=2, lora_rank=8
    )
    assert sorted((c.nblocks, c.block_rank) for c in three) == [(2, 4), (4, 2)]  # the 2 widest k, one each
    ones = enumerate_candidates(base, budget, nblocks=(1,), target_sets=two_sets[:1], lora_rank=8)
    assert {(c.nblocks, c.block_rank) for c in ones} == {(1, 1), (1, 2), (1, 4)}  # not k=1 r=8: the baseline
    absolute = enumerate_candidates(base, 1000, target_sets=[("q_proj", "v_proj")])
    assert absolute and max(c.params for c in absolute) <= 1000
    assert resolve_budget(base, 1000).description == "1,000 trainable parameters (absolute)"
    with pytest.raises(ValueError, match=r"under one LoRA rank.*has 448 parameters.*write a fraction"):
        resolve_budget(base, 1)  # one parameter, not "100% of LoRA"
    with pytest.raises(ValueError, match="under one LoRA rank"):
        resolve_budget(base, 0.01, lora_rank=8)
    with pytest.raises(ValueError, match="budget must be > 0"):
        enumerate_candidates(base, 0)
    with pytest.raises(TypeError, match="budget must be an int"):
        enumerate_candidates(base, "lots")
    with pytest.raises(ValueError, match="match no linear layer"):
        enumerate_candidates(base, 0.5, target_sets=[("nope",)])


def _study(path):
    """The (candidate, lr) study of the one search in ``path`` (its seed runs are a second study)."""
    import optuna

    (summary,) = [
        s for s in optuna.get_all_study_summaries(f"sqlite:///{path}") if "-seeds" not in s.study_name
    ]
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{path}")


def test_search_more_tunes_each_lr_with_successive_halving_and_reports_lora(tmp_path):
    import optuna

    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    data = _lm_data(600)
    kw = dict(
        budget=1.0,
        lora_rank=2,
        nblocks=(1, 2),
        block_ranks=(1,),
        steps=4,
        lrs=[1e-3, 3e-2],
        min_resource=2,
        reduction_factor=2,
        seeds=2,
        target_sets=[("q_proj", "v_proj"), ("q_proj", "v_proj", "o_proj")],
        output_dir=tmp_path,
        progress=False,
        batch_size=8,
    )
    table = search_more(base, data, data, **kw)
    # limit 2 * 224 * 2 = 896: k1r1 (448) and k2r1 (896) on q, v; k1r1 on q, v, o (704); and LoRA r=2
    assert sorted(r["label"] for r in table.rows) == sorted(
        ["LoRA r=2 (baseline)", "MoRe k=1 r=1 (= LoRA r=1)", "MoRe k=2 r=1", "MoRe k=1 r=1 (= LoRA r=1)"]
    )
    assert {len(r["target_modules"]) for r in table.rows} == {2, 3}
    assert all(r["lr"] in (1e-3, 3e-2) for r in table.rows)
    finished = [r for r in table.rows if not r["pruned_at"]]
    assert finished and all(r["n_seeds"] == 2 and r["min"] <= r["mean"] <= r["max"] for r in finished)
    means = [r["mean"] for r in finished]
    assert means == sorted(means)  # loss: lower first
    md = table.to_markdown()
    assert md.startswith("Budget: 1 x LoRA r=2 on q_proj, v_proj (896) = 896 trainable parameters.")
    assert "SuccessiveHalvingPruner" in md and "| seed range |" in md and "won on dev with eval_loss" in md
    # one Optuna study: every (candidate, lr) pair finished, complete or pruned by successive halving
    study = _study(tmp_path / "search.db")
    states = [t.state for t in study.trials]
    assert len(states) == 4 * 2 and all(
        s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states
    )
    assert base.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert all(p.requires_grad for p in base.parameters())
    # a re-run reuses the study and the seed runs instead of training again
    again = search_more(base, data, data, **kw)
    assert again.rows == table.rows and len(_study(tmp_path / "search.db").trials) == 8
    with pytest.raises(ValueError, match="under one LoRA rank"):
        search_more(base, data, data, budget=5, output_dir=tmp_path / "x", progress=False)
