"""Build a Hugging Face `tokenizers.Tokenizer` from the vocabulary stored inside a GGUF file.

A GGUF carries no `tokenizer.json`; llama.cpp stores the pieces under `tokenizer.ggml.*`:
`model` says which algorithm, `tokens` the vocabulary (id = position), `merges` or `scores` the
merge order, `token_type` which tokens are control/user-defined, plus special ids and flags.
Two algorithms cover the models we run:

- `gpt2`: byte-level BPE. Every byte is spelled as a printable character, text is first split
  by a regex that depends on the model family (`tokenizer.ggml.pre`), merges are listed.
- `llama`: SentencePiece BPE (Llama 2, Mistral, Gemma). Spaces are written as `▁`, characters
  missing from the vocabulary fall back to byte tokens `<0xNN>`, and there is no merge list:
  a pair merges when the joined piece is in the vocabulary, the best-scored piece first.

The result gives the same token ids as `transformers.AutoTokenizer.from_pretrained(dir,
gguf_file=...)` on the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from lmstack.errors import LmstackError

SPACE_MARK = "\u2581"  # "▁", SentencePiece's visible space
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that become added tokens

# Pre-tokenizer split regexes of the byte-level families, keyed by `tokenizer.ggml.pre`.
# None means GPT-2's own regex, built into the ByteLevel pre-tokenizer.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL_SPLITS = {
    "default": None,
    "gpt2": None,
    "smollm": None,
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
}
# SmolLM's vocabulary was trained on single digits (llama.cpp splits them off first as well).
_SINGLE_DIGIT_FAMILIES = {"smollm"}


@dataclass
class GgufTokenizerParts:
    """What a GGUF says about its tokenizer, ready for `lmstack.tokenizer.Tokenizer`."""

    backend: Backend
    special_tokens: dict[str, str]  # "bos_token"/"eos_token"/"unk_token"/"pad_token" -> text
    add_bos_token: bool
    add_eos_token: bool
    chat_template: str | None


def tokenizer_parts_from_gguf(metadata: dict[str, Any], path: str | Path) -> GgufTokenizerParts:
    """Build the tokenizer pipeline from a GGUF's `tokenizer.*` metadata (`path` names it in errors)."""
    try:
        return _parts(metadata, path)
    except LmstackError:
        raise
    except Exception as error:  # noqa: BLE001 - `tokenizers` raises plain Exception on a bad vocabulary
        raise LmstackError(f"{path}: the tokenizer stored in this GGUF is damaged ({str(error)[:120]}); "
                           "re-download or re-export the file") from None


def _parts(metadata: dict[str, Any], path: str | Path) -> GgufTokenizerParts:
    kind = metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in metadata:
        raise LmstackError(f"{path} has no tokenizer vocabulary; use a GGUF exported with its tokenizer")
    if kind == "gpt2":
        backend = _byte_level_bpe(metadata)
    elif kind == "llama":
        backend = _sentencepiece_bpe(metadata)
    else:
        raise LmstackError(
            f"{path} uses tokenizer model {kind!r}; supported are 'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"
        )
    tokens = metadata["tokenizer.ggml.tokens"]
    special_tokens = _named_special_tokens(metadata, tokens)
    _register_added_tokens(backend, metadata, list(special_tokens.values()))
    return GgufTokenizerParts(
        backend=backend,
        special_tokens=special_tokens,
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama")),
        add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=metadata.get("tokenizer.chat_template"),
    )


# --- byte-level BPE ("gpt2") ---------------------------------------------------------------


def byte_to_char() -> dict[int, str]:
    """GPT-2's reversible spelling of the 256 bytes as printable characters.

    Printable Latin-1 bytes stand for themselves; the others (control bytes, space, ...) are
    moved to code points 256 and up, in byte order. So a space is written "Ġ" (256 + 32).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    shifted = (byte for byte in range(256) if byte not in mapping)
    mapping.update({byte: chr(256 + n) for n, byte in enumerate(shifted)})
    return mapping


def _byte_level_bpe(metadata: dict) -> Backend:
    family = metadata.get("tokenizer.ggml.pre", "default")
    if family not in _BYTE_LEVEL_SPLITS:
        raise LmstackError(
            f"unknown byte-level pre-tokenizer {family!r} in tokenizer.ggml.pre; "
            f"supported: {', '.join(sorted(_BYTE_LEVEL_SPLITS))}"
        )
    spelling = byte_to_char()
    alphabet = set(spelling.values())
    # A few files store a token in plain UTF-8 instead of the byte spelling; respell those.
    tokens = [
        token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))
        for token in metadata["tokenizer.ggml.tokens"]
    ]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(family)
    backend.decoder = decoders.ByteLevel()
    return backend


def _byte_level_pre_tokenizer(family: str) -> pre_tokenizers.PreTokenizer:
    split = _BYTE_LEVEL_SPLITS[family]
    if split is None:
        steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if family in _SINGLE_DIGIT_FAMILIES:
            steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    else:
        steps = [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    return pre_tokenizers.Sequence(steps) if len(steps) > 1 else steps[0]


# --- SentencePiece BPE ("llama") -----------------------------------------------------------


def _sentencepiece_bpe(metadata: dict) -> Backend:
    tokens = metadata["tokenizer.ggml.tokens"]
    if metadata.get("general.architecture", "").startswith("gemma"):
        # Gemma files store tokens made only of spaces with real spaces; the model sees them as "▁".
        tokens = [SPACE_MARK * len(t) if " " in t and not t.strip() else t for t in tokens]
        # Gemma's scores do not follow its merge order; the position in the vocabulary does.
        priority = {token: -index for index, token in enumerate(tokens)}
    else:
        priority = dict(zip(tokens, metadata["tokenizer.ggml.scores"]))
    vocab = {token: index for index, token in enumerate(tokens)}
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    backend = Backend(
        models.BPE(
            vocab=vocab,
            merges=merges_from_vocab(vocab, priority),
            unk_token=tokens[unk_id] if unk_id is not None else None,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    add_space_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPACE_MARK, prepend_scheme="first" if add_space_prefix else "never", split=False
    )
    steps = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_space_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def merges_from_vocab(vocab: dict[str, int], priority: dict[str, float]) -> list[tuple[str, str]]:
    """The BPE merge list a SentencePiece vocabulary implies.

    Every way to cut a piece into two pieces that are both in the vocabulary is a merge. Merges
    are ranked by the priority of the piece they produce (highest first); ties go to the longer
    left part, then the longer right part, then vocabulary order, the order transformers uses.
    """
    candidates = []
    add = candidates.append
    for piece, score in priority.items():
        length = len(piece)
        for cut in range(1, length):
            left = piece[:cut]
            if left in vocab:  # cheap test first: most prefixes are not pieces
                right = piece[cut:]
                if right in vocab:
                    add((-score, -cut, cut - length, left, right))
    candidates.sort(key=itemgetter(0, 1, 2))  # stable: keeps vocabulary order on ties
    return [(left, right) for *_, left, right in candidates]


# --- special tokens ------------------------------------------------------------------------

_SPECIAL_ID_KEYS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def _named_special_tokens(metadata: dict, tokens: list[str]) -> dict[str, str]:
    named = {}
    for name, key in _SPECIAL_ID_KEYS.items():
        token_id = metadata.get(key)
        if token_id is not None and 0 <= token_id < len(tokens):
            named[name] = tokens[token_id]
    return named


def _register_added_tokens(backend: Backend, metadata: dict, named_special: list[str]) -> None:
    """Make control tokens whole special tokens and user-defined ones whole plain tokens.

    Without this `<|im_start|>` would be cut into `<`, `|`, `im`, ... In a byte-level vocabulary
    a "control" token spelled outside the byte alphabet is a conversion mislabel and is skipped.
    """
    tokens = metadata["tokenizer.ggml.tokens"]
    types = metadata.get("tokenizer.ggml.token_type") or [0] * len(tokens)
    alphabet = set(byte_to_char().values()) if metadata.get("tokenizer.ggml.model") == "gpt2" else None
    control = [
        token
        for token, kind in zip(tokens, types)
        if kind == CONTROL and (alphabet is None or set(token) <= alphabet)
    ]
    control += [token for token in named_special if token not in control and backend.token_to_id(token) is not None]
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in control])
    # A user-defined token the vocabulary respelled (Gemma's runs of spaces) is matched by BPE instead.
    user_defined = [
        token for token, kind in zip(tokens, types) if kind == USER_DEFINED and backend.token_to_id(token) is not None
    ]
    backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in user_defined])
