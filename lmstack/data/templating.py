"""Turn a conversation into token ids and labels, training only what the assistant says.

The rule: the model is trained on exactly what it will have to generate at inference time. At
inference the prompt is the conversation rendered with `add_generation_prompt=True`; the model
then writes the answer and the end-of-turn token, and stops. So for each assistant message we
render the conversation before it with the generation prompt (where the answer starts), find the
answer and the end-of-turn marker after it (where it ends), and map that character span to
tokens through the tokenizer's offsets. Whatever the template adds after the end-of-turn marker
(ChatML's newline) and every injected default system prompt stay untrained (label -100).

This works only if rendering a shorter conversation gives a prefix of the full rendering; a
template that rewrites earlier turns is rejected with an error rather than mislabeled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from lmstack.errors import LmstackError
from lmstack.tokenizer.chat_template import Messages

IGNORE_INDEX = -100  # label of a position that is not trained (PyTorch cross-entropy skips it)
Renderer = Callable[[Messages, bool], str]  # (messages, add_generation_prompt) -> text


@dataclass
class TokenizedSample:
    """Token ids and labels of the same length; labels are ids where trained, -100 elsewhere."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_conversation(tokenizer: Any, messages: Messages, *, template: str | None = None,
                          max_len: int | None = None, last_turn_only: bool = False) -> TokenizedSample:
    """Tokenize a chat with its template; label the assistant turns (only the last if asked).

    `template` is None for the model's own chat template, else a template name (`chatml`,
    `llama3`, `gemma`, `alpaca`) or Jinja source. `max_len` cuts the sample to that many tokens.
    """
    render, end_markers = _renderer(tokenizer, template)
    text = render(messages, False)
    spans = _assistant_spans(render, messages, text, end_markers)
    if last_turn_only:
        spans = spans[-1:]
    input_ids, offsets = tokenizer.encode_with_offsets(text, add_special_tokens=False)
    labels = [token if _inside(offset[0], spans) else IGNORE_INDEX for token, offset in zip(input_ids, offsets)]
    return _truncate(TokenizedSample(list(input_ids), labels), max_len)


def tokenize_preference(tokenizer: Any, record: dict[str, Any], *, template: str | None = None,
                        max_len: int | None = None) -> tuple[TokenizedSample, TokenizedSample]:
    """Tokenize a normalized preference pair: (prompt + chosen, prompt + rejected), each trained
    on its response only."""
    samples = []
    for key in ("chosen", "rejected"):
        conversation = record["prompt"] + [{"role": "assistant", "content": record[key]}]
        samples.append(tokenize_conversation(tokenizer, conversation, template=template, max_len=max_len,
                                             last_turn_only=True))
    return samples[0], samples[1]


def tokenize_text(tokenizer: Any, text: str, *, max_len: int | None = None) -> TokenizedSample:
    """Tokenize raw text for language modeling: every token trained, end-of-sequence appended."""
    ids = list(tokenizer.encode(text, add_special_tokens=True))
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return _truncate(TokenizedSample(ids, list(ids)), max_len)


def _renderer(tokenizer: Any, template: str | None) -> tuple[Renderer, list[str]]:
    """A render function (the model's template, or the named one) and the texts that end a turn.

    A turn ends at the first stop token (EOS or an end-of-turn token such as `<|im_end|>`) after
    the answer; the template's text after it is not something the model generates.
    """
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise LmstackError("This model has no chat template; pass a named one with --template (e.g. chatml).")
    options = {} if template is None else {"chat_template": template}

    def render(messages: Messages, generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False, **options)

    stop_texts = [tokenizer.decode([token]) for token in tokenizer.stop_token_ids]
    return render, [text for text in stop_texts if text]


def _assistant_spans(render: Renderer, messages: Messages, text: str, end_markers: list[str]) -> list[tuple[int, int]]:
    """Character spans of `text` the model must generate: each answer through its end marker."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_prefix_of(text, render(messages[:index], True), index))
        turn_end = len(_prefix_of(text, render(messages[: index + 1], False), index))
        answer = message["content"].strip()
        answer_at = text.find(answer, start, turn_end)
        if answer_at < 0:
            raise LmstackError(f"The chat template changes the text of assistant message {index}, so its tokens "
                               "cannot be located; use a named template with --template.")
        spans.append((start, _end_of_turn(text, answer_at + len(answer), turn_end, end_markers)))
    return spans


def _prefix_of(text: str, prefix: str, index: int) -> str:
    if not text.startswith(prefix):
        raise LmstackError(f"The chat template renders the conversation up to message {index} differently from the "
                           "full conversation (it is not prefix-consistent), so assistant turns cannot be located; "
                           "use a named template with --template.")
    return prefix


def _end_of_turn(text: str, search_from: int, turn_end: int, end_markers: list[str]) -> int:
    """Where the assistant's turn ends: after the first end marker, else where the template's turn ends."""
    found = [(at, marker) for marker in end_markers if (at := text.find(marker, search_from, turn_end)) >= 0]
    if not found:
        return turn_end
    at, marker = min(found)
    return at + len(marker)


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    """A token belongs to the span it starts in (offsets give each token's start character)."""
    return any(start <= position < end for start, end in spans)


def _truncate(sample: TokenizedSample, max_len: int | None) -> TokenizedSample:
    if max_len is None or len(sample) <= max_len:
        return sample
    return TokenizedSample(sample.input_ids[:max_len], sample.labels[:max_len], truncated=True)
