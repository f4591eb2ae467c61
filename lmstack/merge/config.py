"""A merge config in mergekit's YAML format, read and checked before any model is touched.

    merge_method: slerp            # linear | slerp | task_arithmetic | ties | dare_linear | dare_ties
    base_model: model-a            #   | passthrough | model_stock
    slices:                        # or `models:` (every layer of each model)
      - sources:
          - {model: model-a, layer_range: [0, 30]}
          - {model: model-b, layer_range: [0, 30]}
    parameters:
      t:
        - filter: self_attn        # the first entry whose filter is in the tensor name wins
          value: [0, 0.5, 0.3, 0.7, 1]   # a gradient: interpolated over the layers of the slice
        - value: 0.5
    dtype: bfloat16

A config with `experts:` instead is mergekit-moe's format for a mixture of experts (`MoEConfig`,
see `lmstack.merge.moe`).

A parameter is looked up from the most specific place to the least: the source's own
`parameters`, then its slice's, then the top-level ones (mergekit's order). `value_at` evaluates
one setting for one tensor: filters pick an entry, a list of numbers is a gradient over depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lmstack.errors import LmstackError
from lmstack.inputs import read_text

Scalar = Union[bool, int, float, str]


class Condition(BaseModel):
    """One entry of a filtered parameter: applies to tensors whose name contains `filter`."""

    model_config = ConfigDict(extra="forbid")
    value: Union[Scalar, list[Scalar]]
    filter: Optional[str] = None


Setting = Union[Scalar, list[Scalar], Condition, list[Condition]]
Parameters = dict[str, Setting]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputModel(Strict):
    model: str
    parameters: Optional[Parameters] = None


class InputSlice(Strict):
    model: str
    layer_range: tuple[int, int]
    parameters: Optional[Parameters] = None

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] < value[1]:
            raise ValueError(f"layer_range [{value[0]}, {value[1]}] must satisfy 0 <= start < end")
        return value


class OutputSlice(Strict):
    sources: list[InputSlice] = Field(min_length=1)
    base_model: Optional[str] = None
    parameters: Optional[Parameters] = None


DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _dtype_name(value: str | None) -> str | None:
    if value is not None and value not in DTYPES:
        raise ValueError(f"'{value}' is not a dtype; use float32, float16 or bfloat16")
    return DTYPES.get(value) if value else None


class Config(Strict):
    def to_yaml(self) -> str:
        # Lists of numbers (layer ranges, gradients) inline, as people write them.
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False,
                              default_flow_style=None, allow_unicode=True)


class MergeConfig(Config):
    merge_method: str
    models: Optional[list[InputModel]] = None
    slices: Optional[list[OutputSlice]] = None
    base_model: Optional[str] = None
    parameters: Optional[Parameters] = None
    dtype: Optional[str] = None
    out_dtype: Optional[str] = None
    tokenizer_source: Optional[str] = None  # "base", a model reference; "union" is refused
    chat_template: Optional[str] = None  # a template name (chatml, llama3, gemma) or Jinja source

    _dtype = field_validator("dtype", "out_dtype")(_dtype_name)

    @model_validator(mode="after")
    def _models_or_slices(self) -> "MergeConfig":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of `models` or `slices`")
        return self

    @property
    def output_dtype(self) -> str | None:
        return self.out_dtype or self.dtype


class ExpertConfig(Strict):
    """One expert of a mixture (mergekit-moe's format): its MLPs, and prompts that should reach it."""

    source_model: str
    positive_prompts: Optional[list[str]] = None
    negative_prompts: Optional[list[str]] = None


class MoEConfig(Config):
    """A mixture of experts built on `base_model` (see `lmstack.merge.moe`)."""

    base_model: str
    experts: list[ExpertConfig] = Field(min_length=2)
    gate_mode: Literal["hidden", "cheap_embed", "random"] = "hidden"
    experts_per_token: int = Field(2, ge=1)
    dtype: Optional[str] = None

    _dtype = field_validator("dtype")(_dtype_name)

    @model_validator(mode="after")
    def _routable(self) -> "MoEConfig":
        if self.experts_per_token > len(self.experts):
            raise ValueError(f"experts_per_token ({self.experts_per_token}) is more than the {len(self.experts)} "
                             "experts")
        if self.gate_mode != "random":
            for index, expert in enumerate(self.experts):
                if not expert.positive_prompts or not all(p.strip() for p in expert.positive_prompts):
                    raise ValueError(f"expert {index + 1} needs non-empty positive_prompts for gate_mode "
                                     f"{self.gate_mode} (or use gate_mode: random)")
        return self


def read_mapping(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A config file's YAML mapping (or a mapping given as is), and how to name it in errors."""
    if isinstance(source, dict):
        return source, "the merge config"
    text = read_text(source, "merge config")
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LmstackError(f"{source} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    if not isinstance(mapping, dict):
        raise LmstackError(f"{source} must be a YAML mapping with merge_method and models or slices")
    return mapping, str(source)


def validated(model: type[BaseModel], mapping: dict[str, Any], where: str) -> Any:
    """`model` built from `mapping`; the first validation error as one line naming the key."""
    try:
        return model.model_validate(mapping)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "config"
        raise LmstackError(f"{where}: {key}: {first['msg'].removeprefix('Value error, ')}") from None


def load_config(source: str | Path | dict[str, Any]) -> MergeConfig | MoEConfig:
    """A checked config from a YAML file (or an already parsed mapping); with `experts:`, a mixture."""
    mapping, where = read_mapping(source)
    if "experts" in mapping:
        return validated(MoEConfig, mapping, where)
    if "modules" in mapping or "tokenizer" in mapping:
        key = "modules" if "modules" in mapping else "tokenizer"
        raise LmstackError(f"{where}: mergekit's `{key}:` section is not supported; use `models:` or `slices:` and "
                           "`tokenizer_source:`")
    config = validated(MergeConfig, mapping, where)
    check_method(config, where)
    return config


def value_at(setting: Setting, tensor_name: str, t: float) -> Any:
    """A setting's value for one tensor at relative depth `t` (0 = first layer of its slice, 1 = last).

    A list of numbers is a gradient: its entries are spread evenly over depth and interpolated
    linearly; a list of booleans or strings picks the entry at or before `t`. A list of
    conditions takes the first whose filter (a substring of the tensor name) matches; None when
    none does, so a less specific place is consulted.
    """
    if isinstance(setting, Condition):
        setting = [setting]
    if not isinstance(setting, list):
        return setting
    if not setting:
        return None
    if all(isinstance(entry, Condition) for entry in setting):
        for condition in setting:
            if condition.filter in (None, "*") or condition.filter in tensor_name:
                return value_at(condition.value, tensor_name, t)
        return None
    if any(isinstance(entry, Condition) for entry in setting):
        raise LmstackError("a parameter list mixes plain values and {filter, value} entries; use one kind")
    position = t * (len(setting) - 1)
    below = int(position)
    if not all(_is_number(entry) for entry in setting):
        return setting[below]
    above = min(below + 1, len(setting) - 1)
    fraction = position - below
    return (1 - fraction) * setting[below] + fraction * setting[above]


def anchors(setting: Setting) -> list[Scalar]:
    """Every value a setting can produce is between (or equal to) these: for range checks up front."""
    if isinstance(setting, Condition):
        return anchors(setting.value)
    if isinstance(setting, list):
        return [value for entry in setting for value in anchors(entry)]
    return [setting]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(name: str, value: Any, low: float | None, high: float | None, where: str) -> None:
    """Raise LmstackError naming the parameter and its range when `value` is not a finite number in it."""
    if not _is_number(value) or not math.isfinite(value):
        raise LmstackError(f"{where}: parameter {name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if low is not None and high is not None else \
            f"at least {low}" if low is not None else f"at most {high}"
        raise LmstackError(f"{where}: parameter {name} must be {bounds}, got {value}")


# --- what each method takes (checked when the config is read, before torch is even imported) ---


REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A method parameter: its default (`REQUIRED` if none) and, for numbers, its allowed range."""

    default: Any
    low: float | None = None
    high: float | None = None
    kind: type = float


@dataclass(frozen=True)
class MethodSpec:
    name: str
    base: str  # "required": the base is an input with a special role; "ignored": there is none
    shared: dict[str, Param] = field(default_factory=dict)  # one value for all inputs (t, lambda)
    per_input: dict[str, Param] = field(default_factory=dict)  # per input other than the base (weight)
    min_inputs: int = 1  # inputs other than the base
    max_inputs: int | None = None
    random: bool = False  # draws random numbers (DARE): seeded per tensor


def _task_method(name: str, normalize: bool, rescale: bool, random: bool = False) -> MethodSpec:
    shared = {"normalize": Param(normalize, kind=bool), "rescale": Param(rescale, kind=bool), "lambda": Param(1.0),
              "int8_mask": Param(False, kind=bool)}  # int8_mask: mergekit's memory option, accepted and unneeded
    return MethodSpec(name, "required", shared, {"weight": Param(REQUIRED), "density": Param(1.0, 0.0, 1.0)},
                      random=random)


METHODS: dict[str, MethodSpec] = {
    "linear": MethodSpec("linear", "ignored", {"normalize": Param(True, kind=bool)}, {"weight": Param(REQUIRED)}),
    "slerp": MethodSpec("slerp", "required", {"t": Param(REQUIRED, 0.0, 1.0)}, max_inputs=1),
    "task_arithmetic": _task_method("task_arithmetic", normalize=False, rescale=False),
    "ties": _task_method("ties", normalize=True, rescale=False),
    "dare_linear": _task_method("dare_linear", normalize=False, rescale=True, random=True),
    "dare_ties": _task_method("dare_ties", normalize=False, rescale=True, random=True),
    "model_stock": MethodSpec("model_stock", "required", {"filter_wise": Param(False, kind=bool)}, min_inputs=2),
    "passthrough": MethodSpec("passthrough", "ignored", per_input={"scale": Param(None)}, max_inputs=1),
}


def check_method(config: MergeConfig, where: str) -> None:
    """The method exists and has the base model it needs; every parameter it is given is one it takes,
    with values in range."""
    method = METHODS.get(config.merge_method)
    if method is None:
        raise LmstackError(f"{where}: unknown merge_method '{config.merge_method}'; use one of {', '.join(METHODS)}")
    every_slice_has_one = bool(config.slices) and all(s.base_model for s in config.slices)
    if method.base == "required" and not config.base_model and not every_slice_has_one:
        raise LmstackError(f"{where}: merge_method {method.name} needs a base_model; add `base_model:` to the config")
    if config.tokenizer_source == "union":
        raise LmstackError(f"{where}: tokenizer_source: union (merging different vocabularies) is not supported; the "
                           "models must share one vocabulary; use tokenizer_source: base or a model")
    known = set(method.shared) | set(method.per_input)
    places: list[tuple[str, Parameters | None]] = [("parameters", config.parameters)]
    places += [(f"models[{i}].parameters", m.parameters) for i, m in enumerate(config.models or [])]
    for i, output_slice in enumerate(config.slices or []):
        places.append((f"slices[{i}].parameters", output_slice.parameters))
        places += [(f"slices[{i}].sources[{j}].parameters", s.parameters) for j, s in enumerate(output_slice.sources)]
    for place, parameters in places:
        for name, setting in (parameters or {}).items():
            if name not in known:
                raise LmstackError(f"{where}: {place}: {method.name} has no parameter '{name}'; it takes "
                                   f"{', '.join(sorted(known)) or 'none'}")
            for value in anchors(setting):
                checked_value(name, value, method.shared.get(name) or method.per_input[name], f"{where}: {place}")


def checked_value(name: str, value: Any, spec: Param, where: str) -> Any:
    """`value` as the parameter's type, or LmstackError naming the parameter and its range."""
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise LmstackError(f"{where}: parameter {name} must be true or false, got {value!r}")
        return value
    if value is None and spec.default is None:
        return None
    check_number(name, value, spec.low, spec.high, where)
    return float(value)
