"""Load an adapter or a hybrid from the Hub (or a local dir): safetensors only, no remote code, checked first.

Order of work in :func:`pull`:
1. resolve the repo and revision (one repo-info call, which also gives clear 401/403/404/revision errors),
2. refuse a repo whose weights exist only as pickles, and never download pickle files at all,
3. download the snapshot into the huggingface_hub cache (HF_HUB_OFFLINE=1 reads that cache),
4. check the files against the config (every shard there, tensor names and shapes as the config implies),
5. build the model.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Collection, Iterable
from pathlib import Path

import torch
from huggingface_hub import HfApi, RepoFile, constants, snapshot_download
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

from hub_tools.errors import (
    DEFAULT_TIMEOUT,
    RepoContentError,
    UnsafeWeightsError,
    hub_errors,
    hub_timeout,
    resolve_endpoint,
)
from mad_models import validation
from mad_models.adapter_base import BaseModelError, adapter_base, base_must_come_from_hub, resolving_base_of
from mad_models.peft_saving import embedding_targeted

logger = logging.getLogger(__name__)

PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt"]
# all that pull reads: JSON configs and safetensors weights (nothing else a repo holds is fetched)
PULL_PATTERNS = ["*.json", "*.safetensors"]
ADAPTER_TYPES = ("LORA", "MORE")
KINDS = ("adapter", "hybrid", "model")  # what pull(accept=...) names: see _accepted
MAX_PULLED_FILES = 64  # with a size cap (public Space): configs, an index and its shards
# Other frameworks' weights are useless to torch + safetensors; skip them too.
NEVER_DOWNLOAD = [*PICKLE_PATTERNS, "*.h5", "*.msgpack", "*.onnx", "*.ot"]


def _is_pickle(name: str) -> bool:
    return any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in PICKLE_PATTERNS)


def _refuse_pickle_only(files: Iterable[str], where: str) -> None:
    files = list(files)
    if any(f.endswith(".safetensors") for f in files):
        return
    pickles = [f for f in files if _is_pickle(f)]
    if pickles:
        raise UnsafeWeightsError(
            f"'{where}' only has pickle weights ({', '.join(sorted(pickles)[:3])}). hub_tools loads "
            "safetensors only, because unpickling runs code from the file. Ask the author for safetensors, "
            "or load it yourself where you trust it and re-push with push_adapter / push_hybrid, which write "
            "safetensors.",
            where,
        )


def _check_size(files: dict[str, int | None], repo_id: str, max_bytes: int | None) -> None:
    """Refuse a repo whose files pull would download (:data:`PULL_PATTERNS`) add up to more than
    ``max_bytes``, or number more than :data:`MAX_PULLED_FILES` (sizes from the Hub's file listing)."""
    if max_bytes is None:
        return
    wanted = list(filter_repo_objects(files, allow_patterns=PULL_PATTERNS, ignore_patterns=NEVER_DOWNLOAD))
    total = sum(files[f] if files[f] is not None else max_bytes + 1 for f in wanted)  # unknown: too big
    if len(wanted) > MAX_PULLED_FILES or total > max_bytes:
        raise RepoContentError(
            f"'{repo_id}' holds {len(wanted)} config and weight files of {total / 2**20:,.1f} MiB; this "
            f"loader takes at most {MAX_PULLED_FILES} files and {max_bytes / 2**20:,.0f} MiB. Nothing "
            "was downloaded.",
            repo_id,
        )


def _download(
    repo_id: str, revision: str | None, *, endpoint, token, cache_dir, timeout, max_bytes=None
) -> Path:
    with hub_errors(repo_id, "pull", endpoint=endpoint, revision=revision, token=token, timeout=timeout):
        validate_repo_id(repo_id)
        if revision is not None:
            with _content_errors(repo_id):
                validation.check_revision(revision)
        kwargs = dict(
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=PULL_PATTERNS,
            ignore_patterns=NEVER_DOWNLOAD,
        )
        if constants.is_offline_mode():
            return Path(snapshot_download(repo_id, revision=revision, **kwargs))
        try:
            with hub_timeout(timeout):
                api = HfApi(endpoint=endpoint, token=token)
                info = api.model_info(repo_id, revision=revision, timeout=timeout)
                _refuse_pickle_only([s.rfilename for s in info.siblings or []], repo_id)
                if max_bytes is not None:  # the commit the answer names: the listing and the download agree
                    listing = api.list_repo_tree(repo_id, revision=info.sha, recursive=True)
                    sizes = {f.path: f.size for f in listing if isinstance(f, RepoFile)}
                    _check_size(sizes, repo_id, max_bytes)
                fetched = snapshot_download(repo_id, revision=info.sha, etag_timeout=timeout or 10, **kwargs)
                folder = Path(fetched)
                if (revision or "main") != info.sha:  # as huggingface_hub does: offline loads find it by name
                    ref = folder.parent.parent / "refs" / (revision or "main")
                    ref.parent.mkdir(parents=True, exist_ok=True)
                    ref.write_text(info.sha)
                return folder
        except Exception as err:
            import httpx2

            if not isinstance(err, (httpx2.TransportError, ConnectionError)):
                raise
            try:  # the Hub is unreachable: a cached copy still serves, as huggingface_hub itself does
                folder = Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
            except Exception:
                raise err from None
            logger.warning("The Hub at %s is unreachable; using the cached copy of %s", endpoint, repo_id)
            return folder


def _unpathed(text: str, folder: Path | None, where: str) -> str:
    """``text`` with the local folder a repo was downloaded to (a cache snapshot) named by the repo instead:
    a message shown to a Space visitor never reveals the server's paths."""
    if folder is None or str(folder) == where:
        return text
    root = validation.checkpoint_root(folder)
    for path in sorted({str(folder), str(folder.resolve()), str(root), str(root.resolve())}, key=len)[::-1]:
        text = text.replace(path, where)
    return text


@contextlib.contextmanager
def _content_errors(where: str, folder: Path | None = None):
    """mad_models.validation's CheckpointError (names the file) -> RepoContentError (also names the repo)."""
    try:
        yield
    except validation.CheckpointError as err:
        raise RepoContentError(f"'{where}': {_unpathed(str(err), folder, where)}", where) from None


def _shard_inside(folder: Path, root: Path, name: object) -> bool:
    """True if shard `name` (from an index file) is a plain relative path whose file, links followed, stays
    inside `root` (validation.checkpoint_root: the folder, or a cache snapshot's own repo folder)."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return False
    parts = Path(name).parts
    if Path(name).is_absolute() or Path(name).drive or any(p in ("..", "") for p in parts):
        return False
    try:
        validation.confined(folder / name, root)
    except validation.CheckpointError:
        return False
    return True


def _weights(folder: Path, stem: str, where: str) -> dict[str, tuple[list[int], str]]:
    """All tensors of ``{stem}.safetensors`` or of the shards listed in ``{stem}.safetensors.index.json``.

    The index and every weight file are read through mad_models.validation: the index with its size and
    depth caps, and every file only if it lies, links followed, inside the snapshot (whose files may link
    into their own repo's ``blobs/``) or the local dir. A file or shard that leads elsewhere is refused
    without saying where it points or whether that exists.
    """
    root = validation.checkpoint_root(folder)
    single, index = folder / f"{stem}.safetensors", folder / f"{stem}.safetensors.index.json"
    if single.is_file() and index.is_file():  # e.g. two pushes mixed by a tool without parent_commit
        raise RepoContentError(
            f"'{where}' holds both {single.name} and {index.name}, so which weights are meant is unknown "
            "(two pushes mixed?). Push it again from the model.",
            where,
        )
    if single.is_file() or single.is_symlink():  # a dangling or outside link is refused, not skipped
        with _content_errors(where, folder):
            return validation.safetensors_header(single, root)
    if index.is_file() or index.is_symlink():
        with _content_errors(where, folder):
            weight_map = validation.read_json_config(index, root).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise RepoContentError(
                f"'{where}': {index.name} has no weight_map of tensor names to shard files.", where
            )
        if not all(_shard_inside(folder, root, s) for s in weight_map.values()):
            raise RepoContentError(
                f"'{where}': {index.name} names shard files outside the repo (absolute or '..' paths). "
                "Nothing outside the repo is ever loaded; push the repo again with plain shard names.",
                where,
            )
        missing = sorted({s for s in weight_map.values() if not (folder / s).is_file()})
        if missing:
            raise RepoContentError(
                f"'{where}': the shard index lists {missing} but they are not in the repo; "
                "push it again so every shard is uploaded.",
                where,
            )
        out = {}
        with _content_errors(where, folder):
            for shard in sorted(set(weight_map.values())):
                out.update(validation.safetensors_header(folder / shard, root))
        if set(out) != set(weight_map):
            raise RepoContentError(f"'{where}': the shards do not hold the tensors their index names.", where)
        return out
    _refuse_pickle_only([p.name for p in folder.iterdir()], where)
    raise RepoContentError(
        f"'{where}' has no {stem}.safetensors (nor a shard index). Push it with hub_tools.", where
    )


def _load_transformers_model(folder: Path, where: str, dtype=None):
    from transformers import AutoConfig, AutoModelForCausalLM

    root = validation.checkpoint_root(folder)
    with _content_errors(where, folder):
        cfg_json = validation.read_json_config(folder / "config.json", root)
        validation.check_config_dict(cfg_json)  # numbers the config's own constructor would expand
        validation.check_json_files(folder, root)  # generation_config.json & co: capped, depth-limited
        if cfg_json.get("model_type") == "manticore":
            validation.check_manticore_config(cfg_json)
    try:
        # trust_remote_code=False: a config that needs code from the repo is refused, never executed
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, OSError) as err:
        model_type = cfg_json.get("model_type")
        why = (
            f"has model_type '{model_type}', which this install does not know and which would need remote "
            "code; hub_tools never runs code from a repo"
            if model_type
            else "has a config.json without a model_type, so no model class can be chosen"
        )
        raise RepoContentError(f"'{where}' {why} ({_unpathed(str(err), folder, where)}).", where) from None
    found = _weights(folder, "model", where)
    with _content_errors(where, folder):  # layer counts and a hybrid's sizes, before building anything
        validation.check_before_build(cfg_json, config, found)
        skeleton = validation.build_on_meta(
            lambda c: AutoModelForCausalLM.from_config(c, trust_remote_code=False), config
        )
    with _content_errors(where, folder):  # names, shapes and dtypes against the header, before any allocation
        dtype_wanted = validation.config_dtype(cfg_json)
        validation.check_module_against_header(skeleton, found, "model.safetensors", dtype=dtype_wanted)
    model = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=False, use_safetensors=True, dtype=dtype
    )
    return model.eval()


def _check_adapter(folder: Path, where: str) -> dict:
    with _content_errors(where, folder):
        cfg = validation.read_json_config(folder / "adapter_config.json", validation.checkpoint_root(folder))
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if cfg.get("peft_type") not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise RepoContentError(
            f"'{where}': unknown peft_type {cfg.get('peft_type')!r}; install the package "
            "that defines it (MORE comes with `import mad_models`).",
            where,
        )
    if cfg.get("peft_type") not in ADAPTER_TYPES:
        raise RepoContentError(
            f"'{where}': peft_type {cfg['peft_type']!r} is not loaded; hub_tools loads "
            f"{' and '.join(ADAPTER_TYPES)} adapters, whose every option it checks first.",
            where,
        )
    found = _weights(folder, "adapter_model", where)
    if not found:
        raise RepoContentError(f"'{where}': adapter_model.safetensors holds no tensors.", where)
    with _content_errors(where, folder):
        validation.check_adapter_header(cfg, found)
    targets = cfg.get("target_modules")
    if isinstance(targets, list) and targets:
        extra = set(cfg.get("modules_to_save") or [])
        stray = [k for k in found if not any(f".{t}." in f".{k}" or f".{t}" in k for t in (*targets, *extra))]
        if stray:
            raise RepoContentError(
                f"'{where}': tensors {stray[:3]} belong to no target module {targets}.", where
            )
    if cfg.get("peft_type") == "LORA" and not cfg.get("rank_pattern"):
        bad = [k for k, (shape, _) in found.items() if "lora_A" in k and shape[0] != cfg["r"]]
        if bad:
            raise RepoContentError(f"'{where}': LoRA tensors {bad[:3]} do not have rank r={cfg['r']}.", where)
    return cfg


def _check_adapter_loaded(model, folder: Path, where: str) -> None:
    """Every tensor the config creates must come from the file, and every file tensor must have a place."""
    from peft.utils import get_peft_model_state_dict

    found = _weights(folder, "adapter_model", where)
    state = get_peft_model_state_dict(
        model, save_embedding_layers=embedding_targeted(model.peft_config["default"], model)
    )
    wanted = {k: list(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    if missing or unexpected:
        raise RepoContentError(
            f"'{where}': adapter_model.safetensors does not match adapter_config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}). Push the adapter again from the model.",
            where,
        )


def _base_for(cfg: dict, base_model, *, where, from_hub, base_revision, **hub):
    """The base model of an adapter: `base_model` when given, else what its config names, by the rules of
    :mod:`mad_models.adapter_base` (a Hub repo names only Hub ids, fetched from the Hub even if a folder of
    that name exists here; no cycles; at most MAX_BASE_DEPTH deep), checked before any download.
    """
    if isinstance(base_model, torch.nn.Module):
        return base_model
    try:
        base_id = adapter_base(cfg, where, from_hub=from_hub, base_model=base_model and str(base_model))
    except BaseModelError as err:
        raise RepoContentError(str(err), where) from None
    from mad_models import loading

    if base_id == loading.SMOLLM2_HUB_ID:  # the project's loader has it offline (HF cache or the GGUF)
        logger.info("'%s': base model %s, loaded offline by mad_models.loading.load_smollm2", where, base_id)
        return loading.load_smollm2()[0]
    base_rev = base_revision or (cfg.get("revision") if base_model is None else None)
    logger.info(
        "'%s': base model %s at revision %s",
        where,
        base_id,
        base_rev or "main (unpinned: pass base_revision= to pin it)",
    )
    # a base the repo named (not one the caller chose) must come from the Hub, never a local folder
    with resolving_base_of(where, hub_only=from_hub and base_model is None):
        return pull(base_id, revision=base_rev, **hub)


def _accepted(folder: Path, where: str, accept: Collection[str]) -> None:
    """Refuse a repo whose kind (adapter, Manticore hybrid, other causal LM) the caller does not take."""
    if set(accept) >= set(KINDS):
        return
    if (folder / "adapter_config.json").is_file():
        kind = "adapter"
    elif (folder / "config.json").is_file():
        with _content_errors(where, folder):
            cfg = validation.read_json_config(folder / "config.json", validation.checkpoint_root(folder))
        kind = "hybrid" if cfg.get("model_type") == "manticore" else "model"
    else:
        return  # pull says what is missing
    if kind not in accept:
        names = {"adapter": "an adapter", "hybrid": "a Manticore hybrid", "model": "a plain causal LM"}
        taken = " and ".join(names[k].split(" ", 1)[1] + "s" for k in KINDS if k in accept)
        raise RepoContentError(f"'{where}' is {names[kind]}, and only {taken} are loaded here.", where)


def pull(
    repo_id_or_local_dir: str | Path,
    revision: str | None = None,
    *,
    base_model=None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    dtype: torch.dtype | None = None,
    base_revision: str | None = None,
    accept: Collection[str] = KINDS,
    max_bytes: int | None = None,
):
    """Load a mad-models repo: a PeftModel for an adapter, a ManticoreForCausalLM for a hybrid.

    Accepts a repo id (with `revision`: branch, tag or commit) or a local directory. Safetensors only:
    a repo with only pickle weights raises UnsafeWeightsError and pickle files are never downloaded.
    Remote code is never run. With HF_HUB_OFFLINE=1 the model comes from the cache. An adapter needs its
    base: `base_model` (a model, an id or a dir), else the id recorded in its adapter config (logged; a
    repo from the Hub may only name a Hub id, never a local path); `base_revision` pins the base's revision.
    Every shard must lie inside the downloaded snapshot (or the local dir). Only the repo's top-level JSON
    configs and safetensors files are downloaded; a revision must be a valid git ref name.

    For untrusted callers (a public Space): ``accept`` names the kinds loaded (``"adapter"``, ``"hybrid"``
    for a Manticore hybrid, ``"model"`` for any other causal LM; an adapter's base is pulled under the same
    rules), ``max_bytes`` caps what is downloaded, checked from the Hub's file listing before any download,
    and ``token=False`` sends no token at all.

    Example:
        >>> model = pull("me/pythia-mamba-manticore", revision="abc123")
        >>> adapter = pull("me/smollm2-more-arith", base_model=smollm2)
    """
    import mad_models  # noqa: F401  (registers MORE with peft and "manticore" with transformers)

    endpoint = resolve_endpoint(endpoint)
    local = Path(repo_id_or_local_dir).expanduser()
    if local.is_dir() and not base_must_come_from_hub():  # a base named by a Hub repo comes from the Hub
        folder, where = local, str(local)
    elif isinstance(repo_id_or_local_dir, Path) or str(repo_id_or_local_dir).startswith((".", "/", "~")):
        raise ValueError(f"'{repo_id_or_local_dir}' looks like a local path but is not a directory")
    else:
        where = str(repo_id_or_local_dir)
        folder = _download(
            where,
            revision,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            timeout=timeout,
            max_bytes=max_bytes,
        )
    _accepted(folder, where, accept)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        cfg = _check_adapter(folder, where)
        base = _base_for(
            cfg,
            base_model,
            where=where,
            from_hub=folder is not local,
            base_revision=base_revision,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            timeout=timeout,
            accept=accept,
            max_bytes=max_bytes,
        )
        with _content_errors(where, folder):  # on a meta-device twin of the base: nothing allocated yet
            validation.check_adapter_fits_base(cfg, base, _weights(folder, "adapter_model", where))
        try:
            model = PeftModel.from_pretrained(base, folder, is_trainable=False)
        except RuntimeError as err:  # size mismatch between the file and the layers the config builds
            raise RepoContentError(
                f"'{where}': adapter weights do not fit the config and base model: {err}"
            ) from None
        _check_adapter_loaded(model, folder, where)
        return model.eval()
    if (folder / "config.json").is_file():
        return _load_transformers_model(folder, where, dtype=dtype)
    _refuse_pickle_only([p.name for p in folder.iterdir()], where)
    raise RepoContentError(
        f"'{where}' has neither adapter_config.json nor config.json: not a model repo pushed by hub_tools.",
        where,
    )


__all__ = ["pull"]
