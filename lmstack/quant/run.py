"""`lmstack quant METHOD MODEL OUT`: quantize a model, save it, record it, and show what it cost.

Inputs (the calibration and evaluation texts, the output folder, every setting) are checked
before the model loads. The result is a model directory that `lmstack.load` reads back (layout
in `lmstack/model/quantized.py`), recorded in the registry with its parent and recipe; its
perplexity and KL divergence on the evaluation text are recorded as scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lmstack import registry
from lmstack.data import dataset_reference
from lmstack.eval.scores import record_score
from lmstack.hub.load import ModelBundle, load_model
from lmstack.model import hf_io
from lmstack.model.quantized import quantized_state
from lmstack.quant.calibration import calibration_text, calibration_windows
from lmstack.quant.methods import QuantReport, quantize_model
from lmstack.quant.quality import QualityRow, quality_table
from lmstack.quant.settings import QuantSettings, check_request, parse_settings

DEFAULT_EVAL_TEXT = "lmstack:general_heldout"
QUANT_FORMAT_VERSION = 1


@dataclass
class QuantResult:
    path: Path
    registry_id: str
    report: QuantReport
    quality: list[QualityRow]  # the unquantized model first; empty when evaluation is skipped


def quantize(model: str, out: str | Path, *, method: str, overwrite: bool = False, device: str | None = None,
             eval_text: str | None = DEFAULT_EVAL_TEXT, decode_tokens: int = 64, **settings) -> QuantResult:
    """Quantize `model` with `method` into the directory `out`; see `QuantSettings` for settings.

    `eval_text` None skips the quality table; `decode_tokens` 0 skips the decode-speed column.
    """
    recipe = parse_settings(method=method, **settings)
    out, calibration, evaluation = check_request(out, recipe, eval_text, overwrite)
    bundle = load_model(model, device=device, dtype="fp32")
    windows = None
    if recipe.calibrated:
        text = calibration_text(calibration, bundle.tokenizer)
        windows = calibration_windows(text, bundle.tokenizer, samples=recipe.samples, seq_len=recipe.seq_len)
        windows = windows.to(bundle.device)
    report = quantize_model(bundle.model, recipe, windows)
    artifact_id = save_quantized(bundle, out, recipe, report)
    quality: list[QualityRow] = []
    if evaluation is not None:
        reference = load_model(model, device=device, dtype="fp32")
        reloaded = load_model(out, device=device, dtype="fp32")
        quality = quality_table(reference, [reloaded], evaluation, decode_tokens=decode_tokens)
        settings_used = {"window": 512, "dtype": "float32", "reference": reference.lineage_id()}
        record_score(reloaded, "perplexity", quality[1].perplexity, eval_text, settings_used)
        record_score(reloaded, "kl_divergence", quality[1].kl, eval_text, settings_used)
    return QuantResult(out, artifact_id, report, quality)


def save_quantized(bundle: ModelBundle, out: Path, recipe: QuantSettings, report: QuantReport) -> str:
    """Write the quantized model directory atomically and record it; its registry id."""
    state, layers = quantized_state(bundle.model.to("cpu"))
    section = {"format": "lmstack", "version": QUANT_FORMAT_VERSION, "method": recipe.method,
               "recipe": recipe.recipe(), "layers": layers}
    hf_io.write_model_dir(out, bundle.config, state, bundle.tokenizer, bundle.generation_config,
                          torch.float32, quantization=section)
    errors = {kind: vars(stats) for kind, stats in report.errors.items()}
    return registry.record(
        "model", out, name=out.name, operation="quantize", parents=[bundle.lineage_id()], recipe=recipe.recipe(),
        datasets=[dataset_reference(recipe.calib)] if recipe.calibrated else [],
        metadata={"quantized_layers": report.layers, "quantized_bytes": report.quantized_bytes,
                  "dense_bytes": report.dense_bytes, "weight_error": errors},
    )
