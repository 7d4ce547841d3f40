"""The app's service: loading (one loader for registry entries and Load-tab models alike), browser
sessions, and the model cache. What each tab computes lives in ``app_backend/tabs/``; the methods
named after a tab (``compare``, ``adapter_sizes``, ``mixture``, ``mad_skills``, ``load``) hand over to it.

Every method raises ``AppInputError`` (a ValueError) with a message meant for the user on bad input;
app.py turns those into ``gr.Error`` so the UI shows the message, never a stack trace.

Example:
    >>> svc = AppService(Registry.from_dir("assets"))
    >>> for cols in svc.compare("3 1 4", ["mad/attention"], max_new_tokens=8):
    ...     pass
    >>> cols[0]["text"], cols[0]["stats"]
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from app_backend.cache import ModelCache, ProgressFn
from app_backend.registry import (
    AppInputError,
    IncompatibleModelError,
    Loaded,
    ModelEntry,
    Registry,
    model_nbytes,
)
from app_backend.runtime import BUILD_LOCK, Runtime, import_model_stack, pick_runtime
from app_backend.shared import AdapterHost, sharing_copy
from app_backend.tabs import compare as compare_tab
from app_backend.tabs import hybrids as hybrids_tab
from app_backend.tabs import load as load_tab
from app_backend.tabs import mad as mad_tab
from app_backend.tabs import sizes as sizes_tab

log = logging.getLogger("mad-models-app")
MAX_COMPARE = compare_tab.MAX_COMPARE  # output columns on the Compare tab
MAX_LOADED_PER_SESSION = int(os.environ.get("MAD_MODELS_MAX_LOADED", "3"))  # Load tab, per browser session


# The browser session a UI handler is serving (see AppService.session_scope); None outside the UI.
_ACTIVE_SESSION: ContextVar[str | None] = ContextVar("app_session", default=None)


class AppService:
    def __init__(
        self,
        registry: Registry,
        runtime: Runtime | None = None,
        public: bool = False,
        max_loaded_per_session: int = MAX_LOADED_PER_SESSION,
    ):
        self.registry = registry
        self.runtime = runtime or pick_runtime()
        self.public = public  # a public Space: Load takes Hub ids only
        self.max_loaded_per_session = max_loaded_per_session
        self.cache = ModelCache(self.runtime.cache_bytes, self._load)
        # Load tab: cache key -> how to build it again after eviction; session -> {display name: key}
        self.pulled: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, str]] = {}
        self.session_visitor: dict[str, str] = {}  # public Space: session -> visitor (app_backend.visitors)
        self.reports: dict[str, Any] = {}  # adapter name -> AdapterReport (exact, computed once)
        self.lock = threading.Lock()  # guards pulled, sessions, reports and each base's adapter host

    # ---------------------------------------------------------------- loading (one loader for all)
    def _spec(self, key: str) -> dict[str, Any]:
        """How to build cache entry ``key``: a registry entry or something loaded through Load."""
        if key in self.pulled:
            return self.pulled[key]
        entry = self.registry[key]  # raises the "unknown model" message
        if entry.kind == "smollm2":
            return {"kind": "smollm2"}
        return {"source": str(entry.path), "revision": None, "base": entry.base, "name": entry.name}

    def _load(self, key: str, get_base: Callable[[str], Loaded]) -> Loaded:
        """Build one model for the cache: registry entries and Load-tab models alike, through
        ``hub_tools.pull`` (safetensors only, no remote code). An adapter is injected by name into its
        base's shared tree (an ``AdapterHost``), never merged into a copy."""
        import_model_stack()  # the page was built without it; the first load imports it, in one thread
        spec = self._spec(key)
        rt = self.runtime
        if spec.get("kind") == "smollm2":
            from mad_models.loading import load_smollm2

            with BUILD_LOCK:
                if rt.quant != "none":
                    model, tok = load_smollm2(device=rt.device, quantization=rt.quant)
                else:  # in pick_device's dtype; GGUF refuses .to(dtype)
                    model, tok = load_smollm2(device=rt.device)
            return Loaded(key, model.eval(), tok, model_nbytes(model), 0.0)
        base = get_base(spec["base"]) if spec.get("base") else None  # not under BUILD_LOCK: it may wait
        # what a visitor asked for through Load is untrusted; the registry's own models are not
        untrusted = key in self.pulled
        with BUILD_LOCK:
            model = self._pull(spec["source"], spec.get("revision"), base, spec.get("name", key), untrusted)
        if hasattr(model, "peft_config"):  # an adapter
            if base is None:
                raise AppInputError(f"{spec['source']} is an adapter: pick the base model it was trained on.")
            host = self._host(base)
            try:
                aid = host.add(model)
            except (RuntimeError, ValueError, KeyError) as e:
                raise IncompatibleModelError(
                    f"{spec.get('name', key)}: the adapter does not fit base {spec['base']!r}: {e}"
                ) from e
            del model  # its view (the base with this adapter alone) is built on first use: Loaded.model
            return Loaded(key, None, base.tokenizer, host.adapters[aid], 0.0, spec["base"], host, aid)
        # a whole model (hybrids included): its own tokenizer or none, never the base's
        tok = _local_tokenizer(spec["source"])
        model = model.to(rt.device).eval()
        return Loaded(key, model, tok, model_nbytes(model), 0.0)

    def _host(self, base: Loaded) -> AdapterHost:
        with self.lock:
            if base.host is None:
                base.host = AdapterHost(base.model)
            return base.host

    def _pull(
        self, source: str, revision: str | None, base: Loaded | None, name: str, untrusted: bool = False
    ) -> Any:
        from hub_tools import pull

        with contextlib.ExitStack() as stack:
            public = {}
            if self.public and untrusted:  # nothing of the Space's lent; only what is needed, not kept
                cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="mad-models-pull-"))
                public = dict(load_tab.PUBLIC_PULL, cache_dir=cache)
            try:
                return pull(
                    source,
                    revision=revision or None,
                    base_model=sharing_copy(base.model) if base is not None else None,
                    dtype=self.runtime.dtype,
                    **public,
                )
            except AppInputError:
                raise
            except Exception as e:  # hub_tools raises errors that name the repo and what to do
                raise IncompatibleModelError(_hub_message(name, base.name if base else None, e)) from e

    def get(self, name: str, progress: ProgressFn | None = None, session: str | None = None) -> Loaded:
        """The loaded model ``name``: a registry entry, or one this session loaded through Load."""
        return self.cache.get(self._key(name, session), progress)

    @staticmethod
    @contextmanager
    def session_scope(session: str | None) -> Iterator[None]:
        """Within this block, calls that pass no ``session`` act for ``session`` (a browser session's hash):
        a UI handler wraps its work in it, so a name resolves to this session's loads and never another's."""
        token = _ACTIVE_SESSION.set(session)
        try:
            yield
        finally:
            _ACTIVE_SESSION.reset(token)

    def _key(self, name: str, session: str | None) -> str:
        session = session if session is not None else _ACTIVE_SESSION.get()
        loaded = self.sessions.get(session or "", {})
        if name in loaded:
            return loaded[name]
        if name in self.registry.entries:
            return name
        if session is None:  # in-process callers (tests, benches) outside any session_scope
            for own in self.sessions.values():
                if name in own:
                    return own[name]
            if name in self.pulled:
                return name
        self.registry[name]  # raises the "unknown model" message
        return name

    def model_names(self, session: str | None = None) -> list[str]:
        own = self.sessions.get(session or "", {}) if session is not None else dict.fromkeys(self.pulled)
        return list(self.registry.entries) + [n for n in own if n not in self.registry.entries]

    def warm(self) -> None:
        """Load what the Compare tab picks by default (the first language base and its adapters, which
        only add their own weights to the shared base), in the background at start-up."""
        language = self.registry.names(group="language") or self.registry.names()
        for name in language[:4]:
            try:
                item = self.get(name)
                if item.adapter is None and self.registry.entries[name].kind != "adapter":
                    self._host(item)  # the shared tree its adapters go into
            except Exception as e:  # the first Compare will say what is wrong, in its column
                log.warning("warming %s failed: %s", name, e)
        log.info("warm: %s loaded", ", ".join(language[:4]))

    def cache_line(self, session: str | None = None) -> str:
        """What the cache holds, naming only registry models and this session's own loads (no paths)."""
        st = self.cache.stats()
        own = {k: n for n, k in self.sessions.get(session or "", {}).items()}
        shown = [own.get(k, k) for k in st["loaded"] if k in self.registry.entries or k in own]
        others = len(st["loaded"]) - len(shown)
        more = f" and {others} loaded by other sessions" if others else ""
        return (
            f"Model cache: {', '.join(shown) or 'none of yours'}{more} · {st['bytes'] / 2**20:,.0f} of "
            f"{st['max_bytes'] / 2**20:,.0f} MiB (shared bases counted once) · {st['evictions']} evictions"
        )

    def hybrid_names(self, session: str | None = None) -> list[str]:
        own = self.sessions.get(session or "", {})
        return self.registry.names(hybrids_only=True) + [
            n for n, key in own.items() if self.pulled.get(key, {}).get("hybrid")
        ]

    def forget_session(self, session: str | None) -> None:
        """A browser session ended: drop what it loaded (unless another session uses it too)."""
        own = self.sessions.pop(session or "", {})
        self.session_visitor.pop(session or "", None)
        still = {k for s in self.sessions.values() for k in s.values()}
        for key in set(own.values()) - still:
            self.cache.discard(key)
            with self.lock:
                self.pulled.pop(key, None)

    # ---------------------------------------------------------------- the tabs (logic in app_backend/tabs/)
    def compare(self, *args: Any, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
        """Compare outputs: :func:`app_backend.tabs.compare.compare` on this service."""
        return compare_tab.compare(self, *args, **kwargs)

    def adapter_report(self, name: str, progress: ProgressFn | None = None) -> Any:
        """Adapter sizes: :func:`app_backend.tabs.sizes.adapter_report` on this service."""
        return sizes_tab.adapter_report(self, name, progress)

    def adapter_sizes(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Adapter sizes: :func:`app_backend.tabs.sizes.adapter_sizes` on this service."""
        return sizes_tab.adapter_sizes(self, progress)

    def mixture(
        self, name: str, threshold: float = 0.25, progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        """Hybrid mixtures: :func:`app_backend.tabs.hybrids.mixture` on this service."""
        return hybrids_tab.mixture(self, name, threshold, progress)

    def mad_names(self) -> list[str]:
        """MAD skills: :func:`app_backend.tabs.mad.mad_names` on this service."""
        return mad_tab.mad_names(self)

    def mad_tasks(self) -> list[str]:
        """MAD skills: :func:`app_backend.tabs.mad.mad_tasks` on this service."""
        return mad_tab.mad_tasks(self)

    def mad_skills(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """MAD skills: :func:`app_backend.tabs.mad.mad_skills` on this service."""
        return mad_tab.mad_skills(self, *args, **kwargs)

    def load(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Load: :func:`app_backend.tabs.load.load` on this service (this browser session's models)."""
        return load_tab.load(self, *args, **kwargs)

    def unload(self, name: str, session: str | None = None) -> str:
        """Load: :func:`app_backend.tabs.load.unload` on this service."""
        return load_tab.unload(self, name, session)

    def loaded_names(self, session: str | None = None) -> list[str]:
        """What this browser session loaded through the Load tab, in load order."""
        return list(self.sessions.get(session or "", {}))


def _local_tokenizer(source: str) -> Any:
    """The tokenizer saved next to a local model, loaded without remote code; None if there is none."""
    from mad_models.loading import load_tokenizer

    folder = Path(source)
    if not folder.is_dir():
        return None
    try:
        return load_tokenizer(folder)
    except (ValueError, OSError, KeyError) as e:
        raise IncompatibleModelError(
            f"{folder.name}: its tokenizer cannot be loaded without running its own code ({_first(e)})."
        ) from e


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__


def _hub_message(source: str, base: str | None, e: Exception) -> str:
    """One line for a failed pull: what does not fit and why, cut at a word, without server paths."""
    from app_backend.results import clip
    from hub_tools import HubError

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"'/[^']*'|\"/[^\"]*\"", "the folder", text)  # a local path never reaches the page
    missing = re.search(r"Target modules? (\{[^}]*\}|\[[^\]]*\]|\S+) not found", str(e))
    if base and missing:
        targets = ", ".join(sorted(re.findall(r"'([^']+)'", missing.group(1)))) or missing.group(1)
        return (
            f"{source} does not fit base {base!r}: the base has none of the adapter's target modules "
            f"({targets}): it was trained on another kind of model; pick the base it was trained on."
        )
    if base and ("size mismatch" in str(e) or "do not fit" in text or "does not fit" in text):
        return f"{source} does not fit base {base!r}: its tensor names or shapes differ ({clip(text, 200)})."
    if isinstance(e, HubError):
        return clip(text, 400)
    if "bitsandbytes" in text and sys.modules.get("bitsandbytes", False) is None:  # kept out on CPU
        return (
            f"Cannot load {source}: it was saved quantized with bitsandbytes, which this CPU app keeps out "
            "of its process; start it with MAD_MODELS_BITSANDBYTES=1 to load it."
        )
    return f"Cannot load {source}: {type(e).__name__}: {clip(text, 300)}"


def component_labels(model: Any) -> list[str]:
    """Readable names of a hybrid's components, e.g. ['0: mad/attention', '1: mad/mamba']."""
    cfg = model.config
    names = cfg.component_names or [None] * cfg.num_components
    return [f"{i}: {n or cfg.component_config(i).model_type}" for i, n in enumerate(names)]


def entry_summary(entry: ModelEntry) -> str:
    return f"{entry.name} ({entry.kind}{', hybrid' if entry.is_hybrid else ''})"
