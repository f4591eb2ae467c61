"""Plan a merge before doing it: which input tensors make each output tensor, with which parameters.

Planning reads configs and safetensors headers only. Everything that can be wrong with a merge
(an unknown method, a missing parameter or one out of range, models of different architectures,
vocabularies or shapes, a layer range past the end of a model) is found here, before the first
tensor is read, and reported as one line naming the model, tensor or key to fix.

The output is laid out as mergekit does: the embeddings from the first slice's models, then every
slice's layers in order (renumbered from 0), then the final norm and output head from the last
slice's models. A layer's depth `t` inside its slice (0 for the first layer, 1 for the last) is
what parameter gradients are interpolated over; the non-layer tensors sit at t = 0.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch

from lmstack.errors import LmstackError
from lmstack.merge.config import (
    METHODS,
    REQUIRED,
    InputSlice,
    MergeConfig,
    MethodSpec,
    OutputSlice,
    Param,
    Parameters,
    checked_value,
    value_at,
)
from lmstack.merge.sources import ModelSource, distinct, open_sources
from lmstack.model.config import ModelConfig

LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# Fields that must agree between every input: what makes tensors of two models line up.
SHARED_ARCHITECTURE = ("family", "vocab_size", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads",
                       "head_dim", "activation", "attention_bias", "attention_out_bias", "qk_norm", "sandwich_norm",
                       "norm_offset", "tie_word_embeddings")


@dataclass
class TensorInput:
    source: ModelSource
    name: str  # the tensor's name in its model
    values: dict[str, Any]  # this input's parameters (weight, density, scale)


@dataclass
class TensorPlan:
    name: str  # in the output
    shape: tuple[int, ...]
    dtype: torch.dtype
    base: TensorInput | None
    inputs: list[TensorInput]  # the models other than the base
    shared: dict[str, Any]  # parameters shared by every input (t, normalize, lambda)


@dataclass
class MergePlan:
    config: MergeConfig
    method: MethodSpec
    sources: list[ModelSource]  # each input model once, in order of first mention
    output_config: ModelConfig
    tokenizer_source: ModelSource
    tensors: list[TensorPlan]


def plan_merge(config: MergeConfig) -> MergePlan:
    """Check `config` against its models and lay out every output tensor (reads headers only)."""
    method = METHODS[config.merge_method]  # known: load_config checked the method and its parameters
    sources = open_sources(_references(config))
    check_architectures(list(sources.values()))
    slices = _normalized_slices(config, method, sources)
    for index, output_slice in enumerate(slices):
        _check_slice(index, output_slice, config, method, sources)
    for source in distinct(sources):
        source.open_tensors()
    check_vocabularies(distinct(sources))
    planner = _Planner(config, method, sources)
    tensors = planner.plan(slices)
    reference = sources[config.base_model] if config.base_model else sources[slices[0].sources[0].model]
    layer_types = [sources[s.sources[0].model].config.layer_types[i]
                   for s in slices for i in range(*s.sources[0].layer_range)]
    output_config = dataclasses.replace(reference.config, num_layers=len(layer_types), layer_types=layer_types)
    tokenizer_ref = config.tokenizer_source
    if tokenizer_ref in (None, "base"):
        tokenizer = reference
    else:
        tokenizer = sources[tokenizer_ref]
    return MergePlan(config, method, distinct(sources), output_config, tokenizer, tensors)


# --- config-level checks (no weights read) ---------------------------------------------------


def _references(config: MergeConfig) -> list[str]:
    refs = [config.base_model] if config.base_model else []
    refs += [m.model for m in config.models or []]
    for output_slice in config.slices or []:
        refs += [output_slice.base_model] if output_slice.base_model else []
        refs += [s.model for s in output_slice.sources]
    if config.tokenizer_source not in (None, "base"):
        refs.append(config.tokenizer_source)
    return refs


def check_architectures(sources: list[ModelSource]) -> None:
    first = sources[0]
    for other in sources[1:]:
        for name in SHARED_ARCHITECTURE:
            mine, theirs = getattr(first.config, name), getattr(other.config, name)
            if mine != theirs:
                what = "architecture" if name == "family" else name
                raise LmstackError(f"{other.ref} has {what} {theirs!r} but {first.ref} has {mine!r}; merged models "
                                   "must share one architecture (fine-tunes of one base model)")


def _normalized_slices(config: MergeConfig, method: MethodSpecSpec, sources: dict[str, ModelSource]) -> list[OutputSlice]:
    """`models:` is one slice over every layer of each model (plus the base, when the method has one)."""
    if config.slices:
        return config.slices
    models = [(m.model, m.parameters) for m in config.models]
    keys = [sources[ref].key for ref, _ in models]
    if method.base == "required" and config.base_model and sources[config.base_model].key not in keys:
        models.append((config.base_model, None))
    return [OutputSlice(sources=[
        InputSlice(model=ref, layer_range=(0, sources[ref].config.num_layers), parameters=parameters)
        for ref, parameters in models
    ])]


def _slice_base(output_slice: OutputSlice, config: MergeConfig, method: MethodSpecSpec,
                sources: dict[str, ModelSource]) -> InputSlice | None:
    if method.base != "required":
        return None
    base_ref = output_slice.base_model or config.base_model  # load_config made sure there is one
    base_key = sources[base_ref].key
    return next((s for s in output_slice.sources if sources[s.model].key == base_key), None)


def _check_slice(index: int, output_slice: OutputSlice, config: MergeConfig, method: MethodSpecSpec,
                 sources: dict[str, ModelSource]) -> None:
    where = f"slice {index + 1}"
    for source in output_slice.sources:
        layers = sources[source.model].config.num_layers
        if source.layer_range[1] > layers:
            raise LmstackError(f"{where}: layer_range {list(source.layer_range)} of {source.model} goes past its "
                               f"{layers} layers; use an end of at most {layers}")
    lengths = {s.layer_range[1] - s.layer_range[0] for s in output_slice.sources}
    if len(lengths) > 1:
        raise LmstackError(f"{where}: the sources' layer ranges have different lengths ({sorted(lengths)}); every "
                           "source of a slice must span the same number of layers")
    base = _slice_base(output_slice, config, method, sources)
    if method.base == "required" and base is None:
        raise LmstackError(f"{where}: the base model {output_slice.base_model or config.base_model} is not among "
                           f"the slice's sources; {method.name} needs it there")
    others = len(output_slice.sources) - (base is not None)
    if others < method.min_inputs or (method.max_inputs is not None and others > method.max_inputs):
        wanted = (f"exactly {method.min_inputs}" if method.min_inputs == method.max_inputs
                  else f"at most {method.max_inputs}" if method.max_inputs is not None
                  else f"at least {method.min_inputs}")
        extra = " besides the base model" if method.base == "required" else ""
        raise LmstackError(f"{where}: {method.name} merges {wanted} model(s){extra}, got {others}")


def check_vocabularies(sources: list[ModelSource]) -> None:
    from lmstack.tokenizer import Tokenizer

    vocabularies = [(s, Tokenizer.from_dir(s.directory).backend.get_vocab(with_added_tokens=True)) for s in sources]
    first, first_vocab = vocabularies[0]
    for other, vocab in vocabularies[1:]:
        if vocab != first_vocab:
            differing = sorted(set(vocab.items()) ^ set(first_vocab.items()), key=lambda item: item[1])
            token, token_id = differing[0] if differing else ("?", -1)
            raise LmstackError(f"{other.ref} and {first.ref} have different vocabularies (e.g. token {token!r} at id "
                               f"{token_id}); merged models must share one tokenizer")


# --- laying out the tensors ------------------------------------------------------------------


class _Planner:
    def __init__(self, config: MergeConfig, method: MethodSpecSpec, sources: dict[str, ModelSource]):
        self.config, self.method, self.sources = config, method, sources
        dtype = config.output_dtype
        self.dtype = getattr(torch, dtype) if dtype else None

    def plan(self, slices: list[OutputSlice]) -> list[TensorPlan]:
        first_model = self.sources[slices[0].sources[0].model]
        outside = [name for name in first_model.shapes if not LAYER.match(name)]
        pre = [name for name in outside if "embed" in name]
        post = [name for name in outside if "embed" not in name]
        tensors = [self._tensor(name, [(s, name) for s in slices[0].sources], slices[0], 0.0) for name in pre]
        out_layer = 0
        for output_slice in slices:
            length = output_slice.sources[0].layer_range[1] - output_slice.sources[0].layer_range[0]
            for offset in range(length):
                t = offset / (length - 1) if length > 1 else 1.0
                suffixes = self._layer_suffixes(output_slice, offset)
                for suffix in suffixes:
                    inputs = [(s, f"model.layers.{s.layer_range[0] + offset}.{suffix}") for s in output_slice.sources]
                    tensors.append(self._tensor(f"model.layers.{out_layer}.{suffix}", inputs, output_slice, t))
                out_layer += 1
        tensors += [self._tensor(name, [(s, name) for s in slices[-1].sources], slices[-1], 0.0) for name in post]
        return tensors

    def _layer_suffixes(self, output_slice: OutputSlice, offset: int) -> list[str]:
        """The tensor names (after `model.layers.N.`) of one layer, the same in every source."""
        found = []
        for source in output_slice.sources:
            layer = source.layer_range[0] + offset
            names = [m.group(2) for m in map(LAYER.match, self.sources[source.model].shapes) if m and int(m.group(1)) == layer]
            found.append((source, names))
        first, first_names = found[0]
        for other, names in found[1:]:
            if set(names) != set(first_names):
                odd = sorted(set(names) ^ set(first_names))[0]
                raise LmstackError(f"layer {other.layer_range[0] + offset} of {other.model} and layer "
                                   f"{first.layer_range[0] + offset} of {first.model} differ in tensor {odd}; "
                                   "merged layers must have the same tensors")
        return first_names

    def _tensor(self, name: str, inputs: list[tuple[InputSlice, str]], output_slice: OutputSlice,
                t: float) -> TensorPlan:
        present = [(s, n) for s, n in inputs if n in self.sources[s.model].shapes]
        if len(present) != len(inputs):
            missing = next(s.model for s, n in inputs if n not in self.sources[s.model].shapes)
            having = present[0][0].model if present else "another input"
            raise LmstackError(f"{missing} has no tensor {inputs[0][1]} but {having} has; merged models must have "
                               "the same tensors (e.g. both tie or both untie the output head)")
        shapes = {(s.model, self.sources[s.model].shapes[n]) for s, n in inputs}
        if len({shape for _, shape in shapes}) > 1:
            described = ", ".join(f"{model} {list(shape)}" for model, shape in sorted(shapes))
            raise LmstackError(f"tensor {name} has different shapes in the inputs ({described}); they cannot be merged")
        base_slice = _slice_base(output_slice, self.config, self.method, self.sources)
        base, others = None, []
        for source_slice, input_name in inputs:
            model = self.sources[source_slice.model]
            is_base = base_slice is not None and model.key == self.sources[base_slice.model].key
            chain = [source_slice.parameters, output_slice.parameters, self.config.parameters]
            values = {} if is_base else self._values(self.method.per_input, chain, input_name, t)
            entry = TensorInput(model, input_name, values)
            if is_base and base is None:
                base = entry
            else:
                others.append(entry)
        shared = self._values(self.method.shared, [output_slice.parameters, self.config.parameters], name, t)
        first = base or others[0]
        shape = first.source.shapes[first.name]
        return TensorPlan(name, shape, self.dtype or first.source.dtypes[first.name], base, others, shared)

    def _values(self, specs: dict[str, Param], chain: list[Parameters | None], tensor: str, t: float) -> dict:
        values = {}
        for name, spec in specs.items():
            value = next((v for place in chain if place and name in place
                          for v in [value_at(place[name], tensor, t)] if v is not None), None)
            if value is None:
                if spec.default is REQUIRED:
                    raise LmstackError(f"parameter {name} is not set for tensor {tensor}; set it under "
                                       f"`parameters:` (e.g. {name}: 0.5)")
                value = spec.default
            values[name] = checked_value(name, value, spec, f"tensor {tensor}")
        return values
