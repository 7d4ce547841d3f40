"""Chance, the no-learning heuristic and micro/macro accuracy."""

import pytest
import torch

from mad_models.mad import (
    TASKS,
    Accuracy,
    chance_accuracy,
    heuristic_accuracy,
    heuristic_predictions,
    make_task,
    target_tokens,
)


def test_chance_is_one_over_the_possible_targets():
    assert chance_accuracy("in_context_recall") == 1 / 8
    assert chance_accuracy("noisy_recall") == 1 / 8  # 32 - 16 noise tokens, values are the upper half
    assert chance_accuracy("selective_copying", vocab_size=32) == 1 / 30
    assert chance_accuracy("memorization") == 1 / target_tokens("memorization").numel()
    for name in TASKS:  # every scored target is one of the counted tokens
        _, y = make_task(name, split="test", num_examples=32)
        assert torch.isin(y[y != -100], target_tokens(name)).all()


def test_heuristic_is_the_most_frequent_candidate_so_far_ties_to_the_latest():
    x = torch.tensor([[9, 1, 5, 2, 2, 5, 7]])
    assert heuristic_predictions(x, torch.tensor([1, 2, 5])).tolist() == [[1, 1, 5, 2, 2, 5, 5]]
    whole = heuristic_predictions(x, torch.tensor([1, 2, 5]), whole_sequence=True)
    assert whole.tolist() == [[5] * 7]  # 2 and 5 tie on count, 5 is seen last


def test_heuristic_scores_like_the_spec_on_the_easy_defaults():
    x, y = make_task("in_context_recall", split="test")
    acc = heuristic_accuracy("in_context_recall", x, y)
    assert 0.29 < acc["micro"] < 0.34 and abs(acc["macro"] - acc["micro"]) < 0.03
    x, y = make_task("memorization", split="test")
    assert heuristic_accuracy("memorization", x, y)["micro"] < 2 * chance_accuracy("memorization")


def test_macro_matches_torchmetrics_definition():
    acc = Accuracy(5)
    # class 0: 1/2, class 1: 1/1, class 2: 0/1, class 4 only predicted -> 0; class 3 absent
    acc.update(torch.tensor([[0, 4, 1, 1]]), torch.tensor([[0, 0, 1, 2]]))
    acc.update(torch.tensor([[3]]), torch.tensor([[-100]]))
    got = acc.compute()
    assert got["micro"] == pytest.approx(2 / 4)
    assert got["macro"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    # logits are argmaxed; an empty accumulator refuses
    acc2 = Accuracy(3)
    acc2.update(torch.eye(3).unsqueeze(0), torch.tensor([[0, 1, 1]]))
    assert acc2.compute()["micro"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no scored"):
        Accuracy(3).compute()
