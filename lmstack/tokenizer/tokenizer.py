"""`Tokenizer`: text <-> token ids, chat formatting, and saving in Hugging Face layout.

The heavy lifting (BPE, added-token matching, offsets) is done by the Rust `tokenizers` library;
this class holds what a model needs around it: which tokens are BOS/EOS/PAD, whether BOS is added
automatically, the chat template, and the ids that end a reply.

It loads from a GGUF file (`from_gguf`) or a Hugging Face directory (`from_dir`), and `save`
writes a directory that `transformers.AutoTokenizer.from_pretrained` reads back identically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend
from tokenizers import processors

from lmstack.errors import LmstackError
from lmstack.home import atomic_write_text
from lmstack.inputs import read_json_object
from lmstack.formats.gguf_file import GGUFFile, read_gguf
from lmstack.tokenizer.chat_template import TEMPLATES, render_chat, resolve_template
from lmstack.tokenizer.gguf_vocab import tokenizer_parts_from_gguf

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# Tokens that end an assistant turn in common chat formats; generation stops on any that exist.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


class Tokenizer:
    """A model's tokenizer. `backend` is the underlying `tokenizers.Tokenizer`."""

    def __init__(
        self,
        backend: Backend,
        *,
        special_tokens: dict[str, str] | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        chat_template: str | None = None,
    ):
        """`add_bos_token`/`add_eos_token` None keeps the backend's own post-processor as is."""
        self.backend = backend
        self.special_tokens = {name: text for name, text in (special_tokens or {}).items() if text}
        if add_bos_token is not None or add_eos_token is not None:
            self._set_bos_eos(bool(add_bos_token), bool(add_eos_token))
        self.chat_template = chat_template

    # --- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, gguf: str | Path | GGUFFile) -> Tokenizer:
        """The tokenizer stored in a GGUF file's metadata (a path, or a file already read)."""
        if not isinstance(gguf, GGUFFile):
            gguf = read_gguf(gguf)
        parts = tokenizer_parts_from_gguf(gguf.metadata, gguf.path)
        return cls(
            parts.backend,
            special_tokens=parts.special_tokens,
            add_bos_token=parts.add_bos_token,
            add_eos_token=parts.add_eos_token,
            chat_template=parts.chat_template,
        )

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        """A Hugging Face tokenizer directory (`tokenizer.json` + `tokenizer_config.json`)."""
        directory = Path(directory)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise LmstackError(f"{directory} has no tokenizer.json; point at a Hugging Face model directory")
        config = _read_json(directory / "tokenizer_config.json")
        token_map = {**_read_json(directory / "special_tokens_map.json"), **config}
        special_tokens = {name: _token_text(token_map[name]) for name in SPECIAL_TOKEN_NAMES if token_map.get(name)}
        try:
            backend = Backend.from_file(str(tokenizer_file))
        except Exception as error:  # noqa: BLE001 - `tokenizers` raises plain Exception for a bad file
            raise LmstackError(f"{tokenizer_file} cannot be read as a tokenizer ({str(error)[:120]}); "
                               "re-export the model or copy the file again") from None
        return cls(
            backend,
            special_tokens=special_tokens,
            add_bos_token=config.get("add_bos_token"),
            add_eos_token=config.get("add_eos_token"),
            chat_template=_read_chat_template(directory, config),
        )

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **self.special_tokens,
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "clean_up_tokenization_spaces": False,
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        atomic_write_text(directory / "tokenizer.json", self.backend.to_str())
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False))
        atomic_write_text(directory / "special_tokens_map.json", json.dumps(self.special_tokens, indent=2))

    # --- text <-> ids --------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; `add_special_tokens` adds BOS/EOS as the model expects."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_with_offsets(
        self, text: str, add_special_tokens: bool = True
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, for each, its `(start, end)` character span in `text` (BOS/EOS: `(0, 0)`)."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return encoding.ids, [tuple(span) for span in encoding.offsets]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        """The vocabulary pieces (as stored, e.g. `Ġhello`, `▁hello`) for one id or a list."""
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        return [self.backend.id_to_token(token_id) for token_id in ids]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # --- special tokens ------------------------------------------------------------------------

    @property
    def bos_token_id(self) -> int | None:
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        """The padding id; models without one pad with EOS (padding is masked out anyway)."""
        pad = self._special_id("pad_token")
        return pad if pad is not None else self.eos_token_id

    @property
    def stop_token_ids(self) -> list[int]:
        """EOS plus every end-of-turn token this vocabulary has: generation stops on any of them."""
        candidates = [self.eos_token_id, *(self.token_to_id(token) for token in END_OF_TURN_TOKENS)]
        return list(dict.fromkeys(token_id for token_id in candidates if token_id is not None))

    @property
    def add_bos_token(self) -> bool:
        """Whether `encode(..., add_special_tokens=True)` starts with BOS."""
        return self._added_ids()[:1] == [self.bos_token_id] and self.bos_token_id is not None

    @property
    def add_eos_token(self) -> bool:
        """Whether `encode(..., add_special_tokens=True)` ends with EOS."""
        return self._added_ids()[-1:] == [self.eos_token_id] and self.eos_token_id is not None

    def _special_id(self, name: str) -> int | None:
        text = self.special_tokens.get(name)
        return self.backend.token_to_id(text) if text else None

    def _added_ids(self) -> list[int]:
        return self.backend.encode("", add_special_tokens=True).ids

    def _set_bos_eos(self, add_bos: bool, add_eos: bool) -> None:
        """Install a post-processor adding BOS/EOS around every encoded text (as transformers does)."""
        bos, eos = self.special_tokens.get("bos_token"), self.special_tokens.get("eos_token")
        add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
        single = " ".join(([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else []))
        pair = " ".join(
            [single] + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
        )
        used = ([bos] if add_bos else []) + ([eos] if add_eos else [])
        self.backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(token, self.backend.token_to_id(token)) for token in used]
        )

    # --- chat ----------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template; assign a built-in name (`chatml`, ...) or Jinja source."""
        return self._chat_template

    @chat_template.setter
    def chat_template(self, name_or_source: str | None) -> None:
        self._chat_template = resolve_template(name_or_source) if name_or_source else None

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        *,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str | list[int]:
        """Format a conversation with the chat template (the model's, or `chat_template`).

        Extra keyword arguments (e.g. `tools`) are passed to the template. With `tokenize`, the
        text is encoded without adding BOS/EOS: the template writes the special tokens it wants.
        """
        template = chat_template or self.chat_template
        if template is None:
            raise LmstackError(
                f"this model has no chat template; pick one by name with --template ({', '.join(TEMPLATES)}) "
                "or use raw mode (plain text prompt)"
            )
        text = render_chat(template, messages, add_generation_prompt, **{**self.special_tokens, **kwargs})
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path) if path.is_file() else {}


def _token_text(token: str | dict) -> str:
    """A special token as written in tokenizer_config.json: a string or a serialized AddedToken."""
    return token["content"] if isinstance(token, dict) else token


def _read_chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    """`chat_template.jinja` if present, else the config's template (a string or a named list)."""
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry["name"]: entry["template"] for entry in template}
        return named.get("default") or next(iter(named.values()), None)
    return template
