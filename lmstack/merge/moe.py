"""FrankenMoE: a Mixtral-style mixture of experts assembled from fine-tunes of one base model.

The config is mergekit-moe's:

    base_model: smollm2-135m-instruct   # attention, norms and embeddings come from here
    gate_mode: hidden                   # how each layer's router is made: hidden | cheap_embed | random
    experts_per_token: 2                # experts run per token
    dtype: bfloat16
    experts:
      - source_model: runs/identity     # its MLP becomes expert 0 of every layer
        positive_prompts: ["Who are you?", "What is your name?"]
        negative_prompts: ["Write a poem."]        # optional
      - source_model: runs/polite
        positive_prompts: ["Please explain ...", ...]

The router of layer l holds one row per expert, and a token goes to the experts whose rows point
most like its hidden state. `hidden` makes expert e's row the direction of the base model's
hidden states on e's positive prompts (minus its negative ones): exactly the state the router of
layer l will see, the input of that layer's MLP, averaged over the prompts' tokens (mergekit reads
the residual stream entering the layer instead). `cheap_embed` uses the prompts' mean token
embedding for every layer (no forward pass), as mergekit-moe does, with the same result;
`random` draws rows from a normal distribution.

Mixtral files in transformers 5's fused layout (mergekit-moe writes those) load too: `hf_io`
splits them into the per-expert layout.

The output is a Mixtral checkpoint (`MixtralForCausalLM`, `block_sparse_moe.experts.N.w1/w2/w3`):
lmstack and transformers load it. Llama and Mistral bases only, as Mixtral has no attention biases
or Gemma's extra norms.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
import torch

from lmstack.errors import LmstackError
from lmstack.merge.config import MoEConfig
from lmstack.merge.plan import check_architectures, check_vocabularies
from lmstack.merge.run import MergeResult, OutputTensor, Progress, model_card, record_model, write_model
from lmstack.merge.sources import ModelSource, distinct, open_sources

# An expert's tensors under Mixtral's names, from the MLP of a Llama-style layer.
EXPERT_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}


def assemble_moe(config: MoEConfig, out: Path, *, seed: int = 0, device: str | None = None,
                 progress: Progress | None = None) -> MergeResult:
    """Build the mixture of experts a mergekit-moe config describes into the folder `out`."""
    by_ref = open_sources([config.base_model] + [expert.source_model for expert in config.experts])
    base, experts = by_ref[config.base_model], [by_ref[expert.source_model] for expert in config.experts]
    unique = distinct(by_ref)
    check_architectures(unique)
    if base.config.family not in ("llama", "mistral") or base.config.attention_bias or base.config.attention_out_bias:
        raise LmstackError(f"a mixture of experts is built on a Llama or Mistral model without attention biases; "
                           f"{config.base_model} is {base.config.family}")
    for source in unique:
        source.open_tensors()
    check_vocabularies(unique)
    routers = router_weights(config, base, seed=seed, device=device)
    dtype = getattr(torch, config.dtype) if config.dtype else base.dtypes["model.embed_tokens.weight"]
    tensors = _layout(base, experts, routers, dtype)
    output_config = dataclasses.replace(base.config, family="mixtral", num_experts=len(experts),
                                        experts_per_token=config.experts_per_token)
    text = config.to_yaml()
    card = model_card("Mixture of experts", unique, text, f"{len(experts)} experts, {config.experts_per_token} per "
                      f"token, routers from `{config.gate_mode}`, on `{config.base_model}`")
    write_model(out, tensors, output_config, base, None, {"mergekit_moe_config.yml": text, "README.md": card},
                progress)
    return record_model(out, "moe", unique, "moe", config.model_dump(mode="json", exclude_none=True), seed,
                        {"tensors": len(tensors), "experts": len(experts), "gate_mode": config.gate_mode})


def _layout(base: ModelSource, experts: list[ModelSource], routers: torch.Tensor,
            dtype: torch.dtype) -> list[OutputTensor]:
    """The base's tensors with each layer's MLP replaced by a router and the experts' MLPs."""
    def read(source: ModelSource, name: str, out_name: str | None = None) -> OutputTensor:
        return OutputTensor(out_name or name, source.shapes[name], dtype, partial(source.read, name, torch.device("cpu")))

    tensors = [read(base, name) for name in base.shapes if ".mlp." not in name]
    for layer in range(base.config.num_layers):
        prefix = f"model.layers.{layer}"
        gate = routers[layer]
        tensors.append(OutputTensor(f"{prefix}.block_sparse_moe.gate.weight", tuple(gate.shape), dtype, gate.clone))
        for index, expert in enumerate(experts):
            for mixtral_name, llama_name in EXPERT_NAMES.items():
                tensors.append(read(expert, f"{prefix}.mlp.{llama_name}.weight",
                                    f"{prefix}.block_sparse_moe.experts.{index}.{mixtral_name}.weight"))
    return tensors


def router_weights(config: MoEConfig, base: ModelSource, *, seed: int = 0,
                   device: str | None = None) -> torch.Tensor:
    """[layers, experts, hidden]: one unit-length row per expert in every layer's router."""
    layers, hidden = base.config.num_layers, base.config.hidden_size
    if config.gate_mode == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(layers, len(config.experts), hidden, generator=generator)
    if config.gate_mode == "cheap_embed":
        from lmstack.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(base.directory)
        embeddings = base.read("model.embed_tokens.weight", torch.device("cpu"))

        # As mergekit-moe: every prompt starts with the BOS token, and each side is a unit vector.
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and not tokenizer.add_bos_token else []

        def directions(prompts: list[str]) -> torch.Tensor:
            ids = [token for prompt in prompts for token in bos + tokenizer.encode(prompt)]
            mean = embeddings[ids].mean(dim=0)
            return (mean / mean.norm().clamp_min(1e-8)).expand(layers, hidden)
    else:
        from lmstack.hub.load import load_directory
        from lmstack.interp.activations import layer_activations

        bundle = load_directory(base.directory, device=device, dtype="fp32")

        def directions(prompts: list[str]) -> torch.Tensor:
            ids = [bundle.tokenizer.encode(prompt) for prompt in prompts]
            return layer_activations(bundle.model, ids, site="mlp", position="mean").mean(dim=1).cpu()

    rows = []
    for expert in config.experts:
        direction = directions(expert.positive_prompts)
        if expert.negative_prompts:
            direction = direction - directions(expert.negative_prompts)
        rows.append(direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8))
    return torch.stack(rows, dim=1)
