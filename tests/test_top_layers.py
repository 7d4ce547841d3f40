"""Top-layer training from cached lower-layer outputs equals the full model (loss, logits, gradients), and its
teacher-forced exact match equals greedy generation."""

import peft
import pytest
import torch

import mad_models  # noqa: F401  (registers MORE)
from mad_models.more import MoReConfig
from mad_models.training.exact_match import evaluate_exact_match
from mad_models.training.finetune import finetune_adapter
from mad_models.training.loop import TrainArgs
from mad_models.training.text import ListDataset, pad_collate, prompt_answer_examples
from mad_models.training.top_layers import (
    TopLayers,
    answer_exact_match,
    cache_lower_outputs,
    top_collate,
    top_layer_indices,
)
from tests.tiny import tiny_char_tokenizer, tiny_gpt2, tiny_llama

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def examples(n=7, seed=0, vocab=128):
    """Prompt/answer token examples of different lengths, scored on their last 1-4 tokens."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        length = int(torch.randint(6, 20, (1,), generator=g))
        ids = torch.randint(3, vocab, (length,), generator=g)
        labels = ids.clone()
        labels[: length - int(torch.randint(1, 5, (1,), generator=g))] = -100
        items.append({"input_ids": ids, "labels": labels})
    return ListDataset(items)


def adapted(kind: str, n_top: int = 2):
    base = tiny_llama(seed=1, layers=4)
    top = top_layer_indices(base, n_top)
    if kind == "lora":  # random B too, so the adapter changes the output
        cfg = peft.LoraConfig(r=4, target_modules=TARGETS, layers_to_transform=top, init_lora_weights=False)
    else:
        cfg = MoReConfig(nblocks=2, block_rank=2, target_modules=TARGETS, layers_to_transform=top)
    torch.manual_seed(2)
    model = peft.get_peft_model(base, cfg)
    if kind == "more":
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "more_" in n:
                    p.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("kind,n_top", [("lora", 2), ("more", 2), ("more", 1), ("lora", 4)])
def test_the_cached_path_equals_the_full_model(kind, n_top):
    model = adapted(kind, n_top)
    data = examples()
    cached = cache_lower_outputs(model, data, n_top=n_top, batch_size=3)  # padded batches of mixed lengths
    top = TopLayers(model, n_top=n_top).eval()
    batch = pad_collate(0)([data[i] for i in range(len(data))])
    full = model(**batch)
    mine = top(**top_collate()([cached[i] for i in range(len(cached))]))
    keep = batch["labels"][:, 1:] != -100
    torch.testing.assert_close(mine.logits, full.logits[:, :-1][keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(mine.labels, batch["labels"][:, 1:][keep])
    assert mine.logits.shape[0] == int(keep.sum()) < keep.numel() // 2  # the head ran on answers only

    # and the gradients the adapter receives
    full.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    top(**top_collate()([cached[i] for i in range(len(cached))])).loss.backward()
    assert grads and all(g.abs().sum() > 0 for g in grads.values())
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)


def test_training_from_the_cache_changes_only_the_top_adapters(tmp_path):
    base = tiny_llama(seed=1, layers=4)
    cfg = peft.LoraConfig(r=2, target_modules=TARGETS, layers_to_transform=top_layer_indices(base, 1))
    model = peft.get_peft_model(base, cfg)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(".layers.3." in n for n, p in model.named_parameters() if p.requires_grad)
    cached = cache_lower_outputs(model, examples(16), n_top=1)
    top = TopLayers(model, n_top=1)
    before = top(**top_collate()([cached[i] for i in range(16)])).loss.item()
    args = TrainArgs(str(tmp_path), max_steps=30, batch_size=8, lr=1e-2, progress=False, save_final=False)
    res = finetune_adapter(top, cached, args, collate_fn=top_collate())
    after = top(**top_collate()([cached[i] for i in range(16)])).loss.item()
    assert after < before - 0.3, (before, after, res)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_teacher_forced_exact_match_equals_greedy_generation():
    tok = tiny_char_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    model = tiny_llama(seed=2, vocab=98, layers=3).requires_grad_(False)
    with torch.no_grad():  # EOS wherever this random model would say "W": some replies end by themselves
        w = tok("W", add_special_tokens=False)["input_ids"][0]
        model.lm_head.weight[tok.eos_token_id] = 1.05 * model.lm_head.weight[w]
    questions = [f"question {i}?" for i in range(12)]
    rows = [{"prompt": q, "answer": "x"} for q in questions]
    replies = evaluate_exact_match(model, tok, rows, max_new_tokens=8)["predictions"]
    finished = [
        i
        for i, r in enumerate(replies)
        if r and len(tok(r, add_special_tokens=False)["input_ids"]) < 8 and r.strip() == r
    ]
    assert len(finished) >= 3, replies  # the random model ends some replies itself
    # rows answered by the model's own replies (hits) and by those replies with a changed last character
    rows = [{"prompt": questions[i], "answer": replies[i]} for i in finished]
    rows += [{"prompt": questions[i], "answer": replies[i][:-1] + ("a" if replies[i][-1] != "a" else "b")}
             for i in finished]  # fmt: skip
    data = prompt_answer_examples([r["prompt"] for r in rows], [r["answer"] for r in rows], tok, chat=True)
    cached = cache_lower_outputs(model, data, n_top=1)
    hits, preds = answer_exact_match(TopLayers(model, n_top=1), cached, batch_size=5)
    greedy = evaluate_exact_match(model, tok, rows, max_new_tokens=8)
    assert hits == [p.strip() == r["answer"] for p, r in zip(greedy["predictions"], rows, strict=True)]
    assert hits == [True] * len(finished) + [False] * len(finished)
    assert tok.decode(preds[0][:-1]) == replies[finished[0]] and preds[0][-1] == tok.eos_token_id


def test_what_is_refused():
    with pytest.raises(TypeError, match="not a Llama-family decoder"):
        TopLayers(tiny_gpt2(), 1)
    with pytest.raises(ValueError, match=r"n_top must be in 1..4"):
        top_layer_indices(tiny_llama(layers=4), 5)
    base = tiny_llama(layers=4)
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"]))  # every layer
    with pytest.raises(ValueError, match="layers below the top 2 have trainable parameters"):
        cache_lower_outputs(model, examples(2), n_top=2)
