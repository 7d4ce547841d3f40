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
# the deepest published LMs have ~130 layers; transformers builds per-layer lists and modules from this number
# (even on the meta device every layer costs Python objects), so a config asking for more is a bomb
MAX_LAYERS = 1024
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# JSON files transformers reads with Python's json module next to the weights (tokenizer.json is Rust's)
CONFIG_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
)
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


def check_json_files(folder: Path, root: Path | None = None) -> None:
    """Every config-like JSON file of ``folder`` that transformers parses itself (generation_config.json,
    tokenizer_config.json, ...) read once through :func:`read_json_config`: confined, size-capped and at most
    32 levels deep, so a crafted one is a ``CheckpointError`` naming it, never a RecursionError deep inside
    transformers."""
    folder = Path(folder)
    for name in CONFIG_JSON_FILES:
        if (folder / name).exists() or (folder / name).is_symlink():
            read_json_config(folder / name, root)


_GIT_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_revision(revision: str) -> str:
    """``revision`` if it is a valid git ref name or commit (git's ``check-ref-format`` rules), else
    ``CheckpointError``. huggingface_hub writes ``refs/<revision>`` into its cache, so a revision such as
    ``../../x`` would write outside it.

    Example:
        >>> check_revision("refs/pr/1")
        'refs/pr/1'
    """
    ok = (
        isinstance(revision, str)
        and 0 < len(revision) <= 256
        and not _GIT_REF_FORBIDDEN.search(revision)
        and ".." not in revision
        and "@{" not in revision
        and "//" not in revision
        and revision != "@"
        and not revision.startswith("/")
        and not revision.endswith(("/", "."))
        and not any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/"))
    )
    if not ok:
        raise CheckpointError(
            f"revision {revision!r} is not a valid git ref name (a branch, tag or commit: no '..', no "
            "part starting with '.', no spaces or ~^:?*[\\ characters)"
        )
    return revision


def check_config_dict(cfg: dict, file: str = "config.json") -> None:
    """Numbers transformers expands while it *constructs* a config (before any model is built): the layer
    count (many configs build one list entry per layer) and gpt_neo's ``attention_types`` repeats."""
    for key in _LAYER_KEYS:
        value = cfg.get(key)
        if value is not None and not (_whole(value) and 0 <= value <= MAX_LAYERS):
            raise CheckpointError(
                f"{file}: {key} must be a number of layers in 0..{MAX_LAYERS}, got {value!r}"
            )
    types = cfg.get("attention_types")
    if types is not None:
        try:
            total = sum(len(kinds) * repeat for kinds, repeat in types if _whole(repeat) and repeat >= 0)
            ok = all(_whole(repeat) and repeat >= 0 for _, repeat in types) and total <= 2 * MAX_LAYERS
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(
                f"{file}: attention_types must be [[kinds, repeat], ...] for at most {MAX_LAYERS} layers"
            )
    text = cfg.get("text_config")
    if isinstance(text, dict):
        check_config_dict(text, file)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# transformers writes the floats JSON has no literal for as tagged objects, e.g. Mamba2's
# time_step_limit=(0.0, inf) as [0.0, {"__float__": "Infinity"}], and decodes them when it reads config.json
_FLOAT_TAG = "__float__"
_FLOAT_TAG_VALUES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_special_floats(obj: Any) -> Any:
    """A config.json's JSON as transformers reads it: ``{"__float__": "Infinity"}`` -> ``inf`` (NaN, -inf).

    Example:
        >>> decode_special_floats({"time_step_limit": [0.0, {"__float__": "Infinity"}]})
        {'time_step_limit': [0.0, inf]}
    """
    if isinstance(obj, dict):
        if (
            set(obj) == {_FLOAT_TAG}
            and isinstance(obj[_FLOAT_TAG], str)
            and obj[_FLOAT_TAG] in _FLOAT_TAG_VALUES
        ):
            return _FLOAT_TAG_VALUES[obj[_FLOAT_TAG]]
        return {k: decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_special_floats(v) for v in obj]
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


_INDEXED = re.compile(r"(.*?)\.(\d+)\.")


def _spans(indices: set[int]) -> str:
    """{0, 1, 2, 5} -> '0..2, 5'."""
    out, run = [], []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out) or "none"


def check_layer_count(config: Any, found: Header, file: str = "model.safetensors") -> None:
    """Before a model is built: every layer ``config.json`` asks for must have tensors in the header.

    Building costs Python objects per layer even on the meta device (200,000 layers reached 5.7 GB), so a
    config claiming 5,000 layers next to a 2-layer file is refused here, from names alone. The layer stack
    is the prefix with the most numbered entries (``model.layers.<i>.``, ``transformer.h.<i>.``).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None)
    if not _whole(n) or n <= 0:
        return
    if n > MAX_LAYERS:
        raise CheckpointError(f"config.json asks for {n} layers, more than any model has ({MAX_LAYERS})")
    stacks: dict[str, set[int]] = {}
    for name in found:
        m = _INDEXED.match(name)
        if m:
            stacks.setdefault(m.group(1), set()).add(int(m.group(2)))
    held = max(stacks.values(), key=len, default=set())
    if set(range(n)) - held:
        raise CheckpointError(f"config.json asks for {n} layers, but {file} holds layers {_spans(held)}")


def _component_config(spec: dict, file: str) -> Any:
    from transformers import AutoConfig, PreTrainedConfig

    check_config_dict(spec, file)
    # as config.json is read: {"__float__": "Infinity"} back to a float (Mamba2's time_step_limit)
    rest = PreTrainedConfig._decode_special_floats({k: v for k, v in spec.items() if k != "model_type"})
    try:
        return AutoConfig.for_model(spec["model_type"], **rest)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{file} is not a valid {spec['model_type']} config: {err}") from None


def check_manticore_header(cfg: dict, found: Header, file: str = "model.safetensors") -> None:
    """A Manticore config against its weights' header, before the hybrid is built.

    - ``vocab_size`` is the largest component vocabulary (the forward pads every component's logits to it)
      and ``hidden_size`` the widest component (wider only where projectors, whose shapes the header pins,
      map from it);
    - each component's layer count (at most ``MAX_LAYERS``) and ``layer_map`` agree, and the header holds
      exactly the layers the kept blocks run, every one with the same tensors as the first.
    """
    from mad_models.hybrid.components import FAMILIES
    from mad_models.hybrid.layer_map import resolve_layer_map

    check_manticore_config(cfg)
    specs = cfg["components"]
    comps = [_component_config(c, f"config.json: component {i}") for i, c in enumerate(specs)]
    n_blocks, k = cfg.get("n_blocks", 1), len(comps)
    kept = cfg.get("block_components")
    if kept is None:
        kept = [list(range(k))] * n_blocks
    if not (
        isinstance(kept, list)
        and len(kept) == n_blocks
        and all(isinstance(b, list) and b and all(_whole(m) and 0 <= m < k for m in b) for b in kept)
    ):
        raise CheckpointError(f"config.json: block_components must list >= 1 of the {k} components per block")
    depths = [c.num_hidden_layers for c in comps]
    if not all(_whole(d) and 0 < d <= MAX_LAYERS for d in depths):
        raise CheckpointError(f"config.json: component layer counts {depths} must be in 1..{MAX_LAYERS}")
    names = [f"component {m}" for m in range(k)]
    try:
        layer_map = resolve_layer_map(depths, n_blocks, cfg.get("layer_map"), names)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"config.json: {err}") from None
    for key, sizes in (
        ("vocab_size", [c.vocab_size for c in comps]),
        ("hidden_size", [c.hidden_size for c in comps]),
    ):
        want, value = max(sizes), cfg.get(key)
        mixes = key == "hidden_size" and any(len(b) > 1 for b in kept)
        if value != want and not (mixes and _whole(value) and value > want):
            raise CheckpointError(
                f"config.json: {key} is {value}, but its components give {want} "
                f"({', '.join(map(str, sizes))}); a hybrid's {key} is its components'"
            )
    for m, (spec, depth) in enumerate(zip(specs, depths, strict=True)):
        starts = [sum(layer_map[m][:i]) for i in range(n_blocks)]
        wanted = {
            layer
            for i in range(n_blocks)
            if m in kept[i]
            for layer in range(starts[i], starts[i] + layer_map[m][i])
        }
        prefix = f"components.{m}.{FAMILIES[spec['model_type']].layers_path}."
        layers: dict[int, set] = {}
        for name, (shape, dtype) in found.items():
            index, dot, rest = name.removeprefix(prefix).partition(".")
            if name.startswith(prefix) and dot and index.isdigit():
                layers.setdefault(int(index), set()).add((rest, tuple(shape), dtype))
        if set(layers) != wanted:
            raise CheckpointError(
                f"config.json: component {m} ({spec['model_type']}) has {depth} layers and its kept blocks "
                f"run layers {_spans(wanted)}, but {file} holds layers {_spans(set(layers))} of it"
            )
        first = min(wanted, default=None)
        for layer in sorted(wanted):
            if layers[layer] != layers[first]:
                raise CheckpointError(
                    f"{file}: layer {layer} of component {m} holds other tensors than its layer {first} "
                    "(every layer of a component has the same weights)"
                )


def check_before_build(cfg: dict, config: Any, found: Header, file: str = "model.safetensors") -> None:
    """What can be checked from the config and the header alone, before any model (even on meta) exists."""
    if cfg.get("model_type") == "manticore":
        check_manticore_header(cfg, found, file)
    else:
        check_layer_count(config, found, file)


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
    check_config_dict(cfg)
    check_json_files(folder, root)
    if cfg.get("model_type") == "manticore":
        check_manticore_config(cfg)
    config_class = getattr(model_class, "config_class", None)
    if config is None and config_class is None:
        return cfg
    if config is None:
        try:
            config = config_class.from_dict(decode_special_floats(cfg))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"config.json is not a valid {config_class.__name__}: {err}") from None
    if not any((folder / f"model.safetensors{end}").exists() for end in ("", ".index.json")):
        build_on_meta(model_class, config)  # a config it cannot build from is refused all the same
        return cfg  # no safetensors weights: from_pretrained refuses that itself (and never reads pickles)
    found = checkpoint_header(folder, "model", root)
    check_before_build(cfg, config, found)
    skeleton = build_on_meta(model_class, config)
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
    # a clear error for broken JSON, links out, nesting, and numbers the config's constructor would expand
    check_config_dict(read_json_config(folder / "config.json", root))
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
        if not _plain(pattern):
            raise CheckpointError(f"{file}: {key} key {pattern[:60]!r} is not a plain module name pattern")
        if not ok(value):
            raise CheckpointError(f"{file}: {key}[{pattern!r}] must be {what}, got {value!r}")
    return patterns


# PEFT matches these against every module name of the base as regexes (a string target_modules /
# exclude_modules whole; each modules_to_save entry and layers_pattern spliced into a larger regex)
_REGEX_FIELDS = (
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_pattern",
    "feedforward_modules",
)
# the inits that leave the base model alone: PiSSA, OLoRA, CorDA, LoftQ... decompose or quantize the base
# layer's weight in place while loading (a shared base changes for everyone), and pissa_niter_N runs N
# iterations, as many as the config asks
SAFE_INITS = (True, False, "gaussian")


def _plain(pattern: Any) -> bool:
    return (
        isinstance(pattern, str)
        and bool(_PLAIN_PATTERN.fullmatch(pattern))
        and sum(pattern.count(c) for c in "*+?") <= 2
    )


def check_adapter_options(cfg: dict, file: str = "adapter_config.json") -> None:
    """The options of a PEFT adapter config that act on the base model before any weight is compared.

    Every module-name field PEFT turns into a regex is a plain name pattern (word characters, ``.``,
    ``-``, ``|``, ``[]``, ``^$`` and at most two ``*+?``), as ``rank_pattern`` keys are: a pattern such as
    ``(?:.|.)*!`` backtracks for ever inside ``re``, which holds the GIL, so one load would freeze the
    process. The init must be one of :data:`SAFE_INITS`; ``layer_replication`` and ``megatron_config``
    (which makes PEFT import a module the config names) are refused.
    """
    for key in _REGEX_FIELDS:
        value = cfg.get(key)
        if value is None:
            continue
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(_plain(v) for v in values):
            shown = repr(value)[:60]
            raise CheckpointError(
                f"{file}: {key} {shown} is not a plain module name pattern (letters, digits, '.', '-', '|', "
                "'[]', '^$' and at most two '*+?'); nothing else is loaded"
            )
    for key in ("init_lora_weights", "init_weights"):
        value = cfg.get(key, True)
        if not any(value is safe or (isinstance(safe, str) and value == safe) for safe in SAFE_INITS):
            raise CheckpointError(
                f"{file}: {key} {value!r} is refused: inits such as PiSSA, OLoRA, CorDA and LoftQ rewrite "
                "the base model's weights while loading (and some run as long as the config asks); only "
                'true, false and "gaussian" are loaded'
            )
    for key in ("layer_replication", "megatron_config"):
        if cfg.get(key):
            raise CheckpointError(
                f"{file}: {key} is refused: it rebuilds the base model (or imports a module the config names)"
            )


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
    check_adapter_options(cfg)
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
    "check_adapter_options",
    "check_before_build",
    "check_config_dict",
    "check_json_files",
    "check_layer_count",
    "check_manticore_header",
    "check_revision",
    "check_causal_lm_folder",
    "check_manticore_config",
    "check_module_against_header",
    "checkpoint_header",
    "confined",
    "config_dtype",
    "decode_special_floats",
    "peft_config_from_dict",
    "read_json_config",
    "safetensors_header",
]
