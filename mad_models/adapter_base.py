"""Which base model an adapter may be loaded on: the one set of rules that ``hub_tools.pull``,
``mad-models more eval`` (:func:`mad_models.loading.load_adapter`) and the app all apply.

1. The caller's choice wins (``base_model=`` / ``--base-model``); else the base the adapter config records
   (``base_model_name_or_path``); an adapter that records none needs the caller's choice.
2. A base recorded by a repo downloaded from the Hub must be a Hub repo id: never a path on this machine
   (absolute, relative such as ``../x``, ``~``, or anything that is not a valid id), and it is fetched from
   the Hub even when a folder of that name exists here (:func:`base_must_come_from_hub`).
3. Bases of bases are followed, but a cycle (an adapter naming itself, A -> B -> A) and a chain deeper than
   :data:`MAX_BASE_DEPTH` are refused before anything is downloaded or built.

Example:
    >>> adapter_base({"base_model_name_or_path": "org/base"}, "me/adapter", from_hub=True)
    'org/base'
    >>> adapter_base({"base_model_name_or_path": "../x"}, "me/adapter", from_hub=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mad_models.adapter_base.BaseModelError: 'me/adapter': ... not a Hub repo id ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

MAX_BASE_DEPTH = 4
PASS_BASE = "Pass the base yourself (base_model= in Python, --base-model on the command line)"

# The adapters whose bases are being resolved right now, outermost first, as (where, whether that base must
# come from the Hub because a Hub repo named it).
_CHAIN: ContextVar[tuple[tuple[str, bool], ...]] = ContextVar("mad_models_adapter_base_chain", default=())


class BaseModelError(ValueError):
    """An adapter's base that may not or cannot be loaded: none recorded, a local path named by a Hub
    repo, a cycle, or a chain too deep. The message names the adapter and what to pass instead."""


def is_hub_repo_id(name: str) -> bool:
    """True for ``"namespace/name"`` ids valid on the Hub that cannot read as a local path (whether a folder
    of that name exists here does not matter).

    Example:
        >>> is_hub_repo_id("EleutherAI/pythia-70m"), is_hub_repo_id("../x"), is_hub_repo_id("/abs/x")
        (True, False, False)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name and not name.startswith((".", "~"))


def adapter_base(
    config: Mapping[str, Any], where: str, *, from_hub: bool, base_model: str | None = None
) -> str:
    """The name of the base to load for the adapter at ``where`` (its ``adapter_config.json`` is ``config``),
    by the rules above. ``from_hub``: the adapter came from a Hub repo. ``base_model``: the caller's choice.
    Raises :class:`BaseModelError`.
    """
    base = base_model or config.get("base_model_name_or_path")
    if not base or not isinstance(base, str):
        raise BaseModelError(
            f"'{where}' does not name its base model. {PASS_BASE}: a model, repo id or folder."
        )
    if base_model is None and from_hub and not is_hub_repo_id(base):
        raise BaseModelError(
            f"'{where}': its adapter config names a base model that is not a Hub repo id (a local path or an "
            "invalid id); a repo from the Hub never loads files from this machine. "
            f"{PASS_BASE}: a model, a repo id or a folder you trust."
        )
    chain = _CHAIN.get()
    seen = [w for w, _ in chain] + [where]
    if base in seen:
        cycle = " -> ".join([*seen[seen.index(base) :], base])
        raise BaseModelError(
            f"'{where}': the adapter base chain is a cycle ({cycle}); no base model can be built. "
            f"{PASS_BASE}."
        )
    if len(chain) >= MAX_BASE_DEPTH:
        raise BaseModelError(
            f"'{where}': adapter bases nest deeper than {MAX_BASE_DEPTH} ({' -> '.join(seen)} -> {base}). "
            f"{PASS_BASE}."
        )
    return base


@contextlib.contextmanager
def resolving_base_of(where: str, *, hub_only: bool) -> Iterator[None]:
    """Within this block the base of the adapter at ``where`` is being loaded: :func:`adapter_base` sees it
    in the chain, and with ``hub_only`` (a Hub repo named that base) :func:`base_must_come_from_hub` is True.

    Example:
        >>> with resolving_base_of("me/adapter", hub_only=True):
        ...     base_must_come_from_hub()
        True
    """
    token = _CHAIN.set((*_CHAIN.get(), (where, hub_only)))
    try:
        yield
    finally:
        _CHAIN.reset(token)


def base_must_come_from_hub() -> bool:
    """True while loading a base that a Hub repo named: load it from the Hub, never from a local folder that
    happens to have its name."""
    chain = _CHAIN.get()
    return bool(chain) and chain[-1][1]


__all__ = [
    "MAX_BASE_DEPTH",
    "BaseModelError",
    "adapter_base",
    "base_must_come_from_hub",
    "is_hub_repo_id",
    "resolving_base_of",
]
