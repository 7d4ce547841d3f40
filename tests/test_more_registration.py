"""Pins every assumption mad_models/more/_peft_type.py makes about PEFT and Python's enum.

If one of these fails after an upgrade, PEFT or Python changed the registration mechanism: read the
module's docstring and update it (e.g. switch to a native custom-type hook if PEFT grew one).
"""

import enum
import json

import peft
import pytest
from peft.mapping import (
    PEFT_TYPE_TO_CONFIG_MAPPING,
    PEFT_TYPE_TO_PREFIX_MAPPING,
    PEFT_TYPE_TO_TUNER_MAPPING,
)
from peft.utils import PeftType, register_peft_method

import mad_models  # noqa: F401
from mad_models.more import MoReConfig, MoReModel, _peft_type


def test_peft_still_requires_an_enum_member():
    # the reason the module exists: PEFT refuses names that are not PeftType members
    class Dummy:
        pass

    with pytest.raises(ValueError, match="PeftType"):
        register_peft_method(name="not_a_registered_method", config_cls=Dummy, model_cls=Dummy)
    assert issubclass(PeftType, str) and issubclass(PeftType, enum.Enum)
    assert hasattr(enum, "_proto_member"), "Python's enum no longer builds members via _proto_member"


def test_more_is_a_regular_member_and_registered():
    member = PeftType.MORE
    assert PeftType("MORE") is member and PeftType["MORE"] is member
    assert member in list(PeftType) and member.value == "MORE" and member == "MORE"
    assert list(PeftType).count(member) == 1
    assert PEFT_TYPE_TO_CONFIG_MAPPING["MORE"] is MoReConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.MORE] is MoReModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.MORE] == "more_" == MoReModel.prefix
    assert MoReConfig(target_modules=["q"]).peft_type is PeftType.MORE


def test_registration_is_idempotent_and_refuses_strangers():
    _peft_type.register(config_cls=MoReConfig, model_cls=MoReModel)  # same classes: fine
    assert _peft_type.ensure_peft_type() is PeftType.MORE

    class OtherConfig(peft.PeftConfig):
        pass

    with pytest.raises(RuntimeError, match="already has a method called MORE"):
        _peft_type.register(config_cls=OtherConfig, model_cls=MoReModel)
    assert PEFT_TYPE_TO_CONFIG_MAPPING["MORE"] is MoReConfig


def test_config_round_trips_through_json(tmp_path):
    cfg = MoReConfig(nblocks=2, block_rank=3, target_modules=["q_proj"], scale=0.5)
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "MORE" and saved["nblocks"] == 2 and saved["block_rank"] == 3
    loaded = peft.PeftConfig.from_pretrained(tmp_path)  # generic entry point dispatches on peft_type
    assert isinstance(loaded, MoReConfig)
    assert (loaded.nblocks, loaded.block_rank, loaded.scale, loaded.target_modules) == (2, 3, 0.5, {"q_proj"})
