"""Checkpoints that let a killed run continue exactly where it was.

A checkpoint holds everything the next step depends on: the trainable weights, the optimizer's
moments, the scheduler's position, every random generator (Python, NumPy, torch, CUDA; one set per
process), the step and the metrics so far. The data order is a pure function of (seed, step), so
the step is also the sampler's position. The directory is replaced atomically: a crash while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from lmstack.errors import LmstackError
from lmstack.home import atomic_path, remove_stale_temporaries
from lmstack.train.distributed import World, gather_objects

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"


def checkpoint_path(out_dir: Path) -> Path:
    return out_dir / CHECKPOINT_DIR


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _options(world: World, **extra) -> StateDictOptions:
    # Full (unsharded) tensors keyed by parameter name, so DDP, FSDP and one process share a format.
    return StateDictOptions(full_state_dict=True, cpu_offload=world.distributed, **extra)


def save_checkpoint(out_dir: Path, model: nn.Module, optimizer, scheduler, world: World, **progress: Any) -> Path:
    """Write the checkpoint (collective: every process must call it; the main one writes)."""
    weights, optimizer_state = get_state_dict(model, optimizer, options=_options(world, ignore_frozen_params=True))
    rng_states = gather_objects(rng_state(), world)
    path = checkpoint_path(out_dir)
    if world.is_main:
        remove_stale_temporaries(out_dir)  # a checkpoint write killed midway
        state = {"weights": weights, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                 "rng": rng_states, **progress}
        with atomic_path(path) as tmp:
            tmp.mkdir()
            torch.save(state, tmp / STATE_FILE)
    return path


# Settings a run may change on resume: where it writes and how often it logs, evaluates and saves.
RESUMABLE_CHANGES = {"run.out_dir", "run.log_every", "run.checkpoint_every", "run.eval_every", "model.device"}


def load_checkpoint(out_dir: Path, model: nn.Module, optimizer, scheduler, world: World,
                    settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's generators; return the rest.

    A checkpoint written with other `settings` (anything that changes the result) is refused.
    """
    path = checkpoint_path(out_dir) / STATE_FILE
    if not path.is_file():
        raise LmstackError(f"no checkpoint to resume from in {out_dir}; run without --resume to start fresh")
    try:
        # Our own file, holding NumPy/Python RNG states that the weights-only unpickler refuses.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or overwritten file fails in pickle, zip or torch
        raise LmstackError(f"the checkpoint {path} is damaged ({type(error).__name__}); delete {path.parent} "
                           "and rerun without --resume (with --overwrite) to start again") from None
    differing = _differing_settings(state.get("settings"), settings)
    if differing:
        raise LmstackError(
            f"--resume with settings that differ from the checkpoint's would train a different run: "
            f"{'; '.join(differing)}. Resume with the checkpoint's settings (its recipe.yaml), or start a new run"
        )
    if len(state["rng"]) != world.size:
        raise LmstackError(
            f"the checkpoint in {out_dir} was written by {len(state['rng'])} processes; resume with the same number"
        )
    set_state_dict(model, optimizer, model_state_dict=state.pop("weights"), optim_state_dict=state.pop("optimizer"),
                   options=_options(world, strict=False))
    scheduler.load_state_dict(state.pop("scheduler"))
    set_rng_state(state.pop("rng")[world.rank])
    return state


def _differing_settings(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """`key: checkpoint value -> new value` for every result-changing setting that differs."""
    if saved is None or current is None:
        return []
    old, new = _flatten(saved), _flatten(current)
    keys = sorted((set(old) | set(new)) - RESUMABLE_CHANGES)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def remove_checkpoint(out_dir: Path) -> None:
    shutil.rmtree(checkpoint_path(out_dir), ignore_errors=True)
