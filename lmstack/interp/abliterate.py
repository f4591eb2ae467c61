"""`lmstack abliterate MODEL OUT`: find a model's refusal direction and remove it.

1. Directions: the residual stream at the last prompt token, on prompts to refuse and prompts to
   answer (`lmstack:refusal_train`, written for lmstack), one difference-of-means direction per layer.
2. Choice: each candidate layer's direction is ablated (hooks) while the model answers the
   validation prompts to refuse (`lmstack:refusal_val`); the one leaving the fewest refusals wins,
   ties broken by the smallest change (KL divergence) of the next-token distribution on the
   validation prompts to answer; directions that change it by more than `MAX_KL` are passed over.
3. Removal: `weights` orthogonalises every matrix that writes into the residual stream and saves
   a new model; `hooks` saves the direction for `ablation_hooks` at inference.
4. Report, before and after, on held-out prompts (`lmstack:refusal_heldout`): the refusal rate on
   prompts to refuse, the refusal rate on prompts to answer (over-refusal), and perplexity on
   general text. The model, its parent and the scores go into the registry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from lmstack import registry
from lmstack.device import DTYPES
from lmstack.errors import LmstackError
from lmstack.eval.likelihood import perplexity
from lmstack.eval.scores import record_score
from lmstack.home import atomic_path
from lmstack.hub.load import ModelBundle, load_model
from lmstack.interp.prompts import REFUSAL_MARKERS, check_inputs
from lmstack.interp.refusal import (
    ablation_hooks,
    check_orthogonalizable,
    kl_divergence,
    next_token_log_probs,
    orthogonalize,
    prompt_ids,
    refusal_directions,
    refusal_rate,
)
from lmstack.model import hf_io

# Arditi et al. keep only directions whose ablation changes harmless next-token distributions by
# a KL divergence below 0.1; larger changes mean the direction carries more than refusal.
MAX_KL = 0.1


@dataclass
class Measurement:
    refusal_rate: float  # on held-out prompts to refuse
    over_refusal_rate: float  # on held-out prompts to answer
    perplexity: float  # on general text
    examples: list[str] = field(default_factory=list)  # the first answers to held-out prompts to refuse


@dataclass
class Candidate:
    layer: int
    refusal_rate: float  # on validation prompts to refuse, with this direction ablated
    kl: float  # on validation prompts to answer: how much the next-token distribution moved


@dataclass
class AbliterationReport:
    model: str
    method: str
    layer: int
    candidates: list[Candidate]
    before: Measurement
    after: Measurement
    path: str
    registry_id: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_layers(num_layers: int, most: int = 8) -> list[int]:
    """Up to `most` layers spread over the middle of the model (20% to 80% of the depth).

    Layer 0 is never one: its residual stream is the embedding of the last prompt token, the same
    token for every chat prompt, so the two means cannot differ there.
    """
    first, last = max(1, round(0.2 * num_layers)), max(1, min(num_layers - 1, round(0.8 * num_layers)))
    layers = list(range(first, last + 1))
    if len(layers) > most:
        layers = sorted({layers[round(i * (len(layers) - 1) / (most - 1))] for i in range(most)})
    return layers


def choose_direction(bundle: ModelBundle, directions: torch.Tensor, refuse: list[list[int]], answer: list[list[int]],
                     layers: Sequence[int], *, max_new_tokens: int = 32, markers: Sequence[str] = REFUSAL_MARKERS,
                     max_kl: float = MAX_KL, progress: Callable[[str], None] | None = None) -> tuple[int, list[Candidate]]:
    """The candidate layer whose direction, ablated, leaves the fewest refusals (then the smallest KL).

    A direction that moves the next-token distribution on harmless prompts by more than `max_kl`
    is breaking the model, not removing a refusal (a model that talks nonsense refuses nothing):
    such candidates are passed over. When none is that gentle, the choice is among those within
    twice the smallest KL, never the destructive ones.
    """
    reference = next_token_log_probs(bundle.model, answer)
    candidates = []
    for layer in layers:
        with ablation_hooks(bundle.model, directions[layer]):
            rate, _ = refusal_rate(bundle, refuse, max_new_tokens=max_new_tokens, markers=markers)
            kl = kl_divergence(reference, next_token_log_probs(bundle.model, answer))
        candidates.append(Candidate(layer, rate, kl))
        if progress:
            progress(f"layer {layer}: refusal {rate:.0%}, KL {kl:.4f}")
    limit = max(max_kl, 2 * min(c.kl for c in candidates))
    gentle = [c for c in candidates if c.kl <= limit]
    best = min(gentle, key=lambda c: (c.refusal_rate, c.kl))
    return best.layer, candidates


def measure(bundle: ModelBundle, refuse: list[list[int]], answer: list[list[int]], general_text: str, *,
            max_new_tokens: int = 32, markers: Sequence[str] = REFUSAL_MARKERS) -> Measurement:
    """Refusal rates on prompts to refuse and to answer, and perplexity on general text."""
    refused, answers = refusal_rate(bundle, refuse, max_new_tokens=max_new_tokens, markers=markers)
    over, _ = refusal_rate(bundle, answer, max_new_tokens=max_new_tokens, markers=markers)
    return Measurement(refused, over, perplexity(bundle, general_text), answers[:3])


def abliterate(model: str, out: str | Path, *, method: str = "weights", train: str = "lmstack:refusal_train",
               val: str = "lmstack:refusal_val", heldout: str = "lmstack:refusal_heldout",
               text: str = "lmstack:general_heldout", layers: Sequence[int] | None = None, max_new_tokens: int = 32,
               markers: Sequence[str] = REFUSAL_MARKERS, max_kl: float = MAX_KL, device: str | None = None,
               dtype: str | None = "fp32", overwrite: bool = False, progress: Callable[[str], None] | None = None) -> AbliterationReport:
    """Find `model`'s refusal direction, remove it (`weights` or `hooks`), write OUT, report before and after.

    Every input (prompt files, the text, the values) is checked before the model loads.
    """
    if not max_kl >= 0:
        raise LmstackError(f"max_kl must be a number >= 0, got {max_kl}")
    if dtype not in (None, "auto", *DTYPES):
        raise LmstackError(f"unknown dtype '{dtype}'; use auto or one of {', '.join(DTYPES)}")
    out, sets, general = check_inputs(out, method=method, prompt_sets={"train": train, "val": val, "heldout": heldout},
                                      text=text, max_new_tokens=max_new_tokens, markers=markers, overwrite=overwrite)
    bundle = load_model(model, device=device, dtype=dtype)
    num_layers = bundle.config.num_layers
    if layers is not None and not all(1 <= layer < num_layers for layer in layers):
        raise LmstackError(f"candidate layers must be between 1 and {num_layers - 1} for this {num_layers}-layer model")
    if method == "weights":
        check_orthogonalizable(bundle.config)
    ids = {name: (prompt_ids(bundle, s.refuse), prompt_ids(bundle, s.answer)) for name, s in sets.items()}
    directions = refusal_directions(bundle.model, *ids["train"])
    scored = {"max_new_tokens": max_new_tokens, "markers": list(markers)}
    before = measure(bundle, *ids["heldout"], general, **scored)
    layer, candidates = choose_direction(bundle, directions, *ids["val"], layers or candidate_layers(num_layers),
                                         max_kl=max_kl, progress=progress, **scored)
    if method == "hooks":
        with ablation_hooks(bundle.model, directions[layer]):
            after = measure(bundle, *ids["heldout"], general, **scored)
    else:
        orthogonalize(bundle.model, directions[layer])
        bundle.config = bundle.model.config  # the output head may have been untied from the embeddings
        after = measure(bundle, *ids["heldout"], general, **scored)
    report = AbliterationReport(bundle.name, method, layer, candidates, before, after, str(out), None)
    settings = {"method": method, "layer": layer, "train": train, "val": val, "heldout": heldout,
                "max_new_tokens": max_new_tokens, "max_kl": max_kl}
    if method == "hooks":
        _save_direction(out, directions[layer], report)
    else:
        hf_io.write_model_dir(out, bundle.config, bundle.model.state_dict(), bundle.tokenizer,
                              bundle.generation_config,
                              extra_files={"abliteration.json": json.dumps(report.to_dict(), indent=2)})
        report.registry_id = registry.record(
            "model", out, name=out.name, operation="abliterate", parents=[bundle.lineage_id()],
            recipe={"model": model, **settings}, datasets=[train, val, heldout, text],
            metadata={"candidates": [asdict(c) for c in candidates]})
    _record_scores(bundle, before, heldout, text, settings)
    if report.registry_id:
        _record_scores(replace(bundle, registry_id=report.registry_id, name=out.name, path=out), after, heldout, text,
                       settings)
    return report


def _record_scores(bundle: ModelBundle, measured: Measurement, heldout: str, text: str, settings: dict) -> None:
    record_score(bundle, "refusal_rate", measured.refusal_rate, heldout, settings)
    record_score(bundle, "over_refusal_rate", measured.over_refusal_rate, heldout, settings)
    record_score(bundle, "perplexity", measured.perplexity, text, {"window": 512, "stride": 256})


def _save_direction(out: Path, direction: torch.Tensor, report: AbliterationReport) -> None:
    """The `hooks` result: the direction (for `ablation_hooks`) and the report, in one folder."""
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_file({"direction": direction.float().contiguous().cpu()}, tmp / "refusal_direction.safetensors",
                  metadata={"layer": str(report.layer), "model": report.model})
        (tmp / "abliteration.json").write_text(json.dumps(report.to_dict(), indent=2))


def load_direction(folder: str | Path) -> torch.Tensor:
    """The direction `abliterate(..., method="hooks")` saved, for `ablation_hooks(model, direction)`."""
    from safetensors.torch import load_file

    path = Path(folder) / "refusal_direction.safetensors"
    if not path.is_file():
        raise LmstackError(f"{folder} has no refusal_direction.safetensors; run `lmstack abliterate --method hooks`")
    return load_file(path)["direction"]
