"""MoReConfig: the PEFT config of Monarch Rectangular (MoRe) adapters."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME

from ._peft_type import ensure_peft_type


@dataclass
class MoReConfig(PeftConfig):
    """Configuration of a MoRe adapter ("MoRe Fine-Tuning with 10x Fewer Parameters", 2024):
    ``y = W x + b + scale * M x`` with a rectangular Monarch matrix ``M`` of two block-diagonal factors.

    Each adapted ``n -> m`` layer gets ``nblocks * block_rank * (n + m)`` trainable numbers (plus zero
    padding when ``nblocks`` does not divide ``n`` or ``m``), the count of LoRA at rank
    ``nblocks * block_rank``, but ``M`` can reach rank ``min(m, n, nblocks**2 * block_rank)``.
    ``nblocks=1`` is exactly LoRA at rank ``block_rank``.

    When ``nblocks`` does not divide ``n`` (or ``m``), inputs are zero-padded to ``k*p`` with
    ``p = ceil(n/k)``: the factors store ``k*r*(k*p + k*s)`` numbers (the padded rows never touch real data),
    and the last block holds only ``n - (k-1)*p`` real inputs. Since ``M = B P A`` with block-diagonal ``A``,
    ``rank(M) <= sum over blocks of min(real inputs, k*r)``, i.e.
    ``(k-1)*k*r + min(n - (k-1)*p, k*r)`` (likewise for outputs): the full ``min(m, n, k**2 * r)`` holds
    whenever the last block keeps at least ``k*r`` real rows (n=26, k=4: blocks 7,7,7,5 -> 16), and drops
    below when it does not (n=17, k=4, r=1: blocks 5,5,5,2 -> at most 14, not 16).

    Args:
        nblocks: number of blocks ``k`` in each factor (>= 1). The paper's default is 4.
        block_rank: rank ``r`` between every pair of blocks (>= 1); each block is ``k*r`` wide. The paper's
            ``blk_r=4`` with 4 blocks is ``block_rank=1``.
        target_modules: module names (list: exact name or suffix match; str: regex) to adapt, or
            ``"all-linear"``. ``None`` uses LoRA's default targets for known architectures.
        exclude_modules: module names or regex not to adapt.
        dropout: dropout probability inside the adapter (training only).
        dropout_position: ``"input"`` (default; as LoRA, ``M @ dropout(x)``) or ``"output"`` (as the MoRe
            reference code, ``dropout(M @ x)``). The default stays ``"input"`` so that adapters saved before
            this option existed train on exactly as before; pass ``"output"`` to follow the paper's code.
        scale: multiplier of the adapter's output (``alpha / (k*r)`` in LoRA's spirit).
        init_weights: ``True`` (default): ``blkdiag1`` Kaiming-uniform per block, ``blkdiag2`` zeros, so the
            adapted model starts equal to the base. ``False``: both random (tests, debugging).
        modules_to_save: other modules to train and save fully (e.g. a classifier head).
        layers_to_transform: restrict to some layer indices, as in LoRA.
        layers_pattern: name of the layer list, used with ``layers_to_transform`` (as in LoRA).

    Example:
        >>> import mad_models, peft
        >>> from mad_models.more import MoReConfig
        >>> cfg = MoReConfig(nblocks=4, block_rank=1, target_modules=["q_proj", "k_proj", "v_proj"])
        >>> # peft_model = peft.get_peft_model(base_model, cfg)
    """

    nblocks: int = field(default=4, metadata={"help": "Number of blocks k in each Monarch factor."})
    block_rank: int = field(
        default=1, metadata={"help": "Rank r between each pair of blocks (block width k*r)."}
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names or regex to adapt, or 'all-linear'."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or regex to exclude."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability inside the adapter."})
    dropout_position: str = field(
        default="input",
        metadata={
            "help": "'input' (as LoRA: M @ dropout(x)) or 'output' (as the reference: dropout(M @ x))."
        },
    )
    scale: float = field(default=1.0, metadata={"help": "Multiplier of the adapter output."})
    init_weights: bool = field(
        default=True,
        metadata={"help": "True: start equal to the base model (blkdiag2 = 0). False: random factors."},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules to train and save, e.g. a classifier head."}
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt these layer indices."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "Name of the layer list, used with layers_to_transform."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = ensure_peft_type()
        for name in ("nblocks", "block_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MoReConfig.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"MoReConfig.{name} must be >= 1, got {value}")
        for name in ("dropout", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"MoReConfig.{name} must be a number, got {value!r} ({type(value).__name__})")
        if self.dropout_position not in ("input", "output"):
            raise ValueError(
                f"MoReConfig.dropout_position must be 'input' or 'output', got {self.dropout_position!r}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"MoReConfig.dropout must be in [0, 1), got {self.dropout}")
        if not math.isfinite(float(self.scale)):
            raise ValueError(f"MoReConfig.scale must be a finite number, got {self.scale}")
        if not isinstance(self.init_weights, bool):
            raise TypeError(f"MoReConfig.init_weights must be True or False, got {self.init_weights!r}")
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            # as LoRA: a regex already says which layers; layers_to_transform would be silently ignored
            raise ValueError(
                "MoReConfig.layers_to_transform cannot be used when target_modules is a str (regex)"
            )
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ValueError("MoReConfig.layers_pattern cannot be used when target_modules is a str (regex)")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("MoReConfig.layers_pattern only makes sense together with layers_to_transform")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """Load the config as PEFT does, and check a local ``adapter_model.safetensors`` next to it.

        ``PeftModel.from_pretrained`` and ``load_adapter`` call this before reading the weights, so a
        truncated or corrupt file fails here with its path and sizes instead of deep inside safetensors, and
        a folder holding only a pickled ``adapter_model.bin`` is refused.
        """
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        folder = (
            os.path.join(pretrained_model_name_or_path, subfolder)
            if subfolder
            else pretrained_model_name_or_path
        )
        weights = os.path.join(folder, SAFETENSORS_WEIGHTS_NAME)
        if os.path.isfile(weights):
            check_safetensors_file(weights)
            from pathlib import Path

            from mad_models.validation import check_adapter_header, safetensors_header

            # factor shapes must fit nblocks / block_rank and weights be floats, before layers are built
            implied = {"peft_type": "MORE", "nblocks": config.nblocks, "block_rank": config.block_rank}
            check_adapter_header(implied, safetensors_header(Path(weights)), weights)
        elif os.path.isfile(pickle := os.path.join(folder, WEIGHTS_NAME)):
            raise ValueError(
                f"{pickle} is a pickle, which MoRe never loads (unpickling can run code from the file); "
                f"save the adapter with save_pretrained(safe_serialization=True), which writes "
                f"{SAFETENSORS_WEIGHTS_NAME}."
            )
        return config


def check_safetensors_file(path: str) -> None:
    """Raise ``ValueError`` if ``path`` is not a complete safetensors file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated or not a safetensors file: only {size} bytes")
        header_len = int.from_bytes(head, "little")
        if 8 + header_len > size:
            raise ValueError(
                f"{path} is truncated: its header claims {header_len} bytes, the file has only {size} bytes"
            )
        try:
            header = json.loads(f.read(header_len))
        except ValueError as err:
            raise ValueError(f"{path} is corrupt: its safetensors header is not valid JSON ({err})") from err
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise ValueError(
            f"{path} is truncated: it should be {expected} bytes for the tensors it lists, but it has "
            f"{size}. Save the adapter again (save_pretrained) or re-download it."
        )
