"""Device, precision and memory bound the app runs with (shown in the UI header)."""

from __future__ import annotations

import os
import sys
import threading
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


def keep_out_bitsandbytes(runtime: Runtime) -> bool:
    """Make bitsandbytes absent from this process when the app runs on CPU and will not quantize
    (``runtime.quant`` "none", as always on CPU); returns whether it did.

    peft and transformers import bitsandbytes whenever it is installed, only to offer quantized layers, and
    that import costs about 2 CPU-s (it wraps its kernels in ``torch.compile`` at import, which loads
    TorchInductor): a tenth of the first Compare on CPU. Marked absent before anything imports it, it is
    absent to them (``importlib.util.find_spec`` answers None, ``import`` raises ImportError), as on a
    machine without it. Call it before transformers or peft is imported; ``MAD_MODELS_BITSANDBYTES=1``
    keeps it (to Load a checkpoint saved quantized, which then loads as on any machine with it).

    Example:
        >>> keep_out_bitsandbytes(Runtime("cuda", None, "4bit", 1, 2**30))  # it quantizes: kept
        False
    """
    if runtime.quant != "none" or runtime.device != "cpu" or os.environ.get("MAD_MODELS_BITSANDBYTES") == "1":
        return False  # a GPU may Load a checkpoint saved quantized: bitsandbytes stays
    if "bitsandbytes" in sys.modules:  # already imported (or already kept out): nothing left to save
        return sys.modules["bitsandbytes"] is None
    if any(m in sys.modules for m in ("transformers", "peft", "accelerate")):
        return False  # they have already looked for it: a late change would leave them half-informed
    sys.modules["bitsandbytes"] = None
    return True


_STACK_LOCK = threading.Lock()
_stack_imported = False


def import_model_stack() -> None:
    """Import what loading or running a model needs (transformers, peft, mad_models' hybrid, MoRe and
    training parts, hub_tools) once, one thread at a time. Call it before any of them is first imported.

    The page is built without them (they are most of the start-up's CPU), so the first model use imports
    them, and two threads may do that at once: the start-up's warm-up and a visitor's first request. Python
    may then hand one thread a module the other is still running (so as not to deadlock), and
    mad_models' registrations with transformers and peft are half done: loading a hybrid failed with
    "cannot import name 'AutoConfig'" or "missing tensors". Behind this lock the second thread waits.
    """
    global _stack_imported
    if _stack_imported:
        return
    with _STACK_LOCK:
        if _stack_imported:
            return
        import peft  # noqa: F401
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        import hub_tools.pull  # noqa: F401
        import mad_models.cards  # noqa: F401
        import mad_models.fused_adapters  # noqa: F401
        import mad_models.hybrid.cost  # noqa: F401
        import mad_models.hybrid.prune  # noqa: F401
        import mad_models.more  # noqa: F401
        import mad_models.peft_saving  # noqa: F401
        import mad_models.training.exact_match  # noqa: F401
        import mad_models.validation  # noqa: F401

        _stack_imported = True


# transformers' from_pretrained swaps class-wide functions while it runs (PreTrainedModel.tie_weights becomes
# a no-op, torch.nn.init functions are patched): a model built meanwhile in another thread comes out untied
# (a hybrid's meta skeleton then "misses" its tied lm_head). The app builds one model at a time behind it.
BUILD_LOCK = threading.RLock()
