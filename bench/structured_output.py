"""Per-token cost of structured output: the grammar mask vs a free decoding step.

    python bench/structured_output.py [--model smollm2-135m-instruct] [--new-tokens 64] [--runs 3]

Generates greedily from one chat prompt with and without a JSON schema (an array of records) and
reports the time per new token of each, and the time llguidance spent computing the token masks
per constrained token (the overhead structured output adds to every step).
"""

from __future__ import annotations

import argparse
import time

SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "city": {"type": "string", "maxLength": 20}}, "required": ["name", "age", "city"], "additionalProperties": False}}
PROMPT = "List ten people as JSON records with a name, an age and a city."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import lmstack
    from lmstack.device import describe_cpu
    from lmstack.generate.engine import Request
    from lmstack.generate.structured import Grammar
    from lmstack.generate.text import stop_token_ids, text_engine

    loaded = lmstack.load(args.model)
    engine = text_engine(loaded)
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                                  tokenize=True)
    grammar = Grammar.json_schema(SCHEMA)
    stops = stop_token_ids(loaded)

    def run(constrained: bool) -> tuple[float, float]:
        constraint = grammar.constraint(loaded.tokenizer, loaded.config.vocab_size, stops) if constrained else None
        request = Request(prompt, max_new_tokens=args.new_tokens, constraint=constraint, stream=True)
        start = time.perf_counter()
        handle = engine.generate([request])[0]
        per_token = (time.perf_counter() - start) / len(handle.token_ids)
        mask = constraint.mask_seconds / max(constraint.steps, 1) if constraint else 0.0
        return per_token, mask

    run(True), run(False)  # warm up (llguidance builds its tokenizer view once)
    free = min(run(False)[0] for _ in range(args.runs))
    constrained = min(run(True) for _ in range(args.runs))
    print(f"cpu: {describe_cpu()}; {args.new_tokens} new tokens, best of {args.runs}")
    print("\n| decoding | ms per token | of which grammar mask |\n|---|---|---|")
    print(f"| free | {free * 1e3:.1f} | - |")
    print(f"| JSON schema | {constrained[0] * 1e3:.1f} | {constrained[1] * 1e3:.2f} |")
    print(f"\noverhead per token: {(constrained[0] - free) * 1e3:.1f} ms ({constrained[0] / free:.2f}x)")


if __name__ == "__main__":
    main()
