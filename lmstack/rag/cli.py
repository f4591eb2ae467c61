"""`lmstack rag ...`: index documents, search them, answer from them, chat over them, evaluate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Retrieval-augmented generation: index a folder, search it, get cited answers.",
                  no_args_is_help=True)

INDEX_ARG = typer.Argument(..., help="The index: a path to its SQLite file, or a name under the lmstack home.")
MODEL = typer.Option("smollm2-135m-instruct", "--model", "-m",
                     help="The LLM: an lmstack model reference, or openai:URL#MODEL for an endpoint.")
EMBEDDER = typer.Option(None, "--embedder", help="Query embedder (default: the one the index was built with).")
DEVICE = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda if available).")
JSON = typer.Option(False, "--json", help="Print JSON.")
WHERE = typer.Option(None, "--where", help="Metadata filter KEY=VALUE (repeatable; source=PREFIX* for paths).")


def _where(pairs: Optional[List[str]]) -> dict | None:
    from lmstack.errors import LmstackError

    where: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LmstackError(f"--where takes KEY=VALUE, got {pair!r}")
        where.setdefault(key, []).append(int(value) if value.isdigit() else value)
    return where or None


def _echo_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def index(
    path: Path = typer.Argument(..., help="A file or folder to index (walked recursively)."),
    index: str = typer.Option(..., "--index", "-i", help="Where to write: a SQLite file path or a name."),
    embedder: str = typer.Option("all-minilm-l6-v2", "--embedder",
                                 help="all-minilm-l6-v2, model:REF (an lmstack model, mean-pooled) or openai:URL#MODEL."),
    splitter: str = typer.Option("auto", "--splitter", help="auto, recursive, markdown or tokens."),
    chunk_size: int = typer.Option(800, "--chunk-size", min=16, max=100_000, help="Characters per chunk (tokens for --splitter tokens)."),
    chunk_overlap: int = typer.Option(100, "--chunk-overlap", min=0, max=50_000, help="Overlap between neighbouring chunks."),
    include: Optional[List[str]] = typer.Option(None, "--include", help="Glob of files to index (repeatable)."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Glob of files to leave out (repeatable)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, max=4096, help="Texts embedded per batch."),
    json_output: bool = JSON,
) -> None:
    """Index documents (text, Markdown, HTML, PDF, JSON/JSONL, CSV, code); only changed files are redone."""
    from lmstack.rag.index import build_index
    from lmstack.rag.splitters import SplitterConfig

    config = SplitterConfig(splitter, chunk_size, chunk_overlap)
    summary = build_index(path, index, embedder=embedder, splitter=config, include=include, exclude=exclude,
                          batch_size=batch_size)
    if json_output:
        _echo_json(summary.to_dict())
        return
    typer.echo(f"{summary.index}: {summary.chunks_total} chunks from {summary.files_seen} files "
               f"({len(summary.added)} added, {len(summary.updated)} updated, {summary.unchanged} unchanged, "
               f"{len(summary.deleted)} deleted, {len(summary.skipped)} skipped) in {summary.seconds:.1f}s")
    for skipped in summary.skipped:
        typer.echo(f"  skipped {skipped.source}: {skipped.reason}")


@app.command()
def search(
    index: str = INDEX_ARG,
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="How many chunks to return."),
    mode: str = typer.Option("hybrid", "--mode", help="dense, bm25 or hybrid (reciprocal rank fusion, k=60)."),
    where: Optional[List[str]] = WHERE,
    embedder: Optional[str] = EMBEDDER,
    json_output: bool = JSON,
) -> None:
    """The chunks that best match QUERY."""
    from lmstack.inputs import check_text
    from lmstack.rag.index import open_for_query
    from lmstack.rag.search import search as run_search

    check_text(query, "query")
    store, model = open_for_query(index, embedder, need_embedder=mode != "bm25")
    try:
        hits = run_search(store, model, query, k=k, mode=mode, where=_where(where))
    finally:
        store.close()
    if json_output:
        _echo_json({"results": [hit.to_dict() for hit in hits]})
        return
    for rank, hit in enumerate(hits, 1):
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.source}  {json.dumps(hit.metadata, ensure_ascii=False)}")
        typer.echo("    " + hit.text[:300].replace("\n", " "))


@app.command()
def ask(
    index: str = INDEX_ARG,
    question: str = typer.Argument(..., help="The question."),
    model: str = MODEL,
    k: int = typer.Option(5, "-k", min=1, max=100, help="Passages given to the model at most."),
    multi_query: int = typer.Option(0, "--multi-query", min=0, max=10, help="Extra queries rewritten by the LLM."),
    hyde: bool = typer.Option(False, "--hyde", help="Also search with a hypothetical answer written by the LLM."),
    rerank: str = typer.Option("none", "--rerank", help="none, llm (P(Yes) of relevance) or cross-encoder."),
    cross_encoder: Optional[Path] = typer.Option(None, "--cross-encoder", help="A BERT cross-encoder directory for --rerank cross-encoder."),
    min_similarity: float = typer.Option(0.35, "--min-similarity", min=-1.0, max=1.0,
                                         help="Refuse when no passage shares a content word with the question or is this similar to it."),
    graph: bool = typer.Option(False, "--graph", help="Add knowledge-graph facts (built with `lmstack rag graph`)."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=1, max=8192, help="Tokens in the answer at most."),
    where: Optional[List[str]] = WHERE,
    embedder: Optional[str] = EMBEDDER,
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Answer QUESTION from the index with numbered citations, or refuse when nothing is relevant."""
    from lmstack.inputs import check_text
    from lmstack.rag.ask import ask as run_ask
    from lmstack.rag.index import open_for_query, load_cross_encoder
    from lmstack.hub.llm import load_llm

    check_text(question, "question")
    store, model_embedder = open_for_query(index, embedder)
    try:
        scorer = load_cross_encoder(cross_encoder, rerank)
        llm = load_llm(model, device=device)
        answer = run_ask(store, model_embedder, llm, question, k=k, multi_query=multi_query, hyde=hyde,
                         reranker=rerank, cross_encoder=scorer, min_similarity=min_similarity,
                         max_new_tokens=max_new_tokens, where=_where(where), graph=graph)
    finally:
        store.close()
    if json_output:
        _echo_json(answer.to_dict())
        return
    typer.echo(answer.answer)
    for citation in answer.citations:
        typer.echo(f"[{citation['n']}] {citation['source']}")


@app.command()
def chat(
    index: str = INDEX_ARG,
    model: str = MODEL,
    k: int = typer.Option(4, "-k", min=1, max=100, help="Passages per turn at most."),
    buffer_turns: int = typer.Option(4, "--buffer", min=0, max=100, help="Recent turns kept word for word."),
    embedder: Optional[str] = EMBEDDER,
    device: Optional[str] = DEVICE,
) -> None:
    """Talk with the index: recent turns verbatim, older ones summarised, all recalled by similarity."""
    from lmstack.rag.chat import chat_loop
    from lmstack.rag.index import open_for_query
    from lmstack.hub.llm import load_llm

    store, model_embedder = open_for_query(index, embedder)
    try:
        chat_loop(store, model_embedder, load_llm(model, device=device), k=k, buffer_turns=buffer_turns)
    finally:
        store.close()


@app.command()
def graph(
    index: str = INDEX_ARG,
    model: str = MODEL,
    max_chunks: int = typer.Option(0, "--max-chunks", min=0, help="Chunks to read at most (0: all)."),
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Extract (subject, relation, object) triples with the LLM into a graph stored in the index."""
    from lmstack.rag.graph import build_graph
    from lmstack.rag.index import open_index
    from lmstack.hub.llm import load_llm

    store = open_index(index)
    try:
        report = build_graph(store, load_llm(model, device=device), max_chunks=max_chunks or None)
    finally:
        store.close()
    if json_output:
        _echo_json(report)
    else:
        typer.echo(f"{report['triples']} triples from {report['chunks_read']} chunks "
                   f"({report['parse_failures']} replies could not be parsed)")


@app.command("eval")
def evaluate(
    index: str = INDEX_ARG,
    questions: Path = typer.Argument(..., help="JSONL of {question, answer, sources}, or lmstack:rag_questions."),
    model: str = MODEL,
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge LLM (default: the --model)."),
    k: int = typer.Option(5, "-k", min=1, max=100, help="Cut-off for hit rate, MRR and nDCG, and passages per answer."),
    mode: str = typer.Option("hybrid", "--mode", help="Retrieval mode: dense, bm25 or hybrid."),
    retrieval_only: bool = typer.Option(False, "--retrieval-only", help="Only hit rate, MRR and nDCG (no LLM)."),
    limit: int = typer.Option(0, "--limit", min=0, help="Evaluate the first N questions (0: all)."),
    embedder: Optional[str] = EMBEDDER,
    device: Optional[str] = DEVICE,
    json_output: bool = JSON,
) -> None:
    """Retrieval (hit rate, MRR, nDCG) and answer quality (Ragas' context precision/recall,
    faithfulness, answer relevancy) on labelled questions."""
    from lmstack.rag.evaluate import evaluate_rag

    report = evaluate_rag(index, str(questions), model=None if retrieval_only else model, judge=judge, k=k,
                          mode=mode, limit=limit or None, embedder=embedder, device=device)
    if json_output:
        _echo_json(report)
        return
    for metric, value in {**report["scores"], **report.get("answer_scores", {})}.items():
        typer.echo(f"{metric:<24} {value:.3f}")
    if "parse_failures" in report:
        typer.echo(f"judge replies that could not be parsed: {report['parse_failures']}")


@app.command()
def delete(
    index: str = INDEX_ARG,
    path: str = typer.Argument(..., help="A file indexed earlier (as indexed, or a path to it)."),
) -> None:
    """Remove one file's chunks from the index."""
    from lmstack.errors import LmstackError
    from lmstack.rag.index import open_index

    store = open_index(index)
    try:
        indexed = store.files()
        key = path if path in indexed else str(Path(path).expanduser().resolve())
        if key not in indexed:
            raise LmstackError(f"{path} is not in the index; see `lmstack rag search` results for indexed paths")
        removed = store.delete(key)
    finally:
        store.close()
    typer.echo(f"deleted {removed} chunks of {key}")
