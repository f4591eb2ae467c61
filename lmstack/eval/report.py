"""`lmstack eval report MODEL...`: what the registry knows about some models' scores, as Markdown
and as one self-contained HTML file (tables and plots inside), in the course's AutoEval spirit.

For each model: every task metric with its standard error and how it was measured, the change
against the nearest ancestor measured on the same metric (the model it was fine-tuned, merged or
quantized from), and the judge's verdicts. Nothing is recomputed: the numbers are the registry's.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

from lmstack import registry
from lmstack.errors import LmstackError
from lmstack.eval.scores import latest_scores
from lmstack.home import atomic_path, check_output

REGISTRY_ID = re.compile(r"^[a-z]-[0-9a-f]{8}$")


@dataclass
class Row:
    metric: str  # TASK/METRIC
    value: float
    stderr: float | None
    samples: int | None
    measured: str
    parent: str | None = None  # the ancestor compared against
    delta: float | None = None


@dataclass
class ModelSection:
    id: str
    name: str
    operation: str
    rows: list[Row]
    judge: list[Row]


def artifact_for(ref: str) -> registry.Artifact:
    """The registry entry of a model reference: an id, a path, or a catalog name."""
    if REGISTRY_ID.match(ref):
        return registry.get(ref)
    path = Path(ref).expanduser()
    if not path.exists():
        from lmstack.hub.catalog import CATALOG
        from lmstack.hub.pull import is_pulled

        entry = CATALOG.get(ref)
        if entry is None or not is_pulled(entry):
            raise LmstackError(f"{ref!r} is not a registry id, a path or a pulled catalog model; "
                               "see `lmstack registry list`")
        from lmstack.hub.pull import pull

        path = pull(ref)
    found = registry.find_by_path(path)
    if found is None:
        raise LmstackError(f"{ref} is not in the registry yet; evaluate it first (`lmstack eval run {ref} ...`)")
    return found


def sections(refs: list[str]) -> list[ModelSection]:
    result = []
    for ref in refs:
        artifact = artifact_for(ref)
        scores = latest_scores(artifact.id)
        if not scores:
            raise LmstackError(f"{ref} ({artifact.id}) has no scores; run `lmstack eval run {ref} --tasks ...` first")
        ancestors = [(a, latest_scores(a.id)) for a in registry.lineage(artifact.id)]
        rows, judge = [], []
        for metric, score in sorted(scores.items()):
            details = score.details or {}
            row = Row(metric, score.value, details.get("stderr"), details.get("samples"), score.created_at[:10])
            parent = next(((a, s[metric]) for a, s in ancestors if metric in s), None)
            if parent is not None:
                row.parent, row.delta = f"{parent[0].name} ({parent[0].id})", score.value - parent[1].value
            (judge if metric.startswith("judge/") else rows).append(row)
        result.append(ModelSection(artifact.id, artifact.name, artifact.operation, rows, judge))
    return result


def write_report(refs: list[str], output: str | Path, *, overwrite: bool = False) -> Path:
    """`OUTPUT/report.md`, `OUTPUT/report.html` (self-contained) and `OUTPUT/scores.png`."""
    if not refs:
        raise LmstackError("name at least one model to report on")
    folder = check_output(output, overwrite=overwrite, directory=True)
    models = sections(refs)
    plot = _plot(models)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        if plot:
            (tmp / "scores.png").write_bytes(plot)
        (tmp / "report.md").write_text(markdown(models, has_plot=bool(plot)), encoding="utf-8")
        (tmp / "report.html").write_text(to_html(models, plot), encoding="utf-8")
    return folder


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _table(rows: list[Row]) -> list[list[str]]:
    return [[r.metric, _fmt(r.value), _fmt(r.stderr), str(r.samples or "-"), _fmt(r.delta, signed=True),
             r.parent or "-", r.measured] for r in rows]


HEADER = ["metric", "value", "± stderr", "n", "Δ vs parent", "parent", "measured"]


def markdown(models: list[ModelSection], *, has_plot: bool) -> str:
    lines = ["# Evaluation report", ""]
    if has_plot:
        lines += ["![scores](scores.png)", ""]
    for model in models:
        lines += [f"## {model.name} (`{model.id}`, {model.operation})", ""]
        for title, rows in (("Task scores", model.rows), ("Judge verdicts", model.judge)):
            if not rows:
                continue
            lines += [f"### {title}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
            lines += ["| " + " | ".join(cells) + " |" for cells in _table(rows)]
            lines.append("")
    return "\n".join(lines)


def to_html(models: list[ModelSection], plot: bytes | None) -> str:
    body = ["<h1>Evaluation report</h1>"]
    if plot:
        body.append(f'<img alt="scores" src="data:image/png;base64,{base64.b64encode(plot).decode()}">')
    for model in models:
        body.append(f"<h2>{html.escape(model.name)} <code>{model.id}</code> ({html.escape(model.operation)})</h2>")
        for title, rows in (("Task scores", model.rows), ("Judge verdicts", model.judge)):
            if not rows:
                continue
            head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                            for row in _table(rows))
            body.append(f"<h3>{title}</h3><table><tr>{head}</tr>{cells}</table>")
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}img{max-width:100%}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Evaluation report</title>'
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def _plot(models: list[ModelSection]) -> bytes | None:
    """Grouped bars of the 0-1 scores (accuracy, exact match, ROUGE, ...) with their standard errors."""
    metrics = sorted({r.metric for m in models for r in m.rows if 0 <= r.value <= 1 and "perplexity" not in r.metric
                      and "bits_per_byte" not in r.metric})
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics) + 2), 4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        values = {r.metric: r for r in model.rows}
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [values[m].value if m in values else 0 for m in metrics], width,
               yerr=[(values[m].stderr or 0) if m in values else 0 for m in metrics], capsize=3, label=model.name)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (± standard error)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
