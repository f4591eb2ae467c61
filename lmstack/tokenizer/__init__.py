"""Tokenization: GGUF and Hugging Face tokenizers, chat templates, streaming decode."""

from lmstack.tokenizer.chat_template import TEMPLATES, render_chat
from lmstack.tokenizer.incremental_decoder import IncrementalDecoder
from lmstack.tokenizer.tokenizer import Tokenizer

__all__ = ["IncrementalDecoder", "TEMPLATES", "Tokenizer", "render_chat"]
