"""MoRe: Monarch Rectangular adapters as a first-class PEFT method.

Importing this package (``import mad_models`` does) registers ``PeftType.MORE`` with PEFT, so the usual
PEFT workflow works unchanged:

    >>> import mad_models, peft
    >>> from mad_models.more import MoReConfig, adapter_report
    >>> # model = peft.get_peft_model(base, MoReConfig(nblocks=4, target_modules=["q_proj", "v_proj"]))
    >>> # model.save_pretrained("out")  # adapter_config.json says "peft_type": "MORE"
    >>> # peft.PeftModel.from_pretrained(base, "out"); adapter_report(model).to_markdown()
"""

from . import _peft_type
from .config import MoReConfig
from .layer import Linear, MoReLayer
from .model import MoReModel
from .report import AdapterReport, adapter_report

_peft_type.register(config_cls=MoReConfig, model_cls=MoReModel)
_peft_type.refuse_pickle_saves()

__all__ = ["AdapterReport", "Linear", "MoReConfig", "MoReLayer", "MoReModel", "adapter_report"]
