"""Tools, the ReAct loop and prompt optimisation, around a scripted model; SQL on a real database."""

from __future__ import annotations

import json
import sqlite3

import pytest
from scripted_llm import ScriptedLLM

from lmstack.agents.optimize import Program, optimize
from lmstack.agents.react import parse_reply, run_agent
from lmstack.agents.sql import check_query, open_read_only, run_query, text_to_sql
from lmstack.agents.tools import calculate, calculator_tool, make_tools
from lmstack.errors import LmstackError


def test_calculator_computes_and_refuses_code():
    assert calculate("17 * (3 + 4) - 2 ** 3") == 111
    assert calculate("sqrt(16) + round(pi, 2)") == pytest.approx(7.14)
    for bad in ("__import__('os').system('id')", "(1).__class__", "open('x')", "2 ** 99999", "x + 1"):
        with pytest.raises(LmstackError):
            calculate(bad)
    with pytest.raises(LmstackError, match="cannot compute"):
        calculate("1 / 0")


def test_tool_arguments_are_checked_against_the_schema():
    tool = calculator_tool()
    assert tool.call({"expression": "2+2"}) == "4"
    with pytest.raises(LmstackError, match="expression"):
        tool.call({"expr": "2+2"})
    with pytest.raises(LmstackError, match="is not of type 'string'"):
        tool.call({"expression": 4})


def test_react_loop_retries_after_a_bad_call_and_finishes():
    replies = iter([
        'Thought: I need to multiply.\nAction: calculator\nAction Input: {"expr": "17*23"}',  # invalid arguments
        'Thought: fix the argument name.\nAction: calculator\nAction Input: {"expression": "17*23"}',
        "Thought: I have it.\nFinal Answer: 391",
    ])
    llm = ScriptedLLM(lambda prompt: next(replies))
    result = run_agent(llm, "What is 17 times 23?", [calculator_tool()])
    assert result.answer == "391" and result.stopped == "answer"
    assert result.steps[0].error and "invalid arguments" in result.steps[0].observation
    assert result.steps[1].observation == "391" and not result.steps[1].error
    assert "Observation: 391" in llm.prompts[-1]  # the model saw the tool's output


def test_react_step_limit_and_parse_errors():
    llm = ScriptedLLM(lambda prompt: "I am not following the format")
    result = run_agent(llm, "anything", [calculator_tool()], max_steps=3)
    assert result.answer is None and result.stopped == "steps" and len(result.steps) == 3
    assert all(step.error for step in result.steps)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_reply("Action: calculator\nAction Input: {oops}")


@pytest.fixture
def shop_db(tmp_path):
    path = tmp_path / "shop.db"
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL);"
                             "INSERT INTO orders (customer, total) VALUES ('ada', 12.5), ('bob', 30), ('ada', 7.5);")
    connection.commit()
    connection.close()
    return path


def test_sql_reads_and_never_writes(shop_db):
    before = shop_db.read_bytes()
    connection = open_read_only(shop_db)
    columns, rows = run_query(connection, "SELECT customer, SUM(total) FROM orders GROUP BY customer ORDER BY 1")
    assert columns == ["customer", "SUM(total)"] and rows == [("ada", 20.0), ("bob", 30.0)]
    for write in ("DELETE FROM orders", "UPDATE orders SET total = 0", "DROP TABLE orders", "SELECT 1; DROP TABLE orders",
                  "ATTACH DATABASE 'x.db' AS x", "PRAGMA query_only = OFF", "CREATE TABLE t (x)"):
        with pytest.raises(LmstackError):
            run_query(connection, write)
    with pytest.raises(LmstackError, match="only SELECT|not allowed"):
        run_query(connection, "WITH x AS (SELECT 1) DELETE FROM orders")
    connection.close()
    assert shop_db.read_bytes() == before
    assert check_query("select 1;") == "select 1"


def test_text_to_sql_puts_the_schema_in_the_prompt(shop_db):
    llm = ScriptedLLM(lambda prompt: "```sql\nSELECT COUNT(*) FROM orders WHERE customer = 'ada';\n```")
    result = text_to_sql(llm, "How many orders did ada place?", shop_db)
    assert "CREATE TABLE orders" in llm.prompts[0] and result["rows"] == [[2]]
    writer = ScriptedLLM(lambda prompt: "DELETE FROM orders")
    with pytest.raises(LmstackError, match="only SELECT"):
        text_to_sql(writer, "delete everything", shop_db)


def test_sql_tool_through_the_agent_loop(shop_db):
    replies = iter(['Action: sql\nAction Input: {"query": "SELECT MAX(total) FROM orders"}', "Final Answer: 30.0"])
    result = run_agent(ScriptedLLM(lambda p: next(replies)), "largest order?", make_tools(["sql"], database=str(shop_db)))
    assert result.steps[0].observation == "MAX(total)\n30.0" and result.answer == "30.0"


def test_optimizer_picks_instruction_and_demos_that_raise_the_dev_score():
    train = [{"input": w, "output": w[::-1]} for w in ("cat", "dog", "sun", "map", "pen", "cup")]
    dev = [{"input": w, "output": w[::-1]} for w in ("owl", "fig", "jar", "kit")]

    def reply(prompt: str) -> str:  # a model that reverses only when told to and shown two examples
        word = prompt.rsplit("Input: ", 1)[1].split("\n")[0]
        follows = "backwards" in prompt and prompt.count("Output:") >= 3
        return word[::-1] if follows else word

    report = optimize(ScriptedLLM(reply), train, dev, ["Repeat the word.", "Write the word backwards."],
                      shots=2, trials=2, metric="exact")
    assert report["before"] == 0.0 and report["after"] == 1.0
    assert report["program"]["instruction"] == "Write the word backwards." and len(report["program"]["demos"]) == 2
    assert report["candidates"] == 2 * 3
    assert Program("Do it.", [{"input": "a", "output": "A"}]).prompt("b") == "Do it.\n\nInput: a\nOutput: A\n\nInput: b\nOutput:"


@pytest.mark.real
def test_real_model_agent_run_shows_a_bounded_trace(smollm2):
    from typer.testing import CliRunner

    from lmstack.cli import app

    result = CliRunner().invoke(app, ["agent", "run", "What is 17 times 23?", "--model", str(smollm2.source),
                                      "--max-steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert 1 <= len(data["steps"]) <= 2 and data["stopped"] in ("answer", "steps")
    assert all({"thought", "action", "arguments", "observation", "error"} <= set(step) for step in data["steps"])
