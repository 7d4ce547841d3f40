"""Push adapters, hybrids and folders saved by either to the Hub, each in one atomic commit.

Each push writes the complete folder into a temporary directory first (weights as safetensors, config,
card), then sends it with :func:`hub_tools.commit.commit_folder`. Absolute local paths never go into a
pushed config or card (:mod:`hub_tools.provenance`); no push follows a link, and the token in use is
published nowhere (:mod:`hub_tools.outgoing`: a folder given to :func:`push` is checked for links before it
is read; the card and configs have the token replaced by ``***``). Spaces are pushed by
:mod:`hub_tools.space`.

Example:
    >>> from hub_tools import push, push_adapter
    >>> url = push_adapter(peft_model, "me/smollm2-more-arith", private=True)  # doctest: +SKIP
    >>> url = push("runs/search/final", "me/neox-mamba-manticore")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo
from huggingface_hub.utils import validate_repo_id

from hub_tools.commit import WEIGHT_PATTERNS, commit_folder, folder_files
from hub_tools.errors import DEFAULT_TIMEOUT, hub_errors, redact, resolve_endpoint
from hub_tools.outgoing import refuse_links, scrub_token_files
from hub_tools.provenance import (
    base_license,
    canonical_base_id,
    is_local_path,
    public_name,
    public_settings,
    remap_strings,
    scrub_local_paths,
)
from mad_models.cards import EvalLike, adapter_card, causal_lm_card, hybrid_card, is_hub_id
from mad_models.more.report import adapter_report
from mad_models.peft_saving import embedding_targeted

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
# What a model push replaces as a whole: weights, configs and tokenizer files of whatever the repo held
# before (a hybrid pushed over an adapter must not leave adapter_config.json behind, nor old tokenizer files).
MODEL_FILE_PATTERNS = (
    *WEIGHT_PATTERNS, "adapter_config.json", "config.json", "generation_config.json", *TOKENIZER_FILES
)  # fmt: skip
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
            license = base_license(sources, endpoint=endpoint, token=token, timeout=timeout)
        settings = {k: v for k, v in adapter_cfg.items() if k in ADAPTER_SETTINGS}
        card = adapter_card(
            repo_id,
            peft_type=str(getattr(config.peft_type, "value", config.peft_type)),
            base_model=base_id,
            report=report,
            license=license,
            eval_results=eval_results,
            training=public_settings(training),
            adapter_settings=settings,
            files=_sizes(out, {"adapter_config.json", "adapter_model.safetensors"}),
        )
        card.save(out / "README.md")
        keep = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        for f in folder_files(out):
            if f not in keep:
                (out / f).unlink()
        scrub_local_paths(out, [local_base or ""])
        scrub_token_files(out, folder_files(out), token)  # a token in the training settings goes out as ***
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
        for f in folder_files(out)
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
    evaluation: Mapping[str, Any] | None = None,
) -> CommitInfo:
    """Push a Manticore hybrid: config.json, model.safetensors (sharded past `max_shard_size`), the
    generation config, the tokenizer files when `tokenizer` is given, and README.md, in one commit.
    A plain causal LM (one of a hybrid's components) is pushed the same way with a card of its own.

    `training` holds the training / search settings shown in the card; `evaluation` the data and bits per
    character measured on it (a ``bits_per_char.json`` record, see ``mad_models.cards.evaluation_section``).

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
            (out / "config.json").write_text(
                json.dumps(remap_strings(cfg_json, local_names), indent=2) + "\n"
            )
        if license is None:
            bases = [c["name_or_path"] for c in comps]
            if bases and all(is_hub_id(b) or Path(str(b)).is_dir() for b in bases):
                license = base_license(bases, endpoint=endpoint, token=token, timeout=timeout)
        comps = [{**c, "name_or_path": local_names.get(c["name_or_path"], c["name_or_path"])} for c in comps]
        cost = remap_strings(cost, local_names) if cost else cost
        has_tokenizer = any((out / f).is_file() for f in TOKENIZER_FILES)
        if getattr(hybrid.config, "model_type", None) == "manticore":
            card = hybrid_card(
                repo_id,
                components=comps,
                component_names=names,
                mixture_weights=weights,
                cost_report=cost,
                license=license,
                eval_results=eval_results,
                training=public_settings(training),
                files=_sizes(out),
                has_tokenizer=has_tokenizer,
                evaluation=evaluation,
            )
        else:
            card = causal_lm_card(
                repo_id,
                model_type=str(hybrid.config.model_type),
                params=sum(p.numel() for p in hybrid.parameters()),
                license=license,
                eval_results=eval_results,
                evaluation=evaluation,
                files=_sizes(out),
                has_tokenizer=has_tokenizer,
            )
        card.save(out / "README.md")
        scrub_local_paths(out, list(local_names))
        scrub_token_files(out, folder_files(out), token)  # a token in the training settings goes out as ***
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


def push(model_or_dir, repo_id: str, *, base_model=None, tokenizer=None, **kwargs) -> CommitInfo:
    """CLI hook: push a PeftModel, a hybrid, or a directory saved by either (``mad-models push DIR REPO``).

    A directory holding adapter_config.json is loaded onto `base_model` (a model, a repo id or a local
    dir; defaults to the id in the adapter config) so the card can report sizes; any other directory is
    loaded as a hybrid (or a plain causal LM), with its tokenizer files when present, and its
    ``bits_per_char.json`` (data and bits per character, as the bundled text models carry) goes to the
    card. Keyword arguments go to push_adapter / push_hybrid.

    Example:
        >>> push("runs/more-arith/final", "me/smollm2-more-arith", private=True)
    """
    from peft import PeftModel

    from hub_tools.pull import pull

    if isinstance(model_or_dir, (str, os.PathLike)):
        path = Path(model_or_dir)
        if not path.is_dir():
            raise ValueError(f"'{model_or_dir}' is not a directory saved by save_pretrained")
        # before anything reads it: a linked chat_template.jinja would go up inside the tokenizer files
        refuse_links(path, repo_id)
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
        record = path / "bits_per_char.json"
        if record.is_file() and "evaluation" not in kwargs and not (path / "adapter_config.json").is_file():
            kwargs["evaluation"] = json.loads(record.read_text())
    else:
        model = model_or_dir
    if isinstance(model, PeftModel):
        return push_adapter(model, repo_id, **kwargs)
    return push_hybrid(model, repo_id, tokenizer=tokenizer, **kwargs)
