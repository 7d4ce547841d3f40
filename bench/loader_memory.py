"""Memory a bad checkpoint costs before it is refused: peak RSS growth per case, one table.

    PYTHONPATH=$PWD python bench/loader_memory.py                  # this checkout
    PYTHONPATH=/path/to/older/checkout python bench/loader_memory.py   # compare with another version

Each case is a tiny checkpoint whose config asks for far more than its weights hold (issue 12, hole 3). The
growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs before each case) is
what building the model cost before the error; Linux only.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

import mad_models  # noqa: F401
from hub_tools import pull
from mad_models.hybrid import ManticoreForCausalLM
from mad_models.more import MoReConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tiny import tiny_llama, tiny_mamba, tiny_neox  # noqa: E402


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(fn) -> tuple[float, str]:
    Path("/proc/self/clear_refs").write_text("5")
    before = peak_mb()
    try:
        fn()
        outcome = "loaded (no error)"
    except Exception as err:  # noqa: BLE001  (the table reports whatever was raised)
        outcome = type(err).__name__
    return peak_mb() - before, outcome


def edit(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def main() -> None:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="loader_memory_"))
    try:
        lora = root / "lora"
        get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(lora)
        edit(lora / "adapter_config.json", rank_pattern={"q_proj": 1_000_000})
        more = root / "more"
        get_peft_model(
            tiny_llama(), MoReConfig(nblocks=4, target_modules=["q_proj", "v_proj"])
        ).save_pretrained(more)
        edit(more / "adapter_config.json", block_rank=50_000)
        hybrid = root / "hybrid"
        ManticoreForCausalLM.from_components([tiny_neox(), tiny_mamba()], n_blocks=2).save_pretrained(hybrid)
        cfg = json.loads((hybrid / "config.json").read_text())
        cfg["vocab_size"] = 4_000_000
        for comp in cfg["components"]:
            comp["vocab_size"] = 4_000_000
        (hybrid / "config.json").write_text(json.dumps(cfg))
        base = tiny_llama()
        cases = [
            ("pull: LoRA rank_pattern q_proj=1e6, rank-4 file", lambda: pull(lora, base_model=base)),
            ("pull: MoRe block_rank=5e4, block_rank-1 file", lambda: pull(more, base_model=base)),
            ("PeftModel.from_pretrained: same MoRe dir", lambda: PeftModel.from_pretrained(base, more)),
            (
                "ManticoreForCausalLM.from_pretrained: 4M vocab",
                lambda: ManticoreForCausalLM.from_pretrained(hybrid),
            ),
            (
                "AutoModelForCausalLM.from_pretrained: 4M vocab",
                lambda: AutoModelForCausalLM.from_pretrained(hybrid),
            ),
        ]
        print("| case | peak RSS growth (MB) | outcome |\n|---|---:|---|")
        for name, fn in cases:
            grew, outcome = measure(fn)
            print(f"| {name} | {grew:.0f} | {outcome} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
