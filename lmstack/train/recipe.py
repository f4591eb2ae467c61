"""Training recipes: one YAML file says everything about a run; command-line flags override it.

A recipe has six sections. Every key can be overridden from the command line by its name alone
(`--lr 1e-4`) when the name is unique, or by `section.key` (`--run.seed 3`):

    model:     ref, device, precision, gradient_checkpointing
    data:      train, val, val_fraction, template, max_len, packing
    method:    type (full | lora | dora | qlora), r, alpha, dropout, target_modules, use_rslora
    objective: loss, beta, label_smoothing, desirable_weight, undesirable_weight
    optimizer: lr, weight_decay, betas, eps, schedule, warmup_steps, min_lr_ratio, max_grad_norm
    run:       steps, epochs, batch_size, grad_accum, eval_every, checkpoint_every, patience,
               log_every, out_dir, seed, deterministic, distributed
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmstack.errors import LmstackError
from lmstack.inputs import read_text


class Section(BaseModel):
    # NaN and infinities are refused for every float: `lr: .nan` must fail before training starts.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


MAX_SEED = 2**32 - 1  # NumPy's generator, seeded with the run's seed, takes no more


class ModelSection(Section):
    ref: str = "smollm2-135m-instruct"  # catalog name, GGUF path, HF directory or registry id
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False


class DataSection(Section):
    train: str = ""  # a dataset path, or `lmstack:NAME` for a dataset shipped with lmstack
    val: str | None = None
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # without `val`: hold out this fraction of `train`
    template: str | None = None  # None: the model's own chat template; else chatml | llama3 | gemma
    max_len: int = Field(512, ge=2)
    packing: bool = False


class MethodSection(Section):
    type: Literal["full", "lora", "dora", "qlora"] = "lora"
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    use_rslora: bool = False


class ObjectiveSection(Section):
    # sft: masked cross-entropy. sigmoid: DPO. ipo: IPO. cdpo: DPO with label smoothing.
    # kto: KTO (unpaired). orpo: ORPO (no reference model).
    loss: Literal["sft", "sigmoid", "ipo", "cdpo", "kto", "orpo"] = "sft"
    beta: float = Field(0.1, gt=0)  # DPO/IPO/KTO temperature; ORPO's weight of the odds-ratio term
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # cDPO: the assumed probability that a label is flipped
    desirable_weight: float = Field(1.0, gt=0)  # KTO
    undesirable_weight: float = Field(1.0, gt=0)  # KTO


class OptimizerSection(Section):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # the decay ends at lr * min_lr_ratio
    max_grad_norm: float = Field(1.0, ge=0)  # 0 disables clipping (the norm is still logged)


class RunSection(Section):
    steps: int | None = Field(None, ge=1)  # optimizer steps; when None, `epochs` passes over the data
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)  # samples per forward pass on one process
    grad_accum: int = Field(1, ge=1)  # forward passes per optimizer step
    eval_every: int = Field(0, ge=0)  # steps between evaluations on data.val (0: only at the end)
    checkpoint_every: int = Field(0, ge=0)  # steps between checkpoints (0: none)
    patience: int = Field(0, ge=0)  # stop after this many evaluations without improvement (0: never)
    log_every: int = Field(1, ge=1)
    out_dir: str = Field("runs/train", min_length=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    deterministic: bool = True
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate (ddp) or shard (fsdp) the weights


class Recipe(Section):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    method: MethodSection = MethodSection()
    objective: ObjectiveSection = ObjectiveSection()
    optimizer: OptimizerSection = OptimizerSection()
    run: RunSection = RunSection()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


SECTIONS: dict[str, type[Section]] = {name: field.annotation for name, field in Recipe.model_fields.items()}


def valid_keys() -> list[str]:
    return [f"{section}.{key}" for section, model in SECTIONS.items() for key in model.model_fields]


def load_recipe(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Read a YAML recipe (or start from defaults when `path` is None) and apply overrides.

    `overrides` is a list of CLI tokens (`["--lr", "1e-4", "--run.steps=50"]`) or a dict
    (`{"lr": 1e-4}`). An unknown key is an error that lists the valid ones.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise LmstackError(f"recipe not found: {path}; pass a YAML file such as recipes/sft-lora-smollm2.yaml")
        text = read_text(path, "recipe", allow_empty=True)
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or type(err).__name__
            raise LmstackError(f"{path} is not valid YAML{where} ({problem}); fix the file") from None
        if not isinstance(raw, dict):
            raise LmstackError(f"{path} must be a YAML mapping of sections (model, data, method, ...)")
    pairs = parse_override_tokens(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in pairs.items():
        section, name = resolve_key(key)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise LmstackError(f"section '{section}' in {path} must be a mapping")
        raw[section][name] = value
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise LmstackError(f"invalid recipe: {_first_error(err)}") from None


def parse_override_tokens(tokens: list[str]) -> dict[str, Any]:
    """`["--lr", "1e-4", "--packing", "--run.seed=3"]` -> {"lr": 1e-4, "packing": True, "run.seed": 3}."""
    pairs: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise LmstackError(f"unexpected argument '{token}'; overrides look like --lr 1e-4 or --run.steps=50")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            next_is_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            value = tokens[i + 1] if next_is_value else "true"  # a bare flag switches a boolean on
            i += next_is_value
        pairs[key] = _override_value(value)
        i += 1
    return pairs


def _override_value(text: str) -> Any:
    """A flag's value read as YAML (`1e-4`, `true`, `[0.9, 0.99]`); text YAML cannot read stays text."""
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_key(key: str) -> tuple[str, str]:
    """The (section, field) an override key names: `lr`, `optimizer.lr`, `batch-size`."""
    key = key.replace("-", "_")
    section, dot, name = key.rpartition(".")
    if dot:
        if section in SECTIONS and name in SECTIONS[section].model_fields:
            return section, name
    else:
        owners = [s for s, model in SECTIONS.items() if name in model.model_fields]
        if len(owners) == 1:
            return owners[0], name
        if len(owners) > 1:
            raise LmstackError(f"'{key}' is ambiguous; write one of {', '.join(f'{s}.{name}' for s in owners)}")
    raise LmstackError(f"unknown recipe key '{key}'; valid keys: {', '.join(valid_keys())}")


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    given = f", got {first['input']!r}" if "input" in first and not isinstance(first["input"], dict) else ""
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{given}{more}"
