"""Records of a resumable benchmark, kept in the repository: ``settings.json`` + ``results.jsonl``.

A folder such as ``bench/results/listops-runs/`` holds the settings the records were made with and one JSON
line per finished run, keyed. A re-run with the same settings skips the keys it finds; a re-run with other
settings is refused (never mixed into the same table). Lines are appended whole and flushed, so an
interrupted process leaves at most the run in progress to redo.

Example:
    >>> # records = RunRecords(Path("bench/results/listops-runs"), {"steps": 600, ...})
    >>> # records.get("attention|lr=0.001|seed=0") or records.add({"key": ..., "test": 0.41})
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class SettingsMismatch(SystemExit):
    """The folder holds records made with other settings (a one-line message, exit status 1)."""


class RunRecords:
    def __init__(self, folder: Path, settings: dict, read_only: bool = False):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))
        guard = self.folder / "settings.json"
        if guard.exists():
            before = json.loads(guard.read_text())
            if before != self.settings:
                changed = sorted(
                    k for k in before.keys() | self.settings.keys() if before.get(k) != self.settings.get(k)
                )
                raise SettingsMismatch(
                    f"{self.folder} holds runs made with other settings ({', '.join(changed)} differ); "
                    "use another records folder, or delete it to start over"
                )
        elif read_only:
            raise SettingsMismatch(f"{self.folder} holds no records (no settings.json)")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = guard.with_suffix(f".{os.getpid()}.tmp")  # processes starting together each write their own
            tmp.write_text(json.dumps(self.settings, indent=1, sort_keys=True) + "\n")
            tmp.replace(guard)
        self.path = self.folder / "results.jsonl"

    def all(self) -> dict[str, dict]:
        """Every finished run by key (a torn last line from a killed process is ignored)."""
        if not self.path.exists():
            return {}
        out = {}
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[rec["key"]] = rec
        return out

    def get(self, key: str) -> dict | None:
        return self.all().get(key)

    def add(self, record: dict) -> dict:
        if "key" not in record:
            raise ValueError("a record needs a 'key'")
        text = self.path.read_text() if self.path.exists() else ""
        with self.path.open("a") as f:
            if text and not text.endswith("\n"):
                f.write("\n")  # after a torn line
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record
