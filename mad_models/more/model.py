"""MoReModel: the PEFT tuner that swaps target layers for MoRe layers."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, get_quantization_kwargs
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

from .config import MoReConfig
from .layer import Linear, MoReLayer


def pass_adapter_names(module: nn.Module, args: tuple, kwargs: dict, adapter_names: list[str]):
    """Forward pre-hook (``with_kwargs=True``): hand ``adapter_names`` to a tuner layer's ``forward``.

    PEFT's layers (LoRA's ``Linear``, our MoRe ``Linear``) and ``modules_to_save`` wrappers take an
    ``adapter_names`` keyword and run row ``i`` of the batch through adapter ``adapter_names[i]``; PEFT's
    own LoRA model injects it with a private hook of the same three lines, which we do not import.
    ``tests/test_more_mixed_batch.py`` pins the keyword on PEFT's layers.
    """
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


class MoReModel(BaseTuner):
    """Adds Monarch Rectangular (MoRe) adapters to a model. Built by ``peft.get_peft_model`` from a
    :class:`MoReConfig` once ``mad_models`` is imported.

    Example:
        >>> import mad_models, peft
        >>> from mad_models.more import MoReConfig
        >>> # model = peft.get_peft_model(base, MoReConfig(target_modules=["q_proj", "v_proj"]))
        >>> # model.print_trainable_parameters(); model.save_pretrained("out")
    """

    prefix: str = "more_"
    tuner_layer_cls = MoReLayer
    # with target_modules=None, adapt what LoRA adapts by default on known architectures
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    def _create_and_replace(
        self,
        more_config: MoReConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs,
    ) -> None:
        if current_key is None:
            raise ValueError("Current Key shouldn't be `None`")
        try:
            if isinstance(target, MoReLayer):
                target.update_layer(adapter_name, more_config)
                return
            new_module = self._create_new_module(
                more_config, adapter_name, target, **get_quantization_kwargs(self)
            )
        except (ValueError, TypeError) as err:
            raise type(err)(
                f"Cannot add MoRe adapter '{adapter_name}' to module '{current_key}': {err}"
            ) from err
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an additional adapter is not trainable until set_adapter
        self._replace_module(parent, target_name, new_module, target)

    @staticmethod
    def _create_new_module(more_config: MoReConfig, adapter_name: str, target: nn.Module, **kwargs) -> Linear:
        return Linear(target, adapter_name, config=more_config, **kwargs)  # refuses unsupported types

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """``model(..., adapter_names=[...])`` / ``generate(..., adapter_names=[...])``: row ``i`` runs
        adapter ``adapter_names[i]`` ("__base__": the base), as with LoRA.

        The names go to every PEFT layer in the model, not only MoRe's, so adapters of another type
        injected into the same module tree (``peft.inject_adapter_in_model``) mix in one batch too.
        """
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        if self.training:
            raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
        if not isinstance(adapter_names, (list, tuple)):
            raise TypeError(f"Got adapter names of type {type(adapter_names)}, expected a list of str.")
        layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        known = set()
        for layer in layers:
            for attr in layer.adapter_layer_names:
                known |= set(getattr(layer, attr).keys())
        unknown = {n for n in adapter_names if n != "__base__"} - known
        if unknown:
            raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(sorted(unknown))}")
        num_beams = kwargs.get("num_beams")
        if isinstance(num_beams, int) and num_beams > 1:  # generate repeats every row num_beams times
            adapter_names = [n for n in adapter_names for _ in range(num_beams)]
        hook = partial(pass_adapter_names, adapter_names=list(adapter_names))
        handles = [
            m.register_forward_pre_hook(hook, with_kwargs=True)
            for m in self.model.modules()
            if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        state_dict = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        # torch's own size-mismatch error comes late and names no cause; say plainly that the base differs
        own = model.state_dict()
        k, width = config.nblocks, config.nblocks * config.block_rank
        mismatched, missing, inconsistent = [], [], []
        for key, value in state_dict.items():
            if f".{cls.prefix}blkdiag" not in key:
                continue
            # blkdiag1 is (k, k*r, p), blkdiag2 (k, s, k*r): k and k*r come from the config alone
            blocks = tuple(value.shape[:2]) if ".more_blkdiag1" in key else (value.shape[0], value.shape[-1])
            if value.dim() != 3 or blocks != (k, width):
                inconsistent.append(f"{key}: {tuple(value.shape)}")
                continue
            if key not in own and key.removeprefix("base_model.model.") not in own:
                missing.append(key)
                continue
            target = own[key] if key in own else own[key.removeprefix("base_model.model.")]
            if tuple(target.shape) != tuple(value.shape):
                mismatched.append(f"{key}: adapter {tuple(value.shape)} vs this model {tuple(target.shape)}")
        if inconsistent:
            raise ValueError(
                f"The MoRe adapter '{adapter_name}' is broken: its own config (nblocks={k}, "
                f"block_rank={config.block_rank}, so blocks of (k={k}, k*r={width}) in both factors) "
                f"disagrees with its saved tensors, whatever the base model; {len(inconsistent)} tensors "
                "differ, e.g.:\n  "
                + "\n  ".join(inconsistent[:5])
                + "\nThe adapter_config.json was edited or belongs to other weights: save the adapter again."
            )
        if mismatched or missing:
            lines = mismatched[:5] + [f"{k}: no such module in this model" for k in missing[:5]]
            raise ValueError(
                f"The MoRe adapter '{adapter_name}' was saved for a base model with other layer shapes "
                f"(base_model_name_or_path={config.base_model_name_or_path!r}); its config and tensors "
                f"agree, but {len(mismatched)} tensors differ in shape from this model's layers and "
                f"{len(missing)} have no matching module, e.g.:\n  " + "\n  ".join(lines)
            )
        return state_dict
