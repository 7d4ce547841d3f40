"""The Load tab: pull an adapter or a hybrid (Hub repo id or local folder) for one browser session.

Loading itself (``hub_tools.pull``, the cache, adapters sharing their base) is the service's; this module
decides what a visitor may load and under which name their session sees it.

Example:
    >>> info = load(svc, "me/smollm2-more-arith", base="SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> info["name"], info["kind"]  # doctest: +SKIP
    ('loaded: me/smollm2-more-arith', 'adapter (shares its base's weights)')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app_backend.cache import ProgressFn
from app_backend.registry import AppInputError, Registry
from app_backend.runtime import import_model_stack
from app_backend.visitors import current_visitor

if TYPE_CHECKING:
    from app_backend.service import AppService

# A public Space's Load (``hub_tools.pull`` keywords): no token (the Space's own would open its owner's
# private repos to anyone), adapters and Manticore hybrids only, at most MAD_MODELS_MAX_PULL_MB of JSON and
# safetensors (checked from the Hub's file listing before any download); the service adds a temporary cache
# that is deleted once the model is built.
PUBLIC_PULL = dict(
    token=False,
    accept=("adapter", "hybrid"),
    max_bytes=int(os.environ.get("MAD_MODELS_MAX_PULL_MB", "200")) * 2**20,
)


def load(
    svc: AppService,
    source: str,
    revision: str = "",
    base: str = "",
    progress: ProgressFn | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    """Pull an adapter or a hybrid (Hub repo id or local dir) through hub_tools, for this session.

    On a public Space (``public``) only Hub ids are taken, pulled under :data:`PUBLIC_PULL`, and the
    ``max_loaded_per_session`` limit holds per visitor (:mod:`app_backend.visitors`), across tabs and
    clients. A revision is refused for a local dir (there is nothing to check out), and each session may hold
    ``max_loaded_per_session`` models.
    """
    import_model_stack()  # before mad_models.cards, which imports mad_models.hybrid, hence transformers
    from mad_models.cards import is_hub_id

    source = (source or "").strip()
    revision = (revision or "").strip()
    if not source:
        raise AppInputError("Give a Hub repo id (owner/name) or a local directory.")
    local = Path(source).expanduser()
    looks_local = local.exists() or source.startswith((".", "/", "~")) or "\\" in source
    if svc.public and (looks_local or not is_hub_id(source)):
        raise AppInputError(
            "This app runs as a public Space: Load takes Hub repo ids (owner/name) only, not local paths."
        )
    if looks_local and revision:
        raise AppInputError(
            f"A revision ({revision!r}) only applies to Hub repos; "
            f"{local.name or source} is a local directory."
        )
    if looks_local and not local.is_dir():
        raise AppInputError("That local path is not a directory.")
    if not looks_local and not is_hub_id(source):
        raise AppInputError(f"{source!r} is neither a Hub repo id (owner/name) nor a local directory.")
    if base and base not in adapter_bases(svc.registry):
        raise AppInputError(
            f"{base!r} is not a base for adapters here: pick one of {', '.join(adapter_bases(svc.registry))}."
        )
    is_adapter = (local / "adapter_config.json").is_file() if looks_local else None
    if is_adapter and not base:
        raise AppInputError(f"{local.name} is an adapter: pick the base model it was trained on.")
    if looks_local and is_adapter is False and base:
        base = ""  # a whole model: the base (and its tokenizer) has nothing to do with it
    label = local.name if looks_local else source  # never a server path in the UI
    key = f"loaded: {local.resolve() if looks_local else source}@{revision}|{base}"
    own = svc.sessions.setdefault(session or "", {})
    name = unique_name(f"loaded: {label}" + (f"@{revision}" if revision else ""), key, own)
    if name not in own and len(own) >= svc.max_loaded_per_session:
        raise AppInputError(
            f"This session already holds {len(own)} loaded models (the limit is "
            f"{svc.max_loaded_per_session}); reload the page to start afresh."
        )
    visitor = current_visitor() if svc.public else None
    if visitor is not None:  # a public Space: the limit holds per visitor, across tabs and clients
        with svc.lock:
            svc.session_visitor[session or ""] = visitor
            mine = [s for s, v in svc.session_visitor.items() if v == visitor]
            held = sum(len(svc.sessions.get(s, {})) for s in mine)
        if name not in own and held >= svc.max_loaded_per_session:
            raise AppInputError(
                f"You already hold {held} loaded models (the limit is {svc.max_loaded_per_session} per "
                "visitor, across tabs); close a tab or reload the page to start afresh."
            )
    spec = dict(source=str(local) if looks_local else source, revision=revision or None, base=base or None)
    spec["name"] = name
    with svc.lock:
        known = svc.pulled.get(key)
        svc.pulled[key] = spec
    try:
        item = svc.cache.get(key, progress)
    except Exception:
        if known is None:
            with svc.lock:
                svc.pulled.pop(key, None)
        raise
    own[name] = key
    model = item.model
    hybrid = getattr(model.config, "model_type", None) == "manticore"
    spec["hybrid"] = hybrid
    if item.adapter is not None:
        kind = "adapter (shares its base's weights)"
        params = item.nbytes // max(1, next(model.parameters()).element_size())
    else:
        kind = "hybrid" if hybrid else model.config.model_type
        params = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "renamed": name != f"loaded: {label}" + (f"@{revision}" if revision else ""),
        "kind": kind,
        "params": params,
        "model_type": model.config.model_type,
        "tokenizer": item.tokenizer is not None,
        "hybrid": hybrid,
    }


def adapter_bases(registry: Registry) -> list[str]:
    """The registered models an adapter may be loaded onto: the language models (not adapters, not
    hybrids, not the MAD models, whose token-id vocabularies no language adapter was trained on)."""
    return [
        n
        for n, e in registry.entries.items()
        if e.kind != "adapter" and e.group == "language" and not e.is_hybrid
    ]


def unique_name(name: str, key: str, own: dict[str, str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``, ... when this session already holds another model under
    it (two folders called ``hybrid`` stay two models)."""
    if own.get(name, key) == key:
        return name
    n = 2
    while own.get(f"{name} ({n})", key) != key:
        n += 1
    return f"{name} ({n})"


def unload(svc: AppService, name: str, session: str | None = None) -> str:
    """Drop ``name`` from this session's loaded models, and from memory unless another session holds it.

    Example:
        >>> unload(svc, "loaded: hybrid", session)  # doctest: +SKIP
        'Unloaded loaded: hybrid.'
    """
    own = svc.sessions.get(session or "", {})
    if name not in own:
        raise AppInputError(f"{name!r} is not one of the models this page loaded.")
    key = own.pop(name)
    if not any(key in s.values() for s in svc.sessions.values()):
        svc.cache.discard(key)
        with svc.lock:
            svc.pulled.pop(key, None)
    return f"Unloaded {name}."
