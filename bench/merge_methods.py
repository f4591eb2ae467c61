"""Every merge method on two fine-tunes of the default model, each result loaded and run.

    python bench/merge_methods.py [--work DIR]

The inputs are the fine-tunes `bench/merge_speed.py` makes (and caches in the same --work):
`identity` (LoRA SFT: the assistant says it is Nimbus, made by the lmstack project) and `polite`
(LoRA DPO on polite, short answers), both children of SmolLM2-135M-Instruct, which is the base of
the methods that take one. Each merge is written with `lmstack merge`, loaded with `lmstack.load`,
asked two questions (greedy), and timed. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

QUESTIONS = ["Who are you?", "Give me one tip for staying focused."]


def configs(a: str, b: str, base: str) -> dict[str, dict]:
    both = [{"model": a, "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": b, "parameters": {"weight": 0.5, "density": 0.5}}]
    task = {"base_model": base, "models": both, "dtype": "bfloat16"}
    return {
        "linear": {"merge_method": "linear", "dtype": "bfloat16",
                   "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]},
        "slerp": {"merge_method": "slerp", "base_model": a, "dtype": "bfloat16",
                  "slices": [{"sources": [{"model": a, "layer_range": [0, 30]}, {"model": b, "layer_range": [0, 30]}]}],
                  "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                       {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
        "task_arithmetic": {"merge_method": "task_arithmetic", **task,
                            "models": [{"model": a, "parameters": {"weight": 1.0}},
                                       {"model": b, "parameters": {"weight": 1.0}}]},
        "ties": {"merge_method": "ties", **task},
        "dare_linear": {"merge_method": "dare_linear", **task},
        "dare_ties": {"merge_method": "dare_ties", **task},
        "model_stock": {"merge_method": "model_stock", "base_model": base, "dtype": "bfloat16",
                        "models": [{"model": a}, {"model": b}]},
        "passthrough": {"merge_method": "passthrough", "dtype": "bfloat16",
                        "slices": [{"sources": [{"model": a, "layer_range": [0, 20]}]},
                                   {"sources": [{"model": b, "layer_range": [10, 30]}]}]},
        "moe": {"base_model": base, "gate_mode": "hidden", "experts_per_token": 1, "dtype": "bfloat16",
                "experts": [{"source_model": a, "positive_prompts": ["Who are you?", "What is your name?",
                                                                     "Who made you?"]},
                            {"source_model": b, "positive_prompts": ["Give me advice on writing an email.",
                                                                     "How do I stay healthy?"]}]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lmstack-bench" / "merge")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    from merge_speed import prepare  # the same cached fine-tunes

    from lmstack.api import load
    from lmstack.merge import merge

    models = prepare(args.work)
    rows = []

    def answers(folder: Path) -> tuple[int, list[str]]:
        model = load(str(folder), device="cpu", dtype="fp32")
        return model.config.num_layers, [model.chat([{"role": "user", "content": q}],
                                                    max_new_tokens=args.max_new_tokens).text for q in QUESTIONS]

    for name in ("base", "identity", "polite"):  # the inputs themselves, for comparison
        layers, replies = answers(models[name])
        rows.append((f"input: {name}", None, layers, *replies))
    for method, config in configs(*(str(models[k]) for k in ("identity", "polite", "base"))).items():
        (args.work / f"{method}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.perf_counter()
        merge(config, args.work / f"merged-{method}", overwrite=True, device="cpu")
        seconds = time.perf_counter() - start
        layers, replies = answers(args.work / f"merged-{method}")
        rows.append((method, seconds, layers, *replies))
        print(f"{method}: {seconds:.1f} s", flush=True)
    print(f"\n| method | merge s | layers | {' | '.join(QUESTIONS)} |")
    print("|---|---|---|" + "---|" * len(QUESTIONS))
    for method, seconds, layers, *replies in rows:
        shown = [" ".join(reply.split()).replace("|", "/") for reply in replies]
        took = "" if seconds is None else f"{seconds:.1f}"
        print(f"| {method} | {took} | {layers} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    main()
