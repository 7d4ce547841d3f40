"""One base model in memory for every adapter on it, and mixed-adapter batches over it.

An :class:`AdapterHost` holds a module tree whose parameters *are* the base model's (no tensor copied);
each adapter is injected into that tree under its own name with ``peft.inject_adapter_in_model``, so
base + N adapters costs the base once plus the adapters' own weights. PEFT allows one adapter type per
``PeftModel``, but its layers nest (as ``PeftMixedModel`` does), so MoRe and LoRA adapters live in the
same tree and mix in one batch: row ``i`` runs adapter ``adapter_names[i]`` (``"__base__"``: none).

The adapter names reach the layers through a hook that reads a thread-local, not through per-call hooks
as ``PeftModel.generate(adapter_names=...)`` installs: two users generating on one host at the same time
each keep their own rows. With names set, the host's layers run a fused mixed-adapter forward
(:mod:`mad_models.fused_adapters`: the base once over all rows, every named adapter in one stacked product)
instead of PEFT's per-adapter loop; cases it does not cover take PEFT's own path.

Example:
    >>> host = AdapterHost(base_model)
    >>> aid = host.add(pull("me/more-adapter", base_model=sharing_copy(base_model)))
    >>> with host.reading(), adapter_rows(["__base__", aid]):
    ...     logits = host.model(input_ids=ids).logits  # row 0: the base, row 1: the adapter
"""

from __future__ import annotations

import copy
import itertools
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_ROWS = threading.local()


def _rows_pre_hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    names = getattr(_ROWS, "names", None)
    if names is not None:
        kwargs["adapter_names"] = names
    return args, kwargs


@contextmanager
def adapter_rows(names: Sequence[str]) -> Iterator[None]:
    """In this thread, every forward through a host's PEFT layers runs row ``i`` with ``names[i]``."""
    previous = getattr(_ROWS, "names", None)
    _ROWS.names = list(names)
    try:
        yield
    finally:
        _ROWS.names = previous


def sharing_copy(model: Any) -> Any:
    """A new module tree over the same parameters and buffers: changing modules in it (injecting adapter
    layers) leaves ``model`` as it is, and no weight is copied."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    for module in model.modules():
        # bitsandbytes 8-bit layers keep their int8 weight in a state object (moved there from the
        # weight on the first forward): the copy must share that object too, or it loses the weight
        state = getattr(module, "state", None)
        if state is not None and type(state).__name__ == "MatmulLtState":
            memo[id(state)] = state
    return copy.deepcopy(model, memo)


def _tuner_layers(model: Any) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


class _ReadWriteLock:
    """Many generations at once (readers); adding or removing an adapter (writer) waits for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class AdapterHost:
    """The adapters of one base model, injected by name into one tree that shares the base's weights."""

    def __init__(self, base_model: Any):
        self.model = sharing_copy(base_model).eval()
        self.adapters: dict[str, int] = {}  # adapter id -> bytes of its own weights
        self._ids = itertools.count()
        self._hooked: set[int] = set()
        self._lock = _ReadWriteLock()

    def add(self, peft_model: Any, adapter: str = "default") -> str:
        """Copy adapter ``adapter`` of ``peft_model`` (built on a :func:`sharing_copy` of the base) into
        this host; returns its id here. The caller drops ``peft_model`` afterwards."""
        from peft import inject_adapter_in_model
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

        from mad_models import fused_adapters
        from mad_models.peft_saving import embedding_targeted

        config = copy.deepcopy(peft_model.peft_config[adapter])
        config.inference_mode = True
        # an explicit answer: PEFT's "auto" would look the base's config up on the Hub
        embeddings = embedding_targeted(config, peft_model)
        state = get_peft_model_state_dict(peft_model, adapter_name=adapter, save_embedding_layers=embeddings)
        aid = f"a{next(self._ids)}"  # display names hold '.', '/', ':' which module names cannot
        with self._lock.write(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*peft_config.*")  # several adapters: on purpose
            inject_adapter_in_model(config, self.model, adapter_name=aid)
            result = set_peft_model_state_dict(self.model, state, adapter_name=aid)
            if result.unexpected_keys:
                self._delete(aid)
                raise ValueError(f"adapter tensors without a place in the base: {result.unexpected_keys[:3]}")
            for layer in _tuner_layers(self.model):
                layer.set_adapter([], inference_mode=True)  # without rows the tree is the base model itself
                if id(layer) not in self._hooked:
                    layer.register_forward_pre_hook(_rows_pre_hook, with_kwargs=True)
                    self._hooked.add(id(layer))
                fused_adapters.install(layer)  # mixed rows: one fused forward per stack of adapter layers
                fused_adapters.reset(layer)
            self.model.eval()
        self.adapters[aid] = sum(t.numel() * t.element_size() for t in state.values())
        return aid

    def view(self, aid: str) -> Any:
        """A model that is the base plus adapter ``aid`` alone, for code that calls ``model(...)``
        directly; it shares every tensor with the host."""
        with self._lock.read():
            if aid not in self.adapters:
                raise KeyError(f"adapter {aid} is no longer on this host (evicted): load it again")
            model = sharing_copy(self.model)
        for layer in _tuner_layers(model):
            layer.set_adapter([aid], inference_mode=True)
        return model.eval()

    def remove(self, aid: str) -> None:
        with self._lock.write():
            self._delete(aid)

    def _delete(self, aid: str) -> None:
        from mad_models import fused_adapters

        for layer in _tuner_layers(self.model):
            layer.delete_adapter(aid)
            layer.set_adapter([], inference_mode=True)
            fused_adapters.reset(layer)
        self.adapters.pop(aid, None)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold while generating: adapters are not added or removed meanwhile."""
        with self._lock.read():
            yield
