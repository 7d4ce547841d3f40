"""The one place where MoRe plugs into PEFT's method registry.

PEFT 0.21 registers a tuner with ``peft.utils.register_peft_method(name=..., config_cls=..., model_cls=...)``,
but that function requires ``name.upper()`` to already be a member of the ``peft.utils.PeftType`` enum,
and Python enums cannot be extended after their class body runs (see huggingface/peft#2273, #2282, #2634).

What we do, and why it is safe:

1. Add a real ``PeftType.MORE`` member with the same machinery Python's ``enum`` uses for members
   written in the class body (``enum._proto_member.__set_name__``), so ``PeftType.MORE``,
   ``PeftType("MORE")``, ``PeftType["MORE"]``, ``list(PeftType)`` and ``.value`` behave as for built-ins.
   ``PeftType`` is a ``str`` enum, so the saved ``adapter_config.json`` holds ``"peft_type": "MORE"`` and
   PEFT's mapping look-ups by the plain string find our classes when loading.
2. Call PEFT's own ``register_peft_method``; no PEFT dict is written by hand.
3. Wrap ``PeftModel.save_pretrained`` so that ``safe_serialization=False`` with a MoRe adapter is refused
   before anything is written: it would write a pickle (``adapter_model.bin``) that MoRe refuses to load.
   Other adapter types save as PEFT always did.

Every assumption is checked, and a broken one raises ``RuntimeError`` at ``import mad_models`` naming
what changed; ``tests/test_more_registration.py`` pins the same assumptions so CI fails loudly if a
future PEFT or Python changes the mechanism (for example, if PEFT grows a way to register custom types,
or ships a built-in method called MORE).
"""

from __future__ import annotations

import enum
import functools
import inspect

from peft.utils import PeftType, register_peft_method

PEFT_TYPE_NAME = "MORE"
PREFIX = "more_"


def _add_enum_member(enum_cls: type[enum.Enum], name: str, value: str) -> enum.Enum:
    """Append ``name = value`` to an existing ``str`` enum, exactly as its class body would have."""
    if not (issubclass(enum_cls, str) and issubclass(enum_cls, enum.Enum)):
        raise RuntimeError(
            f"{enum_cls.__qualname__} is no longer a str Enum; MoRe's PEFT registration needs updating"
        )
    proto_cls = getattr(enum, "_proto_member", None)
    if proto_cls is None:
        raise RuntimeError(
            "this Python's enum module has no _proto_member; mad_models.more._peft_type must be updated "
            "to add PeftType.MORE another way"
        )
    proto = proto_cls(value)
    setattr(enum_cls, name, proto)  # __set_name__ removes this placeholder and installs the real member
    proto.__set_name__(enum_cls, name)
    member = enum_cls[name]
    if not (enum_cls(value) is member and member.value == value and member in list(enum_cls)):
        raise RuntimeError(f"adding {enum_cls.__qualname__}.{name} did not produce a regular enum member")
    return member


def ensure_peft_type() -> PeftType:
    """Return ``PeftType.MORE``, adding it once if this PEFT does not have it."""
    existing = PeftType.__members__.get(PEFT_TYPE_NAME)
    if existing is not None:
        return existing
    return _add_enum_member(PeftType, PEFT_TYPE_NAME, PEFT_TYPE_NAME)


def register(config_cls: type, model_cls: type) -> None:
    """Register MoRe with PEFT (idempotent for our own classes, loud for anyone else's)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    peft_type = ensure_peft_type()
    registered = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if registered is not None:
        if (
            registered.__qualname__ == config_cls.__qualname__
            and registered.__module__ == config_cls.__module__
        ):
            # re-import of this module (e.g. importlib.reload): point PEFT at the fresh classes
            PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
            PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
            return
        raise RuntimeError(
            f"PEFT already has a method called {PEFT_TYPE_NAME} "
            f"({registered.__module__}.{registered.__qualname__}); "
            "mad_models' MoRe would shadow it. Pin peft to a version without it or rename our type."
        )
    register_peft_method(
        name=PEFT_TYPE_NAME.lower(), config_cls=config_cls, model_cls=model_cls, prefix=PREFIX
    )


PICKLE_SAVE_REFUSED = (
    "MoRe adapters are saved as safetensors only: save_pretrained(safe_serialization=False) would write a "
    "pickle (adapter_model.bin), which MoRe never loads (unpickling can run code from the file). Save with "
    "safe_serialization=True (the default)."
)


def refuse_pickle_saves() -> None:
    """Make ``PeftModel.save_pretrained(safe_serialization=False)`` refuse MoRe adapters up front
    (idempotent)."""
    from peft import PeftModel

    original = PeftModel.save_pretrained
    if getattr(original, "_refuses_more_pickles", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def save_pretrained(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if not bound.arguments.get("safe_serialization", True):
            names = bound.arguments.get("selected_adapters") or list(self.peft_config)
            if any(getattr(self.peft_config.get(n), "peft_type", None) == PEFT_TYPE_NAME for n in names):
                raise ValueError(PICKLE_SAVE_REFUSED)
        return original(self, *args, **kwargs)

    save_pretrained._refuses_more_pickles = True
    PeftModel.save_pretrained = save_pretrained
