"""hub_tools: push MoRe adapters, Manticore hybrids and Gradio Spaces to the Hub, and pull them back safely.

All Hub traffic goes through huggingface_hub (HfApi.create_commit, snapshot_download, ModelCard).
Every push is one atomic commit; every pull is safetensors-only, never runs remote code, and works
offline from the cache.

Example:
    >>> from hub_tools import push_adapter, push_hybrid, pull
    >>> url = push_adapter(peft_model, "me/smollm2-more-arith", private=True)   # one commit
    >>> model = pull("me/smollm2-more-arith", revision=url.oid)                   # safetensors only
"""

from hub_tools.commit import commit_folder
from hub_tools.errors import (
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubPermissionError,
    HubRevisionNotFoundError,
    HubUnreachableError,
    InvalidRepoIdError,
    RepoContentError,
    UnsafeWeightsError,
)
from hub_tools.pull import pull
from hub_tools.push import push, push_adapter, push_hybrid
from hub_tools.space import push_space, space_files
from mad_models.cards import adapter_card, hybrid_card, usage_snippet  # re-exported: cards live in mad_models

__all__ = [
    "push_adapter",
    "push_hybrid",
    "push_space",
    "space_files",
    "push",
    "pull",
    "commit_folder",
    "adapter_card",
    "hybrid_card",
    "usage_snippet",
    "HubError",
    "InvalidRepoIdError",
    "HubAuthError",
    "HubPermissionError",
    "HubNotFoundError",
    "HubRevisionNotFoundError",
    "HubUnreachableError",
    "UnsafeWeightsError",
    "RepoContentError",
]
