"""`lmstack tokenizer ...`: train a byte-level BPE tokenizer on a corpus (a vocabulary-size study too)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

tokenizer_app = typer.Typer(help="Train a byte-level BPE tokenizer on your own text.", no_args_is_help=True)


@tokenizer_app.command("train")
def train(
    corpus: List[str] = typer.Argument(..., help="Text files, folders, JSONL or Parquet (the last argument is OUT)."),
    vocab_size: str = typer.Option(..., "--vocab-size", help="Vocabulary size (e.g. 8000 or 8k), or several for "
                                                              "a study: 1k,4k,16k (k = 1000)."),
    min_frequency: int = typer.Option(2, "--min-frequency", min=1, max=1_000_000,
                                      help="A pair must occur this often to be merged."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT instead of refusing."),
) -> None:
    """Train on CORPUS... and save to OUT in the Hugging Face layout; report bytes per token on held-out text."""
    from lmstack.errors import LmstackError
    from lmstack.pretrain.tokenizer_training import parse_vocab_sizes, study_table, train_tokenizer

    if len(corpus) < 2:
        raise LmstackError("give the corpus and then the output folder: lmstack tokenizer train CORPUS... OUT")
    *sources, out = corpus
    results = train_tokenizer(sources, Path(out), parse_vocab_sizes(vocab_size), min_frequency=min_frequency,
                              overwrite=overwrite)
    if len(results) == 1:
        typer.echo(f"vocabulary {results[0].vocab_size}: {results[0].bytes_per_token:.3f} bytes per token on "
                   f"{results[0].held_out_documents} held-out documents -> {out}")
    else:
        typer.echo(study_table(results))
        typer.echo(f"tokenizers, study.md and study.png in {out}")
