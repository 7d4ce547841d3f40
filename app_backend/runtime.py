"""Device, precision and memory bound the app runs with (shown in the UI header)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

QUANT_CHOICES = ("none", "4bit", "8bit")


@dataclass
class Runtime:
    device: str
    dtype: Any  # torch.dtype
    quant: str  # "none" | "4bit" | "8bit" (CUDA only: bitsandbytes)
    threads: int
    cache_bytes: int

    def describe(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        q = "" if self.quant == "none" else f" · base quantized {self.quant} (bitsandbytes)"
        return (
            f"**Device:** {self.device} · **precision:** {dtype}{q} · **torch threads:** {self.threads} · "
            f"**model cache:** {self.cache_bytes / 2**20:.0f} MiB (LRU)"
        )


def pick_runtime() -> Runtime:
    """CUDA with bf16 when present (optionally a 4/8-bit base via $MAD_MODELS_QUANT), CPU fp32 otherwise.

    $MAD_MODELS_DEVICE forces a device; $MAD_MODELS_CACHE_MB sets the cache bound (default 3000);
    $MAD_MODELS_THREADS sets torch's CPU threads (1 is faster for tiny models on a busy machine).

    Example:
        >>> pick_runtime().device in ("cpu", "cuda")
        True
    """
    import torch

    from mad_models.loading import pick_device

    dev, dtype, _ = pick_device(
        os.environ.get("MAD_MODELS_DEVICE") or None
    )  # bf16 (fp16 if unsupported) on GPU
    device = dev.type
    quant = os.environ.get("MAD_MODELS_QUANT", "none")
    if quant not in QUANT_CHOICES:
        raise ValueError(f"MAD_MODELS_QUANT must be one of {QUANT_CHOICES}, got {quant!r}")
    if device == "cpu":
        quant = "none"  # bitsandbytes on CPU is slower than fp32 here; quantization is a GPU memory saver
    cache_mb = int(os.environ.get("MAD_MODELS_CACHE_MB", "3000"))
    if os.environ.get("MAD_MODELS_THREADS"):
        torch.set_num_threads(int(os.environ["MAD_MODELS_THREADS"]))
    return Runtime(device, dtype, quant, torch.get_num_threads(), cache_mb * 2**20)
