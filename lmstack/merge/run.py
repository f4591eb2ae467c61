"""Run a merge: plan it (every check before any tensor is read), then stream it tensor by tensor.

For each output tensor the inputs are read from their files, combined by the method in float32,
cast to the output dtype and appended to `model.safetensors`; nothing else stays in memory, so the
peak is about one tensor of each input. The output is an ordinary model folder (config,
tokenizer, generation config, a model card naming the inputs and the config), written atomically
and recorded in the registry with every input model as a parent.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lmstack import registry
from lmstack.device import resolve_device
from lmstack.home import atomic_path, check_output, remove_stale_temporaries
from lmstack.merge.config import MergeConfig, load_config
from lmstack.merge.plan import MergePlan, TensorPlan, plan_merge
from lmstack.merge.writer import StreamingSafetensors
from lmstack.tokenizer import Tokenizer


@dataclass
class MergeResult:
    path: Path
    registry_id: str
    method: str
    tensors: int
    parents: list[str]


def merge(config: str | Path | dict[str, Any], out: str | Path, *, overwrite: bool = False, seed: int = 0,
          device: str | None = "cpu", progress: Callable[[int, int], None] | None = None) -> MergeResult:
    """Merge the models a mergekit-style config names into the model folder `out`.

    `seed` makes DARE's random drops reproducible; `device` is where the arithmetic runs (the
    inputs are read from disk either way); `progress(done, total)` is called after each tensor.
    """
    out = check_output(out, overwrite=overwrite)
    merge_config = load_config(config)
    plan = plan_merge(merge_config)
    target = resolve_device(device)
    remove_stale_temporaries(out.absolute().parent)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        layout = [(t.name, t.shape, t.dtype) for t in plan.tensors]
        with StreamingSafetensors(tmp / "model.safetensors", layout) as writer:
            for done, tensor in enumerate(plan.tensors, 1):
                writer.write(tensor.name, merge_tensor(plan, tensor, target, seed).to(tensor.dtype))
                if progress:
                    progress(done, len(plan.tensors))
        _write_model_files(tmp, plan)
    parents = [source.lineage_id() for source in plan.sources]
    artifact = registry.record(
        "model", out, name=out.name, operation="merge", parents=parents,
        recipe={"config": merge_config.model_dump(mode="json", exclude_none=True), "seed": seed},
        metadata={"method": plan.method.name, "tensors": len(plan.tensors), "layers": plan.output_config.num_layers},
    )
    return MergeResult(out, artifact, plan.method.name, len(plan.tensors), parents)


def merge_tensor(plan: MergePlan, tensor: TensorPlan, device: torch.device, seed: int = 0) -> torch.Tensor:
    """One output tensor: read its inputs, combine them with the plan's method (float32)."""
    base = tensor.base.source.read(tensor.base.name, device) if tensor.base else None
    inputs = [entry.source.read(entry.name, device) for entry in tensor.inputs]
    generators = None
    if plan.method.random:  # each (tensor, input) has its own stream: results do not depend on order
        generators = [torch.Generator(device).manual_seed(zlib.crc32(f"{seed}/{tensor.name}/{i}".encode()))
                      for i in range(len(inputs))]
    return plan.method.combine(base, inputs, [entry.values for entry in tensor.inputs], tensor.shared, generators)


def _write_model_files(folder: Path, plan: MergePlan) -> None:
    """Everything but the weights: config, tokenizer, generation defaults, the config and a model card."""
    dtype = plan.tensors[0].dtype
    hf_config = plan.output_config.to_hf() | {"torch_dtype": str(dtype).removeprefix("torch.")}
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2))
    tokenizer_dir = plan.tokenizer_source.directory
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    if plan.config.chat_template:
        tokenizer.chat_template = plan.config.chat_template
    tokenizer.save(folder)
    generation = tokenizer_dir / "generation_config.json"
    if generation.is_file():
        (folder / "generation_config.json").write_text(generation.read_text(encoding="utf-8"))
    (folder / "mergekit_config.yml").write_text(plan.config.to_yaml())
    (folder / "README.md").write_text(model_card(plan), encoding="utf-8")


def model_card(plan: MergePlan) -> str:
    config: MergeConfig = plan.config
    base = config.base_model
    lines = ["---", "library_name: transformers", "tags:", "- merge", "- lmstack", "base_model:"]
    lines += [f"- {source.ref}" for source in plan.sources]
    lines += ["---", "", f"# {plan.method.name} merge", "",
              f"Made with `lmstack merge` using the **{plan.method.name}** method"
              + (f", with `{base}` as the base." if base and plan.method.base == "required" else "."), "",
              "## Input models", "", "| reference | resolved to | registry id |", "|---|---|---|"]
    lines += [f"| `{s.ref}` | `{s.resolved.path}` | {s.lineage_id()} |" for s in plan.sources]
    lines += ["", "## Configuration", "", "```yaml", config.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)
