"""Adapter fine-tuning job (MoRe / LoRA, causal LM / classification) and the MoRe search."""

import peft
import pytest
import torch
from tiny import tiny_bert_classifier, tiny_llama

import mad_models  # noqa: F401  (registers MoRe with peft)
from mad_models.more import MoReConfig
from mad_models.more.search import default_target_sets, enumerate_candidates, search_more
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


def test_enumerate_candidates_respects_budget_and_validity():
    base = tiny_llama()
    sets = default_target_sets(base)
    assert sets[0] == ("q_proj", "v_proj") and "down_proj" in sets[-1]
    cands = enumerate_candidates(base, 0.5, lora_rank=8, target_sets=[("q_proj", "v_proj")])
    assert cands and all(c.params <= 0.5 * c.lora_params for c in cands)
    # q_proj is 64 -> 64 and v_proj 64 -> 32 (2 kv heads of 16): k * r <= min(ceil(64/k), ceil(32/k))
    assert all(c.nblocks * c.block_rank <= -(-32 // c.nblocks) for c in cands)
    assert [c.params for c in cands] == sorted((c.params for c in cands), reverse=True)
    absolute = enumerate_candidates(base, 1000, target_sets=[("q_proj", "v_proj")])
    assert absolute and max(c.params for c in absolute) <= 1000
    with pytest.raises(ValueError, match="budget must be > 0"):
        enumerate_candidates(base, 0)
    with pytest.raises(TypeError, match="budget must be an int"):
        enumerate_candidates(base, "lots")
    with pytest.raises(ValueError, match="match no linear layer"):
        enumerate_candidates(base, 0.5, target_sets=[("nope",)])


def test_search_more_ranks_and_leaves_base_untouched(tmp_path):
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    data = _lm_data(600)
    kw = dict(
        budget=0.5,
        steps=4,
        max_candidates=3,
        target_sets=[("q_proj", "v_proj"), ("q_proj", "v_proj", "o_proj")],
        output_dir=tmp_path,
        progress=False,
        batch_size=8,
        lr=1e-2,
    )
    table = search_more(base, data, data, **kw)
    assert len(table.rows) == 3
    metrics = [r["metric"] for r in table.rows]
    assert metrics == sorted(metrics)  # loss: lower first
    for r in table.rows:
        assert r["trainable_params"] == r["params"] and r["pct_of_lora"] <= 50.0 and r["time"] > 0
    md = table.to_markdown()
    assert "% of LoRA r=8" in md and md.count("\n") == 4
    assert base.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert all(p.requires_grad for p in base.parameters())
    # a re-run reuses the stored results instead of training again
    again = search_more(base, data, data, **kw)
    assert again.rows == table.rows
    longer = search_more(base, data, data, **{**kw, "steps": 5})  # trained differently: not reused
    assert all(r["run"]["steps"] == 5 for r in longer.rows)
    lines = (tmp_path / "results.jsonl").read_text().count("\n")
    search_more(base, _lm_data(480), data, **kw)  # other training data: trained again, not reused
    assert (tmp_path / "results.jsonl").read_text().count("\n") == lines + 3
    with pytest.raises(ValueError, match="no MoRe configuration fits"):
        search_more(base, data, data, budget=5, output_dir=tmp_path / "x", progress=False)
