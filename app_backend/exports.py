"""Compare results as files to download: a CSV and a JSON per run, named by their UTC time, and old ones
cleaned up so they do not pile up (every run leaves two files; an afternoon left 48).

Example:
    >>> csv_path, json_path = write_exports(result)  # doctest: +SKIP
    >>> csv_path.name  # doctest: +SKIP
    'compare-20250131T120501Z-3fa9c2.csv'
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from app_backend.results import results_csv

EXPORT_DIR = Path(tempfile.gettempdir()) / "mad-models-app-exports"
KEEP_SECONDS = 3600.0  # an export older than this is deleted at the next run
KEEP_FILES = 40  # and never more than this many files, newest kept
PREFIX = "compare-"


def clean_exports(
    folder: Path = EXPORT_DIR, keep_seconds: float = KEEP_SECONDS, keep_files: int = KEEP_FILES
) -> int:
    """Delete this app's exports older than ``keep_seconds``, then all but the ``keep_files`` newest.
    Returns how many files went. Other files in ``folder`` are never touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    files = []
    for p in folder.iterdir():
        if p.name.startswith(PREFIX) and p.suffix in (".csv", ".json") and p.is_file() and not p.is_symlink():
            try:
                files.append((p.stat().st_mtime, p))
            except FileNotFoundError:  # another worker deleted it
                continue
    files.sort(reverse=True)
    now = time.time()
    gone = 0
    for rank, (mtime, p) in enumerate(files):
        if rank >= keep_files or now - mtime > keep_seconds:
            p.unlink(missing_ok=True)
            gone += 1
    return gone


def write_exports(result: dict[str, Any], folder: Path = EXPORT_DIR) -> tuple[Path, Path]:
    """Write ``result`` (``results.compare_json``) as ``compare-<UTC time>-<random>.csv`` and ``.json``,
    after cleaning up old exports. Each file is written whole or not at all (temp file, then rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_exports(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    stem = f"{PREFIX}{stamp}-{secrets.token_hex(3)}"
    out = []
    for suffix, text in (
        (".csv", results_csv(result)),
        (".json", json.dumps(result, indent=1, ensure_ascii=False)),
    ):
        path = folder / f"{stem}{suffix}"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
        out.append(path)
    return out[0], out[1]
