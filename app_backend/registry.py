"""Which models the app can show: read from ``<assets>/registry.json``, loaded on demand.

The registry is plain JSON so that the asset build, the tests (tiny models in a tmp dir) and the
Load tab can all add entries without touching the app::

    {"models": [
      {"name": "mad/attention", "kind": "causal_lm", "path": "mad/attention", "group": "mad"},
      {"name": "SmolLM2-135M-Instruct", "kind": "smollm2", "group": "language"},
      {"name": "SmolLM2 + MoRe", "kind": "adapter", "path": "language/more",
       "base": "SmolLM2-135M-Instruct", "group": "language"}
    ]}

Kinds: ``causal_lm`` (any safetensors checkpoint AutoModelForCausalLM reads, hybrids included),
``adapter`` (a PEFT adapter dir; injected by name into its base's shared module tree, never merged
into a copy), ``smollm2`` (SmolLM2-135M-Instruct through ``mad_models.loading``). The one loader for
registry entries and Load-tab models is ``AppService._load`` (through ``hub_tools.pull``).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("causal_lm", "adapter", "smollm2")
DEFAULT_ASSETS = Path(__file__).resolve().parents[1] / "assets"


class AppInputError(ValueError):
    """Bad input from a user of the app: the message is shown in the UI as is."""


class IncompatibleModelError(AppInputError):
    """A model or adapter the app cannot run (wrong base, unsupported architecture, ...)."""


@dataclass
class ModelEntry:
    name: str
    kind: str
    path: Path | None = None
    group: str = "mad"
    base: str | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"registry entry {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "adapter" and not self.base:
            raise ValueError(f"registry entry {self.name!r}: an adapter needs a 'base' entry name")
        if self.kind in ("causal_lm", "adapter") and self.path is None:
            raise ValueError(f"registry entry {self.name!r}: kind {self.kind!r} needs a 'path'")

    @property
    def config(self) -> dict[str, Any]:
        """The checkpoint's config.json (adapter_config.json for adapters), read without torch."""
        if self.path is None:
            return {}
        for fname in ("config.json", "adapter_config.json"):
            f = self.path / fname
            if f.is_file():
                return json.loads(f.read_text())
        return {}

    @property
    def is_hybrid(self) -> bool:
        return self.kind == "causal_lm" and self.config.get("model_type") == "manticore"

    @property
    def adapter_type(self) -> str | None:
        return self.config.get("peft_type") if self.kind == "adapter" else None

    @property
    def has_tokenizer(self) -> bool:
        """Models without a tokenizer (the MAD set) take prompts as token ids."""
        if self.kind == "smollm2":
            return True
        if self.path is not None and (self.path / "tokenizer.json").is_file():
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


@dataclass
class Registry:
    """Named model entries in display order; ``root`` is the asset dir they were read from."""

    root: Path
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    problem: str | None = None  # why nothing (or not everything) could be read, for the UI

    @classmethod
    def from_dir(cls, root: str | Path | None = None) -> Registry:
        """Read ``root/registry.json`` (root defaults to $MAD_MODELS_ASSETS, then ./assets).

        A missing or unreadable registry gives an empty registry with ``problem`` set, never an
        exception: the app must start and say what is missing.

        Example:
            >>> reg = Registry.from_dir("/nonexistent")
            >>> reg.problem.startswith("No demo assets")
            True
        """
        root = Path(root or os.environ.get("MAD_MODELS_ASSETS") or DEFAULT_ASSETS).resolve()
        reg = cls(root=root)
        index = root / "registry.json"
        if not index.is_file():
            reg.problem = (
                f"No demo assets in {root} (no registry.json). "
                "Build them with `python -m build_assets build`."
            )
            return reg
        try:
            raw = json.loads(index.read_text())
            for item in raw["models"]:
                item = dict(item)
                if item.get("path") is not None:
                    p = Path(item["path"])
                    item["path"] = p if p.is_absolute() else root / p
                reg.add(ModelEntry(**item))
        except (OSError, KeyError, TypeError, ValueError) as e:
            reg.problem = f"{index} is not a valid model registry: {e}"
            return reg
        missing = [e.name for e in reg.entries.values() if e.path is not None and not e.path.exists()]
        if missing:
            reg.problem = f"Registered but missing on disk (rebuild the assets): {', '.join(missing)}"
            for name in missing:
                del reg.entries[name]
        return reg

    def add(self, entry: ModelEntry) -> None:
        if entry.kind == "adapter" and entry.base not in self.entries:
            raise ValueError(
                f"adapter {entry.name!r} names base {entry.base!r}, which is not registered first"
            )
        self.entries[entry.name] = entry

    def names(self, group: str | None = None, hybrids_only: bool = False) -> list[str]:
        return [
            n
            for n, e in self.entries.items()
            if (group is None or e.group == group) and (not hybrids_only or e.is_hybrid)
        ]

    def adapters(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.kind == "adapter"]

    def __getitem__(self, name: str) -> ModelEntry:
        if name not in self.entries:
            known = ", ".join(self.entries) or "none (no assets)"
            raise AppInputError(f"Unknown model {name!r}. Known models: {known}.")
        return self.entries[name]


@dataclass
class Loaded:
    """A model ready for inference, with its tokenizer (None for token-id models).

    An adapter's ``model`` (the base with that adapter alone, sharing the host's tensors: ``host.view``) is
    built when first asked for, not at load: Compare runs adapters as rows of their host's tree and never
    needs it, and each view copies the host's module tree (about 0.3 CPU-s for SmolLM2)."""

    name: str
    model: Any  # None for an adapter: built from ``host`` on first use
    tokenizer: Any
    nbytes: int  # what this entry adds to memory: an adapter's own weights, not its base's
    load_seconds: float
    base: str | None = None  # an adapter's base entry
    host: Any = None  # AdapterHost: the base's shared tree (on the base entry, and on each adapter)
    adapter: str | None = None  # the adapter's id in ``host``

    @property
    def config(self) -> Any:
        """The model's config, without building an adapter's view (an adapter's is its base's)."""
        if self.host is not None and self.adapter is not None:
            return self.host.model.config
        return self.model.config


_VIEW_LOCK = threading.Lock()


def _get_model(item: Loaded) -> Any:
    if item.__dict__.get("_model") is None and item.host is not None and item.adapter is not None:
        with _VIEW_LOCK:  # two workers asking at once build one view
            if item.__dict__.get("_model") is None:
                item.__dict__["_model"] = item.host.view(item.adapter)
    return item.__dict__.get("_model")


def _set_model(item: Loaded, model: Any) -> None:
    item.__dict__["_model"] = model


# set after @dataclass, which keeps ``model`` an ordinary field: its __init__ stores it through the setter
Loaded.model = property(_get_model, _set_model)


def model_nbytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total
