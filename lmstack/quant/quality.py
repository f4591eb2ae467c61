"""What a quantization cost and bought: size on disk, perplexity and KL divergence against the
unquantized model on held-out text, and decode speed.

Perplexity is scored in consecutive windows of `window` tokens (each window from an empty
context, every token but the window's first scored), the way llama.cpp's perplexity tool cuts
a text into chunks; the KL divergence KL(P_reference || P_quantized) is averaged over the same
positions. KL sees changes perplexity averages away: a model can keep its perplexity while
moving probability between plausible tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmstack.errors import LmstackError
from lmstack.generate.generate import Timings, generate_ids
from lmstack.data import dataset_path
from lmstack.hub.load import ModelBundle, load_model
from lmstack.inputs import read_text

DECODE_PROMPT = "The history of the printing press begins"


@dataclass
class QualityRow:
    name: str
    size_bytes: int  # weights on disk
    perplexity: float
    kl: float | None  # mean KL divergence from the reference, per token (None: the reference)
    decode_tokens_per_second: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def weights_size(path: Path) -> int:
    """Bytes of a model's weights on disk: a GGUF file, or a directory's safetensors (all shards)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    index = path / "model.safetensors.index.json"
    files = set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else {"model.safetensors"}
    return sum((path / name).stat().st_size for name in files)


def text_windows(ids: list[int], window: int) -> list[list[int]]:
    """Consecutive windows of `window` tokens (the last may be shorter, but not below 2)."""
    windows = [ids[i : i + window] for i in range(0, len(ids), window)]
    return [w for w in windows if len(w) >= 2]


@torch.inference_mode()
def window_log_probs(bundle: ModelBundle, window: list[int]) -> torch.Tensor:
    """log P(next token) at every position of the window but the last [T-1, V] (float32)."""
    tokens = torch.tensor([window], device=bundle.device)
    return F.log_softmax(bundle.model(tokens)[0, :-1].float(), dim=-1)


def nll_and_kl(reference: ModelBundle, candidates: list[ModelBundle], text: str,
               window: int = 512) -> tuple[list[float], list[float]]:
    """Per model (reference first): perplexity, and mean KL(reference || model) per token."""
    ids = reference.tokenizer.encode(text)
    windows = text_windows(ids, min(window, reference.config.max_position_embeddings))
    if not windows:
        raise LmstackError(f"the evaluation text has {len(ids)} tokens; give a longer text")
    models = [reference, *candidates]
    nll = [0.0] * len(models)
    kl = [0.0] * len(models)
    count = 0
    for tokens in windows:
        targets = torch.tensor(tokens[1:])
        base = window_log_probs(reference, tokens).cpu()
        for i, bundle in enumerate(models):
            log_probs = base if i == 0 else window_log_probs(bundle, tokens).cpu()
            nll[i] += -log_probs.gather(-1, targets[:, None]).sum().item()
            kl[i] += F.kl_div(log_probs, base, log_target=True, reduction="sum").item()
        count += len(targets)
    return [math.exp(n / count) for n in nll], [k / count for k in kl]


def decode_speed(bundle: ModelBundle, tokens: int = 64, repeats: int = 2) -> float:
    """Greedy decode tokens/s at batch 1 after a short prompt (best of `repeats`, after a warm-up)."""
    prompt = [bundle.tokenizer.encode(DECODE_PROMPT)]
    generate_ids(bundle.model, prompt, max_new_tokens=4)  # warm-up: first-call allocations
    best = 0.0
    for _ in range(repeats):
        timings = Timings()
        out = generate_ids(bundle.model, prompt, max_new_tokens=tokens, timings=timings)
        if timings.decode_seconds > 0:
            best = max(best, (len(out[0]) - 1) / timings.decode_seconds)
    return best


def quality_table(reference: ModelBundle, candidates: list[ModelBundle], text: str, *, window: int = 512,
                  decode_tokens: int = 64) -> list[QualityRow]:
    """One row per model, the reference first; decode speed skipped when `decode_tokens` is 0."""
    perplexities, kls = nll_and_kl(reference, candidates, text, window)
    rows = []
    for i, bundle in enumerate([reference, *candidates]):
        speed = decode_speed(bundle, decode_tokens) if decode_tokens else None
        rows.append(QualityRow(bundle.name, weights_size(bundle.path), perplexities[i],
                               None if i == 0 else kls[i], speed))
    return rows


def format_table(rows: list[QualityRow]) -> str:
    """A plain-text table with ratios to the first row."""
    base = rows[0]
    lines = ["| model | size MB | vs ref | perplexity | vs ref | KL | decode tok/s | vs ref |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        speed = "-" if row.decode_tokens_per_second is None else f"{row.decode_tokens_per_second:.1f}"
        speed_ratio = "-" if not (row.decode_tokens_per_second and base.decode_tokens_per_second) else \
            f"{row.decode_tokens_per_second / base.decode_tokens_per_second:.2f}x"
        kl = "-" if row.kl is None else f"{row.kl:.4f}"
        lines.append(f"| {row.name} | {row.size_bytes / 1e6:.1f} | {row.size_bytes / base.size_bytes:.2f}x | "
                     f"{row.perplexity:.3f} | {100 * (row.perplexity / base.perplexity - 1):+.1f}% | {kl} | "
                     f"{speed} | {speed_ratio} |")
    return "\n".join(lines)


def compare_models(reference: str, models: list[str], eval_text: str, *, decode_tokens: int = 64,
                   device: str | None = None, window: int = 512) -> list[QualityRow]:
    """The quality table of model references against `reference` (all loaded in float32)."""
    text = read_text(dataset_path(eval_text), "evaluation text")
    base = load_model(reference, device=device, dtype="fp32")
    candidates = [load_model(model, device=device, dtype="fp32") for model in models]
    return quality_table(base, candidates, text, window=window, decode_tokens=decode_tokens)
