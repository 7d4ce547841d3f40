"""MAD's compression auto-encoder: the sequence must pass through one hidden state."""

import pytest
import torch
from tiny import tiny_gpt2

from mad_models.mad import (
    CompressionAutoEncoder,
    chance_accuracy,
    evaluate,
    evaluate_metrics,
    make_task,
)
from mad_models.training import TrainArgs, build_model, train_mad

V, T = 16, 16


class CopyLM(torch.nn.Module):
    """A causal LM that only copies: the hidden state at t is the one-hot of token t, the head reads it
    back (next-token copy at 100%), and nothing of earlier tokens reaches later positions."""

    def __init__(self):
        super().__init__()
        self.config = type("Cfg", (), {"hidden_size": V})()
        self.lm_head = torch.nn.Linear(V, V, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.eye(V))

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, logits_to_keep=0, **kwargs):
        h = torch.nn.functional.one_hot(input_ids, V).float()
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return type("Out", (), {"logits": self.lm_head(h)})()


def test_a_model_that_only_copies_scores_at_chance():
    lm = CopyLM()
    x, _ = make_task("compression", split="test", num_examples=8, seq_len=T)
    assert torch.equal(lm(x).logits.argmax(-1), x)  # a perfect copier of its input
    torch.manual_seed(0)
    ae = CompressionAutoEncoder(lm, V, max_len=T)
    xtr, ytr = make_task("compression", split="train", num_examples=512, seq_len=T)
    opt = torch.optim.Adam(ae.decoder.parameters(), lr=3e-3)
    for step in range(150):  # even a trained decoder cannot rebuild what the code does not hold
        i = (step * 32) % 512
        logits = ae(input_ids=xtr[i : i + 32]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ytr[i : i + 32].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = evaluate_metrics(ae, "compression", num_examples=512, seq_len=T)
    chance = chance_accuracy("compression", seq_len=T)
    assert abs(acc["micro"] - chance) < 0.03, acc
    assert acc["macro"] < chance + 0.03


def test_plain_causal_lm_is_refused_on_compression():
    with pytest.raises(ValueError, match="auto-encoder task"):
        evaluate(tiny_gpt2(vocab=V), "compression", num_examples=4)


def test_autoencoder_trains_and_saves_round_trip(tmp_path):
    torch.manual_seed(0)
    lm = build_model("gpt_neox", V, width=32, layers=1, heads=2)
    ae = CompressionAutoEncoder(lm, V, max_len=8)
    args = TrainArgs(str(tmp_path), max_steps=40, batch_size=32, lr=3e-3, progress=False, log_every=20)
    res = train_mad(ae, "compression", args, num_train=256, num_test=64, seq_len=4, vocab_size=V)
    assert res["eval_accuracy"] > 1.5 * chance_accuracy("compression")  # 3 tokens through a 32-d code
    assert "eval_macro_accuracy" in res
    back = CompressionAutoEncoder.from_pretrained(tmp_path / "final")
    x, _ = make_task("compression", split="test", num_examples=16, seq_len=4)
    ae.eval()
    assert torch.allclose(back(input_ids=x).logits, ae(input_ids=x).logits, atol=1e-5)


def test_train_mad_wraps_a_causal_lm_for_compression(tmp_path):
    args = TrainArgs(str(tmp_path), max_steps=2, batch_size=8, progress=False)
    train_mad(tiny_gpt2(vocab=V), "compression", args, num_train=16, num_test=8, seq_len=8)
    assert (tmp_path / "final" / "compression_decoder.safetensors").is_file()
