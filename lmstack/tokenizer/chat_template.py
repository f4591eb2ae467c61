"""Chat templates: turn a list of `{"role", "content"}` messages into the exact prompt text.

A model's template is a Jinja program shipped with it (`tokenizer.chat_template` in a GGUF,
`chat_template` in `tokenizer_config.json`). Templates come from the internet, so they run in
Jinja's immutable sandbox. The environment matches what transformers gives templates, so a
template renders the same text here as in `tokenizer.apply_chat_template`:
trim_blocks/lstrip_blocks, `raise_exception`, a `tojson` that does not HTML-escape,
`strftime_now`, and the variables `messages`, `add_generation_prompt`, `bos_token`,
`eos_token`, ... plus any extra keyword (e.g. `tools`).

`TEMPLATES` holds a few well-known formats by name, for models that ship without a template.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmstack.errors import LmstackError

TEMPLATES: dict[str, str] = {
    # OpenAI's ChatML, used by SmolLM2, Qwen and many fine-tunes.
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Stanford Alpaca's instruction format; a system message becomes the preamble.
    "alpaca": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
    # Meta Llama 3 / 3.1 instruct headers.
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        "{{ message['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # Google Gemma: roles `user` and `model`; a system message is prepended to the first user turn.
    "gemma": (
        "{{ bos_token }}"
        "{% set system = namespace(text='') %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{% set system.text = message['content'] + '\n\n' %}"
        "{% else %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + system.text + message['content'] | trim + '<end_of_turn>\n' }}"
        "{% set system.text = '' %}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
}


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson HTML-escapes `<`, `>`, `&`, `'`, which would change the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(source)


Messages = list[dict[str, Any]]  # a conversation in OpenAI form: [{"role": ..., "content": ...}, ...]


def resolve_template(name_or_source: str) -> str:
    """A built-in template's source by name, or the argument itself when it is Jinja source."""
    if name_or_source in TEMPLATES:
        return TEMPLATES[name_or_source]
    if "{" not in name_or_source:
        raise LmstackError(
            f"unknown chat template {name_or_source!r}; pick one of {', '.join(TEMPLATES)} or pass Jinja source"
        )
    return name_or_source


def render_chat(
    template: str,
    messages: Messages,
    add_generation_prompt: bool = False,
    **variables: Any,
) -> str:
    """Render `messages` with `template` (a name from `TEMPLATES` or Jinja source).

    `variables` are visible to the template: `bos_token`, `eos_token`, `tools`, ... Keys whose
    value is None are dropped from each message, as transformers does (templates test presence).
    """
    messages = [{key: value for key, value in message.items() if value is not None} for message in messages]
    # transformers always passes these (as None when absent); `tools is defined` depends on it.
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    try:
        return _compile(resolve_template(template)).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **variables
        )
    except jinja2.TemplateError as error:
        raise LmstackError(
            f"chat template failed: {error}; check the messages (roles, order) or pick another template"
        ) from error
