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

A parameter is looked up from the most specific place to the least: the source's own
`parameters`, then its slice's, then the top-level ones (mergekit's order). `value_at` evaluates
one setting for one tensor: filters pick an entry, a list of numbers is a gradient over depth.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Union

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


class MergeConfig(Strict):
    merge_method: str
    models: Optional[list[InputModel]] = None
    slices: Optional[list[OutputSlice]] = None
    base_model: Optional[str] = None
    parameters: Optional[Parameters] = None
    dtype: Optional[str] = None
    out_dtype: Optional[str] = None
    tokenizer_source: Optional[str] = None  # "base", a model reference; "union" is refused
    chat_template: Optional[str] = None  # a template name (chatml, llama3, gemma) or Jinja source

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPES:
            raise ValueError(f"'{value}' is not a dtype; use float32, float16 or bfloat16")
        return DTYPES.get(value) if value else None

    @model_validator(mode="after")
    def _models_or_slices(self) -> "MergeConfig":
        if bool(self.models) == bool(self.slices):
            raise ValueError("give exactly one of `models` or `slices`")
        return self

    @property
    def output_dtype(self) -> str | None:
        return self.out_dtype or self.dtype

    def to_yaml(self) -> str:
        # Lists of numbers (layer ranges, gradients) inline, as people write them.
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False,
                              default_flow_style=None)


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
        raise LmstackError(f"{where}: {key}: {first['msg']}") from None


def load_config(source: str | Path | dict[str, Any]) -> MergeConfig:
    """A checked config from a YAML file (or an already parsed mapping)."""
    mapping, where = read_mapping(source)
    if "modules" in mapping or "tokenizer" in mapping:
        key = "modules" if "modules" in mapping else "tokenizer"
        raise LmstackError(f"{where}: mergekit's `{key}:` section is not supported; use `models:` or `slices:` and "
                           "`tokenizer_source:`")
    return validated(MergeConfig, mapping, where)


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
