"""How ``import mad_models`` registers MoRe with PEFT and "manticore" with transformers without importing
either (or torch) itself.

``import mad_models`` stays light, so ``mad-models --help`` answers without loading torch; its promise holds
all the same: once it has run, PEFT knows ``PeftType.MORE`` and transformers' Auto classes know
"manticore". Each registration runs as soon as the library it extends has been imported: at once when it
already is, else right after that import (a finder on ``sys.meta_path`` wraps that module's loader, and
steps aside once both registrations have run). When a mad_models module is itself part-way through its own
import at that moment (``mad_models.loading`` importing transformers, say), the registration waits until
that import has finished, since the registering modules import it in turn.

Example:
    >>> import mad_models                     # light: neither torch, transformers nor peft is imported
    >>> import peft                           # ... and now mad_models.more has registered PeftType.MORE
    >>> peft.PeftType.MORE.value
    'MORE'
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from types import ModuleType

# the library a registration extends -> the mad_models module whose import registers with it
REGISTRATIONS = {"peft": "mad_models.more", "transformers": "mad_models.hybrid"}

_pending: set[str] = set()  # libraries still to register with
_executed: set[str] = set()  # of those, the ones whose own import has run
_lock = threading.RLock()


def _initializing(module: ModuleType | None) -> bool:
    return getattr(getattr(module, "__spec__", None), "_initializing", False)


def _ours(name: str) -> bool:
    return name == "mad_models" or name.startswith("mad_models.")


def _settle(just_run: ModuleType | None = None) -> None:
    """Register with every pending library that has been imported, unless a mad_models module other than
    ``just_run`` (which has finished running but is still flagged) is part-way through its import."""
    with _lock:
        imported = {lib for lib in _pending if lib in sys.modules and not _initializing(sys.modules[lib])}
        ready = sorted(imported | (_pending & _executed))
        busy = any(
            _ours(name) and module is not just_run and _initializing(module)
            for name, module in list(sys.modules.items())
        )
        if not ready or busy:
            return
        _pending.difference_update(ready)
        if not _pending and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
    for library in ready:
        importlib.import_module(REGISTRATIONS[library])


class _SettlingLoader(importlib.abc.Loader):
    """``loader``, then :func:`_settle` once the module has run (noting first if it is a library)."""

    def __init__(self, loader: importlib.abc.Loader, name: str):
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # the module keeps its own loader (importlib.resources and friends ask it for things)
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if self.name in REGISTRATIONS:
            with _lock:
                _executed.add(self.name)
        _settle(just_run=module)

    def __getattr__(self, name: str):  # anything else a loader answers (get_code, is_package, ...)
        return getattr(self.loader, name)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a library still to be registered with, and for mad_models' own modules
    while one is, it asks the other finders for the spec and wraps the loader they give."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _pending and not (_pending and _ours(fullname)):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _SettlingLoader(spec.loader, fullname)
        return spec


_FINDER = _AfterImportFinder()


def register_on_import() -> None:
    """Register with every library of :data:`REGISTRATIONS` now if it is imported, else once it is."""
    with _lock:
        waiting = {lib for lib in REGISTRATIONS if lib not in sys.modules}
        _pending.update(waiting)
        if waiting and _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    for library in REGISTRATIONS:
        if library not in waiting and not _initializing(sys.modules.get(library)):
            importlib.import_module(REGISTRATIONS[library])
