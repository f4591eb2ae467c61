"""Run a merge: plan it (every check before any tensor is read), then stream it tensor by tensor.

For each output tensor the inputs are read from their files, combined by the method in float32,
cast to the output dtype and appended to `model.safetensors`; nothing else stays in memory, so the
peak is about one tensor of each input. The output is an ordinary model folder (config,
tokenizer, generation config, a model card naming the inputs and the config), written atomically
and recorded in the registry with every input model as a parent.

A config with `experts:` (mergekit-moe's format) assembles a mixture of experts instead
(`lmstack.merge.moe`); it is written the same way.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from lmstack.device import resolve_device
from lmstack.home import atomic_path, check_output, remove_stale_temporaries
from lmstack.merge.config import MergeConfig, MoEConfig, load_config
from lmstack.merge.methods import COMBINE
from lmstack.merge.plan import MergePlan, TensorPlan, plan_merge
from lmstack.merge.sources import ModelSource
from lmstack.merge.writer import StreamingSafetensors
from lmstack.model.config import ModelConfig
from lmstack.tokenizer import Tokenizer

Progress = Callable[[int, int], None]


@dataclass
class MergeResult:
    path: Path
    registry_id: str
    method: str
    tensors: int
    parents: list[str]


@dataclass
class OutputTensor:
    """One tensor of the output, computed only when its turn to be written comes."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]


def merge(config: str | Path | dict[str, Any] | MergeConfig | MoEConfig, out: str | Path, *, overwrite: bool = False, seed: int = 0,
          device: str | None = None, progress: Progress | None = None) -> MergeResult:
    """Merge the models a mergekit-style config names into the model folder `out`.

    `seed` makes DARE's random drops (and random MoE routers) reproducible; `device` is where the
    arithmetic runs (default: cuda if available; the inputs are read from disk either way);
    `progress(done, total)` is called after each tensor.
    """
    out = check_output(out, overwrite=overwrite)
    merge_config = config if isinstance(config, (MergeConfig, MoEConfig)) else load_config(config)
    if isinstance(merge_config, MoEConfig):
        from lmstack.merge.moe import assemble_moe

        return assemble_moe(merge_config, out, seed=seed, device=device, progress=progress)
    plan = plan_merge(merge_config)
    target = resolve_device(device)
    tensors = [OutputTensor(t.name, t.shape, t.dtype, partial(merge_tensor, plan, t, target, seed))
               for t in plan.tensors]
    card = model_card(f"{plan.method.name} merge", plan.sources, merge_config.to_yaml(),
                      f"the **{plan.method.name}** method" + (f", with `{merge_config.base_model}` as the base"
                                                              if plan.method.base == "required" else ""))
    write_model(out, tensors, plan.output_config, plan.tokenizer_source, merge_config.chat_template,
                {"mergekit_config.yml": merge_config.to_yaml(), "README.md": card}, progress)
    return record_model(out, "merge", plan.sources, plan.method.name, merge_config.model_dump(mode="json",
                        exclude_none=True), seed, {"tensors": len(tensors), "layers": plan.output_config.num_layers})


def merge_tensor(plan: MergePlan, tensor: TensorPlan, device: torch.device, seed: int = 0) -> torch.Tensor:
    """One output tensor: read its inputs, combine them with the plan's method (float32)."""
    base = tensor.base.source.read(tensor.base.name, device) if tensor.base else None
    inputs = [entry.source.read(entry.name, device) for entry in tensor.inputs]
    generators = None
    if plan.method.random:  # each (tensor, input) has its own stream: results do not depend on order
        generators = [torch.Generator(device).manual_seed(zlib.crc32(f"{seed}/{tensor.name}/{i}".encode()))
                      for i in range(len(inputs))]
    return COMBINE[plan.method.name](base, inputs, [entry.values for entry in tensor.inputs], tensor.shared,
                                     generators)


def write_model(out: Path, tensors: list[OutputTensor], config: ModelConfig, tokenizer_source: ModelSource,
                chat_template: str | None, files: dict[str, str], progress: Progress | None = None) -> None:
    """Stream `tensors` into `out/model.safetensors` and add config, tokenizer and `files`, atomically."""
    remove_stale_temporaries(out.absolute().parent)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        with StreamingSafetensors(tmp / "model.safetensors", [(t.name, t.shape, t.dtype) for t in tensors]) as writer:
            for done, tensor in enumerate(tensors, 1):
                writer.write(tensor.name, tensor.make().to(tensor.dtype))
                if progress:
                    progress(done, len(tensors))
        hf_config = config.to_hf() | {"torch_dtype": str(tensors[0].dtype).removeprefix("torch.")}
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        tokenizer = Tokenizer.from_dir(tokenizer_source.directory)
        if chat_template:
            tokenizer.chat_template = chat_template
        tokenizer.save(tmp)
        generation = tokenizer_source.directory / "generation_config.json"
        if generation.is_file():
            (tmp / "generation_config.json").write_text(generation.read_text(encoding="utf-8"))
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")


def record_model(out: Path, operation: str, sources: list[ModelSource], method: str, config: dict[str, Any],
                 seed: int, metadata: dict[str, Any]) -> MergeResult:
    """Record the finished folder in the registry, every input model a parent."""
    from lmstack import registry

    parents = list(dict.fromkeys(source.lineage_id() for source in sources))
    artifact = registry.record("model", out, name=out.name, operation=operation, parents=parents,
                               recipe={"config": config, "seed": seed}, metadata={"method": method, **metadata})
    return MergeResult(out, artifact, method, metadata["tensors"], parents)


def model_card(title: str, sources: list[ModelSource], config_yaml: str, how: str) -> str:
    """README.md: what made the model, from which inputs (with their registry ids), with which config."""
    lines = ["---", "library_name: transformers", "tags:", "- merge", "- lmstack", "base_model:"]
    lines += [f"- {source.ref}" for source in sources]
    lines += ["---", "", f"# {title}", "", f"Made with `lmstack merge` using {how}.", "",
              "## Input models", "", "| reference | resolved to | registry id |", "|---|---|---|"]
    lines += [f"| `{s.ref}` | `{s.resolved.path}` | {s.lineage_id()} |" for s in sources]
    lines += ["", "## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)

