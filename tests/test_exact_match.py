"""Exact match (more eval, the MoRe reproduction, the language assets): format, batching, scoring."""

import json

import peft
import pytest
import torch

import mad_models  # noqa: F401  (registers MORE)
from mad_models.cli import main
from mad_models.more import MoReConfig
from mad_models.training.exact_match import (
    chat_prompt,
    evaluate_exact_match,
    generate_answers,
    heuristic_exact_match,
    load_qa_rows,
    most_frequent_answers,
    score,
)
from mad_models.training.finetune import finetune_adapter
from mad_models.training.loop import TrainArgs
from mad_models.training.text import load_jsonl, prompt_answer_examples
from tests.tiny import tiny_char_tokenizer, tiny_llama

TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
ROWS = [
    {"module": "add", "prompt": "Add one and two.", "answer": "3"},
    {"module": "add", "prompt": "2+2?", "answer": "4"},
    {"module": "cmp", "prompt": "Is 5>3?", "answer": "True"},
    {"module": "cmp", "prompt": "Is 2>9, really?", "answer": "False"},
]


def tok_with_template():
    tok = tiny_char_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def test_score_strips_whitespace_and_splits_by_module():
    res = score([" 3\n", "5", "True ", "false"], ROWS)
    assert res == {"exact_match": 0.5, "n": 4, "per_module": {"add": 0.5, "cmp": 0.5}}
    no_module = [{k: v for k, v in r.items() if k != "module"} for r in ROWS]
    assert "per_module" not in score(["3", "4", "True", "False"], no_module)
    with pytest.raises(ValueError, match="3 replies for 4 rows"):
        score(["3", "4", "True"], ROWS)


def test_heuristic_answers_the_most_frequent_train_answer_per_module():
    train = ROWS + [{"module": "cmp", "prompt": "x", "answer": "False"}]
    assert most_frequent_answers(train) == {"add": "3", "cmp": "False"}
    assert heuristic_exact_match(train, ROWS)["per_module"] == {"add": 0.5, "cmp": 0.5}


def test_chat_prompt_is_the_training_prompt():
    tok = tok_with_template()
    assert chat_prompt(tok, "1+2?") == "<system>Reply with the answer only.|<user>1+2?|<assistant>"
    plain = tiny_char_tokenizer()
    assert chat_prompt(plain, "1+2?") == "1+2?\n"
    ds = prompt_answer_examples(["1+2?"], ["3"], tok, chat=True)
    n_prompt = len(chat_prompt(tok, "1+2?"))  # one token per character
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert tok.decode(ids[:n_prompt]) == chat_prompt(tok, "1+2?")
    assert (labels[:n_prompt] == -100).all() and tok.decode(labels[n_prompt:]) == "3<eos>"


def test_load_jsonl_prompt_rows_use_the_chat_format(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    ds = load_jsonl(path, tok_with_template())
    want = prompt_answer_examples(
        [r["prompt"] for r in ROWS], [r["answer"] for r in ROWS], tok_with_template(), 256, chat=True
    )
    assert all(torch.equal(ds[i]["input_ids"], want[i]["input_ids"]) for i in range(len(ROWS)))


def test_batched_left_padded_generation_equals_one_at_a_time():
    torch.manual_seed(0)
    model, tok = tiny_llama(vocab=98), tok_with_template()
    questions = [r["prompt"] for r in ROWS] + ["a much longer question than the others?"]
    one = generate_answers(model, tok, questions, batch_size=1, max_new_tokens=6)
    batched = generate_answers(model, tok, questions, batch_size=5, max_new_tokens=6)
    assert one == batched
    assert any(r for r in one)  # the random model does say something


def test_a_trained_model_answers_in_the_eval_format(tmp_path):
    """Train on prompt_answer_examples(chat=True); evaluate_exact_match (batched, same format) gets them."""
    tok = tok_with_template()
    model = tiny_llama(vocab=98)
    before = evaluate_exact_match(model, tok, ROWS, batch_size=4, max_new_tokens=6)["exact_match"]
    data = prompt_answer_examples([r["prompt"] for r in ROWS], [r["answer"] for r in ROWS], tok, chat=True)
    args = TrainArgs(
        str(tmp_path / "run"), max_steps=80, batch_size=4, lr=1e-2, progress=False, save_final=False
    )
    finetune_adapter(model, data, args, pad_id=tok.pad_token_id)
    res = evaluate_exact_match(model, tok, ROWS, batch_size=3, max_new_tokens=6)
    assert before == 0.0
    assert res["exact_match"] == 1.0, res["predictions"]
    assert res["per_module"] == {"add": 1.0, "cmp": 1.0} and res["n"] == 4


def test_load_qa_rows_names_the_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "a", "answer": 3}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: 'answer' must be a string"):
        load_qa_rows(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl:1: not valid JSON"):
        load_qa_rows(path)


def test_more_eval_cli_on_a_tiny_adapter(tmp_path, capsys):
    tok = tok_with_template()
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    base = tiny_llama(vocab=98)
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    peft.get_peft_model(base, MoReConfig(target_modules=["q_proj"], init_weights=False)).save_pretrained(
        adapter_dir
    )
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    preds = tmp_path / "out" / "preds.jsonl"
    argv = ["more", "eval", "--model", adapter_dir, "--base-model", base_dir, "--data", data]
    assert main([str(x) for x in [*argv, "--batch-size", "3", "--out", preds, "--no-progress"]]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{") :])
    assert res["n"] == 4 and set(res["per_module"]) == {"add", "cmp"} and 0 <= res["exact_match"] <= 1
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [x["prompt"] for x in lines] == [r["prompt"] for r in ROWS]
    assert all(x["correct"] == (x["prediction"].strip() == x["answer"]) for x in lines)
    assert sum(x["correct"] for x in lines) / 4 == res["exact_match"]
    # the same numbers as the library function on the same adapter
    from peft import PeftModel

    from mad_models.loading import load_causal_lm

    model = PeftModel.from_pretrained(load_causal_lm(str(base_dir)), adapter_dir)
    assert evaluate_exact_match(model, tok, ROWS)["predictions"] == [x["prediction"] for x in lines]


def test_more_eval_cli_bad_data_is_named(tmp_path, capsys):
    data = tmp_path / "val.jsonl"
    data.write_text('{"prompt": "a"}\n')
    with pytest.raises(SystemExit) as err:
        main(["more", "eval", "--model", "smollm2", "--data", str(data)])
    assert err.value.code != 0
    assert "'answer' must be a string" in capsys.readouterr().err


@pytest.mark.slow
def test_more_eval_on_real_smollm2(tmp_path, capsys, smollm2):
    """The real base model, offline, on 9 val questions (one per module): batched equals one at a time."""
    rows, seen = [], set()
    for r in load_qa_rows("data/mathematics/val.jsonl"):
        if r["module"] not in seen:
            seen.add(r["module"])
            rows.append(r)
    data = tmp_path / "nine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "p.jsonl"
    torch.set_num_threads(1)
    argv = ["more", "eval", "--model", "smollm2", "--data", str(data), "--batch-size", "9", "--no-progress"]
    assert main([*argv, "--max-new-tokens", "8", "--out", str(preds)]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{") :])
    assert res["n"] == 9 and len(res["per_module"]) == 9
    batched = [json.loads(x)["prediction"] for x in preds.read_text().splitlines()]
    model, tok = smollm2
    assert "<|im_start|>system\nReply with the answer only.<|im_end|>" in chat_prompt(tok, rows[0]["prompt"])
    one = generate_answers(model, tok, [r["prompt"] for r in rows[:3]], batch_size=1, max_new_tokens=8)
    assert one == batched[:3]
