"""The interactive chat behind `lmstack chat`: a conversation, its settings and slash commands.

`ChatSession` holds the state and answers one input line at a time, so it is testable without a
terminal; `run_chat` is the read-answer loop around it.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any, Callable

from lmstack.errors import LmstackError
from lmstack.generate.processors import SAMPLING_KEYS
from lmstack.generate.text import chat_text, resolve_sampling

HELP = """commands:
  /reset              forget the conversation
  /system TEXT        set the system prompt (/system alone clears it)
  /set KEY VALUE      change a setting, e.g. /set temperature 0.7
                      keys: {keys}
  /show               print the current settings
  /help               this help
  /exit               leave (or Ctrl-D)"""

OTHER_KEYS = ("max_new_tokens", "seed")


class ChatSession:
    def __init__(
        self,
        loaded: Any,
        *,
        system: str | None = None,
        template: str | None = None,
        max_new_tokens: int = 512,
        seed: int | None = None,
        write: Callable[[str], None] | None = None,
        note: Callable[[str], None] | None = None,
        **sampling: Any,
    ):
        self.loaded, self.system, self.template = loaded, system, template
        self.options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "seed": seed}
        self.sampling = {k: v for k, v in sampling.items() if v is not None}
        resolve_sampling(loaded.generation_config, self.sampling)  # fail now on a bad value
        self.messages: list[dict[str, str]] = []
        self.write = write or _print_now(sys.stdout)
        self.note = note or _print_now(sys.stderr)

    def handle(self, line: str) -> bool:
        """Answer one input line; False when the user asked to leave."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        self.reply(line)
        return True

    def reply(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        try:
            result = chat_text(
                self.loaded, self.messages, system=self.system, template=self.template, stream=self.write,
                **self.options, **self.sampling
            )
        except (LmstackError, KeyboardInterrupt) as e:
            self.messages.pop()  # the turn did not happen
            reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e}"
            self.note(f"\n({reason}; /reset starts a new conversation)\n")
            return
        self.messages.append({"role": "assistant", "content": result.text})
        self.write("\n")
        self.note(
            f"({result.new_tokens} tokens, {result.decode_tokens_per_second:.1f} tok/s, finish: {result.finish_reason})\n"
        )

    def command(self, line: str) -> bool:
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/reset":
            self.messages.clear()
            self.note("(conversation cleared)\n")
        elif name == "/system":
            self.system = argument or None
            self.note(f"(system prompt {'set' if argument else 'cleared'})\n")
        elif name == "/set":
            self.set(argument)
        elif name == "/show":
            self.note(self.describe() + "\n")
        elif name == "/help":
            self.note(HELP.format(keys=", ".join((*SAMPLING_KEYS, *OTHER_KEYS))) + "\n")
        else:
            self.note(f"unknown command {name}; /help lists the commands\n")
        return True

    def set(self, argument: str) -> None:
        key, _, text = argument.partition(" ")
        if not key or not text.strip():
            self.note("usage: /set KEY VALUE, e.g. /set temperature 0.7\n")
            return
        value = parse_value(text.strip())
        try:
            if key in OTHER_KEYS:
                self._set_option(key, value)
            else:
                resolve_sampling(self.loaded.generation_config, self.sampling | {key: value})
                self.sampling[key] = value
        except LmstackError as e:
            self.note(f"error: {e}\n")
            return
        self.note(f"({key} = {value})\n")

    def _set_option(self, key: str, value: Any) -> None:
        if key == "seed" and value is None:  # back to a fresh random draw each turn
            self.options[key] = None
            return
        lowest = 0 if key == "seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise LmstackError(f"{key} must be an integer >= {lowest}, got {value}")
        self.options[key] = value

    def describe(self) -> str:
        settings = asdict(resolve_sampling(self.loaded.generation_config, self.sampling)) | self.options
        lines = [f"  {key} = {value}" for key, value in settings.items()]
        lines.append(f"  system = {self.system!r}")
        lines.append(f"  history = {len(self.messages)} messages")
        return "\n".join(lines)


def parse_value(text: str) -> Any:
    """A /set value: an int, a float, true/false/none, or the text itself."""
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run_chat(session: ChatSession, read: Callable[[str], str] = input) -> None:
    """Read lines until /exit, Ctrl-D or Ctrl-C at the prompt."""
    session.note("chatting; /help lists commands, /exit or Ctrl-D leaves\n")
    while True:
        try:
            line = read(">>> ")
        except (EOFError, KeyboardInterrupt):
            session.note("\n")
            return
        except UnicodeDecodeError as error:  # a line that is not UTF-8: say so, keep chatting
            session.note(f"(that line is not valid UTF-8 at byte {error.start}; type it again)\n")
            continue
        except (OSError, ValueError):  # standard input closed under us
            session.note("(standard input is closed; leaving)\n")
            return
        if not session.handle(line):
            return


def _print_now(stream) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write
