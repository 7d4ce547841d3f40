"""SequenceClassifier: padding never changes a prediction (attention, Mamba, a hybrid, a pruned hybrid),
left padding is refused, it trains through the project's loop, and it round-trips through safetensors."""

from __future__ import annotations

import warnings

import pytest
import torch

from mad_models.hybrid import ManticoreForCausalLM
from mad_models.sequence_classifier import SequenceClassifier
from mad_models.training import build_model

V, PAD = 17, 16


def hybrid(prune: bool = False):
    parts = [
        build_model("llama", V, width=32, layers=2, heads=4, seed=1),
        build_model("mamba", V, width=32, layers=2),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ManticoreForCausalLM.from_components(parts, n_blocks=2)
    h.set_mixture([[0.7, 0.3], [0.2, 0.8]])
    if prune:
        h.set_mixture([[1.0, 0.0], [0.0, 1.0]])
        h = h.discretize()
    return h


MODELS = {
    "llama": lambda: build_model("llama", V, width=32, layers=2, heads=4),
    "gpt_neox": lambda: build_model("gpt_neox", V, width=32, layers=2, heads=4),
    "mamba": lambda: build_model("mamba", V, width=32, layers=2),
    "hybrid": hybrid,
    "hybrid-pruned": lambda: hybrid(prune=True),
}


def batch_of(seqs: list[list[int]], extra: int = 0, fill: int = PAD):
    T = max(map(len, seqs)) + extra
    ids = torch.full((len(seqs), T), fill)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("pool", ["last", "mean"])
def test_padding_never_changes_the_logits(name, pool):
    torch.manual_seed(0)
    clf = SequenceClassifier(MODELS[name](), num_classes=10, pool=pool).eval()
    seqs = [[1, 10, 3, 4, 14, 15], [2, 5, 15], [13, 7, 7, 9, 8, 14, 1, 15]]
    alone = torch.cat([clf(input_ids=torch.tensor([s])).logits for s in seqs])
    ids, mask = batch_of(seqs)
    padded = clf(input_ids=ids, attention_mask=mask).logits
    # more padding, and pads that are real tokens (not PAD): what follows the last real token never matters
    ids2, mask2 = batch_of(seqs, extra=5, fill=3)
    more = clf(input_ids=ids2, attention_mask=mask2).logits
    assert torch.allclose(padded, alone, atol=1e-5) and torch.allclose(more, alone, atol=1e-5)
    # without a mask, pad_token_id finds the lengths
    clf.pad_token_id = PAD
    assert torch.allclose(clf(input_ids=ids).logits, alone, atol=1e-5)
    # the prediction is not the same for every sequence (the features carry the input)
    assert not torch.allclose(alone[0], alone[1])


def test_left_padding_and_empty_rows_are_refused_with_the_reason():
    clf = SequenceClassifier(MODELS["llama"](), num_classes=10)
    ids = torch.tensor([[PAD, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="not right-padded"):
        clf(input_ids=ids, attention_mask=(ids != PAD).long())
    with pytest.raises(ValueError, match="no real token"):
        clf(input_ids=ids, attention_mask=torch.tensor([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        SequenceClassifier(MODELS["llama"](), num_classes=1)
    with pytest.raises(ValueError, match="pool must be one of"):
        SequenceClassifier(MODELS["llama"](), num_classes=3, pool="first")
    with pytest.raises(TypeError, match="no linear LM head"):
        SequenceClassifier(torch.nn.Linear(3, 3), num_classes=3)


def test_the_hybrid_features_are_the_whole_mixed_state():
    h = hybrid()
    clf = SequenceClassifier(h, num_classes=10)
    assert clf.score.in_features == h.config.hidden_size


def test_trains_through_the_project_loop(tmp_path):
    from mad_models.training import TrainArgs
    from mad_models.training.loop import adamw, train_with
    from mad_models.training.text import ListDataset, pad_collate

    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(64):  # label = the last token mod 3: what the last position sees
        n = int(torch.randint(3, 9, (1,), generator=g))
        ids = torch.randint(0, 10, (n,), generator=g)
        items.append({"input_ids": ids, "labels": ids[-1] % 3})
    clf = SequenceClassifier(MODELS["llama"](), num_classes=3)
    args = TrainArgs(
        str(tmp_path / "run"), max_steps=30, batch_size=16, lr=1e-2, progress=False, save_final=False
    )
    opt = adamw(clf.parameters(), 1e-2, 0.0)
    res = train_with(clf, ListDataset(items), args, opt, job="clf", collate_fn=pad_collate(PAD))
    assert res["step"] == 30 and res["loss"] < 0.5  # ln 3 = 1.10 is the loss of knowing nothing


def test_a_hybrid_classifier_round_trips_through_safetensors(tmp_path):
    from mad_models.training.text import pad_collate

    torch.manual_seed(0)
    clf = SequenceClassifier(hybrid(), num_classes=3).eval()
    mixture = {id(p) for p in clf.model.mixture_parameters()}
    with torch.no_grad():  # not the initial weights: every tensor but the mixture moved
        for p in clf.parameters():
            if id(p) not in mixture:
                p.add_(0.01 * torch.randn_like(p))
    items = [{"input_ids": torch.tensor(s)} for s in ([1, 2, 3, 15], [4, 15], [10, 1, 2, 14, 15])]
    batch = pad_collate(PAD)(items)
    before = clf(**batch).logits
    clf.save_pretrained(tmp_path / "saved")
    names = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert names == ["classifier.json", "classifier.safetensors", "model"]
    assert not list((tmp_path / "saved").rglob("*.bin"))
    back = SequenceClassifier.from_pretrained(tmp_path / "saved")
    assert type(back.model) is ManticoreForCausalLM and back.pool == "last"
    assert torch.allclose(before, back(**batch).logits, atol=1e-6)


def test_a_damaged_save_is_refused_with_the_file_named(tmp_path):
    from safetensors.torch import save_file

    clf = SequenceClassifier(MODELS["mamba"](), num_classes=4, pad_token_id=PAD)
    clf.save_pretrained(tmp_path / "c")
    back = SequenceClassifier.from_pretrained(tmp_path / "c")
    assert back.pad_token_id == PAD and back.num_classes == 4
    save_file(
        {"weight": torch.zeros(5, 32), "bias": torch.zeros(5)}, tmp_path / "c" / "classifier.safetensors"
    )
    with pytest.raises(ValueError, match="classifier.safetensors holds"):
        SequenceClassifier.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "classifier.json").write_text(
        '{"num_classes": 1, "pool": "last", "pad_token_id": null}'
    )
    with pytest.raises(ValueError, match="classifier.json: num_classes must be"):
        SequenceClassifier.from_pretrained(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a saved SequenceClassifier"):
        SequenceClassifier.from_pretrained(tmp_path / "nothing")
