"""MAD's compression task as an auto-encoder around any causal LM (hybrids included).

The wrapped model reads the sequence, whose last token is the compression token; its final hidden
state at that one position (B, D) is the code. A small decoder (MAD-lab's: RMSNorm, Linear, GELU,
RMSNorm, Linear, GELU, then RMSNorm + Linear to the vocabulary) rebuilds every token from the code
plus a fixed sin-cos position embedding. Nothing else of the sequence reaches the decoder, so a
model that only copies its input (a causal LM solving next-token copy) scores at chance.

The final hidden state is read at the input of the model's output embedding (its LM head), so this
works for any model with ``get_output_embeddings()``: transformers causal LMs and Manticore hybrids.

Example:
    >>> from mad_models.training import build_model
    >>> lm = build_model("gpt_neox", vocab_size=16, width=64)
    >>> ae = CompressionAutoEncoder(lm, vocab_size=16, max_len=32)
    >>> x, y = make_task("compression", split="test", num_examples=4)
    >>> ae(input_ids=x).logits.shape
    torch.Size([4, 32, 16])
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from transformers.modeling_outputs import CausalLMOutput

from mad_models.mad.tasks import make_task  # noqa: F401  (doctest)

DECODER_FILE = "compression_decoder.safetensors"
DECODER_CONFIG = "compression_decoder.json"


def sincos_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sin-cos position embeddings (MAD-lab's decoder positions)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    half = dim // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(1, half - 1))
    emb = torch.zeros(length, dim)
    emb[:, :half] = torch.sin(pos * freq)
    emb[:, half : 2 * half] = torch.cos(pos * freq)
    return emb


class CompressionDecoder(nn.Module):
    """(B, D) code -> (B, T, V) logits, one per position, from the code and the position only."""

    def __init__(self, hidden_size: int, vocab_size: int, max_len: int):
        super().__init__()
        d = hidden_size
        self.hidden_size, self.vocab_size, self.max_len = d, vocab_size, max_len
        self.register_buffer("positions", sincos_positions(max_len, d), persistent=False)
        self.mlp = nn.Sequential(
            nn.RMSNorm(d), nn.Linear(d, d), nn.GELU(), nn.RMSNorm(d), nn.Linear(d, d), nn.GELU()
        )
        self.unembed = nn.Sequential(nn.RMSNorm(d), nn.Linear(d, vocab_size))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, code: torch.Tensor, length: int) -> torch.Tensor:
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the decoder's max_len {self.max_len}")
        x = code.unsqueeze(1) + self.positions[:length].to(code)  # (B, T, D)
        return self.unembed(self.mlp(x))


class CompressionAutoEncoder(nn.Module):
    """Encoder = ``model`` (its hidden state at the last position), decoder = ``CompressionDecoder``.

    ``forward(input_ids)`` returns an output with ``.logits`` (B, T, V): position t is the decoder's
    guess of token t, so score them against ``make_task("compression")``'s targets directly.
    """

    has_unused_parameters = True  # the wrapped LM's head is skipped (its input is read by a hook)

    def __init__(
        self, model: nn.Module, vocab_size: int, max_len: int = 1024, hidden_size: int | None = None
    ):
        super().__init__()
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise TypeError(f"{type(model).__name__} has no output embeddings to read its hidden state from")
        if hidden_size is None:
            hidden_size = getattr(getattr(model, "config", None), "hidden_size", None) or head.in_features
        self.model = model
        self.decoder = CompressionDecoder(hidden_size, vocab_size, max_len)
        self._captured: list[torch.Tensor] = []
        self._hook = head.register_forward_pre_hook(self._capture)

    def _capture(self, module, args) -> None:
        if not self._captured:  # a hybrid may call several heads on the same hidden state
            self._captured.append(args[0])

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, D) final hidden state at the last (compression) position."""
        self._captured.clear()
        try:
            self.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
            if not self._captured:
                raise RuntimeError("the model's LM head was not called; cannot read its hidden state")
            h = self._captured[0][:, -1]  # (B, d)
        finally:
            self._captured.clear()
        d = self.decoder.hidden_size
        if h.shape[-1] < d:  # a hybrid head may read a narrower slice of the shared state
            h = nn.functional.pad(h, (0, d - h.shape[-1]))
        return h.float() if h.dtype != self.decoder.unembed[1].weight.dtype else h

    def forward(self, input_ids: torch.Tensor, **kwargs) -> CausalLMOutput:
        # here: importing transformers at module level would load it (and the hybrid registration it
        # triggers) for every user of mad_models.mad, the app's page among them
        from transformers.modeling_outputs import CausalLMOutput

        code = self.encode(input_ids)
        return CausalLMOutput(logits=self.decoder(code, input_ids.shape[1]))

    def save_pretrained(self, path: str | Path) -> None:
        """The encoder with its own ``save_pretrained``, the decoder next to it (safetensors + JSON)."""
        from mad_models.loading import save_pretrained

        path = Path(path)
        save_pretrained(self.model, path)
        save_file({k: v.contiguous() for k, v in self.decoder.state_dict().items()}, path / DECODER_FILE)
        cfg = {"hidden_size": self.decoder.hidden_size, "vocab_size": self.decoder.vocab_size}
        (path / DECODER_CONFIG).write_text(json.dumps({**cfg, "max_len": self.decoder.max_len}))

    @classmethod
    def from_pretrained(cls, path: str | Path, model: nn.Module | None = None) -> CompressionAutoEncoder:
        """Load what ``save_pretrained`` wrote (``model``: the encoder if already loaded)."""
        path = Path(path)
        if not (path / DECODER_CONFIG).is_file() or not (path / DECODER_FILE).is_file():
            raise FileNotFoundError(f"{path} has no compression decoder ({DECODER_FILE})")
        cfg = json.loads((path / DECODER_CONFIG).read_text())
        for k in ("hidden_size", "vocab_size", "max_len"):
            if not isinstance(cfg.get(k), int) or not 0 < cfg[k] <= 1 << 20:
                raise ValueError(f"{path / DECODER_CONFIG}: {k} must be a positive int, got {cfg.get(k)!r}")
        if model is None:
            from transformers import AutoModelForCausalLM

            import mad_models  # noqa: F401  (registers manticore)

            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
        ae = cls(model, cfg["vocab_size"], cfg["max_len"], cfg["hidden_size"])
        ae.decoder.load_state_dict(load_file(path / DECODER_FILE))
        return ae


def for_task(model: nn.Module, task: str, vocab_size: int, max_len: int = 1024) -> nn.Module:
    """``model`` itself, or wrapped in a ``CompressionAutoEncoder`` when ``task`` is compression."""
    if task != "compression" or isinstance(model, CompressionAutoEncoder):
        return model
    return CompressionAutoEncoder(model, vocab_size, max_len)
