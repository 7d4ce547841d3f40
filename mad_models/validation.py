"""Check a checkpoint's files before anything is built from them: JSON configs and safetensors headers.

A config from the Hub is untrusted input. It can ask for layers far larger than the weights it ships with
(``rank_pattern={"q_proj": 1e6}`` next to a rank-4 file, a 4M-token vocabulary next to a 128-token one), so
every check here reads only JSON files and safetensors headers (no tensor data) and compares what the
config implies with what the files hold *before* a real model is built. Models are compared on the meta
device, where building them costs no memory.

Every failure is a :class:`CheckpointError` (a ``ValueError``) whose message names the file. ``hub_tools``
turns it into its ``RepoContentError``; the library's own loaders raise it as it is.

Example:
    >>> from mad_models.validation import read_json_config
    >>> # cfg = read_json_config(Path("run/final/config.json"))  # a dict, or CheckpointError naming the file
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

MAX_JSON_BYTES = 32 * 2**20  # a hybrid's config (components inline) is a few kB; anything this big is not one
MAX_JSON_DEPTH = 32  # real configs nest ~5 deep; deeper JSON only serves to exhaust the parser's recursion
# safetensors dtype names -> torch dtypes for floating point weights
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_TORCH_TO_ST = {v: k for k, v in FLOAT_DTYPES.items()}

Header = dict[str, tuple[list[int], str]]  # tensor name -> (shape, safetensors dtype)


class CheckpointError(ValueError):
    """A checkpoint's files are unreadable, unsafe, or do not match its config. The message names the file."""


# ---------------------------------------------------------------------------------------------- files


def checkpoint_root(folder: Path) -> Path:
    """The folder links in ``folder`` may point into: a Hugging Face cache snapshot's files link to the
    repo's ``blobs/``, so its root is the repo's cache folder; any other folder is its own root."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and (folder.parent.parent / "blobs").is_dir():
        return folder.parent.parent
    return folder


def confined(path: Path, root: Path | None = None) -> Path:
    """``path`` with links resolved; ``CheckpointError`` if it leads outside ``root`` (default: its folder,
    or the repo's cache folder for a file in a Hugging Face cache snapshot).

    A checkpoint folder may hold links (the Hugging Face cache links every file to a blob of the same repo),
    but a link to ``/etc/passwd`` or another user's file is refused; the outside target is not named.
    """
    path = Path(path)
    root = Path(root if root is not None else checkpoint_root(path.parent)).resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise CheckpointError(
            f"{path.name} is a link that leads outside the checkpoint folder; refusing to read it"
        )
    return real


def _depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return depth
        nxt = []
        for o in level:
            if isinstance(o, dict):
                nxt.extend(o.values())
            elif isinstance(o, list):
                nxt.extend(o)
        level = nxt
    return depth


def read_json_config(path: Path, root: Path | None = None) -> dict:
    """The JSON object in ``path``: confined to ``root``, size-capped, at most 32 levels deep.

    Example:
        >>> # read_json_config(Path("adapter/adapter_config.json"))["peft_type"]
    """
    path = Path(path)
    real = confined(path, root)
    if not real.is_file():
        raise CheckpointError(f"{path.name} is not a file")
    if real.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{path.name} is {real.stat().st_size:,} bytes, more than any config needs ({MAX_JSON_BYTES:,})"
        )
    try:
        obj = json.loads(real.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path.name} is not UTF-8 text, so it is not a JSON config") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path.name} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{path.name} is nested too deeply to be a config") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} must hold a JSON object, but holds a {type(obj).__name__}")
    if _depth(obj) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path.name} is nested more than {MAX_JSON_DEPTH} levels deep; not a config")
    return obj


def safetensors_header(path: Path, root: Path | None = None) -> Header:
    """Tensor name -> (shape, dtype) from a safetensors header, without reading any tensor."""
    path = Path(path)
    real = confined(path, root)
    try:
        with safe_open(str(real), framework="pt") as f:
            out = {}
            for name in f.keys():
                sl = f.get_slice(name)
                out[name] = (list(sl.get_shape()), sl.get_dtype())
            return out
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({err})") from None


def checkpoint_header(folder: Path, stem: str = "model", root: Path | None = None) -> Header:
    """Every tensor of ``{stem}.safetensors`` or of the shards its ``.index.json`` lists (inside ``root``)."""
    folder = Path(folder)
    root = Path(root if root is not None else folder)
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.exists() or single.is_symlink():
        return safetensors_header(single, root)
    if not (index.exists() or index.is_symlink()):
        raise CheckpointError(f"{folder.name} has no {single.name} (nor {index.name})")
    weight_map = read_json_config(index, root).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{index.name} has no weight_map of tensor names to shard files")
    out: Header = {}
    for shard in sorted(set(weight_map.values())):
        p = folder / shard
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise CheckpointError(f"{index.name} names a shard outside the checkpoint folder")
        confined(p, root)
        if not p.is_file():
            raise CheckpointError(f"{index.name} lists the shard {shard!r}, which is missing")
        out.update(safetensors_header(p, root))
    if set(out) != set(weight_map):
        raise CheckpointError(f"the shards do not hold the tensors {index.name} names")
    return out


# ------------------------------------------------------------------------------------- full models


def check_module_against_header(skeleton: torch.nn.Module, found: Header, file: str, dtype=None) -> None:
    """Compare a model built on the meta device with a checkpoint header: names, shapes and dtypes.

    ``dtype``: the dtype the config implies for floating point weights (``None``: any float dtype). Integer
    bytes relabelled as floats (or floats as integers) are refused either way.
    """
    state = dict(skeleton.state_dict(keep_vars=True))  # keep_vars: tied weights stay one object
    try:  # save_pretrained renames some keys back to the checkpoint's original names (transformers 5)
        from transformers.core_model_loading import revert_weight_conversion

        state = revert_weight_conversion(skeleton, state)
    except (ImportError, AttributeError):
        pass
    groups: dict[int, list[str]] = {}
    for k, v in state.items():
        groups.setdefault(id(v), []).append(k)
    missing = [g[0] for g in groups.values() if not any(n in found for n in g)]
    unexpected = [k for k in found if k not in state]
    wrong, dtypes = [], []
    for k, (shape, st_dtype) in found.items():
        if k not in state:
            continue
        if shape != list(state[k].shape):
            wrong.append(f"{k}: file {shape} vs config {list(state[k].shape)}")
        want_float = state[k].dtype.is_floating_point
        if want_float != (st_dtype in FLOAT_DTYPES) or (
            want_float and dtype is not None and st_dtype != _TORCH_TO_ST.get(dtype, st_dtype)
        ):
            want = _TORCH_TO_ST.get(dtype, "a float type") if want_float else str(state[k].dtype)
            dtypes.append(f"{k}: file {st_dtype} vs config {want}")
    problems = []
    if missing:
        problems.append(
            f"missing tensors {missing[:5]}" + (f" (+{len(missing) - 5})" if len(missing) > 5 else "")
        )
    if unexpected:
        problems.append(f"tensors the config has no place for {unexpected[:5]}")
    if wrong:
        problems.append(f"shape mismatches {wrong[:5]}")
    if dtypes:
        problems.append(f"dtype mismatches {dtypes[:5]}")
    if problems:
        raise CheckpointError(f"{file} does not match config.json: {'; '.join(problems)}")


def config_dtype(config: Any) -> torch.dtype | None:
    """The floating point dtype a transformers config records (``dtype`` / ``torch_dtype``), if any."""
    value = getattr(config, "dtype", None) if not isinstance(config, dict) else config.get("dtype")
    if value is None and isinstance(config, dict):
        value = config.get("torch_dtype")
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else None


def build_on_meta(model_class: type, config: Any, file: str = "config.json") -> torch.nn.Module:
    """``model_class(config)`` on the meta device (no memory); a config it cannot build from is a
    ``CheckpointError`` naming ``file``."""
    try:
        with torch.device("meta"):
            return (
                model_class._from_config(config)
                if hasattr(model_class, "_from_config")
                else model_class(config)
            )
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{file} does not describe a model this install can build: {err}") from None


def check_manticore_config(cfg: dict, file: str = "config.json") -> None:
    """The structure of a Manticore config dict: known component types, sane block counts."""
    from mad_models.hybrid.components import FAMILIES

    comps = cfg.get("components")
    if not isinstance(comps, list) or not comps or not all(isinstance(c, dict) for c in comps):
        raise CheckpointError(f"{file}: 'components' must be a non-empty list of component configs")
    for i, c in enumerate(comps):
        if c.get("model_type") not in FAMILIES:
            raise CheckpointError(
                f"{file}: component {i} has type {c.get('model_type')!r}, which Manticore does not support "
                f"(supported: {', '.join(sorted(FAMILIES))})"
            )
    n_blocks = cfg.get("n_blocks", 1)
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 1:
        raise CheckpointError(f"{file}: n_blocks must be a positive integer, got {n_blocks!r}")
    for key in ("vocab_size", "hidden_size"):
        v = cfg.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"{file}: {key} must be a non-negative integer, got {v!r}")


def check_pretrained_folder(
    model_class: type, folder: Path, root: Path | None = None, config: Any = None
) -> dict:
    """Check ``folder`` (config.json + safetensors) before ``model_class.from_pretrained`` builds from it.

    The model is built from config.json on the meta device and compared with the weights' headers (names,
    shapes, dtypes), so a config asking for a 4M-token vocabulary next to 128-token weights is refused
    before a byte is allocated. ``config``: a config object the caller passes instead (the Auto classes
    do), which the weights must then match. Returns the config dict.
    """
    folder = Path(folder)
    root = Path(root) if root is not None else checkpoint_root(folder)
    cfg = read_json_config(folder / "config.json", root)
    if cfg.get("model_type") == "manticore":
        check_manticore_config(cfg)
    config_class = getattr(model_class, "config_class", None)
    if config is None and config_class is None:
        return cfg
    if config is None:
        try:
            config = config_class.from_dict(dict(cfg))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"config.json is not a valid {config_class.__name__}: {err}") from None
    skeleton = build_on_meta(model_class, config)
    if not any((folder / f"model.safetensors{end}").exists() for end in ("", ".index.json")):
        return cfg  # no safetensors weights: from_pretrained refuses that itself (and never reads pickles)
    found = checkpoint_header(folder, "model", root)
    check_module_against_header(skeleton, found, "model.safetensors", dtype=config_dtype(cfg))
    return cfg


def check_causal_lm_folder(folder: Path, root: Path | None = None) -> dict:
    """:func:`check_pretrained_folder` for whichever causal LM ``config.json`` names (never remote code).

    Example:
        >>> # check_causal_lm_folder(Path("runs/neox/final"))  # before AutoModelForCausalLM.from_pretrained
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    root = Path(root) if root is not None else checkpoint_root(folder)
    read_json_config(folder / "config.json", root)  # a clear error for broken JSON, links out, nesting
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise CheckpointError(f"config.json cannot be read as a transformers config: {err}") from None

    def build(c):
        return AutoModelForCausalLM.from_config(c, trust_remote_code=False)

    return check_pretrained_folder(build, folder, root, config=config)


# ------------------------------------------------------------------------------------------ adapters

_RANK_DIM = {"lora_A": 0, "lora_B": 1, "lora_embedding_A": 0, "lora_embedding_B": 1}
# pattern keys are regexes matched against module names: keep them plain (no groups, few repeats), since a
# crafted pattern such as "(a+)+$" would make re.match take exponential time
_PLAIN_PATTERN = re.compile(r"[\w.\-^$|\[\]\\*+?]{1,256}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pattern_dict(cfg: dict, key: str, ok, what: str, file: str) -> dict:
    patterns = cfg.get(key) or {}
    if not isinstance(patterns, dict):
        raise CheckpointError(f"{file}: {key} must be an object of module pattern -> {what}")
    for pattern, value in patterns.items():
        if not _PLAIN_PATTERN.fullmatch(pattern) or sum(pattern.count(c) for c in "*+?") > 2:
            raise CheckpointError(f"{file}: {key} key {pattern[:60]!r} is not a plain module name pattern")
        if not ok(value):
            raise CheckpointError(f"{file}: {key}[{pattern!r}] must be {what}, got {value!r}")
    return patterns


def _module_of(tensor: str, part: str) -> str:
    """``base_model.model.model.layers.0.mlp.up.lora_A.weight`` -> ``model.layers.0.mlp.up``."""
    name = tensor.split(f".{part}", 1)[0]
    return name.removeprefix("base_model.model.")


def check_adapter_header(cfg: dict, found: Header, file: str = "adapter_model.safetensors") -> None:
    """What a PEFT adapter config implies, against its weights' header (before any base is loaded).

    Adapter weights must be floating point. LoRA: ``r`` and every ``rank_pattern`` value are positive ints,
    every ``alpha_pattern`` value a finite number, each LoRA tensor has the rank the config gives its module,
    and no configured rank exceeds the largest rank in the file. MoRe: ``nblocks`` and ``block_rank`` match
    every factor's shape.
    """
    for name, (_, st_dtype) in found.items():
        if st_dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{file}: tensor {name} has dtype {st_dtype}; adapter weights are floating point "
                f"({', '.join(FLOAT_DTYPES)})"
            )
    for key in ("target_modules", "modules_to_save"):
        value = cfg.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise CheckpointError(f"adapter_config.json: {key} must be a string or a list of strings")
    peft_type = cfg.get("peft_type")
    if peft_type == "LORA":
        _check_lora(cfg, found, file)
    elif peft_type == "MORE":
        _check_more(cfg, found, file)


def _check_lora(cfg: dict, found: Header, file: str) -> None:
    from peft.utils.other import get_pattern_key

    conf = "adapter_config.json"
    r = cfg.get("r")
    if not _positive_int(r):
        raise CheckpointError(f"{conf}: LoRA rank r must be a positive integer, got {r!r}")
    if not _finite_number(cfg.get("lora_alpha", 8)):
        raise CheckpointError(f"{conf}: lora_alpha must be a finite number, got {cfg.get('lora_alpha')!r}")
    ranks = _pattern_dict(cfg, "rank_pattern", _positive_int, "a positive integer", conf)
    _pattern_dict(cfg, "alpha_pattern", _finite_number, "a finite number", conf)
    seen = []
    for name, (shape, _) in found.items():
        part = next((p for p in _RANK_DIM if f".{p}." in name or name.endswith(f".{p}")), None)
        if part is None:
            continue
        dim = _RANK_DIM[part]
        if len(shape) <= dim:
            raise CheckpointError(
                f"{file}: LoRA tensor {name} has shape {shape}, which has no rank dimension"
            )
        module = _module_of(name, part)
        key = get_pattern_key(list(ranks), module)
        want = ranks.get(key, r)
        if shape[dim] != want:
            source = f"rank_pattern[{key!r}]" if key in ranks else "r"
            raise CheckpointError(
                f"{file}: LoRA tensors of {module} do not have rank {source}={want} from {conf} "
                f"({name} has rank {shape[dim]})"
            )
        seen.append(shape[dim])
    largest = max(seen, default=0)
    for pattern, value in ranks.items():
        if value > largest:
            raise CheckpointError(
                f"{conf}: rank_pattern[{pattern!r}] = {value}, but the largest LoRA rank in {file} is "
                f"{largest}; refusing to build layers the file cannot fill"
            )


def _check_more(cfg: dict, found: Header, file: str) -> None:
    conf = "adapter_config.json"
    k, r = cfg.get("nblocks", 4), cfg.get("block_rank", 1)
    if not (_positive_int(k) and _positive_int(r)):
        raise CheckpointError(f"{conf}: nblocks and block_rank must be positive integers, got {k!r}, {r!r}")
    for name, (shape, _) in found.items():
        if "more_blkdiag1" in name:  # (k, k*r, p)
            ok = len(shape) == 3 and shape[0] == k and shape[1] == k * r
        elif "more_blkdiag2" in name:  # (k, s, k*r)
            ok = len(shape) == 3 and shape[0] == k and shape[2] == k * r
        else:
            continue
        if not ok:
            raise CheckpointError(
                f"the adapter's own config ({conf}: nblocks={k}, block_rank={r}) disagrees with its saved "
                f"tensors: MoRe factor {name} in {file} has shape {shape}"
            )


def check_adapter_folder(folder: Path, root: Path | None = None) -> dict:
    """Check a PEFT adapter dir (adapter_config.json + safetensors) before peft builds from it: the config
    read confined and capped, and what it implies against the weights' header. Returns the config dict.

    Example:
        >>> # check_adapter_folder(Path("runs/lora/final"))  # before PeftModel.from_pretrained(base, ...)
    """
    folder = Path(folder)
    root = Path(root) if root is not None else checkpoint_root(folder)
    cfg = read_json_config(folder / "adapter_config.json", root)
    check_adapter_header(cfg, checkpoint_header(folder, "adapter_model", root))
    return cfg


def peft_config_from_dict(cfg: dict):
    """The PEFT config object ``PeftModel.from_pretrained`` would make of ``cfg`` (else CheckpointError)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(cfg.get("peft_type"))
    if config_cls is None:
        raise CheckpointError(f"adapter_config.json: unknown peft_type {cfg.get('peft_type')!r}")
    known = set(getattr(config_cls, "__dataclass_fields__", {}))
    kwargs = {k: v for k, v in cfg.items() if k in known and k != "runtime_config"}
    try:
        return config_cls.from_peft_type(**config_cls.check_kwargs(**kwargs))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"adapter_config.json is not a valid {config_cls.__name__}: {err}") from None


def check_adapter_fits_base(
    cfg: dict, base: torch.nn.Module, found: Header, file: str = "adapter_model.safetensors"
) -> None:
    """Build the adapter on a meta-device twin of ``base`` and compare its tensors with the file's header.

    Every tensor the config creates must be in the file with the same shape, and every file tensor must have
    a place, so that the real build afterwards allocates no more than the file holds. A base that is not a
    transformers model (no config to rebuild it from) gets only :func:`check_adapter_header`.
    """
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict
    from transformers import PreTrainedModel

    check_adapter_header(cfg, found, file)
    if not isinstance(base, PreTrainedModel):
        return
    base_config = copy.deepcopy(base.config)
    if hasattr(base_config, "quantization_config"):  # the twin only needs module names and shapes
        del base_config.quantization_config
    twin = build_on_meta(type(base), base_config, "the base model's config")
    peft_config = peft_config_from_dict(cfg)
    peft_config.inference_mode = True
    if getattr(peft_config, "init_lora_weights", True) not in (True, False):
        peft_config.init_lora_weights = True  # PiSSA/OLoRA/... decompose base weights; shapes only need r
    try:
        with torch.device("meta"):
            twin = get_peft_model(twin, peft_config)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"adapter_config.json does not fit the base model: {err}") from None
    from mad_models.peft_saving import embedding_targeted

    state = get_peft_model_state_dict(twin, save_embedding_layers=embedding_targeted(peft_config, twin))
    wanted = {k: list(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    wrong = [
        f"{k}: file {found[k][0]} vs config {wanted[k]}"
        for k in wanted
        if k in found and found[k][0] != wanted[k]
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{file} does not fit this base model: it was saved for a base with other layer names or shapes "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatches {wrong[:3]})"
        )


__all__ = [
    "CheckpointError",
    "build_on_meta",
    "check_pretrained_folder",
    "checkpoint_root",
    "check_adapter_fits_base",
    "check_adapter_header",
    "check_causal_lm_folder",
    "check_manticore_config",
    "check_module_against_header",
    "checkpoint_header",
    "confined",
    "config_dtype",
    "peft_config_from_dict",
    "read_json_config",
    "safetensors_header",
]
