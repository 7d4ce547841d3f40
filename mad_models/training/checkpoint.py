"""Resumable checkpoints in safetensors + JSON only (no pickles).

accelerate's ``save_state`` writes the model in safetensors but the optimiser, scheduler and RNG
states with ``torch.save`` (pickle), which this project never loads. So a checkpoint here is:

- ``model.safetensors``: the trainable parameters (frozen ones never change, so the job rebuilds them);
- ``optim-<name>.safetensors`` + ``optim-<name>.json``: optimiser tensors / the rest of its state dict;
- ``sched-<name>.json``: scheduler state dicts (plain numbers);
- ``rng-<rank>.safetensors`` + ``rng-<rank>.json``: torch (+ CUDA) / numpy and Python RNG states of
  every process;
- ``state.json``: step, epoch and anything the job adds, written last (its presence marks the
  checkpoint complete).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name (tied parameters appear once), detached contiguous CPU copies."""
    return {n: p.detach().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, path: str | Path) -> None:
    """Copy saved trainable parameters into ``model``; every trainable parameter must be in the file."""
    saved = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the model's trainable parameters: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (was it saved from a different model or freezing setup?)"
        )
    with torch.no_grad():
        for n, p in params.items():
            if p.shape != saved[n].shape:
                raise ValueError(
                    f"checkpoint {path}: {n} has shape {tuple(saved[n].shape)}, model {tuple(p.shape)}"
                )
            p.copy_(saved[n])


def _split_state(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace tensors in a nested dict/list by references, collecting them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        # keep key types: optimiser state is keyed by int parameter ids
        return {
            "__dict__": [[k, _split_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()],
        }
    if isinstance(obj, (list, tuple)):
        return [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot store {type(obj).__name__} at {prefix} in a checkpoint (not a tensor or JSON value)"
    )


def _join_state(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: _join_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join_state(v, tensors) for v in obj]
    return obj


def save_state_dict(state: dict, stem: Path) -> None:
    """Any state dict -> ``stem.safetensors`` (tensors) + ``stem.json`` (structure and scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _split_state(state, "s", tensors)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(meta))


def load_state_dict(stem: Path) -> dict:
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    return _join_state(json.loads(stem.with_suffix(".json").read_text()), tensors)


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state()),
        "python": random.getstate(),
    }
    state["numpy"][1] = torch.from_numpy(state["numpy"][1].astype(np.int64))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = list(state["numpy"])
    np_state[1] = np_state[1].numpy().astype(np.uint32)
    np.random.set_state(tuple(np_state))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizers: dict,
    schedulers: dict,
    state: dict,
    is_main: bool = True,
    rank: int = 0,
    wait=lambda: None,
) -> Path:
    """Write a complete checkpoint into ``directory`` (via a temporary dir renamed at the end)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    wait()
    save_state_dict(rng_state(), tmp / f"rng-{rank}")
    if is_main:
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        for name, opt in optimizers.items():
            save_state_dict(opt.state_dict(), tmp / f"optim-{name}")
        for name, sched in schedulers.items():
            (tmp / f"sched-{name}.json").write_text(json.dumps(sched.state_dict()))
    wait()
    if is_main:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    wait()
    return directory


def load_checkpoint(
    directory: str | Path, *, model: torch.nn.Module, optimizers: dict, schedulers: dict, rank: int = 0
) -> dict:
    """Restore what ``save_checkpoint`` wrote; returns the saved ``state`` dict."""
    directory = Path(directory)
    if not (directory / STATE_FILE).exists():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {STATE_FILE})")
    load_trainable_state(model, directory / "model.safetensors")
    for name, opt in optimizers.items():
        stem = directory / f"optim-{name}"
        if not stem.with_suffix(".json").exists():
            raise FileNotFoundError(f"checkpoint {directory} has no state for optimiser {name!r}")
        opt.load_state_dict(load_state_dict(stem))
    for name, sched in schedulers.items():
        sched.load_state_dict(json.loads((directory / f"sched-{name}.json").read_text()))
    rng_file = directory / f"rng-{rank}"
    if rng_file.with_suffix(".json").exists():
        set_rng_state(load_state_dict(rng_file))
    return json.loads((directory / STATE_FILE).read_text())


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (``step-XXXXXXXX`` dirs)."""
    root = Path(root)
    done = [d for d in root.glob("step-*") if (d / STATE_FILE).exists() and not d.name.endswith(".tmp")]
    return max(done, key=lambda d: int(d.name.split("-")[1]), default=None)
