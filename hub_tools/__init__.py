"""hub_tools: push MoRe adapters, Manticore hybrids and Gradio Spaces to the Hub, and pull them back safely.

All Hub traffic goes through huggingface_hub (HfApi.create_commit, snapshot_download, ModelCard).
Every push is one atomic commit; every pull is safetensors-only, never runs remote code, and works
offline from the cache.

Example:
    >>> from hub_tools import push_adapter, push_hybrid, pull
    >>> url = push_adapter(peft_model, "me/smollm2-more-arith", private=True)   # one commit
    >>> model = pull("me/smollm2-more-arith", revision=url.oid)                   # safetensors only
"""

import importlib
import sys
import types

# name -> the module that defines it, imported on first use: `import hub_tools` (and the `mad-models --help`
# that lists its commands) stays light, with no torch until a push or a pull runs
_WHERE = {
    "commit_folder": "hub_tools.commit",
    "pull": "hub_tools.pull",
    **dict.fromkeys(("push", "push_adapter", "push_hybrid"), "hub_tools.push"),
    **dict.fromkeys(("push_space", "space_files"), "hub_tools.space"),
    **dict.fromkeys(("adapter_card", "hybrid_card", "usage_snippet"), "mad_models.cards"),  # cards live there
    **dict.fromkeys(
        (
            "HubError",
            "InvalidRepoIdError",
            "HubAuthError",
            "HubPermissionError",
            "HubNotFoundError",
            "HubRevisionNotFoundError",
            "HubUnreachableError",
            "UnsafeWeightsError",
            "RepoContentError",
        ),
        "hub_tools.errors",
    ),
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


class _Package(types.ModuleType):
    """``hub_tools.pull`` and ``hub_tools.push`` are the functions, as their eager import made them: importing
    the modules of the same name (``hub_tools.pull``) does not replace them by the modules."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == f"{__name__}.{name}":
            return  # the module stays reachable as sys.modules["hub_tools.pull"]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = list(_WHERE)
