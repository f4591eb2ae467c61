"""`lmstack agent run`: a ReAct loop (Yao et al., 2022) — think, act with a tool, observe, repeat.

The model writes, each step,

    Thought: what it will do next
    Action: a tool name
    Action Input: {"json": "arguments"}

and generation stops before it can invent the observation; the tool's output is appended as
`Observation: ...` and the model continues, until it writes `Final Answer: ...`, or the step or
time limit ends the run. Arguments are JSON checked against the tool's schema; a reply that
does not parse or does not validate gets an error observation and the model retries (the
constrained decoding of the generation engine can replace this once it lands). Every step is
kept in the trace.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from lmstack.agents.tools import Tool
from lmstack.errors import LmstackError

SYSTEM = """You solve the task step by step using tools. Each step, write exactly:
Thought: <your reasoning>
Action: <one of: {names}>
Action Input: <a JSON object of arguments>
Then wait for the Observation. When you know the answer, write:
Thought: <your reasoning>
Final Answer: <the answer>

Tools:
{tools}"""


@dataclass
class Step:
    thought: str = ""
    action: str | None = None
    arguments: Any = None
    observation: str = ""
    error: bool = False


@dataclass
class AgentResult:
    answer: str | None
    steps: list[Step] = field(default_factory=list)
    stopped: str = "answer"  # answer, steps (limit reached), time (limit reached)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "stopped": self.stopped, "seconds": self.seconds,
                "steps": [asdict(step) for step in self.steps]}


def system_prompt(tools: list[Tool]) -> str:
    described = "\n".join(f"- {t.name}: {t.description}\n  arguments schema: {json.dumps(t.parameters)}" for t in tools)
    return SYSTEM.format(names=", ".join(t.name for t in tools), tools=described)


_FINAL = re.compile(r"Final Answer:\s*(.*)", re.S)
_ACTION = re.compile(r"Action:\s*([\w-]+)\s*(?:\n|$)\s*Action Input:\s*(.*)", re.S)


def parse_reply(reply: str) -> Step | str:
    """A Step with the action (arguments parsed as JSON), or the final answer as a string.

    Raises ValueError with what is wrong when the reply follows neither form."""
    thought = re.split(r"\n(?:Action|Final Answer):", reply, maxsplit=1)[0]
    thought = thought.removeprefix("Thought:").strip()
    action = _ACTION.search(reply)
    if action:
        raw = action.group(2).strip()
        try:
            arguments, _ = json.JSONDecoder().raw_decode(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"Action Input is not valid JSON ({error.msg}); write a JSON object like "
                             '{"expression": "2 + 2"}') from None
        return Step(thought=thought, action=action.group(1), arguments=arguments)
    final = _FINAL.search(reply)
    if final:
        return final.group(1).strip()
    raise ValueError("write either 'Action: <tool>' and 'Action Input: <JSON>', or 'Final Answer: <answer>'")


def run_agent(llm, task: str, tools: list[Tool], *, max_steps: int = 8, max_seconds: float = 120.0,
              max_new_tokens: int = 256, on_step: Callable[[Step], None] | None = None) -> AgentResult:
    """Run the loop until a final answer or a limit; the result holds the whole trace."""
    if not task.strip():
        raise LmstackError("the task is empty; say what the agent should do")
    by_name = {tool.name: tool for tool in tools}
    system = system_prompt(tools)
    transcript = f"Task: {task}\n"
    started = time.monotonic()
    result = AgentResult(answer=None)
    for _ in range(max_steps):
        if time.monotonic() - started > max_seconds:
            result.stopped = "time"
            break
        reply = llm.complete([transcript], system=system, max_new_tokens=max_new_tokens, stop=["Observation:"])[0]
        try:
            parsed = parse_reply(reply)
        except ValueError as error:
            step = Step(thought=reply.strip(), observation=f"error: {error}", error=True)
        else:
            if isinstance(parsed, str):
                result.answer = parsed
                result.steps.append(Step(thought=reply.split("Final Answer:")[0].removeprefix("Thought:").strip()))
                break
            step = parsed
            step.observation, step.error = _call(by_name, step)
        result.steps.append(step)
        if on_step:
            on_step(step)
        transcript += f"{reply.strip()}\nObservation: {step.observation}\n"
    else:
        result.stopped = "steps"
    if result.answer is None and result.stopped == "answer":
        result.stopped = "time"
    result.seconds = time.monotonic() - started
    return result


def _call(tools: dict[str, Tool], step: Step) -> tuple[str, bool]:
    """(observation, whether it is an error) for one tool call."""
    tool = tools.get(step.action or "")
    if tool is None:
        return f"error: there is no tool {step.action!r}; use one of {', '.join(tools)}", True
    try:
        return tool.call(step.arguments), False
    except LmstackError as error:
        return f"error: {error}", True
