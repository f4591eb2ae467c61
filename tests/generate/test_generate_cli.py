"""`lmstack generate` / `lmstack chat` on the tiny model (lmstack.load is swapped for it)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from lmstack.generate import cli
from lmstack.generate.repl import ChatSession, parse_value, run_chat
from lmstack.generate.text import generate_text

PROMPT = "w5 w17 w33 w90"


@pytest.fixture
def app(tiny_loaded, monkeypatch):
    from lmstack import api

    monkeypatch.setattr(api, "load", lambda ref, device=None, dtype=None: tiny_loaded)
    app = typer.Typer()
    app.command("generate")(cli.generate)
    app.command("chat")(cli.chat)
    return app


def test_generate_streams_text_and_reports_speed(app, tiny_loaded):
    expected = generate_text(tiny_loaded, PROMPT, max_new_tokens=12, temperature=0.9, top_k=10, seed=3)
    out = CliRunner().invoke(app, ["generate", "tiny", PROMPT, "-n", "12", "-t", "0.9", "--top-k", "10", "--seed", "3"])
    assert out.exit_code == 0, out.output
    assert out.stdout == expected.text + "\n"
    assert "prefill:" in out.stderr and "decode:" in out.stderr and "tok/s" in out.stderr


def test_generate_json_and_stdin(app, tiny_loaded):
    expected = generate_text(tiny_loaded, PROMPT, raw=True, max_new_tokens=8, num_beams=2)
    out = CliRunner().invoke(app, ["generate", "tiny", "--raw", "-n", "8", "--num-beams", "2", "--json"], input=PROMPT)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["token_ids"] == expected.token_ids and result["text"] == expected.text
    assert result["finish_reason"] == expected.finish_reason and result["new_tokens"] == len(expected.token_ids)


def test_generate_explain_prints_a_table(app):
    out = CliRunner().invoke(app, ["generate", "tiny", PROMPT, "-n", "3", "--explain", "--no-stream"])
    assert out.exit_code == 0, out.output
    assert "decoding, step by step" in out.stdout and "top candidates" in out.stdout


def test_chat_session_commands_and_history(tiny_loaded):
    said, notes = [], []
    session = ChatSession(tiny_loaded, write=said.append, note=notes.append, max_new_tokens=6)
    assert session.handle("w5 w6")
    first_reply = session.messages[-1]["content"]
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    assert "".join(said).startswith(first_reply)

    session.handle("/set temperature 0.7")
    session.handle("/set top_p 1.5")  # rejected, the old value stays
    session.handle("/set max_new_tokens 4")
    session.handle("/system w1 w2")
    assert session.sampling == {"temperature": 0.7} and session.options["max_new_tokens"] == 4
    assert session.system == "w1 w2"
    assert any("top_p must be in (0, 1], got 1.5" in n for n in notes)

    session.handle("/show")
    assert "temperature = 0.7" in notes[-1] and "history = 2 messages" in notes[-1]
    session.handle("w7")
    assert len(session.messages) == 4 and len(tiny_loaded.tokenizer.encode(session.messages[-1]["content"])) <= 5
    session.handle("/reset")
    assert session.messages == []
    session.handle("/nope")
    assert "unknown command /nope" in notes[-1]
    session.handle("/help")
    assert "/set KEY VALUE" in notes[-1]
    assert session.handle("/exit") is False


def test_chat_turn_matches_chat_text(tiny_loaded):
    said = []
    session = ChatSession(tiny_loaded, system="w3", write=said.append, note=lambda _: None, max_new_tokens=8)
    session.handle("w9 w10")
    from lmstack.generate.text import chat_text

    expected = chat_text(tiny_loaded, [{"role": "user", "content": "w9 w10"}], system="w3", max_new_tokens=8)
    assert session.messages[-1]["content"] == expected.text


def test_run_chat_ends_on_ctrl_d_and_ctrl_c(tiny_loaded):
    for ending in (EOFError, KeyboardInterrupt):
        lines = iter(["w5", "/set seed 1"])

        def read(prompt: str) -> str:
            try:
                return next(lines)
            except StopIteration:
                raise ending from None

        session = ChatSession(tiny_loaded, write=lambda _: None, note=lambda _: None, max_new_tokens=3)
        run_chat(session, read=read)
        assert len(session.messages) == 2 and session.options["seed"] == 1


def test_chat_cli_reads_until_exit(app):
    out = CliRunner().invoke(app, ["chat", "tiny", "-n", "4"], input="w5 w6\n/show\n/exit\n")
    assert out.exit_code == 0, out.output
    assert "max_new_tokens = 4" in out.stderr


def test_parse_value():
    assert [parse_value(v) for v in ("3", "0.5", "true", "none", "never")] == [3, 0.5, True, None, "never"]
