"""Look at a dataset the way the model will: formats, token lengths, and one sample as tokens.

The rendered sample shows the exact text the template produces, token by token, with the trained
tokens highlighted, so a wrong label mask (training on the prompt, not on the end-of-turn token)
is visible at a glance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmstack.data.formats import load_dataset
from lmstack.data.templating import (
    IGNORE_INDEX,
    TokenizedSample,
    tokenize_conversation,
    tokenize_preference,
    tokenize_text,
)
from lmstack.errors import LmstackError
from lmstack.home import atomic_path, check_output


@dataclass
class InspectReport:
    path: str
    format: str
    kind: str
    format_counts: dict[str, int]
    num_records: int
    num_sequences: int  # a preference record gives two (prompt + chosen, prompt + rejected)
    length_stats: dict[str, float]  # min, mean, p50, p95, max tokens per sequence
    total_tokens: int
    trained_tokens: int
    sample_index: int
    sample_tokens: list[tuple[str, bool]] = field(default_factory=list)  # (token text, trained)
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_dataset(path: str | Path, model_or_tokenizer: Any, *, template: str | None = None,
                    plot: str | Path | None = None, sample_index: int = 0, max_len: int | None = None,
                    overwrite: bool = False) -> InspectReport:
    """Tokenize every record of a dataset as training would and summarize it.

    `model_or_tokenizer` is a Tokenizer or a model reference (catalog name, GGUF file, HF
    directory, registry id). `plot` writes a histogram of sequence lengths as PNG.
    """
    if plot is not None:
        check_output(plot, overwrite=overwrite, directory=False)
    dataset = load_dataset(path)
    tokenizer = _tokenizer_for(model_or_tokenizer)
    if not 0 <= sample_index < len(dataset):
        raise LmstackError(f"Sample index {sample_index} is outside the dataset (0..{len(dataset) - 1}).")
    sequences_per_record = [_sequences(tokenizer, r, dataset.kind, template, max_len) for r in dataset.records]
    sequences = [s for record_sequences in sequences_per_record for s in record_sequences]
    lengths = [len(s) for s in sequences]
    report = InspectReport(
        path=str(dataset.path), format=dataset.format, kind=dataset.kind, format_counts=dict(dataset.format_counts),
        num_records=len(dataset), num_sequences=len(sequences), length_stats=_length_stats(lengths),
        total_tokens=sum(lengths), trained_tokens=sum(s.num_trained for s in sequences), sample_index=sample_index,
        sample_tokens=_token_pieces(tokenizer, sequences_per_record[sample_index][0]),
    )
    if plot is not None:
        report.plot = str(_plot_histogram(lengths, Path(plot), Path(path).name))
    return report


def print_report(report: InspectReport, console: Any = None) -> None:
    """Print the summary table and the sample with trained tokens highlighted."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"{report.path} ({report.kind})", show_header=False)
    counts = ", ".join(f"{name}: {count}" for name, count in report.format_counts.items())
    table.add_row("records", f"{report.num_records} ({counts})")
    table.add_row("sequences", str(report.num_sequences))
    table.add_row("tokens / sequence", "  ".join(f"{k} {v:.1f}" if k == "mean" else f"{k} {v:.0f}"
                                               for k, v in report.length_stats.items()))
    table.add_row("tokens trained", f"{report.trained_tokens} of {report.total_tokens} "
                                    f"({100 * report.trained_tokens / max(report.total_tokens, 1):.1f}%)")
    if report.plot:
        table.add_row("histogram", report.plot)
    console.print(table)
    # Alternating shades show where each token starts; green marks the trained ones.
    styles = {True: ("black on green", "black on dark_sea_green"), False: ("grey62", "grey42")}
    sample = Text()
    for index, (piece, trained) in enumerate(report.sample_tokens):
        sample.append(piece, style=styles[trained][index % 2])
    console.print(f"Sample {report.sample_index} as the model sees it (trained tokens in green):")
    console.print(sample)


def _sequences(tokenizer: Any, record: dict, kind: str, template: str | None,
               max_len: int | None) -> list[TokenizedSample]:
    """The token sequences training makes of one normalized record."""
    if kind == "messages":
        return [tokenize_conversation(tokenizer, record["messages"], template=template, max_len=max_len)]
    if kind == "preference":
        return list(tokenize_preference(tokenizer, record, template=template, max_len=max_len))
    if kind == "kto":
        conversation = record["prompt"] + [{"role": "assistant", "content": record["completion"]}]
        return [tokenize_conversation(tokenizer, conversation, template=template, max_len=max_len,
                                      last_turn_only=True)]
    return [tokenize_text(tokenizer, record["text"], max_len=max_len)]


def _length_stats(lengths: list[int]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(lengths)
    return {"min": float(values.min()), "mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def _token_pieces(tokenizer: Any, sample: TokenizedSample) -> list[tuple[str, bool]]:
    return [(tokenizer.decode([token]), label != IGNORE_INDEX) for token, label in zip(sample.input_ids, sample.labels)]


def _plot_histogram(lengths: list[int], path: Path, title: str) -> Path:
    # A bare Figure renders with the Agg backend and never touches pyplot's global state or a display.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    axes.hist(lengths, bins=min(50, max(len(set(lengths)), 1)))
    axes.set(title=f"Tokens per sequence: {title}", xlabel="tokens", ylabel="sequences")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _tokenizer_for(model_or_tokenizer: Any) -> Any:
    """A Tokenizer as given, or loaded from a model reference."""
    if not isinstance(model_or_tokenizer, (str, Path)):
        return model_or_tokenizer
    from lmstack.tokenizer import Tokenizer

    path = Path(model_or_tokenizer)
    if not path.exists():
        from lmstack.hub import resolve

        path = Path(resolve(str(model_or_tokenizer)).path)
    return Tokenizer.from_dir(path) if path.is_dir() else Tokenizer.from_gguf(path)
