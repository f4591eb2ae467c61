"""The training loop every objective shares (SFT, DPO, KTO, ORPO, ...).

An objective is two functions of a batch: how many units its loss averages over (trained tokens
for SFT, pairs for DPO), and the loss summed over those units. Summing, then dividing by the
units of the whole global batch, makes the result independent of how the batch is cut: two
accumulated micro-batches of 2, two processes with 2 each, or one batch of 4 give the same
gradient.

One step: take the step's global batch (a fixed function of seed and step), run its micro-batches
forward and backward, clip the gradient norm, let AdamW update the trainable parameters, move the
learning-rate schedule, and log. Every `eval_every` steps it measures the validation loss (and
stops early when it has not improved `patience` times); every `checkpoint_every` steps it writes
a checkpoint that `resume=True` continues from exactly.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from lmstack.device import resolve_device, resolve_precision
from lmstack.errors import LmstackError
from lmstack.train.checkpoint import checkpoint_path, load_checkpoint, remove_checkpoint, save_checkpoint
from lmstack.train.distributed import World, all_sum, joined_world, wrap_model
from lmstack.train.metrics import MetricsLog
from lmstack.train.recipe import OptimizerSection, RunSection

Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    def count(self, batch: Batch) -> int:
        """The number of units (trained tokens, pairs, ...) this batch's loss averages over."""

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss summed over the batch's units, and statistics summed over the same units."""


@dataclass
class Plan:
    """What an objective hands the loop: its loss, its samples, and how samples become a batch."""

    objective: Objective
    train_samples: Sequence[Any]
    val_samples: Sequence[Any]
    collate: Callable[[list[Any]], Batch]
    # Lineage, when the result descends from more than the loaded model (pre-training: the tokenizer
    # and the shards; distillation: the student, the teacher and the data): registry ids.
    parents: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # recorded with the result


@dataclass
class TrainResult:
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]]
    metrics: dict[str, float]  # the last logged value of every metric


# --- set-up ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int, deterministic: bool) -> Iterator[None]:
    """Seed every generator for a run; deterministic kernels only inside it (restored afterwards)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs this to be deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn where an op has no deterministic kernel
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def build_optimizer(model: nn.Module, settings: OptimizerSection) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; norms and biases (1-D tensors) get no weight decay."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise LmstackError("the model has no trainable parameters; choose method full, lora, dora or qlora")
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=settings.lr, betas=settings.betas,
                             eps=settings.eps)


def lr_factor(step: int, total_steps: int, settings: OptimizerSection) -> float:
    """The learning-rate multiplier at `step`: linear warm-up from 0, then the chosen decay."""
    warmup = settings.warmup_steps
    if step < warmup:
        return step / warmup
    if settings.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    decay = 1.0 - progress if settings.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * decay


def batch_indices(step: int, num_samples: int, global_batch: int, seed: int) -> list[int]:
    """The samples of global batch `step`: each epoch is a fresh permutation; a last partial batch is dropped."""
    per_epoch = num_samples // global_batch
    epoch, position = divmod(step, per_epoch)
    order = _epoch_order(num_samples, seed, epoch)
    return order[position * global_batch : (position + 1) * global_batch].tolist()


@functools.lru_cache(maxsize=2)
def _epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's permutation, drawn once (a pre-training corpus has millions of windows)."""
    return torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def real_tokens(batch: Batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    if "segment_ids" in batch:
        return int((batch["segment_ids"] > 0).sum())
    return batch["input_ids"].numel()


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 matmuls with fp32 master weights, or plain fp32. `auto`: bf16 where the hardware computes
    it natively (CUDA, CPUs with AVX512_BF16 or AMX), fp32 elsewhere (emulated bf16 is ~20x slower)."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- the loop -------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    plan: Plan,
    *,
    optimizer: OptimizerSection,
    run: RunSection,
    world: World | None = None,
    device: str = "auto",
    gradient_checkpointing: bool = False,
    precision: str = "auto",
    resume: bool = False,
    settings: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` in place (it stays on the training device) on `plan.train_samples`;
    `plan.val_samples` are evaluated every `run.eval_every` steps and at the end.

    `settings` are what the result depends on (the recipe); a checkpoint remembers them and a
    resume with different ones is refused. Under torchrun, pass the `world` the caller keeps open
    until it has saved the result; without one, the run joins and leaves the group itself.
    """
    if world is None:
        with joined_world(device) as own_world:
            return train(model, plan, optimizer=optimizer, run=run, world=own_world, device=device,
                         gradient_checkpointing=gradient_checkpointing, precision=precision, resume=resume,
                         settings=settings)
    torch_device = resolve_device(device)
    with seeded(run.seed, run.deterministic):
        loop = _Loop(model, plan, optimizer, run, torch_device, world, gradient_checkpointing, precision, settings)
        return loop.run(resume)


class _Loop:
    """The state of one run; `run()` is the loop itself."""

    def __init__(self, model, plan: Plan, optimizer_settings, run, device, world, gradient_checkpointing, precision,
                 settings):
        model.to(device)
        model.gradient_checkpointing = gradient_checkpointing
        self.model = wrap_model(model, world, run.distributed, device)
        self.objective, self.collate = plan.objective, plan.collate
        self.train_samples, self.val_samples = plan.train_samples, plan.val_samples or []
        self.settings = settings
        self.run_settings, self.device, self.world, self.precision = run, device, world, precision
        self.out_dir = Path(run.out_dir)
        self.global_batch = run.batch_size * run.grad_accum * world.size
        per_epoch = len(self.train_samples) // self.global_batch
        if per_epoch == 0:
            raise LmstackError(
                f"{len(self.train_samples)} training samples are fewer than one global batch of {self.global_batch} "
                "(batch_size x grad_accum x processes); lower run.batch_size or add data"
            )
        self.steps_per_epoch = per_epoch
        self.total_steps = run.steps or run.epochs * per_epoch
        self.optimizer = build_optimizer(self.model, optimizer_settings)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.total_steps, optimizer_settings)
        )
        self.max_grad_norm = optimizer_settings.max_grad_norm
        self.step = 0
        self.best_val = math.inf
        self.evals_without_improvement = 0

    # --- one step --------------------------------------------------------------------------------

    def _local_micro_batches(self) -> list[Batch]:
        indices = batch_indices(self.step, len(self.train_samples), self.global_batch, self.run_settings.seed)
        per_process = len(indices) // self.world.size
        mine = indices[self.world.rank * per_process : (self.world.rank + 1) * per_process]
        size = self.run_settings.batch_size
        return [self.collate([self.train_samples[i] for i in mine[at : at + size]]) for at in range(0, len(mine), size)]

    def _train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        batches = self._local_micro_batches()
        # Tensors for collectives live on the training device: NCCL reduces only GPU tensors.
        units = all_sum(torch.tensor(float(sum(self.objective.count(b) for b in batches)), device=self.device),
                        self.world)
        if units.item() == 0:
            raise LmstackError(f"the batch of step {self.step + 1} has nothing to train on (all labels masked); "
                               "check data.max_len and the chat template")
        loss_sum = torch.zeros((), device=self.device)
        stat_sums: dict[str, torch.Tensor] = {}
        tokens = 0
        for i, batch in enumerate(batches):
            batch = _to_device(batch, self.device)
            tokens += real_tokens(batch)
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
            with sync:
                with autocast(self.device, self.precision):
                    loss, stats = self.objective(self.model, batch)
                # DDP averages gradients over processes, so each one scales its share by their number.
                (loss * self.world.size / units).backward()
            loss_sum += loss.detach()
            for key, value in stats.items():
                stat_sums[key] = stat_sums.get(key, 0) + value.detach().float()
        grad_norm = self._clip_gradients()
        totals = all_sum(torch.stack([loss_sum, *stat_sums.values()]).float(), self.world) / units
        loss_value = totals[0].item()
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self._stop_on_nan(loss_value, grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = int(all_sum(torch.tensor(tokens, device=self.device), self.world))
        self.step += 1
        record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "loss": loss_value,
                  "lr": lr, "grad_norm": grad_norm,
                  "tokens_per_s": round(tokens / max(time.perf_counter() - started, 1e-9), 1)}
        record.update({key: value.item() for key, value in zip(stat_sums, totals[1:])})
        return record

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm if self.max_grad_norm > 0 else math.inf)
        if hasattr(norm, "full_tensor"):  # a sharded (FSDP) norm
            norm = norm.full_tensor()
        return float(norm)

    def _stop_on_nan(self, loss: float, grad_norm: float) -> None:
        saved = checkpoint_path(self.out_dir)
        kept = f"the last good checkpoint is kept in {saved}" if saved.exists() else "no checkpoint was written yet"
        self.log.close()
        raise LmstackError(
            f"loss became {loss} (gradient norm {grad_norm}) at step {self.step + 1}; training stopped and {kept}. "
            "Lower optimizer.lr, keep optimizer.max_grad_norm > 0, check the data, then rerun with --resume"
        )

    # --- evaluation and checkpoints ---------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss and statistics on the whole validation set (every process computes all of it)."""
        self.model.eval()
        units, loss_sum, stat_sums = 0, 0.0, {}
        size = self.run_settings.batch_size
        for at in range(0, len(self.val_samples), size):
            batch = _to_device(self.collate(list(self.val_samples[at : at + size])), self.device)
            units += self.objective.count(batch)
            with autocast(self.device, self.precision):
                loss, stats = self.objective(self.model, batch)
            loss_sum += loss.item()
            for key, value in stats.items():
                stat_sums[key] = stat_sums.get(key, 0.0) + value.item()
        self.model.train()
        units = max(units, 1)
        return {"val_loss": loss_sum / units, **{f"val_{k}": v / units for k, v in stat_sums.items()}}

    def _evaluate_and_check_patience(self, record: dict[str, Any]) -> bool:
        """Add validation metrics to `record`; True when early stopping says to stop."""
        record.update(self.evaluate())
        if record["val_loss"] < self.best_val:
            self.best_val, self.evals_without_improvement = record["val_loss"], 0
        else:
            self.evals_without_improvement += 1
        patience = self.run_settings.patience
        return patience > 0 and self.evals_without_improvement >= patience

    def _save(self) -> None:
        save_checkpoint(self.out_dir, self.model, self.optimizer, self.scheduler, self.world, step=self.step,
                        history=self.log.history, best_val=self.best_val,
                        evals_without_improvement=self.evals_without_improvement, settings=self.settings)

    def _restore(self) -> list[dict[str, Any]]:
        state = load_checkpoint(self.out_dir, self.model, self.optimizer, self.scheduler, self.world, self.settings)
        self.step, self.best_val = state["step"], state["best_val"]
        self.evals_without_improvement = state["evals_without_improvement"]
        return state["history"]

    # --- the loop -----------------------------------------------------------------------------

    def run(self, resume: bool) -> TrainResult:
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                remove_checkpoint(self.out_dir)  # a stale checkpoint must not be resumed into this run
        history = self._restore() if resume else []
        self.log = MetricsLog(self.out_dir, enabled=self.world.is_main, history=history)
        self.model.train()
        run = self.run_settings
        stopped_early = False
        with _progress(self.world.is_main) as progress:
            task = progress.add_task("training", total=self.total_steps, completed=self.step, status="")
            while self.step < self.total_steps and not stopped_early:
                record = self._train_step()
                at_end = self.step == self.total_steps
                if self.val_samples and ((run.eval_every and self.step % run.eval_every == 0) or at_end):
                    stopped_early = self._evaluate_and_check_patience(record)
                if self.step % run.log_every == 0 or "val_loss" in record or at_end or stopped_early:
                    self.log.log(record)
                if run.checkpoint_every and self.step % run.checkpoint_every == 0:
                    self._save()
                progress.update(task, completed=self.step, status=_status(record))
        self.log.close()
        metrics = {k: v for r in self.log.history for k, v in r.items() if k != "step"}
        return TrainResult(self.step, stopped_early, self.log.history, metrics)


def _status(record: dict[str, Any]) -> str:
    text = f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tok/s"
    return text + (f"  val {record['val_loss']:.4f}" if "val_loss" in record else "")


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), disable=not enabled)
