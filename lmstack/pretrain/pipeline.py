"""From a raw corpus to token shards: read, clean, deduplicate, tokenize in parallel, write.

    prepare_shards(corpus, tokenizer, out)
    shard_corpus(corpus, out, tokenizer_dir)   (the `lmstack data shards` command)

The shards are recorded in the registry as a dataset whose parent is the tokenizer, and remember
a fingerprint of what made them (every corpus file's size and modification time, the tokenizer,
the cleaning settings): asked again for the same, the existing shards are reused, so a resumed
run trains on exactly the tokens it started with.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from lmstack import registry
from lmstack.data.filters import CORPUS_RULES
from lmstack.data.io import dataset_reference
from lmstack.home import check_output, remove_stale_temporaries
from lmstack.inputs import check_dir
from lmstack.pretrain.corpus import CorpusStats, clean_documents, corpus_files
from lmstack.pretrain.shards import INDEX_FILE, SHARD_TOKENS, tokenizer_hash, write_shards
from lmstack.tokenizer import Tokenizer


def corpus_fingerprint(corpus: Sequence[str | os.PathLike], tokenizer: Tokenizer, **settings) -> str:
    files = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in corpus_files(corpus)]
    text = json.dumps({"files": files, "tokenizer": tokenizer_hash(tokenizer), **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_shards(corpus: Sequence[str | os.PathLike], tokenizer: Tokenizer, out: str | os.PathLike, *,
                   filter: bool = True, dedup: bool = True, threshold: float = 0.8, workers: int = 1,
                   shard_tokens: int = SHARD_TOKENS, tokenizer_id: str | None = None) -> tuple[Path, str]:
    """Shards of the cleaned corpus in `out` (reused when already made from the same); (path, registry id)."""
    out = Path(out)
    key = corpus_fingerprint(corpus, tokenizer, filter=filter, dedup=dedup, threshold=threshold)
    index_path = out / INDEX_FILE
    existing = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if existing.get("source_fingerprint") != key:
        remove_stale_temporaries(out.parent)  # shards of a run killed while writing them
        stats = CorpusStats()
        texts = clean_documents(corpus, rules=CORPUS_RULES if filter else None, dedup=dedup, threshold=threshold,
                                workers=workers, stats=stats)
        write_shards(texts, tokenizer, out, shard_tokens=shard_tokens,
                     metadata=lambda: {"source_fingerprint": key, "corpus": [dataset_reference(str(p)) for p in corpus],
                               "cleaning": {"filter": filter, "dedup": dedup, "threshold": threshold},
                               "stats": {"files": stats.files, "documents_read": stats.documents,
                                         "bytes_kept": stats.bytes_kept, "dropped": dict(stats.dropped)}})
        existing = json.loads(index_path.read_text())
    shards_id = registry.record(
        "dataset", out, name=f"{out.parent.name}-{out.name}" if out.name == "data" else out.name,
        operation="shards", parents=[tokenizer_id],
        recipe={"filter": filter, "dedup": dedup, "threshold": threshold},
        datasets=existing["corpus"],
        metadata={k: existing[k] for k in ("tokens", "documents", "stats", "tokenizer_sha256") if k in existing})
    return out, shards_id


def shard_corpus(corpus: Sequence[str | os.PathLike], out: str | os.PathLike, tokenizer_dir: str | os.PathLike, *,
                 overwrite: bool = False, **settings) -> dict:
    """`lmstack data shards`: check everything, make the shards with the tokenizer in `tokenizer_dir`,
    return their index. `settings` are `prepare_shards`' (filter, dedup, threshold, workers, shard_tokens)."""
    check_output(out, overwrite=overwrite)
    corpus_files(corpus)
    tokenizer = Tokenizer.from_dir(check_dir(tokenizer_dir, "tokenizer folder"))
    folder, _ = prepare_shards(corpus, tokenizer, out, tokenizer_id=registry.id_for(tokenizer_dir, kind="tokenizer"),
                               **settings)
    return json.loads((folder / INDEX_FILE).read_text())
