"""`lmstack data ...`: convert chat datasets between formats, inspect a dataset as a model sees it,
curate it (dedup, filter, decontaminate), synthesise one, and shard a pre-training corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(help="Datasets: convert, inspect, dedup, filter, decontaminate, synthesise, shard.",
                  no_args_is_help=True)


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Dataset file: JSONL, JSON, CSV or Parquet."),
    output: Path = typer.Argument(..., help="Where to write the converted JSONL."),
    to: str = typer.Option(..., "--to", help="Target chat format: messages, sharegpt or alpaca."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT file instead of refusing."),
) -> None:
    """Convert a chat dataset (OpenAI messages, ShareGPT, Alpaca) to another chat format."""
    from lmstack.data.formats import convert_file

    count = convert_file(input, output, to=to, overwrite=overwrite)
    typer.echo(f"Wrote {count} records in {to} format to {output}")


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Dataset file: JSONL, JSON, CSV or Parquet."),
    model: str = typer.Option(..., "--model", help="Model whose tokenizer and chat template to use."),
    template: str = typer.Option(None, "--template", help="Chat template instead of the model's, by name: "
                                                          "chatml, llama3, gemma, alpaca."),
    plot: Path = typer.Option(None, "--plot", help="Write a histogram of token lengths to this PNG."),
    sample: int = typer.Option(0, "--sample", min=0, help="Index of the record to show as tokens."),
    max_len: int = typer.Option(None, "--max-len", min=1, help="Truncate sequences to this many tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file instead of refusing."),
) -> None:
    """Count formats, token lengths and trained tokens; show one sample exactly as the model sees it."""
    from lmstack.data.inspect import inspect_dataset, print_report

    report = inspect_dataset(path, model, template=template, plot=plot, sample_index=sample, max_len=max_len,
                             overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_report(report)


OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT (and report) instead of refusing.")
REPORT = typer.Option(None, "--report", help="Also write the full report (what was removed and why) as JSON.")


@app.command()
def dedup(
    input: str = typer.Argument(..., help="Dataset: JSONL, JSON, CSV, Parquet, or lmstack:NAME."),
    output: Path = typer.Argument(..., help="Where to write the kept records (JSONL, their own format)."),
    threshold: float = typer.Option(0.8, "--threshold", min=0.01, max=1.0,
                                    help="Estimated Jaccard similarity of word 5-grams that counts as a duplicate."),
    num_perm: int = typer.Option(128, "--num-perm", min=16, max=1024, help="MinHash permutations (accuracy)."),
    ngram: int = typer.Option(5, "--ngram", min=1, max=50, help="Words per shingle."),
    exact_only: bool = typer.Option(False, "--exact-only", help="Remove exact copies only (no MinHash)."),
    workers: int = typer.Option(1, "--workers", min=1, max=256, help="Processes computing signatures."),
    report: Path = REPORT, overwrite: bool = OVERWRITE,
) -> None:
    """Remove exact and near-duplicate records (MinHash LSH); list the clusters found."""
    from lmstack.data.curate import dedup_dataset

    result = dedup_dataset(input, output, threshold=threshold, num_perm=num_perm, ngram=ngram, near=not exact_only,
                           report_path=report, overwrite=overwrite, workers=workers)
    for cluster in result.details["clusters"][:5]:
        typer.echo(f"  {cluster['kind']} cluster: keeps record {cluster['kept']}, removes {cluster['removed'][:8]}"
                   f"  {cluster['text'][:60]!r}")
    typer.echo(result.summary())


@app.command("filter")
def filter_command(
    input: str = typer.Argument(..., help="Dataset: JSONL, JSON, CSV, Parquet, or lmstack:NAME."),
    output: Path = typer.Argument(..., help="Where to write the kept records."),
    min_words: int = typer.Option(5, "--min-words", min=0, max=10_000_000),
    max_words: int = typer.Option(100_000, "--max-words", min=0, max=100_000_000, help="0: no limit."),
    max_symbol_ratio: float = typer.Option(0.3, "--max-symbol-ratio", min=0.0, max=1.0, help="0: off."),
    max_duplicate_lines: float = typer.Option(0.3, "--max-duplicate-lines", min=0.0, max=1.0, help="0: off."),
    max_top_ngram: float = typer.Option(0.2, "--max-top-ngram", min=0.0, max=1.0,
                                        help="Share of text covered by the most frequent word 3-gram; 0: off."),
    min_letter_ratio: float = typer.Option(0.5, "--min-letter-ratio", min=0.0, max=1.0),
    language: str = typer.Option("any", "--language", help="any, or en (needs two common English words)."),
    scorer: str = typer.Option(None, "--scorer", help="judge:MODEL or perplexity:MODEL, a quality score."),
    min_score: float = typer.Option(None, "--min-score", help="Remove records scoring below this."),
    report: Path = REPORT, overwrite: bool = OVERWRITE,
) -> None:
    """Remove records that break quality rules (length, symbols, repetition, language) or score low."""
    from pydantic import ValidationError

    from lmstack.data.curate import filter_dataset
    from lmstack.data.filters import FilterRules
    from lmstack.errors import LmstackError

    try:
        rules = FilterRules(min_words=min_words, max_words=max_words, max_symbol_ratio=max_symbol_ratio,
                            max_duplicate_line_ratio=max_duplicate_lines, max_top_ngram_ratio=max_top_ngram,
                            min_letter_ratio=min_letter_ratio, language=language)
    except ValidationError as error:
        first = error.errors()[0]
        raise LmstackError(f"--{first['loc'][0]}: {first['msg']}") from None
    result = filter_dataset(input, output, rules=rules, scorer=scorer, min_score=min_score, report_path=report,
                            overwrite=overwrite)
    typer.echo(result.summary())


@app.command()
def decontaminate(
    input: str = typer.Argument(..., help="Dataset to clean: JSONL, JSON, CSV, Parquet, or lmstack:NAME."),
    output: Path = typer.Argument(..., help="Where to write the records."),
    eval_sets: list[str] = typer.Option(..., "--eval", help="An evaluation set (repeat for several)."),
    ngram: int = typer.Option(13, "--ngram", min=1, max=100, help="Words a shared n-gram must have."),
    action: str = typer.Option("remove", "--action", help="remove, or flag (mark records 'contaminated')."),
    report: Path = REPORT, overwrite: bool = OVERWRITE,
) -> None:
    """Find records sharing a word n-gram with an evaluation set; remove or flag them."""
    from lmstack.data.curate import decontaminate_dataset

    result = decontaminate_dataset(input, output, eval_sets, ngram=ngram, action=action, report_path=report,
                                   overwrite=overwrite)
    for match in result.details["matches"][:5]:
        typer.echo(f"  record {match['record']} shares {match['ngram']!r} with {match['eval_set']}")
    typer.echo(result.summary())


@app.command()
def shards(
    corpus: list[str] = typer.Argument(..., help="Text files, folders, JSONL or Parquet (the last argument is OUT)."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="Tokenizer folder (tokenizer.json)."),
    no_filter: bool = typer.Option(False, "--no-filter", help="Keep documents that break the rule filters."),
    no_dedup: bool = typer.Option(False, "--no-dedup", help="Keep near-duplicate documents."),
    threshold: float = typer.Option(0.8, "--threshold", min=0.01, max=1.0, help="Near-duplicate Jaccard threshold."),
    workers: int = typer.Option(1, "--workers", min=1, max=256, help="Processes computing MinHash signatures."),
    shard_tokens: int = typer.Option(50_000_000, "--shard-tokens", min=1024, max=2**40, help="Tokens per shard."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Clean, deduplicate and tokenize a pre-training corpus into memory-mapped token shards."""
    from lmstack.errors import LmstackError
    from lmstack.pretrain.pipeline import shard_corpus

    if len(corpus) < 2:
        raise LmstackError("give the corpus and then the output folder: lmstack data shards CORPUS... OUT")
    *sources, out = corpus
    index = shard_corpus(sources, out, tokenizer, overwrite=overwrite, filter=not no_filter, dedup=not no_dedup,
                         threshold=threshold, workers=workers, shard_tokens=shard_tokens)
    typer.echo(f"{index['tokens']:,} tokens from {index['documents']:,} documents in {len(index['shards'])} shard(s) "
               f"-> {out} (dropped: {index['stats']['dropped'] or 'none'})")


@app.command()
def synth(
    seeds: str = typer.Argument(..., help="Seed tasks (JSONL of {instruction, kind?, tests?, answer?}) or "
                                          "lmstack:synth_seeds."),
    output: Path = typer.Argument(..., help="Where to write the accepted chats (messages JSONL)."),
    model: str = typer.Option(None, "--model", help="An lmstack model that writes the data."),
    endpoint: str = typer.Option(None, "--endpoint", help="Or an OpenAI-compatible base URL (…/v1)."),
    endpoint_model: str = typer.Option("default", "--endpoint-model", help="The model name the endpoint serves."),
    per_seed: int = typer.Option(1, "--per-seed", min=1, max=10_000, help="Samples per seed task."),
    evolve: int = typer.Option(1, "--evolve", min=0, max=10, help="Evol-Instruct rewrites per instruction."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, max=32768),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, max=5.0),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
    eval_sets: list[str] = typer.Option([], "--eval", help="Evaluation sets to decontaminate against (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from OUTPUT.partial.jsonl."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Synthesise instruction data from seed tasks: personas, Evol-Instruct, verified answers."""
    from lmstack.data.synth import (
        check_synth_output,
        llm_generator,
        load_seeds,
        synthesize,
    )
    from lmstack.errors import LmstackError
    from lmstack.hub.llm import EndpointLLM, LocalLLM

    if bool(model) == bool(endpoint):
        raise LmstackError("give exactly one generator: --model MODEL or --endpoint URL")
    load_seeds(seeds)  # checked before a model loads
    check_synth_output(output, resume=resume, overwrite=overwrite)
    llm = LocalLLM(model) if model else EndpointLLM(endpoint, endpoint_model, api_key=os.environ.get("OPENAI_API_KEY"))
    generate = llm_generator(llm, max_new_tokens=max_new_tokens, temperature=temperature)
    report = synthesize(seeds, output, generate, per_seed=per_seed, evolve=evolve, seed=seed, eval_sets=eval_sets,
                        generator_name=model or f"{endpoint}#{endpoint_model}", resume=resume, overwrite=overwrite)
    typer.echo(report.summary())
