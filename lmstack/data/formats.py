"""Dataset formats: detect which one a record is in, and normalize it to one of four kinds.

Source formats and the normalized kind each becomes:

| format       | looks like                                               | kind        |
|--------------|----------------------------------------------------------|-------------|
| `messages`   | `{"messages": [{"role", "content"}, ...]}` (OpenAI)        | messages    |
| `sharegpt`   | `{"conversations": [{"from": human/gpt/system, "value"}]}` | messages    |
| `alpaca`     | `{"instruction", "input"?, "output"}`                      | messages    |
| `text`       | `{"text"}` (raw text for pre-training or perplexity)       | text        |
| `preference` | `{"prompt"?, "chosen", "rejected"}` (DPO pairs)            | preference  |
| `kto`        | `{"prompt", "completion", "label": bool}` (unpaired)       | kto         |

Normalized records: `{"messages": [...]}`, `{"text": str}`,
`{"prompt": [messages], "chosen": str, "rejected": str}` and
`{"prompt": [messages], "completion": str, "label": bool}`. Fields a format does not use
(an `id`, an `expected` answer) are kept as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmstack.data.io import read_records, read_source, write_jsonl
from lmstack.errors import LmstackError
from lmstack.home import check_output
from lmstack.tokenizer.chat_template import Messages

CHAT_FORMATS = ("messages", "sharegpt", "alpaca")
FORMATS = CHAT_FORMATS + ("text", "preference", "kto")
KIND_OF_FORMAT = {"messages": "messages", "sharegpt": "messages", "alpaca": "messages",
                  "text": "text", "preference": "preference", "kto": "kto"}
ROLES = ("system", "user", "assistant")
SHAREGPT_TO_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                    "system": "system"}
ROLE_TO_SHAREGPT = {"user": "human", "assistant": "gpt", "system": "system"}



@dataclass
class Dataset:
    """A dataset file read and normalized: every record has the same `kind`."""

    records: list[dict[str, Any]]
    format: str  # the source format, or "mixed" when chat formats were mixed in one file
    kind: str  # messages | text | preference | kto
    format_counts: Counter = field(default_factory=Counter)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.records)


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record is written in, judged by its keys; None when no format matches."""
    if "chosen" in record and "rejected" in record:
        return "preference"
    if "completion" in record and "label" in record:
        return "kto"
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    return None


def normalize_record(record: dict[str, Any], fmt: str | None = None, where: str = "record") -> dict[str, Any]:
    """Normalize one record from format `fmt` (detected when None); errors name `where`."""
    fmt = fmt or _detect_or_fail(record, where)
    if fmt not in FORMATS:
        raise LmstackError(f"Unknown dataset format '{fmt}'; use one of {', '.join(FORMATS)}.")
    return _NORMALIZERS[fmt](record, where)


def load_dataset(path: str | Path, kind: str | None = None) -> Dataset:
    """Read a dataset file and normalize every record.

    `kind` forces a source format (one of FORMATS) instead of detecting it per record; forcing is
    how a user gets precise errors about a field that is missing. Chat formats may be mixed in one
    file (they all become messages); kinds may not.
    """
    source = read_source(path)
    if not source.records:
        raise LmstackError(f"{source.path}: the dataset is empty.")
    records, counts = [], Counter()
    for index, record in enumerate(source.records):
        where = source.where(index)
        fmt = kind or _detect_or_fail(record, where)
        records.append(normalize_record(record, fmt, where))
        counts[fmt] += 1
    kinds = {KIND_OF_FORMAT[f] for f in counts}
    if len(kinds) > 1:
        raise LmstackError(
            f"{source.path}: records of different kinds in one file ({dict(counts)}); split them into separate files."
        )
    fmt = next(iter(counts)) if len(counts) == 1 else "mixed"
    return Dataset(records, fmt, kinds.pop(), counts, source.path)


def _check_chat_format(to: str) -> None:
    if to not in CHAT_FORMATS:
        raise LmstackError(f"Cannot convert to '{to}'; chat formats are {', '.join(CHAT_FORMATS)}.")


def convert(records: list[dict[str, Any]], to: str) -> list[dict[str, Any]]:
    """Convert chat records (messages, ShareGPT or Alpaca, even mixed) to the chat format `to`."""
    _check_chat_format(to)
    converted = []
    for number, record in enumerate(records, start=1):
        where = f"record {number}"
        normalized = normalize_record(record, where=where)
        if "messages" not in normalized:
            raise LmstackError(f"{where}: a {detect_format(record)} record is not a chat; only chat formats convert.")
        converted.append(_RENDERERS[to](normalized, where))
    return converted


def convert_file(input_path: str | Path, output_path: str | Path, to: str, *, overwrite: bool = False) -> int:
    """Convert a chat dataset file to the chat format `to`, written as JSONL; returns the record count."""
    _check_chat_format(to)
    check_output(output_path, overwrite=overwrite, directory=False)
    if Path(input_path).expanduser().resolve() == Path(output_path).expanduser().resolve():
        raise LmstackError(f"{output_path} is the input file; write the converted dataset to another path")
    records = convert(read_records(input_path), to=to)
    write_jsonl(output_path, records)
    return len(records)


# --- normalizers: source format -> normalized kind -------------------------------------------


def _from_messages(record: dict, where: str) -> dict:
    messages = _require(record, "messages", list, where, "OpenAI chat records need a 'messages' list")
    return {**_extras(record, "messages"), "messages": _check_messages(messages, where, "messages")}


def _from_sharegpt(record: dict, where: str) -> dict:
    turns = _require(record, "conversations", list, where, "ShareGPT records need a 'conversations' list")
    messages = []
    for i, turn in enumerate(turns):
        name = f"conversations[{i}]"
        speaker = _require(turn, "from", str, where, "each turn needs 'from' and 'value'", name)
        if speaker not in SHAREGPT_TO_ROLE:
            raise LmstackError(f"{where}: field '{name}.from' is '{speaker}'; use human, gpt or system.")
        value = _require(turn, "value", str, where, "each turn needs 'from' and 'value'", name)
        messages.append({"role": SHAREGPT_TO_ROLE[speaker], "content": value})
    return {**_extras(record, "conversations"), "messages": _check_messages(messages, where, "conversations")}


def _from_alpaca(record: dict, where: str) -> dict:
    hint = "Alpaca records need 'instruction' and 'output' ('input' and 'system' are optional)"
    instruction = _require(record, "instruction", str, where, hint)
    output = _require(record, "output", str, where, hint)
    extra_input = record.get("input") or ""
    user = f"{instruction}\n\n{extra_input}" if extra_input else instruction
    system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    messages = system + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {**_extras(record, "instruction", "input", "output", "system"), "messages": messages}


def _from_text(record: dict, where: str) -> dict:
    text = _require(record, "text", str, where, "text records need a 'text' string")
    return {**_extras(record, "text"), "text": text}


def _from_preference(record: dict, where: str) -> dict:
    prompt = _prompt_messages(record, where, required=False)
    chosen_turns, chosen = _response(record, "chosen", where)
    rejected_turns, rejected = _response(record, "rejected", where)
    if chosen_turns != rejected_turns:
        raise LmstackError(f"{where}: 'chosen' and 'rejected' conversations differ before their last answer; "
                           "they must share the same prompt.")
    prompt = prompt + chosen_turns
    if not prompt:
        raise LmstackError(f"{where}: missing field 'prompt' (preference records need prompt, chosen, rejected).")
    return {**_extras(record, "prompt", "chosen", "rejected"), "prompt": prompt, "chosen": chosen,
            "rejected": rejected}


def _from_kto(record: dict, where: str) -> dict:
    prompt = _prompt_messages(record, where, required=True)
    turns, completion = _response(record, "completion", where)
    return {**_extras(record, "prompt", "completion", "label"), "prompt": prompt + turns,
            "completion": completion, "label": _as_bool(record.get("label"), where)}


_NORMALIZERS = {"messages": _from_messages, "sharegpt": _from_sharegpt, "alpaca": _from_alpaca,
                "text": _from_text, "preference": _from_preference, "kto": _from_kto}


# --- renderers: normalized messages -> chat format --------------------------------------------


def _to_messages(record: dict, where: str) -> dict:
    return record


def _to_sharegpt(record: dict, where: str) -> dict:
    turns = [{"from": ROLE_TO_SHAREGPT[m["role"]], "value": m["content"]} for m in record["messages"]]
    return {**_extras(record, "messages"), "conversations": turns}


def _to_alpaca(record: dict, where: str) -> dict:
    messages = record["messages"]
    system = [m["content"] for m in messages if m["role"] == "system"]
    dialogue = [m for m in messages if m["role"] != "system"]
    if len(system) > 1 or [m["role"] for m in dialogue] != ["user", "assistant"]:
        raise LmstackError(f"{where}: Alpaca holds one question and one answer (plus an optional system prompt); "
                           "this conversation has more turns. Convert it to messages or sharegpt instead.")
    alpaca = {"instruction": dialogue[0]["content"], "input": "", "output": dialogue[1]["content"]}
    if system:
        alpaca["system"] = system[0]
    return {**_extras(record, "messages"), **alpaca}


_RENDERERS = {"messages": _to_messages, "sharegpt": _to_sharegpt, "alpaca": _to_alpaca}


# --- field checks -----------------------------------------------------------------------------


def _detect_or_fail(record: dict, where: str) -> str:
    fmt = detect_format(record)
    if fmt is None:
        raise LmstackError(
            f"{where}: cannot tell the dataset format from fields {sorted(record)}; expected messages, "
            "conversations, instruction+output, text, chosen+rejected or completion+label."
        )
    return fmt


def _require(record: Any, key: str, kind: type, where: str, hint: str, parent: str = "") -> Any:
    """record[key], checked to be of type `kind`; the error names the field's full path."""
    name = f"{parent}.{key}" if parent else key
    if not isinstance(record, dict):
        raise LmstackError(f"{where}: field '{parent}' must be an object; {hint}.")
    if key not in record or record[key] is None:
        raise LmstackError(f"{where}: missing field '{name}'; {hint}.")
    value = record[key]
    if not isinstance(value, kind):
        raise LmstackError(f"{where}: field '{name}' must be a {kind.__name__}, got {type(value).__name__}; {hint}.")
    return value


def _check_messages(messages: list, where: str, name: str) -> Messages:
    if not messages:
        raise LmstackError(f"{where}: field '{name}' is empty; a conversation needs at least one message.")
    hint = "each message needs 'role' (system, user or assistant) and 'content' (a string)"
    checked = []
    for i, message in enumerate(messages):
        role = _require(message, "role", str, where, hint, f"{name}[{i}]")
        if role not in ROLES:
            raise LmstackError(f"{where}: field '{name}[{i}].role' is '{role}'; {hint}.")
        content = _require(message, "content", str, where, hint, f"{name}[{i}]")
        checked.append({"role": role, "content": content})
    return checked


def _prompt_messages(record: dict, where: str, required: bool) -> Messages:
    prompt = record.get("prompt")
    if prompt is None and not required:
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return _check_messages(prompt, where, "prompt")
    raise LmstackError(f"{where}: field 'prompt' must be a string or a list of messages"
                       f"{'' if prompt is not None else ' and is missing'}.")


def _response(record: dict, key: str, where: str) -> tuple[Messages, str]:
    """A response given as a string or as messages ending with the assistant's answer.

    Returns (the turns before the answer, the answer text).
    """
    value = record.get(key)
    if isinstance(value, str):
        return [], value
    if isinstance(value, list):
        messages = _check_messages(value, where, key)
        if messages[-1]["role"] != "assistant":
            raise LmstackError(f"{where}: field '{key}' must end with an assistant message.")
        return messages[:-1], messages[-1]["content"]
    problem = "is missing" if value is None else f"is a {type(value).__name__}"
    raise LmstackError(f"{where}: field '{key}' {problem}; it must be a string or a list of messages.")


def _as_bool(value: Any, where: str) -> bool:
    """KTO labels: booleans, or the 0/1 and true/false spellings CSV files give us."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise LmstackError(f"{where}: field 'label' must be true or false, got {value!r}.")


def _extras(record: dict, *consumed: str) -> dict:
    return {k: v for k, v in record.items() if k not in consumed}
