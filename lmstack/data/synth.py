"""Synthetic instruction data: seed tasks in, verified (instruction, answer) chats out.

For every seed task and sample:
1. a persona is drawn (who asks changes what is asked and how: diversity without new seeds);
2. Evol-Instruct: the instruction is rewritten `evolve` times by the generator itself, each time
   one step harder (add a constraint, go deeper, make it concrete, ask for more reasoning steps);
   seeds whose answers are verified by tests are not evolved (the tests would no longer apply);
3. the generator answers the final instruction;
4. the answer is verified where it can be: a code seed's unit tests run against the answer's code
   in a sandboxed subprocess; every `a op b = c` a math answer states is recomputed, and a seed's
   expected result must be the answer's last number; any answer must be non-empty.
Accepted samples are deduplicated (exact and MinHash) and decontaminated against evaluation sets
on the way out. Progress is appended to `OUT.partial.jsonl` as it goes, so an interrupted run
continues with `--resume`; the report counts rejected samples by reason.

The generator is any lmstack model or an OpenAI-compatible endpoint (`lmstack.hub.llm`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lmstack import registry
from lmstack.arithmetic import calculate
from lmstack.data.curate import contamination_index, find_contamination
from lmstack.data.dedup import deduplicate
from lmstack.data.io import dataset_path, dataset_reference, read_source, write_jsonl
from lmstack.errors import LmstackError
from lmstack.home import check_output
from lmstack.hub.llm import LLM
from lmstack.inputs import decode_utf8
from lmstack.sandbox import run_python
from lmstack.tokenizer.chat_template import Messages

Generate = Callable[[Messages, int], str]  # (messages, seed) -> the reply

PERSONAS = [
    "a high-school student preparing for an exam",
    "a senior software engineer reviewing code",
    "a nurse with little time between shifts",
    "a retired history teacher who loves details",
    "a small-business owner keeping the books",
    "a data scientist cleaning a messy dataset",
    "a parent helping a child with homework",
    "a journalist checking facts before a deadline",
]

# Evol-Instruct's in-depth evolutions (Xu et al., 2023), one per step, in rotation.
EVOLUTIONS = {
    "constraints": "Add one more constraint or requirement to the task.",
    "deepen": "Make the task ask for a deeper or broader treatment of the same question.",
    "concretize": "Replace general concepts in the task with more specific ones.",
    "reasoning": "Rewrite the task so that solving it clearly needs several steps of reasoning.",
}
EVOLVE_PROMPT = ("Rewrite the following task into a slightly more difficult version. {how} The new task must "
                 "be reasonable, answerable by a person and self-contained. Reply with the new task only.\n\n"
                 "Task: {instruction}")
SYSTEM_PROMPT = "You are a helpful assistant. The person asking is {persona}. Answer accurately and clearly."


@dataclass
class SynthReport:
    output: str
    seeds: int
    attempted: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in self.rejected.most_common()) or "none"
        return f"{self.accepted} of {self.attempted} samples kept (rejected: {reasons}) -> {self.output}"


# --- seeds and generators ------------------------------------------------------------------------


def load_seeds(path: str) -> list[dict[str, Any]]:
    """Seed tasks: records with an `instruction` (or `prompt`) and optional `kind`, `tests`, `answer`."""
    source = read_source(path)
    seeds = []
    for index, record in enumerate(source.records):
        instruction = record.get("instruction") or record.get("prompt")
        if not isinstance(instruction, str) or not instruction.strip():
            raise LmstackError(f"{source.where(index)}: a seed needs an 'instruction' string")
        kind = record.get("kind", "general")
        if kind not in ("general", "code", "math"):
            raise LmstackError(f"{source.where(index)}: kind is {kind!r}; use general, code or math")
        if kind == "code" and not isinstance(record.get("tests"), str):
            raise LmstackError(f"{source.where(index)}: a code seed needs 'tests' (Python asserts) to verify answers")
        seeds.append({**record, "instruction": instruction, "kind": kind, "id": record.get("id", index)})
    if not seeds:
        raise LmstackError(f"{source.path} has no seed tasks")
    return seeds


def llm_generator(llm: LLM, *, max_new_tokens: int, temperature: float) -> Generate:
    """Chats written by `llm` (a local model or an endpoint, see lmstack.hub.llm), seeded per sample."""
    return lambda messages, seed: llm.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature,
                                           seed=seed)


# --- verification --------------------------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
_EQUATION = re.compile(r"((?:\d[\d.,]*|[()])(?:\s*(?:[-+*/x×()]|\*\*)\s*(?:\d[\d.,]*|[()]))+)\s*=\s*(-?\d[\d,]*(?:\.\d+)?)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def check_arithmetic(answer: str, expected: Any = None) -> str | None:
    """None when every stated equation holds (and the last number is `expected`, if given); else the reason."""
    for left, right in _EQUATION.findall(answer):
        try:
            stated = float(right.replace(",", ""))
            if abs(calculate(left.replace(",", "").replace("×", "*").replace("x", "*")) - stated) > 1e-6 * max(1.0, abs(stated)):
                return "wrong_arithmetic"
        except LmstackError:
            continue  # not an arithmetic expression after all (a date, a version number)
    if expected is not None:
        numbers = _NUMBER.findall(answer)
        if not numbers or abs(float(numbers[-1].replace(",", "")) - float(expected)) > 1e-6:
            return "wrong_answer"
    return None


def run_tests(code: str, tests: str, *, timeout: float = 10.0) -> bool:
    """Whether `code` followed by `tests` runs to the end in the sandbox (`lmstack/sandbox.py`)."""
    return run_python(code + "\n\n" + tests + "\n", timeout=timeout).ok


def verify(seed: dict[str, Any], answer: str) -> tuple[str | None, str | None]:
    """(rejection reason or None, how the answer was verified or None)."""
    if not answer.strip():
        return "empty_answer", None
    if seed["kind"] == "code":
        blocks = _CODE_BLOCK.findall(answer)
        if not blocks:
            return "no_code", None
        return (None, "tests") if run_tests("\n\n".join(blocks), seed["tests"]) else ("tests_failed", None)
    if seed["kind"] == "math":
        reason = check_arithmetic(answer, seed.get("answer"))
        return reason, None if reason else "arithmetic"
    return None, None


# --- the pipeline --------------------------------------------------------------------------------


def synthesize(seeds_path: str, output: str | Path, generate: Generate, *, per_seed: int = 1, evolve: int = 1,
               seed: int = 0, eval_sets: Sequence[str] = (), dedup_threshold: float = 0.8,
               generator_name: str = "", resume: bool = False, overwrite: bool = False,
               progress: bool = True) -> SynthReport:
    """Generate, verify, deduplicate and decontaminate; write the accepted chats as JSONL."""
    output = Path(output)
    partial = check_synth_output(output, resume=resume, overwrite=overwrite)
    if not resume:
        partial.unlink(missing_ok=True)
    seeds = load_seeds(seeds_path)
    index = contamination_index(eval_sets, 13) if eval_sets else None
    done = _read_partial(partial) if resume else {}
    jobs = [(s, k) for s in seeds for k in range(per_seed)]
    from rich.progress import Progress

    try:
        with Progress(disable=not progress) as bar, open(partial, "a", encoding="utf-8") as log:
            task = bar.add_task("synthesizing", total=len(jobs), completed=sum(_key(s, k) in done for s, k in jobs))
            for seed_record, k in jobs:
                key = _key(seed_record, k)
                if key in done:
                    continue
                done[key] = _one_sample(seed_record, k, generate, evolve, random.Random(f"{seed}-{key}"))
                log.write(json.dumps({"key": key, **done[key]}, ensure_ascii=False) + "\n")
                log.flush()
                bar.advance(task)
    except BaseException:
        if partial.is_file() and partial.stat().st_size == 0:
            partial.unlink()  # nothing to resume: leave no empty file behind
        raise
    report = SynthReport(str(output), len(seeds), attempted=len(jobs))
    report.rejected.update(entry["rejected"] for entry in done.values() if "rejected" in entry)
    accepted = [entry["record"] for key, entry in done.items() if "record" in entry]
    result = deduplicate(["\n".join(m["content"] for m in r["messages"]) for r in accepted], threshold=dedup_threshold)
    report.rejected["duplicate"] += len(accepted) - len(result.keep)
    kept = []
    for i in result.keep:
        text = "\n".join(m["content"] for m in accepted[i]["messages"])
        if index is not None and find_contamination(text, index, 13):
            report.rejected["contaminated"] += 1
        else:
            kept.append(accepted[i])
    report.rejected = +report.rejected
    report.accepted = len(kept)
    write_jsonl(output, kept)
    partial.unlink(missing_ok=True)
    registry.record("dataset", output, name=output.name, operation="synth",
                    parents=[registry.id_for(dataset_path(seeds_path), kind="dataset")],
                    recipe={"generator": generator_name, "per_seed": per_seed, "evolve": evolve, "seed": seed,
                            "eval_sets": [dataset_reference(e) for e in eval_sets]},
                    datasets=[dataset_reference(seeds_path)],
                    metadata={"attempted": report.attempted, "accepted": report.accepted,
                              "rejected": dict(report.rejected)})
    return report


def check_synth_output(output: Path, *, resume: bool, overwrite: bool) -> Path:
    """The progress file beside `output`, once the output may be written (or resumed)."""
    partial = output.with_name(output.name + ".partial.jsonl")
    if resume:
        if not partial.is_file():
            raise LmstackError(f"nothing to resume: {partial} does not exist; run without --resume")
        return partial
    check_output(output, overwrite=overwrite, directory=False)
    check_output(partial, overwrite=overwrite, directory=False)
    return partial


def _key(seed: dict[str, Any], k: int) -> str:
    return f"{seed['id']}/{k}"


def _read_partial(path: Path) -> dict[str, dict]:
    """The samples an interrupted run finished (a torn last line, from a kill mid-write, is dropped)."""
    done = {}
    for line in decode_utf8(path.read_bytes(), str(path)).splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[entry.pop("key")] = entry
    return done


def _one_sample(seed: dict[str, Any], k: int, generate: Generate, evolve: int, rng: random.Random) -> dict:
    """{"record": chat} or {"rejected": reason} for sample k of a seed."""
    persona = rng.choice(PERSONAS)
    instruction, steps = seed["instruction"], []
    if seed["kind"] != "code":
        for step in range(evolve):
            name = list(EVOLUTIONS)[(k + step) % len(EVOLUTIONS)]
            prompt = EVOLVE_PROMPT.format(how=EVOLUTIONS[name], instruction=instruction)
            evolved = generate([{"role": "user", "content": prompt}], rng.randrange(2**31)).strip()
            if not evolved or evolved == instruction or len(evolved) > 4 * len(instruction) + 400:
                return {"rejected": "evolution_failed"}
            instruction = evolved
            steps.append(name)
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(persona=persona)},
                {"role": "user", "content": instruction}]
    answer = generate(messages, rng.randrange(2**31)).strip()
    reason, verified = verify({**seed, "answer": seed.get("answer") if not steps else None}, answer)
    if reason:
        return {"rejected": reason}
    record = {"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}],
              "seed": seed["id"], "persona": persona, "evolution": steps, "verified": verified}
    return {"record": record}
