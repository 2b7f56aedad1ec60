"""Crash-safe checkpoints: safetensors for every tensor, JSON for everything else, no pickle.

``checkpoints/step_0001000/`` holds ``tensors.safetensors`` (module weights and buffers, optimizer
moments, RNG states) and ``state.json`` (step, optimizer hyper-parameters, config hash); it is
written under a temporary name and renamed, then ``checkpoints/latest.json`` is atomically
pointed at it. A ``kill -9`` at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.io import UserInputError, atomic_directory, atomic_write_json

LATEST = "latest.json"
KEEP = 2


class CheckpointError(UserInputError):
    """A checkpoint is missing, corrupt or does not fit the run; the message names the file."""


def _optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{name}.{index}.{key}": value
        for index, slots in state["state"].items()
        for key, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    return tensors, {"param_groups": state["param_groups"], "slots": sorted(state["state"])}


def save_checkpoint(
    folder: Path,
    step: int,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    generators: Sequence[torch.Generator],
    extra: Mapping[str, Any],
) -> Path:
    """Write ``folder/step_<step>`` and point ``folder/latest.json`` at it; keep the last two."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors |= {f"module.{name}.{key}": value.detach() for key, value in module.state_dict().items()}
    optimizer_state = {}
    for name, optimizer in optimizers.items():
        slots, state = _optimizer_tensors(name, optimizer)
        tensors |= slots
        optimizer_state[name] = state
    tensors |= {f"rng.{i}": g.get_state() for i, g in enumerate(generators)}
    target = folder / f"step_{step:07d}"
    with atomic_directory(target, overwrite=True) as staging:
        # clone: modules share their encoder, and safetensors refuses tensors that share memory
        save_file({k: v.detach().cpu().clone() for k, v in tensors.items()}, str(staging / "tensors.safetensors"))
        atomic_write_json(staging / "state.json", {"step": step, "optimizers": optimizer_state, **extra})
    atomic_write_json(folder / LATEST, {"step": step, "path": target.name})
    for old in sorted(folder.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest.json`` points at, or None when there is none yet."""
    pointer = folder / LATEST
    if not pointer.exists():
        return None
    try:
        return folder / str(json.loads(pointer.read_text())["path"])
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer: {error}") from error


def load_checkpoint(
    path: Path,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    generators: Sequence[torch.Generator],
) -> dict[str, Any]:
    """Restore modules, optimizers and RNG states in place; returns ``state.json``."""
    try:
        state: dict[str, Any] = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "tensors.safetensors"))
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint: {error}") from error
    for name, module in modules.items():
        prefix = f"module.{name}."
        module_state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(module_state)
        except RuntimeError as error:
            raise CheckpointError(f"{path}: weights of {name} do not fit this run: {error}") from error
    for name, optimizer in optimizers.items():
        saved = state["optimizers"][name]
        slots: dict[int, dict[str, Any]] = {}
        for index in saved["slots"]:
            prefix = f"optimizer.{name}.{index}."
            slots[int(index)] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        optimizer.load_state_dict({"state": slots, "param_groups": saved["param_groups"]})
    for i, generator in enumerate(generators):
        generator.set_state(tensors[f"rng.{i}"])
    return state
