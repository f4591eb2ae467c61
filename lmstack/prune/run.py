"""`lmstack prune MODEL OUT`: a smaller model cut from a bigger one, with a table of what it cost.

Steps, each optional and measured: drop the `layers` layers of lowest block influence; remove
`heads_per_group` query heads per key-value group; remove a `mlp_fraction` of MLP channels; then
heal with a short next-token fine-tune on `heal_data`. Importance is measured on calibration text,
perplexity on separate evaluation text; every step adds a row (parameters, size, perplexity) to
the quality table written beside the model. The result is an ordinary model directory (same
tokenizer), recorded with the original as its parent: a natural draft model for speculative
decoding, since it shares the vocabulary and much of the behaviour of the model it came from.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmstack import registry
from lmstack.data import dataset_path, dataset_reference
from lmstack.errors import LmstackError
from lmstack.eval.likelihood import perplexity
from lmstack.home import check_output
from lmstack.hub.load import ModelBundle, load_model
from lmstack.inputs import read_text
from lmstack.model import hf_io
from lmstack.model.weights import build_model
from lmstack.pretrain.corpus import corpus_files
from lmstack.pretrain.shards import text_windows
from lmstack.prune.importance import block_influence, channel_importance, head_importance
from lmstack.prune.surgery import drop_channels, drop_heads, drop_layers

REPORT_FILE = "prune_report.json"


@dataclass
class QualityRow:
    step: str
    parameters: int
    megabytes_bf16: float
    perplexity: float


@dataclass
class PruneReport:
    output: str
    rows: list[QualityRow] = field(default_factory=list)
    dropped_layers: list[int] = field(default_factory=list)
    block_influence: list[float] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| step | parameters | MB (bf16) | perplexity |", "|---|---|---|---|"]
        lines += [f"| {r.step} | {r.parameters / 1e6:.1f}M | {r.megabytes_bf16:.0f} | {r.perplexity:.2f} |"
                  for r in self.rows]
        return "\n".join(lines)


def _row(step: str, bundle: ModelBundle, eval_text: str) -> QualityRow:
    count = sum(p.numel() for p in {id(p): p for p in bundle.model.parameters()}.values())
    return QualityRow(step, count, count * 2 / 1e6, perplexity(bundle, eval_text))


def _rebuild(bundle: ModelBundle, config, state) -> ModelBundle:
    model = build_model(config, {k: v.clone() for k, v in state.items()}).eval()
    return ModelBundle(**{**bundle.fields(), "model": model, "config": config})


def prune_model(model: str, out: str | Path, *, layers: int = 0, heads_per_group: int = 0, mlp_fraction: float = 0.0,
                calibration: str = "lmstack:general_heldout", eval_text: str = "lmstack:general_heldout",
                calibration_windows: int = 8, max_len: int = 256, heal_data: str | None = None,
                heal_steps: int = 0, heal_lr: float = 5e-5, overwrite: bool = False) -> PruneReport:
    """Prune `model` as asked, write it to `out` with its quality table, and record it."""
    if not (layers or heads_per_group or mlp_fraction):
        raise LmstackError("nothing to prune; pass --layers N, --heads-per-group N or --mlp-fraction F")
    if heal_steps and not heal_data:
        raise LmstackError("--heal-steps needs --heal-data (text to fine-tune on after pruning)")
    out = check_output(out, overwrite=overwrite)
    text = read_text(dataset_path(eval_text), "evaluation text")
    corpus_files([ref for ref in (calibration, heal_data) if ref])  # checked before the model loads
    bundle = load_model(model, device="cpu", dtype="fp32")
    if layers >= bundle.config.num_layers:
        raise LmstackError(f"{bundle.name} has {bundle.config.num_layers} layers; --layers must be fewer")
    batch = text_windows(dataset_path(calibration), bundle.tokenizer, calibration_windows, max_len)
    report = PruneReport(str(out), rows=[_row("original", bundle, text)])
    config, state = bundle.config, {k: v.detach() for k, v in bundle.model.state_dict().items()}
    current = bundle
    if layers:
        report.block_influence = block_influence(current.model, batch)
        report.dropped_layers = sorted(sorted(range(config.num_layers), key=report.block_influence.__getitem__)[:layers])
        config, state = drop_layers(config, state, report.dropped_layers)
        current = _rebuild(bundle, config, state)
        report.rows.append(_row(f"- {layers} layers (block influence)", current, text))
    if heads_per_group:
        config, state = drop_heads(config, state, head_importance(current.model, batch), heads_per_group)
        current = _rebuild(bundle, config, state)
        report.rows.append(_row(f"- {heads_per_group} heads per kv group", current, text))
    if mlp_fraction:
        config, state = drop_channels(config, state, channel_importance(current.model, batch), mlp_fraction)
        current = _rebuild(bundle, config, state)
        report.rows.append(_row(f"- {mlp_fraction:.0%} MLP channels", current, text))
    if heal_steps:
        heal(current, heal_data, steps=heal_steps, lr=heal_lr, max_len=max_len)
        report.rows.append(_row(f"healed {heal_steps} steps", current, text))
    weights = {k: v.detach() for k, v in current.model.state_dict().items()}
    hf_io.write_model_dir(out, current.config, weights, current.tokenizer, current.generation_config,
                          extra_files={REPORT_FILE: json.dumps(asdict(report), indent=2)})
    artifact = registry.record(
        "model", out, name=out.name, operation="prune", source=model, parents=[bundle.lineage_id()],
        recipe={"layers": layers, "heads_per_group": heads_per_group, "mlp_fraction": mlp_fraction,
                "calibration": dataset_reference(calibration), "heal_data": heal_data and dataset_reference(heal_data),
                "heal_steps": heal_steps, "heal_lr": heal_lr, "max_len": max_len},
        datasets=[dataset_reference(r) for r in filter(None, (calibration, heal_data))],
        metadata={"quality": [asdict(r) for r in report.rows], "dropped_layers": report.dropped_layers})
    registry.add_score(artifact, "perplexity", report.rows[-1].perplexity, dataset=dataset_reference(eval_text),
                       details={"window": 512, "stride": 256})
    return report


def heal(bundle: ModelBundle, data: str, *, steps: int, lr: float, max_len: int, batch_size: int = 4) -> None:
    """A short next-token fine-tune of every weight on `data`, in place (the trainer core's loop)."""
    from lmstack.train.core import Plan, train
    from lmstack.train.pretrain import collate_windows
    from lmstack.train.recipe import OptimizerSection, RunSection
    from lmstack.train.sft import NextTokenLoss

    windows = list(text_windows(dataset_path(data), bundle.tokenizer, max(batch_size, steps * batch_size), max_len))
    if len(windows) < batch_size:
        raise LmstackError(f"--heal-data holds {len(windows)} windows of {max_len} tokens; give more text")
    bundle.model.requires_grad_(True).train()
    folder = Path(tempfile.mkdtemp(prefix="lmstack-heal-"))
    try:
        train(bundle.model, Plan(NextTokenLoss(), windows, [], collate_windows),
              optimizer=OptimizerSection(lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.0),
              run=RunSection(steps=steps, batch_size=batch_size, out_dir=str(folder), log_every=max(1, steps // 10)),
              device="cpu", precision="fp32")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bundle.model.requires_grad_(False).eval()
