"""What PEFT's ``save_pretrained`` writes, decided without asking the Hub.

Kept apart from the MoRe tuner (``mad_models.more``) because every adapter type needs it: the library's
``save_pretrained``, the folder checks in ``validation``, hub_tools' push and pull, and the app.

Example:
    >>> from peft import LoraConfig
    >>> from mad_models.peft_saving import embedding_targeted
    >>> embedding_targeted(LoraConfig(target_modules=["q_proj", "v_proj"]), None)
    False
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn


def embedding_targeted(peft_config: Any, model: nn.Module) -> bool:
    """Whether ``save_pretrained`` saves the base embedding layers with this adapter (they are targeted).

    This is peft's ``save_embedding_layers="auto"`` rule without its last step, which asks huggingface.co
    whether the vocabulary was resized and hangs offline or behind a private HF_ENDPOINT: a list of targets
    names an embedding layer, or a regex matches one of ``model``'s (a PeftModel or its base) embedding
    modules. Adapters that train single tokens (``trainable_token_indices``) never save them.

    Example:
        >>> # embedding_targeted(LoraConfig(target_modules=r".*\\.embed_tokens"), llama) -> True
    """
    from peft.utils.constants import EMBEDDING_LAYER_NAMES, INCLUDE_LINEAR_LAYERS_SHORTHAND
    from peft.utils.other import match_target_against_key

    if getattr(peft_config, "trainable_token_indices", None) is not None:
        return False
    targets = getattr(peft_config, "target_modules", None)
    if not targets or targets == INCLUDE_LINEAR_LAYERS_SHORTHAND:
        return False
    if not isinstance(targets, str):
        return any(name in targets for name in EMBEDDING_LAYER_NAMES)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return any(
        match_target_against_key(targets, key)
        for key, _ in base.named_modules()
        if any(re.match(rf"(.*\.)?{name}$", key) for name in EMBEDDING_LAYER_NAMES)
    )


__all__ = ["embedding_targeted"]
