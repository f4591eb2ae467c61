"""The one training entry point: a recipe in, a trained model or adapter (recorded) out.

`train_recipe` does the same five things for every objective: load the base model, make the
method's parameters trainable, let the objective turn the recipe's data into samples, run the
shared loop, and save and record the result. The objective (SFT, DPO, ...) is chosen by
`recipe.objective.loss`; each one lives in its own short file and only says how its data is
prepared and what its loss is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmstack import registry
from lmstack.data import dataset_reference
from lmstack.home import atomic_write_text, check_output
from lmstack.hub.load import ModelBundle, load_model
from lmstack.model import hf_io
from lmstack.peft import count_parameters, save_adapter
from lmstack.train import distill, preference, pretrain, sft
from lmstack.train.core import Plan, TrainResult, train
from lmstack.train.distributed import full_state_dict, joined_world
from lmstack.train.method import lora_config, prepare_model
from lmstack.train.recipe import Recipe
from lmstack.train.samples import check_dataset_files

RECIPE_FILE = "recipe.yaml"

# recipe.objective.loss -> how that objective prepares its data and loss
OBJECTIVES: dict[str, Callable[[ModelBundle, Recipe], Plan]] = {
    "sft": sft.plan,
    **{loss: preference.plan for loss in preference.LOSSES},
    "pretrain": pretrain.plan,
    "distill": distill.plan,
}
# Objectives that check their own inputs (a corpus folder, a teacher), and those that can start
# from no loaded model (pre-training from scratch).
INPUT_CHECKS: dict[str, Callable[[Recipe], None]] = {"pretrain": pretrain.check_inputs, "distill": distill.check_inputs}
STARTS: dict[str, Callable[[Recipe], ModelBundle]] = {"pretrain": pretrain.initial_bundle,
                                                     "distill": pretrain.initial_bundle}
# The registry operation each loss records (DPO's loss is called "sigmoid" in the recipe).
OPERATIONS = {"sft": "sft", "sigmoid": "dpo"}


@dataclass
class TrainRun:
    output: Path | None  # the adapter or model directory (None on non-main processes)
    train: TrainResult


def train_recipe(recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                 bundle: ModelBundle | None = None) -> TrainRun:
    """Train `recipe.model.ref` (or an already loaded `bundle`) as the recipe says; save and record it."""
    out_dir = Path(recipe.run.out_dir)
    _check_inputs(recipe, out_dir, resume, overwrite)
    bundle = bundle or STARTS.get(recipe.objective.loss, _load_base)(recipe)
    prepare_model(bundle.model, recipe)
    plan = OBJECTIVES[recipe.objective.loss](bundle, recipe)
    with joined_world(recipe.model.device) as world:
        if world.is_main:
            counted = count_parameters(bundle.model)
            print(f"training {counted.trainable:,} of {counted.total:,} parameters "
                  f"({counted.percent_trainable:.2f}%), {recipe.method.type}, {recipe.objective.loss}")
        result = train(bundle.model, plan, optimizer=recipe.optimizer, run=recipe.run, world=world,
                       device=recipe.model.device, gradient_checkpointing=recipe.model.gradient_checkpointing,
                       precision=recipe.model.precision, resume=resume, settings=recipe.model_dump(mode="json"))
        weights = full_state_dict(bundle.model, world)  # collective: every process takes part
        output = _save(bundle, weights, recipe, result, plan) if world.is_main else None
    return TrainRun(output, result)


def _load_base(recipe: Recipe) -> ModelBundle:
    return load_model(recipe.model.ref, device="cpu", dtype="fp32")  # fp32 master weights


def _check_inputs(recipe: Recipe, out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Everything that can be checked before the model loads: data files and the run folder."""
    INPUT_CHECKS.get(recipe.objective.loss, check_dataset_files)(recipe)
    if resume:
        return
    check_output(out_dir, overwrite=overwrite)


def _save(bundle: ModelBundle, weights: dict[str, Any], recipe: Recipe, result: TrainResult, plan: Plan) -> Path:
    """Write the trained model or adapter into the run directory and record what ran."""
    out_dir = Path(recipe.run.out_dir)
    atomic_write_text(out_dir / RECIPE_FILE, recipe.to_yaml())
    if recipe.method.type == "full":
        path = hf_io.write_model_dir(out_dir / "model", bundle.config, weights, bundle.tokenizer,
                                     bundle.generation_config)
        kind = "model"
    else:
        path = save_adapter(bundle.model, out_dir / "adapter", base_model=str(bundle.path),
                            config=lora_config(recipe.method), state_dict=weights)
        kind = "adapter"
    operation = OPERATIONS.get(recipe.objective.loss, recipe.objective.loss)
    final = {k: v for k, v in result.metrics.items() if k not in ("epoch", "tokens_per_s")}
    registry.record(
        kind, path, name=f"{bundle.name}-{operation}-{recipe.method.type}", operation=operation,
        source=None if recipe.model.depth else recipe.model.ref, parents=plan.parents or [bundle.lineage_id()],
        recipe=recipe.model_dump(mode="json"),
        datasets=[dataset_reference(ref) for ref in (recipe.data.train, recipe.data.val) if ref],
        metadata={"steps": result.steps, "stopped_early": result.stopped_early, "metrics": final, **plan.metadata},
    )
    return path
