"""Text models: the Shakespeare splits, the character tokenizer, bits per character, and a tiny end-to-end
pretrain -> join -> projectors -> search -> fine-tune run on real Shakespeare text."""

import hashlib
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

import mad_models  # noqa: F401
from mad_models.training import TrainArgs, build_model
from mad_models.training.bits_per_char import bits_per_char, score_files, unigram_bits_per_char
from mad_models.training.char_tokenizer import train_char_tokenizer
from mad_models.training.shakespeare import (
    DATA_DIR,
    FINETUNE_TEXTS,
    PRETRAIN_TEXTS,
    VAL_TEXTS,
    load_split,
)


# ------------------------------------------------------------------------------------------------ data
def test_data_files_match_their_checksums():
    lines = (DATA_DIR / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    files = sorted(str(p.relative_to(DATA_DIR)) for p in DATA_DIR.glob("*/*.txt"))
    assert sorted(sums) == files and len(files) == 39
    for name, digest in sums.items():
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == digest, name


def test_splits_cover_train_once_and_do_not_overlap():
    train = {p.stem for p in (DATA_DIR / "train").glob("*.txt")}
    assert set(PRETRAIN_TEXTS).isdisjoint(FINETUNE_TEXTS)
    assert set(PRETRAIN_TEXTS) | set(FINETUNE_TEXTS) == train
    assert set(VAL_TEXTS).isdisjoint(train)
    whole = load_split("train")
    pre, pre_dev = load_split("pretrain"), load_split("pretrain_dev")
    ft, arch, dev = load_split("finetune"), load_split("arch"), load_split("dev")
    for name in PRETRAIN_TEXTS:
        assert pre[name] + pre_dev[name] == whole[name] and pre_dev[name] and pre[name].endswith("\n")
    for name in FINETUNE_TEXTS:
        assert ft[name] + arch[name] + dev[name] == whole[name] and ft[name] and arch[name] and dev[name]
        assert ft[name].endswith("\n") and arch[name].endswith("\n")  # cut at line breaks
    # no val play's text is in train, not even a long passage (the first 2,000 characters after its title)
    train_text = "".join(whole.values())
    for name, text in load_split("val").items():
        assert text[500:2500] not in train_text, name
    with pytest.raises(ValueError, match="split must be one of"):
        load_split("test")


# ------------------------------------------------------------------------------------------- tokenizer
def test_char_tokenizer_round_trip_save_and_load(tmp_path):
    from transformers import AutoTokenizer

    texts = list(load_split("pretrain_dev").values())
    tok = train_char_tokenizer(texts, max_length=64)
    chars = sorted(set("".join(texts)))
    assert len(tok) == len(chars) + 2 and tok.eos_token_id == 0 and tok.unk_token_id == 1
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    sample = texts[0][:3000]
    ids = back(sample, add_special_tokens=False)["input_ids"]
    assert ids == tok(sample, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(sample)  # one token per character, whitespace and newlines included
    assert back.decode(ids) == sample
    assert back.model_max_length == 64
    unseen = next(c for c in "@#%~^|" if c not in chars)
    assert back(f"a{unseen}b")["input_ids"][1] == back.unk_token_id


# ------------------------------------------------------------------------------------------ bits/char
def test_bits_per_char_of_a_uniform_model_is_log2_vocab():
    tok = train_char_tokenizer(["abcdefg\n"], max_length=8)
    model = build_model("gpt_neox", len(tok), width=16, layers=1, heads=2)
    torch.nn.init.zeros_(model.get_output_embeddings().weight)  # every logit 0: p = 1 / V for every token
    res = bits_per_char(model, tok, ["abc\ndefg", "gfedcba abc"], context=4)
    assert res["n_chars"] == res["n_tokens"] == 8 + 11
    assert res["bits_per_char"] == pytest.approx(math.log2(len(tok)), abs=1e-6)


def test_bits_per_char_matches_a_hand_computation_with_multi_character_tokens():
    """A word-level tokenizer (a token covers several characters): the formula by hand from one forward."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<unk>": 1, "to": 2, "be": 3, "or": 4, "not": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    text = "to be or not to be"
    model = build_model("gpt_neox", len(vocab), width=16, layers=1, heads=2, seed=3).eval()
    ids = [0, 2, 3, 4, 5, 2, 3]  # EOS as context, then the six words
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids[:-1]])).logits[0].double(), -1)
    nats = -sum(logp[t, ids[t + 1]] for t in range(6))
    expected = float(nats) / (math.log(2) * len(text))  # the characters of the text, spaces included
    res = bits_per_char(model, tok, [text], context=16)
    assert (res["n_tokens"], res["n_chars"]) == (6, len(text))
    assert res["bits_per_char"] == pytest.approx(expected, rel=1e-6)
    # short windows score each token once, with less context: other figure, same counts
    short = bits_per_char(model, tok, [text], context=2)
    assert (short["n_tokens"], short["n_chars"]) == (6, len(text))
    assert short["bits_per_char"] != pytest.approx(expected, rel=1e-3)
    # overlapping windows (stride 1) with the whole text in context give the one-window figure
    assert bits_per_char(model, tok, [text], context=8, stride=1)["bits_per_char"] == pytest.approx(expected)


def test_unigram_row_is_the_frequency_entropy():
    tok = train_char_tokenizer(["ab"])
    # counts +1 over the 4 tokens (EOS, UNK, a, b): a 3+1, b 1+1, others 1 -> p(a) = 1/2, p(b) = 1/4
    res = unigram_bits_per_char(["aaab"], ["abba"], tok)
    assert res["bits_per_char"] == pytest.approx((1 + 2 + 2 + 1) / 4)
    assert res["n_chars"] == 4


# --------------------------------------------------------------------------------- tiny end to end
def test_tiny_pretrain_join_search_finetune_on_shakespeare(tmp_path, one_thread):
    """The bench's chain on real text at tiny widths: every stage lowers the loss it trains."""
    from mad_models.hybrid import ManticoreForCausalLM
    from mad_models.training.causal_lm import train_causal_lm
    from mad_models.training.mixture_search import search_mixtures
    from mad_models.training.projectors import pretrain_projectors
    from mad_models.training.retrain import retrain
    from mad_models.training.text import text_blocks

    ctx = 32
    tok = train_char_tokenizer(load_split("train").values(), max_length=ctx)
    pre = text_blocks([t[:6000] for t in load_split("pretrain").values()][:4], tok, ctx)
    ft = text_blocks([t[:4000] for t in load_split("finetune").values()][:4], tok, ctx)
    arch = text_blocks([t[:1000] for t in load_split("arch").values()][:4], tok, ctx)
    dev_text = [t[:1500] for t in load_split("dev").values()][:3]

    def args(name, steps, lr):
        return TrainArgs(str(tmp_path / name), max_steps=steps, batch_size=8, lr=lr, progress=False,
                         save_every=1000, log_every=steps)  # fmt: skip

    def bpc(model):
        return bits_per_char(model, tok, dev_text, context=ctx)["bits_per_char"]

    gpt = build_model("gpt_neox", len(tok), width=32, layers=2, heads=2, max_len=ctx)
    mamba = build_model("mamba", len(tok), width=32, layers=2, state_size=4)
    before = {"gpt": bpc(gpt), "mamba": bpc(mamba)}
    for name, model in (("gpt", gpt), ("mamba", mamba)):
        train_causal_lm(model, pre, args(f"pre-{name}", 60, 3e-3))
        assert bpc(model) < before[name] - 0.5, name  # pretraining learned something
    gpt.config._name_or_path, mamba.config._name_or_path = "gpt", "mamba"
    hybrid = ManticoreForCausalLM.from_components([gpt, mamba], n_blocks=2)
    assert len(hybrid.projector_parameters()) == 16  # 2 blocks x 2 components x (in, out) x (weight, bias)
    start = bpc(hybrid)
    pretrain_projectors(hybrid, pre, args("proj", 20, 3e-3), train_mixture=False, collate_fn=default_collate)
    after_proj = bpc(hybrid)
    assert after_proj < start
    res = search_mixtures(hybrid, ft, args("search", 20, 1e-3), arch_data=arch, arch_lr=0.05,
                          collate_fn=default_collate)  # fmt: skip
    weights = torch.tensor(res["mixture"])
    assert torch.allclose(weights.sum(-1), torch.ones(2), atol=1e-4)
    assert not torch.allclose(weights, torch.full((2, 2), 0.5), atol=1e-3)  # the search moved the mixture
    searched = bpc(hybrid)
    retrain(hybrid, ft, args("retrain", 20, 1e-3), collate_fn=default_collate)
    assert hybrid.config.mixture_mode == "fixed"
    assert torch.allclose(hybrid.mixture_weights().detach(), weights, atol=1e-4)
    final = bpc(hybrid)
    assert final < searched
    # saved with its tokenizer, the hybrid scores the same through the folder-level function
    out = tmp_path / "hybrid"
    hybrid.save_pretrained(out)
    tok.save_pretrained(out)
    dev_files = []
    for i, text in enumerate(dev_text):
        dev_files.append(tmp_path / f"dev{i}.txt")
        dev_files[-1].write_text(text)
    scored = score_files(out, dev_files)
    assert scored["bits_per_char"] == pytest.approx(final, rel=1e-5)
    assert scored["n_chars"] == sum(len(t) for t in dev_text) == scored["n_tokens"]
    assert [f["n_chars"] for f in scored["files"]] == [len(t) for t in dev_text]
    # pruned to its argmax, it still runs and scores (one component per block, no projectors)
    small = hybrid.discretize()
    assert not small.projector_parameters()
    assert math.isfinite(bpc(small))


def test_score_files_refuses_bad_input_with_one_clear_message(tmp_path):
    tok = train_char_tokenizer(["abc"], max_length=8)
    model = build_model("gpt_neox", len(tok), width=16, layers=1, heads=2)
    folder = tmp_path / "m"
    model.save_pretrained(folder)
    text = tmp_path / "t.txt"
    text.write_text("abcabc")
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        score_files(folder, [text])
    tok.save_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_files(folder, [tmp_path / "missing.txt"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        score_files(tmp_path, [text])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(UnicodeDecodeError):
        score_files(folder, [bad])
    assert score_files(folder, [text])["n_chars"] == 6
    assert Path(folder / "tokenizer.json").is_file()


# ------------------------------------------------------------------------------------------------ CLI
def test_hybrid_eval_command_scores_a_plain_model_and_a_hybrid(tmp_path, capsys):
    import json

    from mad_models.cli import main
    from mad_models.hybrid import ManticoreForCausalLM

    tok = train_char_tokenizer(load_split("pretrain_dev").values(), max_length=32)
    gpt = build_model("gpt_neox", len(tok), width=16, layers=2, heads=2, max_len=32)
    mamba = build_model("mamba", len(tok), width=16, layers=2, state_size=4)
    gpt.config._name_or_path, mamba.config._name_or_path = "gpt", "mamba"
    hybrid = ManticoreForCausalLM.from_components([gpt, mamba], n_blocks=2)
    texts = [t[:700] for t in load_split("dev").values()][:2]
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"t{i}.txt")
        files[-1].write_text(text)
    for name, model in (("gpt", gpt), ("hybrid", hybrid)):
        folder = tmp_path / name
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        out = tmp_path / f"{name}.json"
        assert (
            main(["hybrid", "eval", "--model", str(folder), "--text", *map(str, files), "--out", str(out)])
            == 0
        )
        printed = json.loads(capsys.readouterr().out)
        assert json.loads(out.read_text()) == printed
        expected = bits_per_char(model, tok, texts)
        assert printed["bits_per_char"] == pytest.approx(expected["bits_per_char"], rel=1e-6)
        assert printed["n_chars"] == printed["n_tokens"] == sum(map(len, texts))
        assert [f["n_chars"] for f in printed["files"]] == [len(t) for t in texts]
    # bad input: one line naming the problem, exit code 1, nothing written
    with pytest.raises(SystemExit) as exit_:
        main(["hybrid", "eval", "--model", str(tmp_path / "gpt"), "--text", str(tmp_path / "nope.txt"),
              "--out", str(tmp_path / "bad.json")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and "nope.txt does not exist" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad.json").exists()
