"""What may leave this machine in a push: the checks every push makes on the folder it uploads.

- **Links.** A push never follows one: a model folder whose ``chat_template.jinja`` links to
  ``~/.ssh/id_rsa`` would publish the key. A folder holding a link is refused, naming it.
- **The token in use** (the one passed, ``HF_TOKEN``, the login cache). Text a push writes itself (the card,
  configs, the commit message) has it replaced by ``***``; any other file holding it is refused.

What a Space may take besides is :mod:`hub_tools.space`'s rule.

Example:
    >>> refuse_links(Path("runs/hybrid/final"), "me/hybrid")   # doctest: +SKIP
    >>> holds_token(Path("app/settings.py"), token_secrets(None))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from hub_tools.errors import HubError, _secrets

logger = logging.getLogger(__name__)

_SAFETENSORS_HEADER_MAX = 100_000_000  # safetensors' own cap on its JSON header


def token_secrets(token: str | bool | None) -> list[str]:
    """The token strings a push must never publish: ``token`` when given, ``HF_TOKEN``, the login cache."""
    return _secrets(token)


def links_in(folder: Path) -> list[str]:
    """Paths (relative to ``folder``) of every link under it, files and folders, without following any."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            if (Path(root) / name).is_symlink():
                found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(found)


def refuse_links(folder: Path, repo_id: str, repo_type: str = "model") -> None:
    """HubError if ``folder`` holds a link: a push would publish whatever it points to."""
    links = links_in(Path(folder))
    if links:
        raise HubError(
            f"Could not push to {repo_type} '{repo_id}': {links[0]} is a link"
            + (f" (and {len(links) - 1} more)" if len(links) > 1 else "")
            + "; a push never follows links, since the file it points to would be published as it is. "
            "Nothing was uploaded. Copy the file into the folder, or remove the link.",
            repo_id,
        )


def holds_token(path: Path, secrets: Iterable[str]) -> bool:
    """True if the file at ``path`` contains one of ``secrets`` (a safetensors file: in its JSON header, the
    only part that holds text; any other file is read through in 1 MiB chunks)."""
    needles = [s.encode() for s in secrets]
    if not needles:
        return False
    keep = max(map(len, needles)) - 1  # a token split across two chunks is still found
    with open(path, "rb") as f:
        if Path(path).suffix == ".safetensors":
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            data = f.read(min(n, _SAFETENSORS_HEADER_MAX))
            return any(s in data for s in needles)
        tail = b""
        for chunk in iter(lambda: f.read(1 << 20), b""):
            window = tail + chunk
            if any(s in window for s in needles):
                return True
            tail = window[-keep:] if keep else b""
    return False


def scrub_token_files(folder: Path, files: Iterable[str], token: str | bool | None) -> None:
    """Replace the token in use by ``***`` in ``files`` of ``folder`` (text a push wrote itself: the card,
    configs), with a warning naming each file."""
    secrets = token_secrets(token)
    for f in files:
        path = Path(folder) / f
        if path.suffix == ".safetensors" or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        clean = text
        for s in secrets:
            clean = clean.replace(s, "***")
        if clean != text:
            logger.warning("%s held the token in use; it is published as '***'", f)
            path.write_text(clean, encoding="utf-8", errors="surrogateescape")


def refuse_token_files(folder: Path, files: Iterable[str], repo_id: str, token, repo_type="model") -> None:
    """HubError naming the first of ``files`` that holds the token in use (nothing is uploaded)."""
    secrets = token_secrets(token)
    for f in files:
        if holds_token(Path(folder) / f, secrets):
            raise HubError(
                f"Could not push to {repo_type} '{repo_id}': {f} holds the token in use (HF_TOKEN or the one "
                "passed). Nothing was uploaded. Remove the token from the file.",
                repo_id,
            )
