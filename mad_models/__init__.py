"""mad-models: MoRe (Monarch) adapters and Manticore pretrained hybrids.

Importing the package registers both methods with the libraries they extend:
``peft.get_peft_model(model, MoReConfig(...))`` and
``transformers.AutoModelForCausalLM.from_pretrained(<a saved hybrid>)`` then work as for built-ins.
The import itself is light (no torch): each registration runs once the library it extends is imported
(:mod:`mad_models.registration`), and the subpackages load on first use (``mad_models.more``, ...).
"""

import importlib
import importlib.util

from mad_models.registration import register_on_import

__version__ = "0.1.0"

register_on_import()


def __getattr__(name: str):
    """``mad_models.more``, ``mad_models.hybrid``, ...: a subpackage imported on first use."""
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
