"""Greedy decode speed of a Manticore hybrid against its components, measured in one run on CPU.

Components are random-weight models with the shapes of Pythia-70M (GPT-NeoX, 512 x 6 layers) and
Mamba-130M (768 x 24 layers), both with a 50,280-token vocabulary (the real ones share the GPT-NeoX
tokenizer). The hybrid has 2 blocks, fixed weights [[0.7, 0.3], [0.2, 0.8]]. Rows:

- each component alone (its own `generate`, its own cache);
- the hybrid: ratio = hybrid time / (sum of the components' times); goal <= 1.15;
- "pruned to Mamba": weights [[0.2, 0.8], [0.1, 0.9]] pruned at 0.5 keep only Mamba; ratio to Mamba alone;
  goal <= 1.1;
- "discretized": argmax of [[0.7, 0.3], [0.2, 0.8]] = Pythia's block 0 then Mamba's block 1, ratio to
  the two full components it takes blocks from (it runs half of each, so < 1 is expected).

Each model greedily decodes `--new` tokens (min_new_tokens forces the length) after a `--prompt`-token
prompt, batch 1, with its cache. Timings interleave the models round by round and report the median,
so background load hits them alike.

Usage:
    python bench/hybrid_decode.py            # 64 new tokens, 7 rounds
    python bench/hybrid_decode.py --quick    # 32 new tokens, 5 rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, MambaConfig, MambaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mad_models  # noqa: E402, F401
from mad_models.hybrid import ManticoreForCausalLM  # noqa: E402

VOCAB = 50280


def pythia_70m_shaped() -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        num_hidden_layers=6,
        num_attention_heads=8,
        intermediate_size=2048,
        rotary_pct=0.25,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def mamba_130m_shaped() -> MambaForCausalLM:
    cfg = MambaConfig(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2)
    return MambaForCausalLM(cfg).eval()


def decode_seconds(model, prompt: torch.Tensor, new: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    elapsed = time.perf_counter() - start
    assert out.shape[1] == prompt.shape[1] + new
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens, 5 rounds")
    parser.add_argument("--new", type=int, default=None, help="new tokens per decode (default 64, quick 32)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7, quick 5)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadiest when other jobs share the CPU)"
    )
    args = parser.parse_args()
    new = args.new or (32 if args.quick else 64)
    rounds = args.rounds or (5 if args.quick else 7)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pythia, mamba = pythia_70m_shaped(), mamba_130m_shaped()
    hybrid = ManticoreForCausalLM.from_components([pythia, mamba], n_blocks=2).eval()
    hybrid.set_mixture([[0.7, 0.3], [0.2, 0.8]])
    discretized = hybrid.discretize().eval()
    hybrid_for_pruning = ManticoreForCausalLM.from_components([pythia, mamba], n_blocks=2)
    hybrid_for_pruning.set_mixture([[0.2, 0.8], [0.1, 0.9]])
    pruned = hybrid_for_pruning.prune(threshold=0.5).eval()
    assert pruned.config.component_names == [hybrid.config.component_names[1]]

    models = {
        "Pythia-70M-shaped": pythia,
        "Mamba-130M-shaped": mamba,
        "hybrid (2 blocks)": hybrid,
        "pruned to Mamba": pruned,
        "discretized (P|M)": discretized,
    }
    prompt = torch.randint(0, VOCAB, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    for model in models.values():  # warm-up: first calls pay for lazy imports and allocations
        decode_seconds(model, prompt, 4)

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in tqdm(range(rounds), desc="rounds"):
        for name, model in models.items():
            times[name].append(decode_seconds(model, prompt, new))
    med = {name: statistics.median(ts) for name, ts in times.items()}

    both = med["Pythia-70M-shaped"] + med["Mamba-130M-shaped"]
    ratios = {
        "hybrid (2 blocks)": (med["hybrid (2 blocks)"] / both, "sum of both", "<= 1.15"),
        "pruned to Mamba": (med["pruned to Mamba"] / med["Mamba-130M-shaped"], "Mamba alone", "<= 1.10"),
        "discretized (P|M)": (med["discretized (P|M)"] / both, "sum of both (runs half of each)", "-"),
    }
    print(
        f"\nGreedy decode, batch 1, prompt {args.prompt}, {new} new tokens, median of {rounds} rounds, "
        f"{args.threads} threads, fp32 CPU"
    )
    print("| model | params (M) | s / decode | tokens/s | ratio | vs | goal |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio, vs, goal = ratios.get(name, (None, "", ""))
        ratio_s = f"{ratio:.3f}" if ratio is not None else ""
        print(
            f"| {name} | {params:.1f} | {med[name]:.3f} | {new / med[name]:.1f} | {ratio_s} | {vs} | {goal} |"
        )


if __name__ == "__main__":
    main()
