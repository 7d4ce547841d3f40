"""mad-models: MoRe (Monarch) adapters and Manticore pretrained hybrids.

Importing the package registers both methods with the libraries they extend:
``peft.get_peft_model(model, MoReConfig(...))`` and
``transformers.AutoModelForCausalLM.from_pretrained(<a saved hybrid>)`` then work as for built-ins.
"""

from mad_models import hybrid, more  # noqa: F401  (imports register MORE with peft, "manticore" with transformers)

__version__ = "0.1.0"
