"""An LRU cache of loaded models with a memory bound, safe under Gradio's concurrent workers."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from app_backend.registry import Loaded, model_nbytes

ProgressFn = Callable[[float, str], None]


class ModelCache:
    """Keeps loaded models until their total size passes ``max_bytes``, then drops the least recently used.

    ``load(name, get)`` builds ``(model, tokenizer)`` or a ``Loaded``; ``get`` lets an adapter ask the
    cache for its base, so the base is loaded once and shared. An adapter's ``Loaded`` names its
    ``base`` and counts only its own weights (the base is counted once, under the base's name);
    evicting a base evicts its adapters with it, and an evicted adapter leaves its host. A model
    larger than the bound is still returned (the caller asked for it) but is evicted as soon as
    something else is loaded.

    Example:
        >>> cache = ModelCache(max_bytes=10**9, load=lambda name, get: (torch.nn.Linear(2, 2), None))
        >>> cache.get("a").name
        'a'
    """

    def __init__(self, max_bytes: int, load: Callable[[str, Callable[[str], Loaded]], tuple[Any, Any]]):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._load = load
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one lock per name: concurrent users load once
        self.hits = self.misses = self.evictions = 0

    def get(self, name: str, progress: ProgressFn | None = None) -> Loaded:
        with self._lock:
            if name in self._items:
                self._items.move_to_end(name)
                self.hits += 1
                return self._items[name]
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:
            with self._lock:  # another worker may have finished loading it while we waited
                if name in self._items:
                    self._touch(name)
                    self.hits += 1
                    return self._items[name]
            if progress is not None:
                progress(0.0, f"loading {name}")
            t0 = time.perf_counter()
            built = self._load(name, lambda base: self.get(base, progress))
            if isinstance(built, Loaded):
                item = built
                item.load_seconds = time.perf_counter() - t0
            else:
                model, tok = built
                item = Loaded(name, model, tok, model_nbytes(model), time.perf_counter() - t0)
            if progress is not None:
                progress(1.0, f"loaded {name} in {item.load_seconds:.1f} s")
            with self._lock:
                self.misses += 1
                self._items[name] = item
                self._evict(keep=name)
            return item

    def put(self, name: str, model: Any, tokenizer: Any) -> Loaded:
        """Add a model built elsewhere (the Load tab), under the same memory bound."""
        item = Loaded(name, model, tokenizer, model_nbytes(model), 0.0)
        with self._lock:
            self._items[name] = item
            self._items.move_to_end(name)
            self._evict(keep=name)
        return item

    def _touch(self, name: str) -> None:
        self._items.move_to_end(name)
        base = self._items[name].base
        if base in self._items:  # using an adapter uses its base
            self._items.move_to_end(base)

    def _evict(self, keep: str) -> None:
        keep_base = self._items[keep].base if keep in self._items else None
        while self.total_bytes > self.max_bytes and len(self._items) > 1:
            victim = next((n for n in self._items if n not in (keep, keep_base)), None)
            if victim is None:
                return
            self._drop(victim)

    def _drop(self, name: str) -> None:
        item = self._items.pop(name)
        self.evictions += 1
        if item.host is not None and item.adapter is not None:
            item.host.remove(item.adapter)
        for dependent in [n for n, it in self._items.items() if it.base == name]:
            self._drop(dependent)

    def discard(self, name: str) -> None:
        """Forget ``name`` (and its adapters, for a base) now."""
        with self._lock:
            if name in self._items:
                self._drop(name)

    @property
    def total_bytes(self) -> int:
        return sum(i.nbytes for i in self._items.values())

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "loaded": list(self._items),
                "bytes": self.total_bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
