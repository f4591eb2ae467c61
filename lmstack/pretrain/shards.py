"""Token shards: a tokenized corpus on disk, memory-mapped, so a corpus larger than memory streams.

A shard folder holds `shard-00000.bin`, `shard-00001.bin`, ... (raw little-endian token ids,
uint16 when the vocabulary fits, else uint32; every document followed by `<|endoftext|>`) and
`index.json` (each shard's token count, the dtype, the tokenizer's hash, what was read and dropped).

Training reads fixed windows of `seq_len + 1` tokens (inputs and their next-token targets) that
start every `seq_len` tokens and never cross a shard; window `i` is found by bisection over the
shards' window counts and read straight from the memory map, so only the batch is ever in RAM.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lmstack.errors import LmstackError
from lmstack.home import atomic_path
from lmstack.pretrain.corpus import clean_documents
from lmstack.tokenizer import Tokenizer

INDEX_FILE = "index.json"
SHARD_TOKENS = 50_000_000  # 100 MB of uint16 per shard
ENCODE_BATCH = 256  # documents per `encode_batch` call (tokenized in parallel by the Rust library)


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend.to_str().encode()).hexdigest()[:16]


def write_shards(texts: Iterable[str], tokenizer: Tokenizer, out: str | os.PathLike, *,
                 shard_tokens: int = SHARD_TOKENS, metadata: Callable[[], dict] | None = None) -> Path:
    """Tokenize `texts` (in parallel batches) into shards under `out`, written atomically.

    `metadata()` is called once every text is read (a stream's statistics are final only then)
    and its entries go into the index."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmstackError("the tokenizer has no end-of-text (eos) token to separate documents; train one with "
                           "`lmstack tokenizer train`")
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    out = Path(out)
    shards: list[dict] = []
    documents = 0
    with atomic_path(out) as tmp:
        tmp.mkdir()
        writer = None
        for batch in _batches(texts, ENCODE_BATCH):
            for encoding in tokenizer.backend.encode_batch(batch, add_special_tokens=False):
                if writer is None or shards[-1]["tokens"] >= shard_tokens:
                    if writer is not None:
                        writer.close()
                    shards.append({"file": f"shard-{len(shards):05d}.bin", "tokens": 0})
                    writer = open(tmp / shards[-1]["file"], "wb")
                ids = np.asarray(encoding.ids + [eos], dtype=dtype)
                ids.tofile(writer)
                shards[-1]["tokens"] += len(ids)
                documents += 1
        if writer is not None:
            writer.close()
        index = {"version": 1, "dtype": np.dtype(dtype).name, "tokens": sum(s["tokens"] for s in shards),
                 "documents": documents, "shards": shards, "eos_token_id": eos,
                 "vocab_size": tokenizer.vocab_size, "tokenizer_sha256": tokenizer_hash(tokenizer),
                 **(metadata() if metadata else {})}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return out


def _batches(texts: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_shard_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def read_index(directory: str | os.PathLike) -> dict:
    path = Path(directory) / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        for shard in index["shards"]:
            size = (Path(directory) / shard["file"]).stat().st_size
            if size != shard["tokens"] * np.dtype(index["dtype"]).itemsize:
                raise LmstackError(f"{directory}/{shard['file']} has {size} bytes, not the {shard['tokens']} tokens "
                                   f"{INDEX_FILE} lists; the shards are damaged, prepare them again")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LmstackError(f"{path} is not a valid shard index ({type(error).__name__}: {error}); "
                           "prepare the shards again with `lmstack data shards`") from None
    return index


@dataclass(frozen=True)
class WindowRange:
    start: int
    stop: int


class TokenWindows(Sequence):
    """Windows `start..stop` of `seq_len + 1` tokens over a shard folder; item i is a LongTensor."""

    def __init__(self, directory: str | os.PathLike, seq_len: int, start: int = 0, stop: int | None = None):
        self.directory, self.seq_len = Path(directory), seq_len
        self.index = read_index(directory)
        self.dtype = np.dtype(self.index["dtype"])
        per_shard = [max(0, (s["tokens"] - 1) // seq_len) for s in self.index["shards"]]
        self.cumulative = np.cumsum([0, *per_shard]).tolist()  # windows before each shard
        total = self.cumulative[-1]
        self.range = WindowRange(start, total if stop is None else stop)
        self._maps: dict[int, np.memmap] = {}

    @property
    def total_windows(self) -> int:
        return self.cumulative[-1]

    def __len__(self) -> int:
        return self.range.stop - self.range.start

    def _map(self, shard: int) -> np.memmap:
        if shard not in self._maps:
            path = self.directory / self.index["shards"][shard]["file"]
            self._maps[shard] = np.memmap(path, dtype=self.dtype, mode="r")
        return self._maps[shard]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, first token) of window i of this range."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        window = self.range.start + i
        shard = bisect.bisect_right(self.cumulative, window) - 1
        return shard, (window - self.cumulative[shard]) * self.seq_len

    def __getitem__(self, i: int | slice):
        import torch

        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        shard, first = self.locate(i)
        return torch.from_numpy(self._map(shard)[first:first + self.seq_len + 1].astype(np.int64))

    def split(self, val_fraction: float, max_held_out: int = 512) -> tuple["TokenWindows", "TokenWindows"]:
        """(train, validation): the last `val_fraction` of the windows held out (at least one, at
        most `max_held_out`: validation runs over all of it at every evaluation)."""
        held_out = min(max_held_out, max(1, round(val_fraction * len(self)))) if val_fraction > 0 else 0
        cut = self.range.stop - held_out
        return (TokenWindows(self.directory, self.seq_len, self.range.start, cut),
                TokenWindows(self.directory, self.seq_len, cut, self.range.stop))

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token id occurs in this range's windows (their targets), read shard by shard."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        for shard in range(len(self.index["shards"])):
            low = max(self.range.start, self.cumulative[shard])
            high = min(self.range.stop, self.cumulative[shard + 1])
            if low >= high:
                continue
            first = (low - self.cumulative[shard]) * self.seq_len + 1
            last = (high - self.cumulative[shard]) * self.seq_len + 1
            counts += np.bincount(self._map(shard)[first:last], minlength=vocab_size)[:vocab_size]
        return counts

    def describe(self) -> dict:
        return {"directory": str(self.directory), "seq_len": self.seq_len, **asdict(self.range)}


def unigram_perplexity(train: TokenWindows, held_out: TokenWindows, vocab_size: int) -> float:
    """The perplexity of the best context-free model (token frequencies of `train`, add-one smoothed)
    on the targets of `held_out`: the bar a language model must clear to have learned any context."""
    counts = train.token_counts(vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    held = held_out.token_counts(vocab_size)
    return float(np.exp(-(held * log_p).sum() / max(1, held.sum())))


def check_enough_tokens(windows: TokenWindows, seq_len: int) -> None:
    if windows.total_windows == 0:
        raise LmstackError(f"the corpus holds {windows.index['tokens']} tokens, fewer than one sequence of "
                           f"{seq_len + 1}; add text or lower data.max_len")


def text_windows(data: str | os.PathLike, tokenizer: Tokenizer, count: int, length: int) -> "torch.Tensor":
    """[count or fewer, length] token ids for a quick measurement, without writing shards: the last
    windows of a shard folder, or the first tokens of a corpus (documents joined by end-of-text)."""
    import torch

    if is_shard_dir(data):
        shards = TokenWindows(data, length - 1)
        taken = shards[max(0, len(shards) - count):]
    else:
        ids: list[int] = []
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        for text in clean_documents([data], dedup=False):
            ids += tokenizer.encode(text, add_special_tokens=False) + [end]
            if len(ids) >= count * length:
                break
        taken = [torch.tensor(ids[i:i + length]) for i in range(0, len(ids) - length + 1, length)][:count]
    if not taken:
        raise LmstackError(f"{data} holds fewer than {length} tokens; give more text or a shorter length")
    return torch.stack(taken)
